"""Our ImageReward vs the official ``image-reward`` package on the same random checkpoint.

The official package cannot be installed next to this project's dependencies, so its side runs
in a throwaway virtualenv given by ``--official-python``, e.g.::

    python -m venv /tmp/irvenv
    echo "$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')" \\
        > "$(/tmp/irvenv/bin/python -c 'import site; print(site.getsitepackages()[0])')/base.pth"
    /tmp/irvenv/bin/pip install --no-deps image-reward==1.5 timm==0.6.13 fairscale==0.4.13 \\
        transformers==4.27.4 tokenizers==0.13.3 huggingface_hub==0.13.4 openai-clip==1.0.1 ftfy
    PYTHONPATH=$PWD .venv/bin/python benchmarks/image_reward_equality.py --official-python /tmp/irvenv/bin/python

(the ``.pth`` line lends it this project's torch / torchvision / numpy; the pinned packages in
the throwaway environment take precedence). The official side builds ``ImageReward`` with random
weights (every tensor perturbed, so no layer is an identity or zero), saves its state dict as
``ImageReward.pt`` (the official layout) and scores the frames; this side loads that file with
:func:`motionmatcher.metrics.image_reward.load_image_reward` and scores the same frames. Both
sides use one synthetic 30 522-word vocabulary (``bert-base-uncased``'s size) instead of the
real one, which would need a download. Prints the largest absolute difference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

PROMPTS = ("a red ball rolling to the right", "a dog running on the road")

OFFICIAL = r'''
import importlib.util, json, sys, types
import numpy as np, torch
from PIL import Image
work = sys.argv[1]
torch.set_num_threads(2)
from transformers import BertTokenizer
BertTokenizer.from_pretrained = classmethod(lambda cls, name, *a, **k: cls(vocab_file=f"{work}/vocab.txt"))
# the scoring module without the package __init__ (which also imports the ReFL training code)
spec = importlib.util.find_spec("ImageReward")
pkg = types.ModuleType("ImageReward"); pkg.__path__ = list(spec.submodule_search_locations)
sys.modules["ImageReward"] = pkg
import ImageReward.ImageReward as official
torch.manual_seed(0)
model = official.ImageReward(med_config=f"{work}/med_config.json", device="cpu").eval()
with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.02)
    for p in model.mlp.parameters():
        p.add_(torch.randn_like(p) * 0.1)
torch.save(model.state_dict(), f"{work}/ImageReward.pt")
images = [Image.fromarray(f) for f in np.load(f"{work}/frames.npy")]
with torch.no_grad():
    out = {p: list(map(float, model.score(p, images))) for p in json.loads(sys.argv[2])}
print("RESULT " + json.dumps(out))
'''

# BLIP's med_config.json (bert-base with cross-attention), as published with ImageReward
MED_CONFIG = {
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524,
    "encoder_width": 768, "add_cross_attention": True,
}


def _vocab(path: Path) -> None:
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += sorted(set(" ".join(PROMPTS).split()))
    words += [f"tok{i}" for i in range(30522 - len(words))]
    path.write_text("\n".join(words) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-python", required=True, help="python of the throwaway image-reward env")
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()

    import torch

    from motionmatcher.toy.ball_clips import render_clip
    from motionmatcher.metrics.image_reward import load_image_reward

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _vocab(work / "vocab.txt")
        (work / "med_config.json").write_text(json.dumps(MED_CONFIG))
        frames = render_clip("left_to_right", n_frames=args.frames, size=(96, 80), seed=0)
        np.save(work / "frames.npy", frames)
        (work / "official.py").write_text(OFFICIAL)
        res = subprocess.run([args.official_python, str(work / "official.py"), str(work), json.dumps(PROMPTS)],
                             capture_output=True, text=True, check=False)
        line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"official side failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        official = json.loads(line[len("RESULT "):])
        ours = load_image_reward(work / "ImageReward.pt", work / "med_config.json", tokenizer=work / "vocab.txt")
        worst = 0.0
        for prompt in PROMPTS:
            mine = ours.frame_scores(frames, prompt)
            diff = float(np.abs(mine - np.asarray(official[prompt])).max())
            worst = max(worst, diff)
            print(f"{prompt!r}: official {np.round(official[prompt], 5).tolist()}  "
                  f"ours {np.round(mine, 5).tolist()}  max |diff| {diff:.2e}")
        print(f"largest |ours - official| over {len(PROMPTS) * len(frames)} frame scores: {worst:.2e}")


if __name__ == "__main__":
    main()

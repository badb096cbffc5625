"""How much of the toy world's colour a toy model's VAE keeps: the ceiling of the colour gate.

Encodes clips of the held-out split of the world (the gate's appearances) (posterior mean) and decodes them through the model's
own VAE with the pipeline's code (:func:`motionmatcher.backbones.latents.encode_video` /
``decode_latents``), then asks the gate's question of the round trip: is the dominant object
colour (:func:`motionmatcher.toy.detector.dominant_colour`) the caption's colour? A denoiser can
hardly pass the gate (>= 80 %) through a VAE that keeps less. Prints the rate for the rendered
clips (the detector's own ceiling), for the round trip, and the round trip's MSE in [-1, 1].

    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_vae_roundtrip.py --model models/toy_t2v
    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_vae_roundtrip.py --model models/toy_wan
    # a wan-toy VAE checkpoint of a pretraining work directory, at a VAE width
    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_vae_roundtrip.py \\
        --wan-vae-ckpt resources/toy_pretrain_wan_recipe1/vae_ckpt --base-dim 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from motionmatcher.backbones.latents import decode_latents, encode_video  # noqa: E402
from motionmatcher.toy import detector, world  # noqa: E402


def _wan_vae_from_ckpt(ckpt: Path, base_dim: int, n_frames: int, size: int, seed: int = 0):
    """A wan-toy VAE from a pretraining checkpoint, with its latents mean/std set as the
    pretraining sets them (:func:`motionmatcher.toy.pretrain_dit.set_latent_stats`)."""
    from diffusers import AutoencoderKLWan

    from motionmatcher.toy import geometries, pretrain_dit
    from motionmatcher.toy.pretrain import _load_ckpt

    vae = AutoencoderKLWan(**dict(geometries._wan_configs()[1], base_dim=base_dim))
    step = _load_ckpt(ckpt, {"vae": vae}, torch.optim.AdamW(vae.parameters()))["step"]
    vae.eval()
    pretrain_dit.set_latent_stats(vae, seed, n_frames=n_frames, size=size)
    return vae, step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="a toy model directory (any backbone)")
    src.add_argument("--wan-vae-ckpt", type=Path, help="vae_ckpt/ of a wan-toy pretraining work dir")
    ap.add_argument("--base-dim", type=int, default=16, help="with --wan-vae-ckpt: the VAE's base width")
    ap.add_argument("--n", type=int, default=64, help="clips")
    ap.add_argument("--seed", type=int, default=55)
    ap.add_argument("--split", default="heldout", choices=["heldout", "train"])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.model is not None:
        from motionmatcher.backbones import load_model

        stamp = json.loads((a.model / "toy_model.json").read_text()) if (a.model / "toy_model.json").exists() else {}
        n_frames, size = int(stamp.get("frames", 8)), int(stamp.get("size", 32))
        vae, label = load_model(a.model).vae, str(a.model)
    else:
        n_frames, size = 9, 32
        vae, step = _wan_vae_from_ckpt(a.wan_vae_ckpt, a.base_dim, n_frames, size)
        label = f"{a.wan_vae_ckpt} (base_dim {a.base_dim}, step {step})"
    rng = np.random.default_rng(a.seed)
    orig_ok = rt_ok = 0
    sq = []
    by: dict[str, list[tuple[bool, bool]]] = {}
    for _ in range(a.n):
        frames, gt = world.render_clip(world.sample_clip(rng, split=a.split, n_frames=n_frames, size=size))
        colour = next(w for w in gt["caption"].split() if w in world.COLOURS)
        with torch.no_grad():
            rec = decode_latents(vae, encode_video(vae, frames), chunk_size=n_frames)[0]
        ok = (detector.dominant_colour(frames) == colour, detector.dominant_colour(rec) == colour)
        orig_ok += ok[0]
        rt_ok += ok[1]
        by.setdefault(colour, []).append(ok)
        sq.append(float(np.mean((rec.astype(np.float64) / 127.5 - frames.astype(np.float64) / 127.5) ** 2)))
    out = dict(vae=label, clips=a.n, frames=n_frames, size=size, colour_rate_rendered=orig_ok / a.n,
               colour_rate_roundtrip=rt_ok / a.n, mse=float(np.mean(sq)), split=a.split,
               by_colour={c: dict(clips=len(v), rendered=float(np.mean([o for o, _ in v])),
                                  roundtrip=float(np.mean([r for _, r in v]))) for c, v in sorted(by.items())})
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

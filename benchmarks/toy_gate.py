"""Quality gate of the pretrained toy text-to-video model, measured with the ground-truth detector.

Samples ``--n`` videos (default 56) from prompts of the *held-out* appearances of the toy world
(:data:`motionmatcher.toy.world.HELDOUT_APPEARANCES`: colour x shape x background triples never
seen in pretraining; captions with and without motion words), with the pipeline's sampler (DDIM,
classifier-free guidance, pure noise: ``noise_prior 0``), and checks:

* colour: the dominant object colour (colour segmentation) is the prompted colour in >= 80 %;
* motion: the mean centroid displacement of the prompted colour's mask (mean distance of the
  per-frame centroid from its clip mean, :func:`motionmatcher.toy.detector.displacement`) is
  >= ``--min-displacement`` px (default 1.0 px at 32 px, i.e. 3 % of the frame; the training
  clips' ground truth averages ~5 px), over the samples where the colour is found.

Prints the figures (also when the gate fails) and exits 1 on failure.

Any toy geometry (:mod:`motionmatcher.toy.geometries`: ``toy``, ``unet-res``, ``wan-toy``): the
model is loaded through its backbone (:func:`motionmatcher.backbones.load_model`) and sampled at
the frame count and size of its ``toy_model.json`` (default 8 x 32 x 32, the committed model's);
the same thresholds for all (every geometry renders 32 x 32 frames).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_gate.py [--model models/toy_t2v] [--n 56] \
        [--device cuda] [--png samples.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from motionmatcher.backbones import load_model  # noqa: E402
from motionmatcher.customization.sampler import SamplingConfig, sample_videos  # noqa: E402
from motionmatcher.toy import detector, world  # noqa: E402


def heldout_prompts(n: int, seed: int = 1234, split: str = "heldout") -> list[str]:
    rng = np.random.default_rng(seed)
    return [world.sample_clip(rng, split=split, two_object_prob=0.0).caption() for _ in range(n)]


def training_displacement(n: int = 200, seed: int = 7) -> float:
    rng = np.random.default_rng(seed)
    return float(np.mean([detector.displacement(world.render_clip(world.sample_clip(rng))[1]["centroid"])
                          for _ in range(n)]))


def rates_by(prompts: list[str], ok: list[bool]) -> dict[str, dict[str, float]]:
    """The colour rate per colour, shape, background and (colour shape background) triple that
    the prompts name: which held-out appearances a model fails on."""
    out: dict[str, dict[str, list[bool]]] = {"colour": {}, "shape": {}, "background": {}, "triple": {}}
    for prompt, good in zip(prompts, ok):
        words = prompt.replace(".", " ").replace(",", " ").split()
        c = next(w for w in words if w in world.COLOURS)
        s = next(w for w in words if w in world.SHAPES)
        b = next(w for w in words if w in world.BACKGROUNDS)
        for key, val in (("colour", c), ("shape", s), ("background", b), ("triple", f"{c} {s} {b}")):
            out[key].setdefault(val, []).append(bool(good))
    return {k: {v: float(np.mean(g)) for v, g in sorted(d.items())} for k, d in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/toy_t2v")
    ap.add_argument("--n", type=int, default=56)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--min-displacement", type=float, default=1.0)
    ap.add_argument("--min-colour-rate", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--split", default="heldout", choices=["heldout", "train"],
                    help="appearances of the prompts; the gate is the held-out split's, `train` tells a "
                         "model that cannot bind colour words from one that cannot compose them")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--png", type=Path, help="also write the first 8 samples' frames here (one row each)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_model(a.model, device=a.device)
    stamp_path = Path(a.model) / "toy_model.json"
    stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    n_frames, size = int(stamp.get("frames", 8)), int(stamp.get("size", 32))
    prompts = heldout_prompts(a.n, split=a.split)
    cfg = SamplingConfig(num_steps=a.steps, guidance_scale=a.guidance, noise_prior=0.0, batch_size=8)
    t0 = time.time()
    out = sample_videos(model, prompts, list(range(a.n)), n_frames=n_frames, height=size, width=size, cfg=cfg,
                        progress=False)
    if a.png:
        from PIL import Image

        rows = [np.concatenate(list(r["frames"]), axis=1) for r in out[:8]]
        Image.fromarray(np.concatenate(rows, axis=0)).resize(
            (rows[0].shape[1] * 4, len(rows) * rows[0].shape[0] * 4), Image.NEAREST).save(a.png)
    colour_ok, disp, shape_ok = [], [], []
    for prompt, r in zip(prompts, out):
        colour = next(w for w in prompt.split() if w in world.COLOURS)
        shape = next(w for w in prompt.split() if w in world.SHAPES)
        colour_ok.append(detector.dominant_colour(r["frames"]) == colour)
        det = detector.detect_colour(r["frames"], colour)
        if det.mean_area >= 3.0:
            disp.append(detector.displacement(det.centroid))
            shape_ok.append(detector.shape_of(det.mask) == shape)
    figures = dict(
        model=str(a.model), geometry=stamp.get("geometry", "toy"), frames=n_frames, size=size, split=a.split,
        n=a.n, guidance=a.guidance, sampling_steps=a.steps,
        flow_shift=dict(getattr(model, "scheduler_config", None) or {}).get("flow_shift"),  # Wan's
        trained_steps=stamp.get("exported_step", stamp.get("steps", stamp.get("unet_steps"))),
        seconds=round(time.time() - t0, 1),
        colour_rate=float(np.mean(colour_ok)),
        found_rate=len(disp) / a.n,
        mean_displacement_px=float(np.mean(disp)) if disp else 0.0,
        moving_rate=float(np.mean(np.array(disp) >= a.min_displacement)) if disp else 0.0,
        shape_rate=float(np.mean(shape_ok)) if shape_ok else 0.0,
        training_clip_displacement_px=training_displacement(),
        min_displacement_px=a.min_displacement, min_colour_rate=a.min_colour_rate,
        colour_rate_by=rates_by(prompts, colour_ok),
        samples=[dict(prompt=p, dominant=detector.dominant_colour(r["frames"])) for p, r in zip(prompts, out)],
    )
    figures["passed"] = bool(figures["colour_rate"] >= a.min_colour_rate
                             and figures["mean_displacement_px"] >= a.min_displacement)
    print(json.dumps({k: v for k, v in figures.items() if k != "samples"}, indent=1))
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1))
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

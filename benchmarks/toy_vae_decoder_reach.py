"""Can a toy model's VAE *decoder* produce each object colour at all? The ceiling a denoiser
meets, which a plain round trip (``toy_vae_roundtrip.py``) only bounds from below: a denoiser is
free to reach latents the encoder never outputs.

For ``--n`` clips per colour of the world (``--split``), the latent is optimised through the
decoder alone (Adam, ``--steps``) to reproduce the rendered clip, starting from the encoder's
posterior mean, with the VAE loss's weighting (object pixels x10, :func:`.pretrain_dit._fg_weight`);
then the gate's question is asked of the decoded clip: is the caption's colour the dominant
object colour (:func:`motionmatcher.toy.detector.dominant_colour`)? Prints, per colour, the rate
for the rendered clips, the round trip (posterior mean decoded) and the optimised latent. Wan
(3-D VAE) and UNet (2-D VAE, frame by frame) toy models.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_vae_decoder_reach.py --model DIR [--n 4 --steps 150]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from motionmatcher.backbones.latents import model_space_to_uint8  # noqa: E402
from motionmatcher.toy import detector, world  # noqa: E402
from motionmatcher.toy.pretrain import clip_batch  # noqa: E402
from motionmatcher.toy.pretrain_dit import _fg_weight  # noqa: E402


def _to_frames(x: torch.Tensor) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8, the pipeline's conversion."""
    return model_space_to_uint8(x).permute(1, 2, 3, 0).numpy()


def clips_of(colour: str, n: int, rng: np.random.Generator, split: str, n_frames: int, size: int):
    xs = []
    while len(xs) < n:
        x, caps = clip_batch(rng, 1, split=split, n_frames=n_frames, size=size)
        if caps[0].split()[1] == colour:
            xs.append(x)
    return torch.cat(xs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--n", type=int, default=4, help="clips per colour")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--split", default="train", choices=["heldout", "train"])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from motionmatcher.backbones import load_model

    stamp = json.loads((a.model / "toy_model.json").read_text())
    n_frames, size = int(stamp.get("frames", 8)), int(stamp.get("size", 32))
    vae = load_model(a.model).vae.float().eval().requires_grad_(False)
    is3d = type(vae).__name__ == "AutoencoderKLWan"

    def enc(x):  # (n, 3, F, H, W) -> latent
        if is3d:
            return vae.encode(x).latent_dist.mean
        n, _, f, h, w = x.shape
        return vae.encode(x.permute(0, 2, 1, 3, 4).reshape(n * f, 3, h, w)).latent_dist.mean

    def dec(z, n):
        if is3d:
            return vae.decode(z).sample
        y = vae.decode(z).sample
        return y.reshape(n, -1, *y.shape[1:]).permute(0, 2, 1, 3, 4)

    rng = np.random.default_rng(a.seed)
    out = {}
    for colour in world.COLOURS:
        x = clips_of(colour, a.n, rng, a.split, n_frames, size)
        with torch.no_grad():
            z0 = enc(x)
            rt = dec(z0, len(x))
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=a.lr)
        w = _fg_weight(x, 10.0)
        for _ in range(a.steps):
            loss = (w * (dec(z, len(x)) - x) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            opt_x = dec(z, len(x))
        rate = lambda v: float(np.mean([detector.dominant_colour(_to_frames(c)) == colour for c in v]))  # noqa: E731
        out[colour] = dict(clips=len(x), rendered=rate(x), roundtrip=rate(rt), optimised=rate(opt_x),
                           loss_roundtrip=float((w * (rt - x) ** 2).mean()), loss_optimised=loss.item())
        print(colour, json.dumps(out[colour]), flush=True)
    res = dict(model=str(a.model), split=a.split, steps=a.steps, lr=a.lr, by_colour=out)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

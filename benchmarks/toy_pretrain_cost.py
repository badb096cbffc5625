"""Cost of pretraining each toy geometry (:mod:`motionmatcher.toy.geometries`) on this CPU, and
whether a few dozen steps reduce the loss.

For each geometry: the matched layer's grid (hooked forward), parameters, fp16 weight bytes,
FLOPs of one denoiser training step (forward + backward of the denoiser and the text encoder,
batch 1 clip, ``torch.utils.flop_counter``), seconds per optimizer step of both stages at the
recipe's batch (the training functions themselves, read from their ``*_log.jsonl``; the first
step of each stage dropped as warm-up), and the projected CPU hours of the whole recipe
(VAE steps x s/step + denoiser steps x s/step, data rendering not included). With
``--loss-steps N`` (> 0) also trains N denoiser steps at ``--loss-batch`` on a fresh work dir
and prints the mean loss of the first and last 10.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 /work/coord/heavy --exclusive .venv/bin/python \\
        benchmarks/toy_pretrain_cost.py --steps 3 --json benchmarks/results/toy_pretrain_cost.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from motionmatcher.toy import geometries, pretrain  # noqa: E402


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def step_flops(name: str, grid: dict) -> int:
    """FLOPs of one training step's forward + backward (denoiser + text encoder), one clip."""
    from torch.utils.flop_counter import FlopCounterMode

    g = geometries.get(name)
    _, den, te = geometries.init_models(name)
    z = torch.randn(1, *grid["latent"])
    t = torch.tensor([500])
    with FlopCounterMode(display=False) as fc:
        if g.kind == "unet3d":
            emb = te(torch.zeros(1, 77, dtype=torch.long))[0]
            out = den(z, t, encoder_hidden_states=emb).sample
        else:
            from motionmatcher.toy.pretrain_dit import TEXT_LENGTH, encode_text

            ids = torch.zeros(1, TEXT_LENGTH, dtype=torch.long)
            emb = encode_text(te, ids, torch.ones_like(ids))
            out = den(z, t, emb, return_dict=False)[0]
        out.square().mean().backward()
    return int(fc.get_total_flops())


def timed(name: str, steps: int, vae_steps: int, work: Path) -> dict:
    g = geometries.get(name)
    cfg = g.build()
    if name == "toy":  # the committed recipe's own functions and defaults
        from transformers import CLIPTokenizer

        from motionmatcher.backbones.models import _write_tokenizer

        _write_tokenizer(work / "tokenizer")
        tok = CLIPTokenizer.from_pretrained(work / "tokenizer")
        vae = pretrain.train_vae(work, 0, vae_steps, batch=g.vae_batch, ckpt_every=10**9)
        vae.requires_grad_(False)
        pretrain.train_unet(work, vae, tok, 0, steps, batch=g.batch, n_clips=16, ckpt_every=10**9)
    else:
        geometries.pretrain_geometry(name, None, work, 0, vae_steps=vae_steps, steps=steps, clips=16,
                                     ckpt_every=10**9)
    vae_log = [r["s"] for r in _log(work / "vae_log.jsonl")][1:]
    den_log = [r["s"] for r in _log(work / ("dit_log.jsonl" if g.kind == "wan" else "unet_log.jsonl"))][1:]
    return dict(vae_s_per_step=float(np.mean(vae_log)), denoiser_s_per_step=float(np.mean(den_log)),
                vae_steps_timed=len(vae_log), denoiser_steps_timed=len(den_log))


def loss_check(name: str, steps: int, batch: int, work: Path) -> dict:
    geometries.pretrain_geometry(name, None, work, 0, vae_steps=2, steps=steps, batch=batch, clips=32,
                                 ckpt_every=10**9)
    g = geometries.get(name)
    losses = [r["loss"] for r in _log(work / ("dit_log.jsonl" if g.kind == "wan" else "unet_log.jsonl"))]
    return dict(loss_steps=steps, loss_batch=batch, loss_first10=float(np.mean(losses[:10])),
                loss_last10=float(np.mean(losses[-10:])))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--geometries", nargs="+", default=list(geometries.GEOMETRIES))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per stage (+1 warm-up)")
    ap.add_argument("--loss-steps", type=int, default=0)
    ap.add_argument("--loss-batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for name in a.geometries:
        g = geometries.get(name)
        torch.manual_seed(0)
        grid = geometries.matched_grid(name)
        vae, den, te = geometries.init_models(name)
        row = dict(geometry=name, frames=g.n_frames, size=g.size, latent=list(grid["latent"]),
                   matched_grid=list(grid["ca_hw"]),
                   params=dict(vae=sum(p.numel() for p in vae.parameters()),
                               denoiser=sum(p.numel() for p in den.parameters()),
                               text_encoder=sum(p.numel() for p in te.parameters())))
        row["fp16_mb"] = round(2 * sum(row["params"].values()) / 2**20, 2)
        row["train_step_gflops_per_clip"] = round(step_flops(name, grid) / 1e9, 3)
        if a.steps > 0:
            with tempfile.TemporaryDirectory() as d:
                row.update(timed(name, a.steps + 1, a.steps + 1, Path(d)))
            row["recipe"] = dict(vae_steps=g.vae_steps, vae_batch=g.vae_batch, steps=g.steps, batch=g.batch)
            row["projected_cpu_hours"] = round(
                (g.vae_steps * row["vae_s_per_step"] + g.steps * row["denoiser_s_per_step"]) / 3600, 2)
        if a.loss_steps > 0:
            with tempfile.TemporaryDirectory() as d:
                row.update(loss_check(name, a.loss_steps, a.loss_batch, Path(d)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = next((r for r in rows if r["geometry"] == "toy"), None)
    if base:
        for r in rows:
            r["flops_vs_toy"] = round(r["train_step_gflops_per_clip"] / base["train_step_gflops_per_clip"], 1)
            if "denoiser_s_per_step" in r and "denoiser_s_per_step" in base:
                r["time_vs_toy"] = round(r["denoiser_s_per_step"] / base["denoiser_s_per_step"], 1)
    out = dict(threads=a.threads, torch=torch.__version__, rows=rows)
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

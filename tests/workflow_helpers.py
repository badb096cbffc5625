"""Shared by the tests that run the workflow: a small config and a snakemake call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# Tiny tensors: two one-thread jobs at a time use 2 cores better than one two-thread job.
SINGLE_THREADED = ["--set-threads"] + [f"{r}=1" for r in (
    "cache_latents", "cache_inversion", "customize", "sample", "metrics", "metrics_check")]


def write_small_config(path: Path, manifest: Path, *, n_frames: int = 8, steps: int = 4,
                       checkpoint_every: int = 2, grid_size: int | None = None, **overrides) -> Path:
    """config/config.yaml shrunk for tests: the tiny model, 64x64 frames, `steps` everywhere, rank-4 LoRA."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.update(
        manifest=str(manifest),
        model="tiny",  # the demo default is the toy model; tests run the random tiny one
        video={**cfg["video"], "n_frames": n_frames, "width": 64, "height": 64, "frame_step": 2},
        inversion={"num_steps": steps, "prompt": ""},
        # lr 5e-4 (the official one) and one seed: the tests' values, not the demo's toy budget
        # (config/config.yaml: 400 steps at 5e-3, 2 seeds; docs/toy.md)
        training={**cfg["training"], "steps": steps, "checkpoint_every": checkpoint_every, "lr": 5.0e-4,
                  "lora": {"rank": 4, "dropout": 0.1, "targets": "all_transformer_linears"}},
        sampling={**cfg["sampling"], "num_steps": steps, "seeds": [0]},
    )
    if grid_size is not None:
        cfg["metrics"] = {**cfg["metrics"], "grid_size": grid_size}
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_snakemake(workdir: Path, configfile: Path, *args: str, timeout: int = 3000) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
         "--configfile", str(configfile), "--cores", "2", *SINGLE_THREADED, *args],
        capture_output=True, text=True, timeout=timeout,
    )


def with_perturbed_temporal_convs(base, seed: int = 0, scale: float = 0.05):
    """A copy of a loaded model whose zero-initialised temporal conv outputs (``conv4``) are
    random: on a fresh UNet every ``temp_convs`` is the identity, which hides what the temporal
    path does (dropout, gating, DMT's temporal-conv feature)."""
    import copy

    import torch

    m = copy.copy(base)
    m.unet = copy.deepcopy(base.unet)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.unet.named_parameters():
            if ".conv4.3." in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return m

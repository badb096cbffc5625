"""CPU cost of guided sampling (DMT, MotionClone) on the committed toy model, with and without
the sampler's module index (:mod:`motionmatcher.customization.module_index`: the attention
layers listed once per batch instead of walked at every capture), one torch thread.

Settings: ``methods:`` of config/config.yaml with config/toy_benchmark.yaml on top (20 DDIM
steps, CFG 7.5), reference 1 of the benchmark set (its inverted latents as the guidance's
reference), one sample per run. The two variants alternate ``--repeats`` times so that load
from other processes hits both alike; prints the median seconds per sample. The samples are
bit-identical either way (tests/test_module_index.py).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/toy_guidance_cost.py
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="motionclone,dmt")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from motionmatcher.backbones import load_model
    from motionmatcher.backbones.latents import encode_video
    from motionmatcher.customization import sampler
    from motionmatcher.customization.guidance import Reference
    from motionmatcher.customization.sampler import SamplingConfig, sample_videos
    from motionmatcher.methods import method_config
    from motionmatcher.methods.config import _merge
    from motionmatcher.methods.registry import make_guidance
    from motionmatcher.toy import efficacy

    cfg = _merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                 yaml.safe_load((REPO / "config" / "toy_benchmark.yaml").read_text()))
    s = cfg["sampling"]
    scfg = SamplingConfig(num_steps=s["num_steps"], guidance_scale=s["guidance_scale"], noise_prior=0.0)
    model = load_model(REPO / "models" / "toy_t2v")
    frames, _, caption, prompt = efficacy.reference_clip(1)
    with torch.no_grad():
        ref = Reference(encode_video(model.vae, frames), model.encode_prompt([caption]),
                        model.encode_prompt([""]), caption=caption)
    index = sampler.fixed_structure
    print(f"| method | s/sample (index) | s/sample (walks) | steps |")
    print("| --- | --- | --- | --- |")
    for m in a.methods.split(","):
        times = {"index": [], "walks": []}
        for _ in range(a.repeats):
            for variant in ("index", "walks"):
                sampler.fixed_structure = index if variant == "index" else (lambda _m: contextlib.nullcontext())
                guidance = make_guidance(method_config(cfg, m)["guidance"])
                t0 = time.perf_counter()
                sample_videos(model, [prompt], [0], n_frames=frames.shape[0], height=frames.shape[1],
                              width=frames.shape[2], cfg=scfg, progress=False, guidance=guidance, reference=ref)
                times[variant].append(time.perf_counter() - t0)
        sampler.fixed_structure = index
        print(f"| {m} | {statistics.median(times['index']):.2f} | {statistics.median(times['walks']):.2f} "
              f"| {scfg.num_steps} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

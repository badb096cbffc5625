"""Benchmark the training-free methods' sampling (DMT, MotionClone) against plain sampling:
wall time and peak memory of one sample through the one sampler.

Each variant samples one video with its method's sampling settings and ``guidance:`` entry from a
config (default ``config/paper.yaml``), in a fresh subprocess. ``--steps`` replaces the method's
``num_steps`` so the run is short; the guided window, warm-up etc. are fractions of the steps,
so the guided share of the run is the configured one, and ``run s`` projects the time linearly
to the configured ``num_steps``. The reference's DDIM inversion (``setup``, once per sampling
job) is timed separately. Variants ``<method>:nockpt`` switch the guidance's gradient
checkpointing off. The model has random weights (``tiny``: the embedded tiny UNet;
``zeroscope-random``: Zeroscope v2 576w's UNet architecture) and random text embeddings: only
speed and memory are measured (no VAE decode).

Time: wall seconds of the sampling (``s``; on a shared CPU also ``cpu s``, the process CPU time,
less sensitive to other load). Memory: on CUDA ``torch.cuda.max_memory_allocated`` during sampling minus the allocation before
it (UNet weights excluded); on CPU the peak RSS increase over the RSS after setup (psutil thread,
~1 ms sampling; approximate).

Usage::

    .venv/bin/python benchmarks/guidance.py                               # tiny model, CPU
    .venv/bin/python benchmarks/guidance.py --model zeroscope-random --allow-cpu \\
        --frames 8 --height 128 --width 128 --steps 5                     # Zeroscope arch, CPU, small
    .venv/bin/python benchmarks/guidance.py --model zeroscope-random --device cuda --dtype fp16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _measure import measured, memory_kind, rss_now, run_children  # noqa: E402

DEFAULTS = {
    "tiny": dict(frames=8, height=128, width=128),
    "zeroscope-random": dict(frames=16, height=384, width=384),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=REPO / "config" / "paper.yaml")
    p.add_argument("--methods", default="base,dmt,dmt:nockpt,motionclone,motionclone:nockpt",
                   help="comma list of methods of the config; ':nockpt' = without gradient checkpointing")
    p.add_argument("--model", choices=tuple(DEFAULTS), default="tiny")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="UNet weight dtype (as the sample rule loads it)")
    p.add_argument("--frames", type=int)
    p.add_argument("--height", type=int, help="pixels (latent = /8)")
    p.add_argument("--width", type=int, help="pixels (latent = /8)")
    p.add_argument("--steps", type=int, default=10, help="sampling steps (replaces num_steps)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--allow-cpu", action="store_true",
                   help="let --model zeroscope-random run on the CPU (small sizes only)")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for k, v in DEFAULTS[args.model].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def load_config(path: Path) -> dict:
    """The config as Snakemake would merge it: config/config.yaml, then ``path`` over it."""
    import yaml

    from motionmatcher.methods.config import _merge

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    if path.resolve() != (REPO / "config" / "config.yaml").resolve():
        cfg = _merge(cfg, yaml.safe_load(path.read_text()))
    return cfg


def run_child(args) -> dict:
    import torch

    from motionmatcher.customization.guidance import Reference
    from motionmatcher.methods.registry import make_guidance
    from motionmatcher.methods import method_config
    from motionmatcher.backbones.models import (ZEROSCOPE_SCHEDULER, build_tiny_components, resolve_device,
                                      zeroscope_unet_random)
    from motionmatcher.customization.sampler import SamplingConfig, sample_latents

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.model == "zeroscope-random" and device.type != "cuda" and not args.allow_cpu:
        raise SystemExit("--model zeroscope-random needs a GPU (--device cuda) or --allow-cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    name, _, variant = args._child.partition(":")
    mcfg = method_config(load_config(args.config), name)
    s = mcfg["sample"]
    configured_steps = int(s["num_steps"])
    cfg = SamplingConfig(**{k: s[k] for k in SamplingConfig.__dataclass_fields__ if k in s})
    cfg.num_steps = args.steps
    spec = dict(mcfg["guidance"] or {})
    if spec and variant == "nockpt":
        spec["gradient_checkpointing"] = False
    guidance = make_guidance(spec)

    torch.manual_seed(0)
    unet = build_tiny_components(0)[0] if args.model == "tiny" else zeroscope_unet_random(0)
    unet.to(device=device, dtype=dtype).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    shape = (1, 4, args.frames, args.height // 8, args.width // 8)
    d = unet.config.cross_attention_dim
    emb, neg, cap, inv = (torch.randn(1, 77, d, generator=g).to(device) for _ in range(4))
    z_ref = torch.randn(shape, generator=g).to(device)
    z0 = torch.randn(shape, generator=g)
    setup_s = 0.0
    if guidance is not None:
        t0 = time.perf_counter()
        guidance.setup(unet, ZEROSCOPE_SCHEDULER, cfg.num_steps, Reference(z_ref, cap, inv))
        z0 = guidance.initial_latents(z0)
        setup_s = time.perf_counter() - t0
    with torch.no_grad():  # warm-up: one UNet forward, so that allocator growth is not counted
        unet(z0[:, :, :2].to(device, dtype), torch.tensor([999], device=device),
             encoder_hidden_states=emb.to(dtype))
    base_rss = rss_now()
    cpu0 = time.process_time()
    with measured(device, base_rss) as m:
        sample_latents(unet, ZEROSCOPE_SCHEDULER, emb, neg, z0.to(device), cfg, has_adapter=False,
                       generator=[torch.Generator().manual_seed(0)], guidance=guidance)
    cpu_s = time.process_time() - cpu0
    return dict(method=args._child, guidance=spec.get("type"),
                checkpointing=bool(spec.get("gradient_checkpointing")) if spec else None,
                steps=args.steps, configured_steps=configured_steps, seconds=m["seconds"], cpu_s=cpu_s,
                projected_run_s=m["seconds"] * configured_steps / args.steps, setup_s=setup_s,
                peak_mib=m["peak_bytes"] / 2**20, device=str(device), memory=memory_kind(device))


def main(argv=None):
    args = parse_args(argv)
    if args._child:
        print("RESULT " + json.dumps(run_child(args)), flush=True)
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    results = run_children(__file__, argv, args.methods.split(","), "method")
    lat = f"latents 1x4x{args.frames}x{args.height // 8}x{args.width // 8}"
    print(f"config={args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config} "
          f"model={args.model} device={results[0]['device']} dtype={args.dtype} frames={args.frames} "
          f"{args.height}x{args.width}px ({lat}) steps={args.steps} threads={args.threads}")
    print(f"memory: {results[0]['memory']}")
    print(f"{'method':<22}{'ckpt':>6}{'s':>9}{'cpu s':>9}{'s/step':>9}{'peak MiB':>10}{'setup s':>9}"
          f"{'cfg steps':>10}{'run s':>9}")
    for r in results:
        ck = "-" if r["checkpointing"] is None else ("yes" if r["checkpointing"] else "no")
        print(f"{r['method']:<22}{ck:>6}{r['seconds']:>9.2f}{r['cpu_s']:>9.2f}{r['seconds'] / r['steps']:>9.3f}"
              f"{r['peak_mib']:>10.1f}{r['setup_s']:>9.2f}{r['configured_steps']:>10}"
              f"{r['projected_run_s']:>9.1f}")
    if args.json:
        meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps(dict(args=meta, results=results), indent=2))


if __name__ == "__main__":
    main()

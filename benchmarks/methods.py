"""Benchmark every method's training through the one training loop: time per step, peak memory,
trainable parameters and the size of the saved weights.

Each method runs :func:`motionmatcher.customization.training.train` with its own training settings from a
config (default ``config/paper.yaml``: the official per-method settings -- loss, trained parts,
LoRA rank, lr, clipping), for ``--steps`` steps, in a fresh subprocess (so allocator caches and
peak counters of one method do not leak into the next). The model is built with random weights
(``tiny``: the embedded tiny UNet; ``zeroscope-random``: Zeroscope v2 576w's UNet architecture)
and the text embedding is random: only speed and memory are measured.

* time: the median of the loop's own per-step wall time (``train_log`` ``seconds``: noise and
  timestep draw, loss forward, backward, clipping, optimizer step) after ``--warmup`` steps;
  ``run min`` projects it to the method's configured number of steps.
* memory: on CUDA ``torch.cuda.max_memory_allocated`` during training minus the allocation
  before it (UNet weights excluded; LoRA/optimizer state and activations included). On CPU the
  peak RSS increase over the RSS after model setup, sampled every ~1 ms by a thread (psutil;
  includes allocator caching, can miss sub-ms spikes: approximate).

Usage::

    .venv/bin/python benchmarks/methods.py                       # tiny model, CPU
    .venv/bin/python benchmarks/methods.py --model zeroscope-random --device cuda --dtype bf16
    .venv/bin/python benchmarks/methods.py --methods motionmatcher,vmc --config config/config.yaml
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _measure import measured, memory_kind, run_children  # noqa: E402

DEFAULTS = {
    "tiny": dict(frames=8, height=128, width=128),
    "zeroscope-random": dict(frames=16, height=384, width=384),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=REPO / "config" / "paper.yaml",
                   help="config whose methods (and training defaults) are benchmarked")
    p.add_argument("--methods", help="comma list (default: every trained method of the config's run_methods)")
    p.add_argument("--model", choices=tuple(DEFAULTS), default="tiny")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="autocast dtype on CUDA (weights stay fp32, as in the customize rule)")
    p.add_argument("--frames", type=int)
    p.add_argument("--height", type=int, help="pixels (latent = /8)")
    p.add_argument("--width", type=int, help="pixels (latent = /8)")
    p.add_argument("--steps", type=int, default=6, help="training steps per method (incl. warm-up)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--grad-checkpointing", action="store_true", help="force gradient checkpointing on")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--allow-cpu", action="store_true",
                   help="let --model zeroscope-random run on the CPU (smoke test at a small size only)")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for k, v in DEFAULTS[args.model].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.steps <= args.warmup:
        p.error("--steps must be larger than --warmup")
    return args


def load_config(path: Path) -> dict:
    """The config as Snakemake would merge it: config/config.yaml, then ``path`` over it."""
    import yaml

    from motionmatcher.methods.config import _merge

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    if path.resolve() != (REPO / "config" / "config.yaml").resolve():
        cfg = _merge(cfg, yaml.safe_load(path.read_text()))
    return cfg


class _BenchModel:
    """What :func:`train` needs of a model: ``unet``, ``ddim_scheduler()``, ``encode_prompt``."""

    def __init__(self, unet, device):
        import torch

        self.unet = unet
        g = torch.Generator().manual_seed(2)
        self._emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g).to(device)

    def ddim_scheduler(self):
        from diffusers import DDIMScheduler

        from motionmatcher.backbones.models import ZEROSCOPE_SCHEDULER

        return DDIMScheduler.from_config(ZEROSCOPE_SCHEDULER)

    def encode_prompt(self, prompts, *, warn_context=""):
        return self._emb.expand(len(prompts), -1, -1)


def run_child(args) -> dict:
    import torch

    from motionmatcher.methods import method_config
    from motionmatcher.backbones.models import build_tiny_components, resolve_device, zeroscope_unet_random
    from motionmatcher.customization.training import TrainConfig, train
    from motionmatcher.customization.trained_weights import save_trained

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.model == "zeroscope-random" and device.type != "cuda" and not args.allow_cpu:
        raise SystemExit("--model zeroscope-random needs a GPU (--device cuda)")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    method = args._child
    mcfg = method_config(load_config(args.config), method)
    train_cfg = dict(mcfg["train"])
    configured_steps = int(train_cfg["steps"])
    train_cfg.update(steps=args.steps, checkpoint_every=10**9)
    if args.grad_checkpointing:
        train_cfg["gradient_checkpointing"] = True
    cfg = TrainConfig.from_dict(train_cfg)

    torch.manual_seed(0)
    unet = build_tiny_components(0)[0] if args.model == "tiny" else zeroscope_unet_random(0)
    unet.to(device=device, dtype=torch.float32).requires_grad_(False)
    model = _BenchModel(unet, device)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, args.frames, args.height // 8, args.width // 8, generator=g).to(device)

    with tempfile.TemporaryDirectory() as tmp:
        with measured(device) as m:
            spec, log = train(model, latents, "benchmark", cfg, seed=0, checkpoint_dir=Path(tmp) / "ck",
                              dtype=dtype, progress=False, label=method)
        wall, peak = m["seconds"], m["peak_bytes"]
        out = save_trained(unet, Path(tmp) / "weights", spec)
        saved = sum(f.stat().st_size for f in out.iterdir())
    n_trainable = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    step_s = statistics.median(log["seconds"].iloc[args.warmup:])
    return dict(method=method, loss=mcfg["train"]["loss"], trainable_params=n_trainable,
                saved_mib=saved / 2**20, median_step_s=step_s, wall_s=wall, peak_mib=peak / 2**20,
                configured_steps=configured_steps, projected_run_min=step_s * configured_steps / 60,
                final_loss=float(log["loss"].iloc[-1]), device=str(device),
                memory=memory_kind(device))


def main(argv=None):
    args = parse_args(argv)
    if args._child:
        print("RESULT " + json.dumps(run_child(args)), flush=True)
        return
    from motionmatcher.methods import method_config

    cfg = load_config(args.config)
    methods = (args.methods.split(",") if args.methods
               else [m for m in cfg["run_methods"] if method_config(cfg, m)["trains"]])
    argv = list(sys.argv[1:] if argv is None else argv)
    results = run_children(__file__, argv, methods, "method")

    lat = f"latents 1x4x{args.frames}x{args.height // 8}x{args.width // 8}"
    print(f"config={args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config} "
          f"model={args.model} device={results[0]['device']} dtype={args.dtype} frames={args.frames} "
          f"{args.height}x{args.width}px ({lat}) steps={args.steps} (median after {args.warmup} warm-up)")
    print(f"memory: {results[0]['memory']}")
    print(f"{'method':<19}{'loss':<20}{'trainable':>11}{'saved MiB':>10}{'s/step':>9}{'peak MiB':>10}"
          f"{'steps':>7}{'run min':>9}")
    for r in results:
        print(f"{r['method']:<19}{r['loss']:<20}{r['trainable_params']:>11,}{r['saved_mib']:>10.2f}"
              f"{r['median_step_s']:>9.3f}{r['peak_mib']:>10.1f}{r['configured_steps']:>7}"
              f"{r['projected_run_min']:>9.2f}")
    if args.json:
        meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps(dict(args=meta, results=results), indent=2))


if __name__ == "__main__":
    main()

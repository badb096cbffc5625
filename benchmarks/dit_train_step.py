"""Time and peak memory of one training step on the real DiT architectures (random weights):
MotionMatcher (:func:`motionmatcher.methods.motionmatcher.motion_matching_loss`: the ε̂/v̂
forward, the schedule's one-step update, two feature passes stopped after the last feature
block, the backward into the LoRA) versus the plain ``ddpm_lora`` step, through the same
backbone interface the pipeline uses (:class:`motionmatcher.backbones.base.DiTDenoiser`,
the ``motionmatcher`` LoRA set, rank 32).

Model: Wan2.1-T2V-1.3B's or CogVideoX-2b's transformer config, ``--depth`` blocks (default: the
full 30), real width, text of the real length (512 / 226 tokens, 20 of them real). Each variant
runs in its own process; memory is ``max_memory_allocated`` on a GPU, the peak RSS increase on
a CPU (approximate: benchmarks/_measure.py).

Usage (sizes are latent frames x latent height x width)::

    # CPU, reduced (the shared 2-core box: re-measure timings on an idle machine)
    .venv/bin/python benchmarks/dit_train_step.py --arch wan --frames 3 --height 8 --width 8 --depth 16
    .venv/bin/python benchmarks/dit_train_step.py --arch cogvideox --frames 3 --height 8 --width 8 --depth 18
    # GPU, native latents (Wan 81x480x832 -> 21x60x104; CogVideoX 49x480x720 -> 13x60x90)
    .venv/bin/python benchmarks/dit_train_step.py --arch wan --frames 21 --height 60 --width 104 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import measured, memory_kind, rss_now, run_children  # noqa: E402

VARIANTS = ("motionmatcher", "ddpm")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=("wan", "cogvideox"), default="wan")
    p.add_argument("--frames", type=int, default=3, help="latent frames")
    p.add_argument("--height", type=int, default=8, help="latent height")
    p.add_argument("--width", type=int, default=8, help="latent width")
    p.add_argument("--depth", type=int, default=30, help="transformer blocks (the real models: 30)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--_child", choices=VARIANTS)
    return p.parse_args(argv)


def child(args) -> dict:
    import torch

    from motionmatcher.backbones import get_backbone, pack_text
    from motionmatcher.backbones.base import DiTDenoiser
    from motionmatcher.customization.lora import add_lora, lora_config
    from motionmatcher.methods.ddpm_lora import noise_prediction_loss
    from motionmatcher.methods.motionmatcher import motion_matching_loss

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    backbone = get_backbone(args.arch)
    if args.arch == "wan":
        from diffusers import WanTransformer3DModel

        from motionmatcher.backbones.wan import WAN_1_3B, WAN_SCHEDULER as sched_cfg

        transformer = WanTransformer3DModel(**{**WAN_1_3B, "num_layers": args.depth})
        text_len, text_dim = 512, WAN_1_3B["text_dim"]
    else:
        from diffusers import CogVideoXTransformer3DModel

        from motionmatcher.backbones.cogvideox import COGVIDEOX_2B, COGVIDEOX_SCHEDULER as sched_cfg

        transformer = CogVideoXTransformer3DModel(**{**COGVIDEOX_2B, "num_layers": args.depth,
                                                     "sample_frames": 4 * (args.frames - 1) + 1,
                                                     "sample_height": args.height, "sample_width": args.width})
        text_len, text_dim = COGVIDEOX_2B["max_text_seq_length"], COGVIDEOX_2B["text_embed_dim"]
    with torch.no_grad():  # zero-initialised output layers would hide the backward's cost
        for p in transformer.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.02)
    den = DiTDenoiser(transformer, backbone, 8).to(device)
    add_lora(den, lora_config(rank=32, dropout=0.0, targets=backbone.lora_targets("motionmatcher")))
    den.train()
    schedule = backbone.training_schedule(dict(sched_cfg))
    c = transformer.config.in_channels
    z0 = torch.randn(1, c, args.frames, args.height, args.width, device=device)
    mask = torch.zeros(1, text_len, dtype=torch.bool, device=device)
    mask[:, :20] = True
    text = pack_text(torch.randn(1, text_len, text_dim, device=device) * mask[..., None], mask)
    params = [p for p in den.parameters() if p.requires_grad]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    base = rss_now()
    times, peaks = [], []
    for step in range(args.steps + 1):
        noise = torch.randn_like(z0)
        t = torch.tensor([750], device=device)
        with measured(device, base) as m:
            with autocast:
                if args._child == "motionmatcher":
                    out = motion_matching_loss(den, schedule, z0, noise, t, text, fp32_extractor=True)
                else:
                    out = noise_prediction_loss(den, schedule, z0, noise, t, text, base_dropout=False)
            out["loss"].backward()
        for p in params:
            p.grad = None
        if step:  # the first is warm-up
            times.append(m["seconds"])
            peaks.append(m["peak_bytes"])
    blocks = len(getattr(transformer, "blocks", None) or transformer.transformer_blocks)
    return {"variant": args._child, "seconds": statistics.median(times), "peak_gb": max(peaks) / 2**30,
            "params_b": sum(p.numel() for p in transformer.parameters()) / 1e9, "blocks": blocks,
            "lora_params_m": sum(p.numel() for p in params) / 1e6}


def main(argv=None):
    args = parse_args(argv)
    if args._child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    import torch

    argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    results = run_children(__file__, argv, list(VARIANTS), "variant")
    tokens = args.frames * (args.height // 2) * (args.width // 2)
    print(f"# {args.arch}: {args.depth} blocks, latents {args.frames}x{args.height}x{args.width} "
          f"({tokens} video tokens), {args.device} {args.dtype}, torch {torch.__version__}; "
          f"memory: {memory_kind(torch.device(args.device))}")
    print("| step | seconds (median) | peak memory (GB) | transformer params (B) | LoRA params (M) |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['variant']} | {r['seconds']:.3f} | {r['peak_gb']:.3f} | {r['params_b']:.3f} | "
              f"{r['lora_params_m']:.2f} |")


if __name__ == "__main__":
    main()

"""Precision of one MotionMatcher training step: bf16 / fp16 autocast against fp32.

For each variant and each timestep t, one step of
:func:`motionmatcher.methods.motionmatcher.motion_matching_loss` (forward + backward) on the same
inputs; printed against the fp32 step:

* ``rel. loss error`` = |L − L_fp32| / |L_fp32|;
* ``grad cosine`` = cos(∇θ L, ∇θ L_fp32) over all LoRA weights θ (1 = same direction);
  the fp16 variants backpropagate ``2^16 · L`` and unscale (a GradScaler's initial scale, as the
  official fp16 training through accelerate; unscaled, the LoRA gradients underflow to 0);
* ``rel. grad error`` = ‖∇θ L − ∇θ L_fp32‖ / ‖∇θ L_fp32‖.

Variants: ``fp32``; ``bf16`` / ``fp16`` (everything under autocast; the DDIM step and the MSE are
float32 in every variant); ``bf16+fp32x`` / ``fp16+fp32x`` (the ε̂ forward under autocast, the two
feature-extractor passes in float32: ``fp32_extractor=True``).

Model: Zeroscope v2 576w's UNet architecture with random weights (``--arch tiny``: the embedded
tiny UNet), with the zero-initialised ``TemporalConvLayer.conv4`` of a fresh model replaced by
random weights of a trained-like scale (a fresh conv4 hides the temporal convs entirely), and a
rank-32 LoRA on the official target set with random non-zero B (a LoRA some steps into training;
dropout 0). Random weights are not trained weights: the figures bound the rounding error of the
arithmetic, not the loss values of a real run.

``--what guidance``: the latent gradient of the training-free methods' guidance (DMT's feature
loss, whose Adam steps move the latent; MotionClone's score ``s·∇_z L``) with the UNet's weights and
activations in fp32 / bf16 / fp16 (as the sampler loads the model under ``dtype:``; the losses
themselves are float32), against fp32 on the same latents, reference latents and prompts:
``grad cosine`` = cos(∇_z L, ∇_z L_fp32), ``rel. grad error`` = ‖∇_z L − ∇_z L_fp32‖ / ‖∇_z L_fp32‖.
Same architecture and perturbed temporal convs (no LoRA); the guidance options are the official
defaults (``config/paper.yaml``), the reference inverted once in fp32 at ``--steps`` steps.

Usage::

    .venv/bin/python benchmarks/precision.py --frames 8 --size 256            # the issue's setting
    .venv/bin/python benchmarks/precision.py --what guidance --device cuda --frames 16 --size 384
    .venv/bin/python benchmarks/precision.py --what guidance --frames 2 --size 64   # a shared CPU
    .venv/bin/python benchmarks/precision.py --frames 4 --size 128 --threads 2   # what a 2-core CPU affords
    .venv/bin/python benchmarks/precision.py --device cuda --frames 16 --size 384
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

VARIANTS = {  # name: (autocast dtype or None, fp32_extractor)
    "fp32": (None, False),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
    "bf16+fp32x": (torch.bfloat16, True),
    "fp16+fp32x": (torch.float16, True),
}


def build(arch: str, seed: int, device: torch.device, lora: bool = True):
    from diffusers import DDIMScheduler, UNet3DConditionModel
    from diffusers.models.unets.unet_3d_blocks import TemporalConvLayer

    from motionmatcher.customization.lora import add_lora, lora_config
    from motionmatcher.backbones.models import TINY_UNET, ZEROSCOPE_SCHEDULER, ZEROSCOPE_UNET

    torch.manual_seed(seed)
    unet = UNet3DConditionModel(**(ZEROSCOPE_UNET if arch == "zeroscope" else TINY_UNET))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in unet.modules():
            if isinstance(m, TemporalConvLayer):
                # conv4 is zero in a fresh model; give it conv3's scale (as a trained one has)
                for p4, p3 in zip(m.conv4.parameters(), m.conv3.parameters()):
                    p4.copy_(torch.randn(p4.shape, generator=g) * p3.float().std())
    if not lora:
        return unet.to(device), [], DDIMScheduler(**ZEROSCOPE_SCHEDULER), unet.config.cross_attention_dim
    params = add_lora(unet, lora_config(rank=32, dropout=0.0, targets="motionmatcher"))
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 1e-3)
    unet.to(device).train()
    return unet, params, DDIMScheduler(**ZEROSCOPE_SCHEDULER), unet.config.cross_attention_dim


GUIDANCE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def guidance_gradient(kind: str, unet, fp32_guidance, latents, t: int, cond, neg):
    """∇_z of ``kind``'s guidance loss at timestep ``t`` with ``unet`` (in its own dtype): a copy
    of ``fp32_guidance`` (set up in fp32: the same reference latents) with its caches emptied."""
    import copy

    from motionmatcher.customization.guidance import guided_forward

    g = copy.copy(fp32_guidance)
    if kind == "dmt":
        g._ref_desc = {}
        x = latents.clone().requires_grad_(True)
        with guided_forward(unet, g.gradient_checkpointing):
            g.loss(unet, x, t, cond).backward()
        return x.grad.detach().double()
    g._ref_maps, g._ref_ca, g.n_warm, g.n_cool = {}, {}, 0, 0
    g.initial_latents(latents)
    step = sorted(g.timesteps, reverse=True).index(t)
    ctx = {"cond": cond, "neg": neg, "guided": True, "guidance_scale": 8.5}
    return g.score(unet, latents, step, t, ctx).detach().double()


def main_guidance(args, device) -> None:
    """One UNet at a time (Zeroscope: 5.6 GB in fp32): built from the seed, cast to each dtype."""
    import gc

    import yaml

    from motionmatcher.customization.guidance import Reference
    from motionmatcher.methods.registry import make_guidance
    from motionmatcher.methods.config import method_config
    from motionmatcher.backbones.models import ZEROSCOPE_SCHEDULER

    paper = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "paper.yaml").read_text())
    h = args.size // 8
    print(f"# guidance gradients: {args.arch} UNet (random weights, non-zero temporal conv4), "
          f"{args.frames} frames, {args.size}x{args.size} px -> {h}x{h} latents, device {device}, "
          f"threads {args.threads}, {args.steps} sampling steps, torch {torch.__version__}")
    print("| method | dtype | t | grad cosine | rel. grad error | seconds |")
    print("|---|---|---|---|---|---|")
    ref_guidance, ref_grads, rows = {}, {}, []
    for name in ["fp32"] + [d for d in args.dtypes if d != "fp32"]:
        unet = build(args.arch, args.seed, device, lora=False)[0].eval().requires_grad_(False)
        unet.to(GUIDANCE_DTYPES[name])
        if name == "fp32":
            text_dim = unet.config.cross_attention_dim
            g = torch.Generator().manual_seed(args.seed)
            shape = (1, 4, args.frames, h, h)
            z_ref, z = (torch.randn(shape, generator=g).to(device) for _ in range(2))
            cap, cond, neg = (torch.randn(1, 77, text_dim, generator=g).to(device) for _ in range(3))
            for kind in args.methods:
                spec = dict(method_config(paper, kind)["guidance"])
                spec["inversion_steps"] = None  # the gradient's precision, not the inversion's
                ref_guidance[kind] = make_guidance(spec)
                ref_guidance[kind].setup(unet, ZEROSCOPE_SCHEDULER, args.steps, Reference(z_ref, cap, cap))
        for kind in args.methods:
            rg = ref_guidance[kind]
            for t in sorted(rg.timesteps, reverse=True)[: max(1, args.guided_timesteps)]:
                t0 = time.perf_counter()
                grad = guidance_gradient(kind, unet, rg, z, t, cond, neg)
                sec = time.perf_counter() - t0
                ref = ref_grads.setdefault((kind, t), grad)
                cos = float(torch.nn.functional.cosine_similarity(grad.flatten(), ref.flatten(), dim=0))
                err = float((grad - ref).norm() / ref.norm())
                print(f"| {kind} | {name} | {t} | {cos:.6f} | {err:.2e} | {sec:.1f} |", flush=True)
        del unet
        gc.collect()


def step(unet, params, scheduler, batch, variant: str, device: torch.device):
    from motionmatcher.methods.motionmatcher import motion_matching_loss

    dtype, fp32x = VARIANTS[variant]
    latents, noise, t, emb = batch
    for p in params:
        p.grad = None
    ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with ctx:
        out = motion_matching_loss(unet, scheduler, latents, noise, t, emb, fp32_extractor=fp32x)
    # fp16 as the official code trains it (accelerate): a GradScaler's loss scale (initial 2^16),
    # without it the LoRA gradients underflow to zero
    scale = 2.0**16 if dtype == torch.float16 else 1.0
    (out["loss"] * scale).backward()
    grad = torch.cat([p.grad.detach().double().flatten() for p in params]) / scale
    return float(out["loss"].detach()), grad


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=["zeroscope", "tiny"], default="zeroscope")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=256, help="pixels (latents: size / 8)")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[550, 750, 950])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--what", choices=["training", "guidance"], default="training",
                    help="a MotionMatcher training step, or the guided methods' latent gradients")
    ap.add_argument("--methods", nargs="+", default=["dmt", "motionclone"], choices=["dmt", "motionclone"])
    ap.add_argument("--dtypes", nargs="+", default=list(GUIDANCE_DTYPES), choices=list(GUIDANCE_DTYPES))
    ap.add_argument("--steps", type=int, default=50, help="guidance: sampling steps (timesteps)")
    ap.add_argument("--guided-timesteps", type=int, default=3,
                    help="guidance: how many of the noisiest sampling timesteps to measure")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.what == "guidance":
        main_guidance(args, device)
        return
    unet, params, scheduler, text_dim = build(args.arch, args.seed, device)
    h = args.size // 8
    print(f"# {args.arch} UNet (random weights, non-zero temporal conv4), LoRA r32 (official targets), "
          f"{args.frames} frames, {args.size}x{args.size} px -> {h}x{h} latents, device {device}, "
          f"threads {args.threads}, torch {torch.__version__}")
    print("| variant | t | loss | rel. loss error | grad cosine | rel. grad error | seconds |")
    print("|---|---|---|---|---|---|---|")
    for t in args.timesteps:
        g = torch.Generator().manual_seed(args.seed + t)
        latents = torch.randn(1, 4, args.frames, h, h, generator=g).to(device)
        noise = torch.randn(latents.shape, generator=g).to(device)
        emb = torch.randn(1, 77, text_dim, generator=g).to(device)
        batch = (latents, noise, torch.tensor([t], device=device), emb)
        ref = None
        for variant in ["fp32"] + [v for v in args.variants if v != "fp32"]:
            t0 = time.perf_counter()
            loss, grad = step(unet, params, scheduler, batch, variant, device)
            sec = time.perf_counter() - t0
            if ref is None:
                ref = (loss, grad)
            rel = abs(loss - ref[0]) / abs(ref[0])
            cos = float(torch.nn.functional.cosine_similarity(grad, ref[1], dim=0))
            gerr = float((grad - ref[1]).norm() / ref[1].norm())
            print(f"| {variant} | {t} | {loss:.6g} | {rel:.2e} | {cos:.6f} | {gerr:.2e} | {sec:.1f} |", flush=True)


if __name__ == "__main__":
    main()

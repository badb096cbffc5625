"""Benchmark one LoRA training step (forward + backward of the loss): time and peak memory.

Variants (each runs in its own fresh subprocess, so allocator caches and peak counters of
one do not leak into another):

* ``ours``          -- :func:`motionmatcher.methods.motionmatcher.motion_matching_loss`: explicit softmax
  only in the captured layers (SDPA everywhere else), extractor stopped after the last
  needed down block, target branch under ``no_grad``, LoRA disabled for the extractor.
* ``official``      -- a re-creation of the official implementation's step
  (b09902097/motionmatcher ``train.py``): every attention layer except ``transformer_in``
  materialises its probabilities (``get_attention_scores`` + ``bmm``), the extractor keeps
  every down-block map (all heads) and filters them by shape afterwards, it stops after
  *all* down blocks (``get_features=True``), the target branch records its graph, and the
  LoRA is switched off by setting its scale to 0 (still computed).
* ``official-full`` -- the same with the extractor running the full UNet (no early stop).
* ``ddpm``          -- :func:`motionmatcher.methods.ddpm_lora.noise_prediction_loss` (plain LoRA step).

Memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the step
(peak over all steps). On CPU there is no allocator counter for torch tensors (tracemalloc
does not see them), so a background thread samples the process RSS (psutil) every ~1 ms and
the peak RSS increase over the RSS after model setup is reported; it includes allocator
caching and can miss sub-millisecond spikes, so treat it as approximate.

Usage::

    .venv/bin/python benchmarks/train_step.py --model tiny
    .venv/bin/python benchmarks/train_step.py --model zeroscope-random --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _measure import measured, memory_kind, rss_now, run_children  # noqa: E402

VARIANTS = ("ours", "official", "official-full", "ddpm")
DEFAULTS = {
    "tiny": dict(frames=8, height=128, width=128),
    "zeroscope-random": dict(frames=16, height=384, width=384),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=tuple(DEFAULTS), default="tiny")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--frames", type=int)
    p.add_argument("--height", type=int, help="pixels (latent = /8)")
    p.add_argument("--width", type=int, help="pixels (latent = /8)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--spatial-scale-factor", type=int, default=4)
    p.add_argument("--temporal-scale-factor", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {VARIANTS}")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--allow-cpu", action="store_true",
                   help="let --model zeroscope-random run on the CPU (smoke test at a small size only)")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for k, v in DEFAULTS[args.model].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    bad = set(args.variants.split(",")) - set(VARIANTS)
    if bad:
        p.error(f"unknown variants {sorted(bad)}")
    return args


# --------------------------------------------------------------------------- official re-creation


class OfficialStore:
    """The official AttentionStore, reduced to what the step uses: while ``active``, keep
    every (batch·heads, Q, K) probability tensor of the down blocks, by kind."""

    def __init__(self):
        self.active = False
        self.maps = {"cross": [], "self": []}

    def clear(self):
        self.maps = {"cross": [], "self": []}


class OfficialAttnProcessor:
    """Materialised attention as in the official ``utils/attention_processor.py``: diffusers'
    ``get_attention_scores`` (baddbmm + softmax in the model dtype) then ``bmm`` with V."""

    def __init__(self, store: OfficialStore | None):
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        import torch

        residual = hidden_states
        batch_size, seq_len, _ = (hidden_states if encoder_hidden_states is None
                                  else encoder_hidden_states).shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch_size)
        is_cross = encoder_hidden_states is not None
        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        key = attn.head_to_batch_dim(attn.to_k(context)).contiguous()
        value = attn.head_to_batch_dim(attn.to_v(context)).contiguous()
        query = attn.head_to_batch_dim(query).contiguous()
        probs = attn.get_attention_scores(query, key, attention_mask)
        if self.store is not None and self.store.active:
            self.store.maps["cross" if is_cross else "self"].append((attn.heads, probs))
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def official_aggregate(store: OfficialStore, bsz, frames, s_res, t_res):
    """The official ``aggregate_attention``: pick maps by shape, concatenate the heads of all
    layers, average (square latents, as the official code assumes)."""
    import torch

    sp, tp = s_res * s_res, t_res * t_res
    cross = [p.reshape(bsz, frames, -1, s_res, s_res, p.shape[-1]) for _, p in store.maps["cross"]
             if p.shape[1] == sp]
    temporal = [p.reshape(bsz, tp, h, *p.shape[-2:]) for h, p in store.maps["self"]
                if p.shape[0] == bsz * tp * h and p.shape[1] == frames]
    return torch.cat(cross, 2).mean(2), torch.cat(temporal, 2).mean(2)


def official_install(unet):
    store = OfficialStore()
    procs = {}
    from diffusers.models.attention_processor import AttnProcessor2_0

    for k in unet.attn_processors:
        if k.startswith("transformer"):  # the official set_torch_2_attn skips transformer_in
            procs[k] = AttnProcessor2_0()
        elif k.startswith("down_blocks"):
            procs[k] = OfficialAttnProcessor(store)
        else:
            procs[k] = OfficialAttnProcessor(None)
    unet.set_attn_processor(procs)
    return store


def official_loss(unet, store, scheduler, latents, noise, t, emb, ssf, tsf, full_forward,
                  weights=(2000.0, 2000.0)):
    import torch.nn.functional as F

    from motionmatcher.customization.lora import set_lora_scale
    from motionmatcher.customization.diffusion import ddim_step

    class _Stop(Exception):
        pass

    def extract(z):
        store.clear()
        store.active = True
        hook = None
        if not full_forward:
            def stop(*_):
                raise _Stop
            hook = unet.down_blocks[-1].register_forward_hook(stop)  # get_features=True
        try:
            unet(z, t - 1, encoder_hidden_states=emb, return_dict=False)
        except _Stop:
            pass
        finally:
            store.active = False
            if hook is not None:
                hook.remove()
        b, _, f, h, _ = latents.shape
        out = official_aggregate(store, b, f, h // ssf, h // tsf)
        store.clear()
        return out

    ac = scheduler.alphas_cumprod
    set_lora_scale(unet, 1.0)
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(noisy, t, encoder_hidden_states=emb, return_dict=False)[0]
    set_lora_scale(unet, 0.0)
    ca_p, tsa_p = extract(ddim_step(noisy, pred, t, t - 1, ac))
    ca_t, tsa_t = extract(ddim_step(noisy, noise, t, t - 1, ac))  # with its graph, as the official
    set_lora_scale(unet, 1.0)
    return (weights[0] * F.mse_loss(ca_p.float(), ca_t.float())
            + weights[1] * F.mse_loss(tsa_p.float(), tsa_t.float()))


# --------------------------------------------------------------------------- measurement


def run_child(args) -> dict:
    import torch

    from motionmatcher.customization.checkpointing import enable_gradient_checkpointing
    from motionmatcher.customization.lora import add_lora, lora_config
    from motionmatcher.methods.ddpm_lora import noise_prediction_loss
    from motionmatcher.methods.motionmatcher import motion_matching_loss
    from motionmatcher.backbones.models import (ZEROSCOPE_SCHEDULER, build_tiny_components, resolve_device,
                                                zeroscope_unet_random)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.model == "zeroscope-random" and device.type != "cuda" and not args.allow_cpu:
        raise SystemExit("--model zeroscope-random needs a GPU (--device cuda)")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    variant = args._child

    unet = (build_tiny_components(0)[0] if args.model == "tiny" else zeroscope_unet_random(0))
    unet.to(device=device, dtype=dtype).requires_grad_(False)
    params = add_lora(unet, lora_config(rank=args.lora_rank, dropout=args.lora_dropout))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:  # a partly trained adapter, not the zero init
                p.copy_((torch.randn(p.shape, generator=g) * 0.01).to(p))
    for p in params:  # LoRA weights in fp32, as a mixed-precision trainer keeps them
        p.data = p.data.float()
    unet.train()
    if args.grad_checkpointing:
        enable_gradient_checkpointing(unet)
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(ZEROSCOPE_SCHEDULER)
    sched.alphas_cumprod = sched.alphas_cumprod.to(device)
    h, w = args.height // 8, args.width // 8
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, args.frames, h, w, generator=gen).to(device, dtype)
    noise = torch.randn(latents.shape, generator=gen).to(device, dtype)
    emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen).to(device, dtype)

    store = official_install(unet) if variant.startswith("official") else None
    kw = dict(spatial_scale_factor=args.spatial_scale_factor,
              temporal_scale_factor=args.temporal_scale_factor)

    def step(i):
        t = torch.tensor([400 + (i * 137) % 600], device=device)
        for p in params:
            p.grad = None
        if variant == "ours":
            loss = motion_matching_loss(unet, sched, latents, noise, t, emb, **kw)["loss"]
        elif variant == "ddpm":
            loss = noise_prediction_loss(unet, sched, latents, noise, t, emb)["loss"]
        else:
            loss = official_loss(unet, store, sched, latents, noise, t, emb, args.spatial_scale_factor,
                                 args.temporal_scale_factor, full_forward=variant == "official-full")
        loss.backward()
        return float(loss)

    times, peaks, losses = [], [], []
    base_rss = rss_now() if device.type != "cuda" else None
    for i in range(args.warmup + args.steps):
        with measured(device, base_rss) as m:
            losses.append(step(i))
        peaks.append(m["peak_bytes"])
        if i >= args.warmup:
            times.append(m["seconds"])
    return dict(variant=variant, median_s=statistics.median(times), min_s=min(times),
                peak_mib=max(peaks) / 2**20, loss=losses[-1], device=str(device),
                memory=memory_kind(device))


def main(argv=None):
    args = parse_args(argv)
    if args._child:
        print("RESULT " + json.dumps(run_child(args)), flush=True)
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    results = run_children(__file__, argv, args.variants.split(","), "variant")

    lat = f"latents 1x4x{args.frames}x{args.height // 8}x{args.width // 8}"
    print(f"model={args.model} device={results[0]['device']} dtype={args.dtype} frames={args.frames} "
          f"{args.height}x{args.width}px ({lat}) lora_rank={args.lora_rank} "
          f"grad_checkpointing={args.grad_checkpointing} steps={args.steps} "
          f"(median after {args.warmup} warm-up)")
    print(f"memory: {results[0]['memory']}")
    print(f"{'variant':<15}{'median s':>10}{'min s':>10}{'peak MiB':>11}{'loss':>13}")
    for r in results:
        print(f"{r['variant']:<15}{r['median_s']:>10.3f}{r['min_s']:>10.3f}"
              f"{r['peak_mib']:>11.1f}{r['loss']:>13.4g}")
    by = {r["variant"]: r for r in results}
    if "ours" in by:
        for b in ("official", "official-full"):
            if b in by:
                print(f"{b}/ours: time x{by[b]['median_s'] / by['ours']['median_s']:.2f}, "
                      f"memory x{by[b]['peak_mib'] / max(by['ours']['peak_mib'], 1e-9):.2f}")
    if args.json:
        meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps(dict(args=meta, results=results), indent=2))


if __name__ == "__main__":
    main()

"""Pretraining of the toy text-to-video model on the procedural world (:mod:`.world`).

Two stages, each resumable from its last checkpoint:

1. **VAE** (``AutoencoderKL``, Zeroscope's block types, fewer blocks: 32x32 frames -> 8x8x4
   latents) on single frames: L = ||m (x - D(z))||_1 + ||m (x - D(z))||_2^2 + w_kl KL(q(z|x) || N(0, I)),
   m = 10 on object pixels (far from the frame's median colour), 1 elsewhere.
   Its latent scaling factor is set to 1 / std of the latents afterwards (as SD's 0.18215).
2. **UNet** (``UNet3DConditionModel`` with ``CrossAttnDownBlock3D`` x 3 + ``DownBlock3D``) and
   the CLIP text encoder jointly, on VAE latents of whole clips and their captions, with the
   DDPM noise-prediction objective under Zeroscope's schedule:
   L = E_{t, eps} ||eps - eps_theta(sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps, t, c)||^2,
   the caption dropped (-> "") with probability ``p_uncond`` for classifier-free guidance.

The result is a diffusers-format directory (``unet/ vae/ text_encoder/ tokenizer/
scheduler/``, fp16 safetensors) that :func:`motionmatcher.backbones.models.load_t2v_model` loads.

CLI (``make toy-model``)::

    python -m motionmatcher.toy.pretrain --out models/toy_t2v --work resources/toy_pretrain \
        --seed 0 --unet-steps 4475 [--unet-decay N] [--vae-steps N] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.models import ZEROSCOPE_SCHEDULER, ZEROSCOPE_UNET, _write_tokenizer
from ..files.atomic import atomic_directory
from . import world

log = logging.getLogger(__name__)

TOY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
)
TOY_UNET = dict(
    ZEROSCOPE_UNET,
    block_out_channels=(16, 32, 32, 32),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=32,
    attention_head_dim=4,
)
TOY_TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=32,
    hidden_act="gelu",
)
N_FRAMES, SIZE = 8, 32


# ----------------------------------------------------------------------------- data


def clip_batch(rng: np.random.Generator, n: int, split: str = "train", n_frames: int = N_FRAMES,
               size: int = SIZE) -> tuple[torch.Tensor, list[str]]:
    """n clips of the world: video (n, 3, F, H, W) in [-1, 1] and captions."""
    vids, caps = [], []
    for _ in range(n):
        spec = world.sample_clip(rng, split=split, n_frames=n_frames, size=size)
        frames, gt = world.render_clip(spec)
        vids.append(frames)
        caps.append(gt["caption"])
    x = torch.from_numpy(np.stack(vids)).float().div(127.5).sub(1.0)  # n F H W 3
    return x.permute(0, 4, 1, 2, 3).contiguous(), caps


# ----------------------------------------------------------------------------- checkpoints


def _save_ckpt(path: Path, step: int, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer,
               extra: dict | None = None) -> None:
    """Weights and AdamW state as safetensors + a JSON with the step (atomic directory swap)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}.{n}": v.detach().cpu().contiguous() for k, m in modules.items()
               for n, v in m.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for n, v in st.items():
            tensors[f"opt.{i}.{n}"] = torch.as_tensor(v).cpu().contiguous()
    ptrs: set[int] = set()
    for n, v in tensors.items():  # tied weights (UMT5: shared = encoder.embed_tokens): one copy each
        if v.data_ptr() in ptrs:
            tensors[n] = v.clone()
        ptrs.add(tensors[n].data_ptr())
    with atomic_directory(path) as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(dict(step=step, **(extra or {}))))


def _load_ckpt(path: Path, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer) -> dict:
    from safetensors.torch import load_file

    t = load_file(str(path / "state.safetensors"))
    for k, m in modules.items():
        pre = f"model.{k}."
        m.load_state_dict({n[len(pre):]: v for n, v in t.items() if n.startswith(pre)})
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for n, v in t.items():
        if n.startswith("opt."):
            _, i, key = n.split(".", 2)
            state.setdefault(int(i), {})[key] = v
    sd["state"] = state
    opt.load_state_dict(sd)
    return json.loads((path / "state.json").read_text())


def _lr(step: int, total: int | None, base: float, warmup: int = 100) -> float:
    """Linear warmup, then cosine decay to 0 at ``total`` (constant when ``total`` is None)."""
    if step < warmup:
        return base * (step + 1) / warmup
    if total is None:
        return base
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _lr_tail(step: int, total: int, base: float, warmup: int = 50, decay: int = 0) -> float:
    """Linear warmup, constant, then a cosine decay to 0 over the last ``decay`` steps.

    Constant up to ``total - decay``, so a run resumed from a checkpoint before that point and
    trained on to ``total`` is the same run as one trained to ``total`` in one go.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    start = total - decay
    if decay <= 0 or step < start:
        return base
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - start) / decay)))


class _Log:
    def __init__(self, path: Path):
        self.f = open(path, "a")

    def __call__(self, **kw):
        self.f.write(json.dumps(kw) + "\n")
        self.f.flush()


# ----------------------------------------------------------------------------- stages


def train_vae(work: Path, seed: int, steps: int, batch: int = 16, lr: float = 2e-3,
              kl_weight: float = 1e-6, ckpt_every: int = 25, fg_weight: float = 10.0,
              vae_config: dict = TOY_VAE, size: int = SIZE, step_seed: bool = False,
              stop_at: int | None = None, device: str = "cpu"):
    """Stage 1; returns the trained VAE with its scaling factor set.

    ``vae_config``/``size``: the geometry (:mod:`.geometries`; defaults: the committed model's).
    ``step_seed``: reseed torch's global generator (the posterior sample) from (seed, step) at
    every step, so that a run resumed from a checkpoint continues bit for bit (False for the
    committed model's recipe, which draws from one stream seeded once: resumed, it continues
    with different posterior samples). ``stop_at``: checkpoint and return (None) after that
    step (the schedule still runs to ``steps``). ``device``: where it trains (float32).
    """
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**vae_config).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    ck = work / "vae_ckpt"
    step = 0
    if ck.exists():
        step = _load_ckpt(ck, {"vae": vae}, opt)["step"]
        log.info("VAE: resumed at step %d", step)
    logf = _Log(work / "vae_log.jsonl")
    vae.train()
    while step < steps:
        if stop_at is not None and step >= stop_at:
            return None
        if step_seed:
            torch.manual_seed(seed * 1_000_003 + 500_000 + step)
        rng = np.random.default_rng([seed, 1, step])
        x, _ = clip_batch(rng, max(1, batch // N_FRAMES), size=size)
        x = x.permute(0, 2, 1, 3, 4).reshape(-1, 3, size, size)[:batch].to(device)
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr, warmup=max(1, steps // 10))
        t0 = time.time()
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        # objects cover ~5 % of the pixels: weight them (pixels far from the frame's median
        # colour) x fg_weight, else the background dominates and small objects lose colour
        med = x.flatten(2).median(dim=2).values[..., None, None]
        w = 1.0 + (fg_weight - 1.0) * ((x - med).abs().sum(1, keepdim=True) > 0.3).float()
        l1, l2 = (w * (rec - x).abs()).mean(), (w * (rec - x) ** 2).mean()
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + l2 + kl_weight * kl * x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        logf(stage="vae", step=step, l1=l1.item(), l2=l2.item(), kl=kl.item(), s=time.time() - t0)
        if step % ckpt_every == 0 or step == steps or step == stop_at:
            _save_ckpt(ck, step, {"vae": vae}, opt)
    vae.eval()
    with torch.no_grad():
        x, _ = clip_batch(np.random.default_rng([seed, 9]), 16, size=size)
        z = vae.encode(x.permute(0, 2, 1, 3, 4).reshape(-1, 3, size, size).to(device)).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    log.info("VAE: scaling factor %.4f", vae.config.scaling_factor)
    return vae


def _encode_clips(vae, x: torch.Tensor) -> torch.Tensor:
    """(n, 3, F, H, W) -> scaled latents (n, 4, F, h, w) (posterior mean)."""
    n, _, f, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(-1, 3, h, w)
    z = vae.encode(frames).latent_dist.mean * vae.config.scaling_factor
    return z.reshape(n, f, *z.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()


def train_unet(work: Path, vae, tokenizer, seed: int, steps: int, batch: int = 8, lr: float = 2e-3,
               p_uncond: float = 0.1, ckpt_every: int = 25, n_clips: int = 384, decay: int = 0,
               unet_config: dict = TOY_UNET, size: int = SIZE, stop_at: int | None = None,
               device: str = "cpu", amp: bool = False, step_seed: bool = False):
    """Stage 2; returns (unet, text_encoder).

    ``unet_config``/``size``: the geometry (:mod:`.geometries`; defaults: the committed model's).
    ``stop_at``: checkpoint and return (None, None) after that step. ``device``, ``amp``: where
    it trains, and under bfloat16 autocast (weights, optimizer and loss float32). ``step_seed``:
    reseed torch's global generator from (seed, step) at every step -- it drives the dropout
    (p = 0.1) of the UNet's temporal convolutions, which diffusers' ``UNet3DConditionModel``
    hard-codes -- so that a resumed run continues bit for bit (False for the committed
    model's recipe: one stream seeded once, so its resumed runs differ by the dropout masks).
    """
    from diffusers import DDPMScheduler, UNet3DConditionModel
    from safetensors.torch import load_file, save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    lat_path = work / "latents.safetensors"
    if not lat_path.exists():
        zs, caps = [], []
        with torch.no_grad():
            for i in range(0, n_clips, 64):
                x, c = clip_batch(np.random.default_rng([seed, 2, i]), min(64, n_clips - i), size=size)
                zs.append(_encode_clips(vae, x.to(device)).cpu())
                caps += c
        save_file({"latents": torch.cat(zs)}, str(lat_path), metadata={"captions": json.dumps(caps)})
        log.info("UNet: encoded %d clips", n_clips)
    from safetensors import safe_open

    latents = load_file(str(lat_path))["latents"]
    with safe_open(str(lat_path), "pt") as f:
        captions = json.loads(f.metadata()["captions"])
    ids_all = tokenizer(captions + [""], padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids
    empty_ids = ids_all[-1]
    ids_all = ids_all[:-1]

    torch.manual_seed(seed + 10)
    unet = UNet3DConditionModel(**unet_config).to(device)
    torch.manual_seed(seed + 11)
    te = CLIPTextModel(CLIPTextConfig(**TOY_TEXT_ENCODER)).to(device)
    sched = DDPMScheduler(**{k: v for k, v in ZEROSCOPE_SCHEDULER.items() if k != "set_alpha_to_one"})
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    ck = work / "unet_ckpt"
    step = 0
    if ck.exists():
        step = _load_ckpt(ck, {"unet": unet, "te": te}, opt)["step"]
        log.info("UNet: resumed at step %d", step)
    logf = _Log(work / "unet_log.jsonl")
    unet.train()
    te.train()
    while step < steps:
        if stop_at is not None and step >= stop_at:
            return None, None
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        if step_seed:
            torch.manual_seed(seed * 1_000_003 + 700_000 + step)
        idx = torch.randint(len(latents), (batch,), generator=g)
        z0 = latents[idx]
        ids = ids_all[idx].clone()
        drop = torch.rand(batch, generator=g) < p_uncond
        ids[drop] = empty_ids
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
        zt = sched.add_noise(z0, noise, t)
        for pg in opt.param_groups:
            pg["lr"] = _lr_tail(step, steps, lr, warmup=50, decay=decay)
        t0 = time.time()
        if device != "cpu":
            zt, t, ids, noise = zt.to(device), t.to(device), ids.to(device), noise.to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            emb = te(ids)[0]
            pred = unet(zt, t, encoder_hidden_states=emb).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        logf(stage="unet", step=step, loss=loss.item(), s=time.time() - t0)
        if step % ckpt_every == 0 or step == steps or step == stop_at:
            _save_ckpt(ck, step, {"unet": unet, "te": te}, opt)
    unet.eval()
    te.eval()
    return unet, te


def save_model(out: Path, unet, vae, te, stamp: dict) -> Path:
    """Write the diffusers-format directory (fp16 weights) atomically."""
    from diffusers import DDIMScheduler

    with atomic_directory(out) as tmp:
        for name, m in (("unet", unet), ("vae", vae), ("text_encoder", te)):
            m.to(torch.float16).save_pretrained(tmp / name, safe_serialization=True)
            m.to(torch.float32)
        _write_tokenizer(tmp / "tokenizer")
        DDIMScheduler(**ZEROSCOPE_SCHEDULER).save_pretrained(tmp / "scheduler")
        (tmp / "model_index.json").write_text(json.dumps({
            "_class_name": "TextToVideoSDPipeline",
            "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet3DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }, indent=2))
        (tmp / "toy_model.json").write_text(json.dumps(stamp, indent=2))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models/toy_t2v"))
    ap.add_argument("--work", type=Path, default=Path("resources/toy_pretrain"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae-steps", type=int, default=725)
    ap.add_argument("--vae-batch", type=int, default=32, help="frames per VAE step")
    ap.add_argument("--unet-steps", type=int, default=4475)
    ap.add_argument("--unet-batch", type=int, default=16)
    ap.add_argument("--unet-decay", type=int, default=0,
                    help="cosine learning-rate decay to 0 over the last N UNet steps (0: constant)")
    ap.add_argument("--unet-clips", type=int, default=1024, help="clips encoded once for the UNet")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared CPU more threads spin-wait and waste CPU)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    from transformers import CLIPTokenizer

    a.work.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(a.work / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(a.work / "tokenizer")
    vae = train_vae(a.work, a.seed, a.vae_steps, batch=a.vae_batch)
    vae.requires_grad_(False)
    unet, te = train_unet(a.work, vae, tokenizer, a.seed, a.unet_steps, batch=a.unet_batch,
                          n_clips=a.unet_clips, decay=a.unet_decay)
    stamp = dict(seed=a.seed, vae_steps=a.vae_steps, vae_batch=a.vae_batch, unet_steps=a.unet_steps, unet_batch=a.unet_batch, unet_clips=a.unet_clips, unet_decay=a.unet_decay,
                 frames=N_FRAMES, size=SIZE)
    save_model(a.out, unet, vae, te, stamp)
    log.info("wrote %s", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

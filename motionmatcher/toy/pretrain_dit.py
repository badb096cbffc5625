r"""Pretraining of the toy Wan-architecture DiT (geometry ``wan-toy``, :mod:`.geometries`) on the
procedural world (:mod:`.world`), with the same data, captions, checkpoints and resume
mechanism as the toy UNet (:mod:`.pretrain`).

Two stages, each resumable from its last checkpoint (safetensors weights + AdamW state):

1. **3-D VAE** (``AutoencoderKLWan``: the causal video VAE of the Wan backbone) on whole
   clips, with the toy VAE's loss (object pixels weighted x10, L1 + L2 + w_kl KL). Its
   geometry: one spatial downsampling (32x32 -> 16x16), no temporal one (9 frames -> 9 latent
   frames, so the temporal self-attention still compares every frame with every frame);
   ``latents_mean``/``latents_std`` are set per channel from the trained encoder afterwards
   (what :mod:`motionmatcher.backbones.latents` normalises with). 9 = 4k + 1 frames: the Wan
   VAE encodes frame 0, then chunks of 4, whatever its temporal compression (8 frames would
   silently lose the last 3).
2. **Transformer** (``WanTransformer3DModel``, patch (1, 2, 2): 8x8 tokens per latent frame in
   every block) and the UMT5 text encoder jointly, with the flow-matching objective of the
   backbone (:class:`motionmatcher.backbones.flow.FlowMatchSchedule`)::

       z_σ = (1 − σ) z_0 + σ ε,  σ = t / 1000,  t ~ U{0, …, 999},
       L = E ||(ε − z_0) − v_θ(z_σ, t, c)||²,

   the text encoded as :meth:`motionmatcher.backbones.base.DiTModel.encode_prompt` does at
   sampling (attention mask, states zeroed past the prompt), the caption dropped (-> "") with
   probability ``p_uncond``.

Every random draw of a step comes from generators seeded with (seed, step), so a run resumed
from a checkpoint continues bit for bit (``tests/test_toy_pretrain.py``).

The result is a Wan diffusers directory (``transformer/ vae/ text_encoder/ tokenizer/
scheduler/``, fp16 safetensors, ``toy_model.json``) that
:func:`motionmatcher.backbones.load_model` loads.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .pretrain import _Log, _load_ckpt, _lr, _lr_tail, _save_ckpt, clip_batch

log = logging.getLogger(__name__)

#: characters of the longest caption of the world are ~95; + word marks and </s>
TEXT_LENGTH = 128
#: tokens of a caption with the word-level tokenizer (the longest: ~20 words and </s>)
WORD_TEXT_LENGTH = 32
SPECIALS = ("<pad>", "</s>", "<unk>")


def write_word_tokenizer(out: Path, max_length: int = WORD_TEXT_LENGTH) -> int:
    """A word-level tokenizer of the world's captions (:func:`.world.caption_words`: one token per
    word, lower-cased, punctuation split off, ``</s>`` appended as the UMT5 tokenizers do, unknown
    words -> ``<unk>``), saved as a ``PreTrainedTokenizerFast`` that
    :func:`motionmatcher.backbones.base.load_tokenizer` loads like any other. Returns the
    vocabulary size (the text encoder's ``vocab_size``)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = word_vocab()
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", vocab["</s>"])])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                            model_max_length=max_length).save_pretrained(out)
    return len(vocab)


def word_vocab() -> dict[str, int]:
    """Token ids of the word-level tokenizer: the specials, the caption words, "." and ","."""
    from .world import caption_words

    return {t: i for i, t in enumerate(list(SPECIALS) + caption_words() + [".", ","])}


def _fg_weight(x: torch.Tensor, fg_weight: float) -> torch.Tensor:
    """(n, 3, F, H, W) -> per-pixel weight: ``fg_weight`` on pixels far from their frame's
    median colour (the objects), 1 elsewhere (as :func:`.pretrain.train_vae`)."""
    med = x.flatten(3).median(dim=3).values[..., None, None]
    return 1.0 + (fg_weight - 1.0) * ((x - med).abs().sum(1, keepdim=True) > 0.3).float()


def train_vae3d(work: Path, seed: int, steps: int, *, vae_config: dict, n_frames: int, size: int,
                batch: int = 4, lr: float = 2e-3, kl_weight: float = 1e-6, ckpt_every: int = 25,
                fg_weight: float = 10.0, stop_at: int | None = None, device: str = "cpu"):
    """Stage 1; returns the trained ``AutoencoderKLWan`` with ``latents_mean``/``latents_std``
    set (None when stopped at ``stop_at``). ``batch``: clips per step."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**vae_config).to(device)
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
        x, _ = clip_batch(np.random.default_rng([seed, 1, step]), batch, n_frames=n_frames, size=size)
        x = x.to(device)
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr, warmup=max(1, steps // 10))
        t0 = time.time()
        post = vae.encode(x).latent_dist
        eps = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + step))
        eps = eps.to(device)
        rec = vae.decode(post.mean + post.std * eps).sample
        w = _fg_weight(x, fg_weight)
        l1, l2 = (w * (rec - x).abs()).mean(), (w * (rec - x) ** 2).mean()
        # KL(q(z|x) || N(0, I)) summed over a latent frame's elements, averaged over frames
        kl = 0.5 * (post.mean ** 2 + post.var - 1.0 - post.logvar).sum(dim=(1, 3, 4)).mean()
        loss = l1 + l2 + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        logf(stage="vae", step=step, l1=l1.item(), l2=l2.item(), kl=kl.item(), s=time.time() - t0)
        if step % ckpt_every == 0 or step == steps or step == stop_at:
            _save_ckpt(ck, step, {"vae": vae}, opt)
    vae.eval()
    set_latent_stats(vae, seed, n_frames=n_frames, size=size, device=device)
    log.info("VAE: latents mean %s std %s", vae.config.latents_mean, vae.config.latents_std)
    return vae


def set_latent_stats(vae, seed: int, *, n_frames: int, size: int, device: str = "cpu") -> None:
    """Set ``latents_mean``/``latents_std`` of a trained ``AutoencoderKLWan`` per channel from the
    posterior means of 16 clips drawn with (seed, 9)."""
    with torch.no_grad():
        x, _ = clip_batch(np.random.default_rng([seed, 9]), 16, n_frames=n_frames, size=size)
        mu = vae.encode(x.to(device)).latent_dist.mean
    mean = mu.mean(dim=(0, 2, 3, 4))
    std = mu.std(dim=(0, 2, 3, 4))
    vae.register_to_config(latents_mean=[float(v) for v in mean], latents_std=[float(v) for v in std])


def encode_clips3d(vae, x: torch.Tensor) -> torch.Tensor:
    """(n, 3, F, H, W) -> normalised latents (n, C, F', h, w), as
    :func:`motionmatcher.backbones.latents._encode_video_vae`."""
    mu = vae.encode(x).latent_dist.mean
    mean = torch.tensor(vae.config.latents_mean, device=mu.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=mu.device).view(1, -1, 1, 1, 1)
    return ((mu - mean) / std).contiguous()


def encode_text(te, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """UMT5 states with the attention mask, zeroed past the prompt (``DiTModel.encode_prompt``)."""
    return te(ids, attention_mask=mask).last_hidden_state * mask.unsqueeze(-1).to(torch.float32)


def _training_data(work: Path, vae, tokenizer, seed: int, n_clips: int, *, n_frames: int, size: int,
                   device: str, text_length: int):
    """The ``n_clips`` clips drawn with (seed, 2, i), encoded once into ``latents.safetensors``
    (re-encoded when absent: a work directory carried in git), and their captions tokenized:
    (latents, ids, mask, empty-prompt ids, empty-prompt mask)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    lat_path = work / "latents.safetensors"
    if not lat_path.exists():
        zs, caps = [], []
        with torch.no_grad():
            for i in range(0, n_clips, 16):
                x, c = clip_batch(np.random.default_rng([seed, 2, i]), min(16, n_clips - i),
                                  n_frames=n_frames, size=size)
                zs.append(encode_clips3d(vae, x.to(device)).cpu())
                caps += c
        save_file({"latents": torch.cat(zs)}, str(lat_path), metadata={"captions": json.dumps(caps)})
        log.info("DiT: encoded %d clips", n_clips)
    latents = load_file(str(lat_path))["latents"]
    with safe_open(str(lat_path), "pt") as f:
        captions = json.loads(f.metadata()["captions"])
    enc = tokenizer(captions + [""], padding="max_length", max_length=text_length, truncation=True,
                    return_attention_mask=True, return_tensors="pt")
    ids_all, mask_all = enc.input_ids[:-1], enc.attention_mask[:-1]
    empty_ids, empty_mask = enc.input_ids[-1], enc.attention_mask[-1]
    return latents, ids_all, mask_all, empty_ids, empty_mask


def train_dit(work: Path, vae, tokenizer, seed: int, steps: int, *, transformer_config: dict,
              text_config: dict, n_frames: int, size: int, batch: int = 16, lr: float = 1e-3,
              p_uncond: float = 0.1, ckpt_every: int = 25, n_clips: int = 1024, decay: int = 0,
              stop_at: int | None = None, device: str = "cpu", amp: bool = False,
              text_length: int = TEXT_LENGTH, ema: float = 0.0):
    """Stage 2; returns (transformer, text_encoder) ((None, None) when stopped at ``stop_at``).
    ``amp``: bfloat16 autocast of the forward (weights, optimizer, loss float32).

    ``ema`` > 0: an exponential moving average of the weights is kept beside them (and in the
    checkpoints), ``θ̄ ← d·θ̄ + (1 − d)·θ`` after every step with ``d = min(ema, (1 + s)/(10 + s))``
    at step ``s`` (the usual warm-up of the decay), and it is what is returned (and exported)."""
    from diffusers import WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from ..backbones.flow import FlowMatchSchedule

    torch.manual_seed(seed + 10)
    transformer = WanTransformer3DModel(**transformer_config).to(device)
    torch.manual_seed(seed + 11)
    te = UMT5EncoderModel(UMT5Config(**text_config)).to(device)
    sched = FlowMatchSchedule(1000)
    params = list(transformer.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    mods = {"transformer": transformer, "te": te}
    if ema:
        mods.update(ema_transformer=copy.deepcopy(transformer).requires_grad_(False),
                    ema_te=copy.deepcopy(te).requires_grad_(False))
    ck = work / "dit_ckpt"
    step = 0
    if ck.exists():
        step = _load_ckpt(ck, mods, opt)["step"]
        log.info("DiT: resumed at step %d", step)
    logf = _Log(work / "dit_log.jsonl")
    transformer.train()
    te.train()
    if step < steps and (stop_at is None or step < stop_at):  # an export needs no training data
        latents, ids_all, mask_all, empty_ids, empty_mask = _training_data(
            work, vae, tokenizer, seed, n_clips, n_frames=n_frames, size=size, device=device,
            text_length=text_length)
    while step < steps:
        if stop_at is not None and step >= stop_at:
            return None, None
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        torch.manual_seed(seed * 1_000_003 + 700_000 + step)  # any dropout: per-step stream
        idx = torch.randint(len(latents), (batch,), generator=g)
        z0 = latents[idx]
        ids, mask = ids_all[idx].clone(), mask_all[idx].clone()
        drop = torch.rand(batch, generator=g) < p_uncond
        ids[drop], mask[drop] = empty_ids, empty_mask
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
        zt = sched.add_noise(z0, noise, t)
        for pg in opt.param_groups:
            pg["lr"] = _lr_tail(step, steps, lr, warmup=50, decay=decay)
        t0 = time.time()
        target = sched.velocity(z0, noise)
        if device != "cpu":
            zt, t, ids, mask, target = (v.to(device) for v in (zt, t, ids, mask, target))
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            states = encode_text(te, ids, mask)
            pred = transformer(zt, t, states, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema:
            d = min(ema, (1 + step) / (10 + step))
            ema_update([mods["ema_transformer"], mods["ema_te"]], [transformer, te], d)
        step += 1
        logf(stage="dit", step=step, loss=loss.item(), s=time.time() - t0)
        if step % ckpt_every == 0 or step == steps or step == stop_at:
            _save_ckpt(ck, step, mods, opt)
    if ema:
        transformer, te = mods["ema_transformer"], mods["ema_te"]
    transformer.eval()
    te.eval()
    return transformer, te


@torch.no_grad()
def ema_update(averages: list[torch.nn.Module], models: list[torch.nn.Module], decay: float) -> None:
    """``θ̄ ← decay·θ̄ + (1 − decay)·θ`` for every parameter; buffers copied."""
    for avg, m in zip(averages, models):
        for pa, p in zip(avg.parameters(), m.parameters()):
            pa.lerp_(p, 1.0 - decay)
        for ba, b in zip(avg.buffers(), m.buffers()):
            ba.copy_(b)


def save_wan_model(out: Path, transformer, vae, te, stamp: dict, tokenizer_dir: Path) -> Path:
    """Write the Wan diffusers directory (fp16 weights, the tokenizer it was trained with:
    ``tokenizer_dir``) atomically."""
    from diffusers import UniPCMultistepScheduler

    from ..backbones.tiny import write_index
    from ..backbones.wan import WAN_SCHEDULER

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        for name, m in (("transformer", transformer), ("vae", vae), ("text_encoder", te)):
            m.to(torch.float16).save_pretrained(tmp / name, safe_serialization=True)
            m.to(torch.float32)
        shutil.copytree(tokenizer_dir, tmp / "tokenizer")
        cfg = {k: v for k, v in WAN_SCHEDULER.items() if k != "_class_name"}
        UniPCMultistepScheduler(**cfg).save_pretrained(tmp / "scheduler")
        write_index(tmp, "WanPipeline", "WanTransformer3DModel", "AutoencoderKLWan",
                     "UMT5EncoderModel", "UniPCMultistepScheduler")
        (tmp / "toy_model.json").write_text(json.dumps(stamp, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out

"""The backbone interface: everything that differs between text-to-video architectures.

Methods, the training loop, the sampler and the inversion talk to a loaded model (``model.unet``,
``model.vae``, ``model.encode_prompt``, ``model.ddim_scheduler()``, ``model.scheduler_config``)
and, where an architecture differs, to its :class:`Backbone`:

=======================  ===========================  ============================  ==============================
                         ``unet3d`` (Zeroscope)        ``wan`` (Wan 2.1 T2V)         ``cogvideox`` (CogVideoX)
=======================  ===========================  ============================  ==============================
denoiser                 ``UNet3DConditionModel``      ``WanTransformer3DModel``     ``CogVideoXTransformer3DModel``
native latent layout     (B, C, F, H, W)               (B, C, F, H, W)               (B, F, C, H, W)
VAE                      2-D ``AutoencoderKL``,        ``AutoencoderKLWan``, causal  ``AutoencoderKLCogVideoX``,
                         per frame (F -> F)            3-D (4k+1 -> k+1)             causal 3-D (4k+1 -> k+1)
text encoder             CLIP, 77 tokens               UMT5, 512 tokens, zero pad    T5, 226 tokens
training target          ε (DDPM)                      ε − z_0 (flow matching)       v (v-prediction on ᾱ)
one-step update          DDIM (η = 0)                  Euler on the flow ODE         DDIM (η = 0) from v
sampler                  DDIM                          UniPC / FlowMatch Euler       CogVideoX DDIM
inversion                DDIM inversion                Euler flow inversion          DDIM inversion (v)
=======================  ===========================  ============================  ==============================

Inside the pipeline every latent tensor (caches, noise priors, training, sampling) is in the
layout ``(B, C, F, h, w)`` for all backbones; a backbone whose transformer wants another layout
converts inside its denoiser (:class:`DiTDenoiser`), so caches and the shared code keep one shape.

**Timesteps.** The pipeline's timestep ``t`` is an integer in [0, 1000) on every backbone, the
number the denoiser itself receives:

* ``unet3d`` / ``cogvideox``: the DDPM index of ``ᾱ_t`` (``scheduler.alphas_cumprod[t]``), as
  in their own training and sampling. CogVideoX's ᾱ is the scaled-linear one with its SNR shift
  (``snr_shift_scale`` 3) and zero terminal SNR: ``t ≥ 500`` means ᾱ ≤ 0.116 there (Zeroscope:
  ᾱ ≤ 0.276).
* ``wan`` (flow matching, ``z_σ = (1 − σ) z_0 + σ ε``): ``σ = t / 1000`` -- Wan's transformer is
  trained and sampled with timestep ``1000 σ``, so ``t`` is again the number the model sees.
  "LoRA active for t ≥ 500" means σ ≥ 0.5, and MotionMatcher's ``t ~ U[500, 1000)`` means
  ``σ ~ U[0.5, 1.0)`` (uniform in σ, no shift). (Matching Zeroscope's signal-to-noise ratio at
  t = 500 instead, ᾱ = 0.276, would put the threshold at σ = 1/(1 + √(ᾱ/(1−ᾱ))) ≈ 0.62: our
  mapping is the model's own time axis, not an SNR match -- a design choice, stated in
  docs/backbones.md.)

**Text.** A DiT's ``encode_prompt`` returns ``(B, L, D + 1)``: the text encoder's states and, as
the last channel, the padding mask (1 = a real token) -- :func:`pack_text` / :func:`unpack_text`.
The mask rides along with the embeddings through batching, classifier-free guidance and device
moves, and the denoiser strips it before the transformer, which sees exactly what the official
pipeline gives it (Wan: the zero-padded states; CogVideoX: all 226 states, unmasked). The motion
features use it to leave padding tokens out of CA.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)

from .spec import BackboneError, BackboneSpec

__all__ = ["Backbone", "BackboneError", "DiTDenoiser", "DiTModel", "pack_text", "unpack_text"]


def pack_text(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, L, D)`` states + ``(B, L)`` padding mask -> ``(B, L, D + 1)`` (mask last)."""
    return torch.cat([states, mask.to(states.dtype).unsqueeze(-1)], dim=-1)


def unpack_text(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_text`: ``(states (B, L, D), mask (B, L) bool)``."""
    return packed[..., :-1], packed[..., -1] > 0.5


class Backbone(BackboneSpec):
    """One architecture: how to load it and what its schedule, latents and text look like.

    Subclasses set the class attributes (:class:`.spec.BackboneSpec`: name, denoiser, frames,
    methods; checked without torch) and implement :meth:`load`.
    """


    def load(self, path: Path, device: torch.device, dtype: torch.dtype):
        raise NotImplementedError

    def lora_targets(self, targets: str) -> str:
        """The peft target regex of a named target set (or a regex) on this backbone's
        denoiser as the pipeline holds it (``model.unet``)."""
        return targets

    def train_config(self, cfg, label: str = ""):
        """``cfg`` (a :class:`motionmatcher.customization.training.TrainConfig`) for this backbone: the loss
        checked (:meth:`check_method`), named LoRA target sets resolved to its module names
        (:meth:`lora_targets`); declared ``trainable:`` parts (MotionDirector, VMC) refused on
        a DiT."""
        import dataclasses

        method = label or "this method"
        self.check_method(method, cfg.loss, None)
        if cfg.trainable and self.supported_losses is not None:
            raise BackboneError(f"{method}: `trainable:` parts (UNet module sets) are not available on the "
                                f"{self.name} backbone")
        lora = dict(cfg.lora)
        lora["targets"] = self.lora_targets(lora.get("targets", "motionmatcher"))
        return dataclasses.replace(cfg, lora=lora)

    def __repr__(self) -> str:
        return f"<backbone {self.name}>"


class DiTDenoiser(torch.nn.Module):
    """A DiT transformer behind the UNet's calling convention, so the shared training loop,
    sampler and inversion drive it unchanged::

        denoiser(sample (B, C, F, h, w), timestep, encoder_hidden_states=packed_text).sample

    It strips the padding mask from the packed text (:func:`unpack_text`), converts the latent
    layout to the transformer's own (CogVideoX: (B, F, C, h, w)) and back, builds what the
    official pipeline passes besides (CogVideoX-5B's RoPE), and broadcasts the timestep over the
    batch. Its parameters are the transformer's (module names ``transformer.…``), so LoRA
    adapters, dropout switches and ``requires_grad`` work as on the UNet.
    """

    def __init__(self, transformer: torch.nn.Module, backbone: "Backbone", vae_scale_factor: int):
        super().__init__()
        self.transformer = transformer
        self.backbone = backbone
        self.vae_scale_factor = vae_scale_factor

    @property
    def config(self):
        return self.transformer.config

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def to_native(self, latents: torch.Tensor) -> torch.Tensor:
        """Pipeline layout (B, C, F, h, w) -> the transformer's own."""
        return latents.permute(0, 2, 1, 3, 4) if self.backbone.latent_layout == "BFCHW" else latents

    def from_native(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.permute(0, 2, 1, 3, 4) if self.backbone.latent_layout == "BFCHW" else latents

    def forward(self, sample, timestep, encoder_hidden_states, return_dict: bool = True, **kwargs):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        states, _ = unpack_text(encoder_hidden_states)
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t.expand(sample.shape[0])
        out = self.backbone.denoise(self, self.to_native(sample), t, states.to(sample.dtype))
        out = self.from_native(out)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    def motion_features(self, latents, timesteps, text_embeddings, *, ca_blocks=None, tsa_blocks=None,
                        return_ca=True, return_tsa=True, early_stop=True, mode="same_position", **_):
        """CA and TSA of ``latents`` (pipeline layout) from the transformer as it is
        (:func:`motionmatcher.backbones.dit_features.dit_motion_features`); layers default to
        ``DEFAULT_LAYERS[arch]``. Shapes as the UNet's
        :func:`motionmatcher.customization.motion_features.motion_features`."""
        from .dit_features import DEFAULT_LAYERS, dit_motion_features

        states, mask = unpack_text(text_embeddings)
        defaults = DEFAULT_LAYERS[self.backbone.arch]
        depth = self.transformer.config.num_layers
        ca_blocks = _blocks(ca_blocks, defaults["ca"], depth, self.backbone.real_depth, "ca_blocks")
        tsa_blocks = _blocks(tsa_blocks, defaults["tsa"], depth, self.backbone.real_depth, "tsa_blocks")
        t = torch.as_tensor(timesteps, device=latents.device)
        if t.ndim == 0:
            t = t.expand(latents.shape[0])
        return dit_motion_features(
            self.transformer, self.backbone.arch, self.to_native(latents), t, states.to(latents.dtype),
            ca_blocks=ca_blocks, tsa_blocks=tsa_blocks, text_mask=mask, return_ca=return_ca,
            return_tsa=return_tsa, early_stop=early_stop, mode=mode)


def _blocks(blocks, defaults, depth: int, real_depth: int, what: str) -> list[int]:
    """The configured blocks (checked against ``depth``), or the defaults: the published
    blocks of the real ``real_depth``-block model, and for a shallower one (the tiny models)
    the blocks at the same relative depth, ``⌊b · depth / real_depth⌋``."""
    if blocks is not None:
        blocks = [int(b) for b in blocks]
        bad = [b for b in blocks if not 0 <= b < depth]
        if not blocks or bad:
            raise BackboneError(f"{what} {blocks}: the transformer has blocks 0..{depth - 1}")
        return blocks
    if depth >= real_depth:
        return list(defaults)
    return sorted({b * depth // real_depth for b in defaults})


@dataclass
class DiTModel:
    """A loaded DiT text-to-video model, with the attributes the pipeline uses on
    :class:`motionmatcher.backbones.models.T2VModel` (``unet`` is the :class:`DiTDenoiser`)."""

    unet: DiTDenoiser
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    identity: str
    path: Path
    backbone: Backbone
    max_text_length: int
    #: pass the padding mask to the text encoder (Wan: yes; CogVideoX: no, as its pipeline)
    text_encoder_mask: bool = True
    #: zero the states of padding tokens (Wan's pipeline does)
    zero_padding: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def vae_scale_factor(self) -> int:
        return self.unet.vae_scale_factor

    @property
    def transformer(self):
        return self.unet.transformer

    def latent_frames(self, n_frames: int) -> int:
        return self.backbone.latent_frames(n_frames, self.vae.config)

    def ddim_scheduler(self):
        """The training schedule (``add_noise``, the target, ``num_train_timesteps``)."""
        return self.backbone.training_schedule(self.scheduler_config)

    def ddpm_scheduler(self):
        return self.ddim_scheduler()

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], *, warn_context: str = "") -> torch.Tensor:
        """Packed text ``(len(prompts), L, D + 1)`` (:func:`pack_text`), L the backbone's max
        length (Wan 512, CogVideoX 226), as the official pipeline encodes it; prompts longer
        than L tokens are truncated with a warning naming ``warn_context``."""
        tok = self.tokenizer
        L = self.max_text_length
        for p in prompts:
            n = len(tok(p, truncation=False).input_ids)
            if n > L:
                log.warning("%sprompt has %d tokens, more than the text encoder's %d: truncated: %r",
                            f"{warn_context}: " if warn_context else "", n, L, p)
        enc = tok(list(prompts), padding="max_length", max_length=L, truncation=True,
                  add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        dev = next(self.text_encoder.parameters()).device
        ids, mask = enc.input_ids.to(dev), enc.attention_mask.to(dev)
        if self.text_encoder_mask:
            states = self.text_encoder(ids, attention_mask=mask).last_hidden_state
        else:
            states = self.text_encoder(ids).last_hidden_state
        if self.zero_padding:
            states = states * mask.unsqueeze(-1).to(states.dtype)
        return pack_text(states, mask.bool())


def load_tokenizer(path: Path):
    """The directory's tokenizer (``AutoTokenizer``); a real T5/UMT5 tokenizer shipped only as
    ``spiece.model`` needs ``sentencepiece``: say so."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path / "tokenizer")
    except (ImportError, ValueError, OSError) as e:
        raise BackboneError(
            f"{path / 'tokenizer'}: cannot load the tokenizer ({e.__class__.__name__}: {e}). A T5/UMT5 "
            "tokenizer without tokenizer.json needs the `sentencepiece` package, or a tokenizer.json "
            "converted once on a machine that has it.") from None


def dit_lora_targets(arch: str, targets: str, official: str) -> str:
    """A named target set on a DiT, as a regex over the denoiser's module names
    (``transformer.<name>``, :class:`~.base.DiTDenoiser`):

    * ``official``: the official fine-tuning scripts' set -- the attention projections
      ``to_q/to_k/to_v/to_out.0`` of every attention (CogVideoX: diffusers' LoRA example; Wan:
      finetrainers, ``attn1`` and ``attn2``);
    * ``motionmatcher`` (the default of the trained methods): MotionMatcher's own choice carried
      over from the UNet (``motionmatcher.customization.lora.MOTIONMATCHER_TARGETS``: self-attention and
      feed-forward, never the text cross-attention): the video self-attention projections and
      the feed-forward (Wan ``attn1`` + ``ffn``; CogVideoX the joint ``attn1`` + ``ff``);
    * any other name of :data:`motionmatcher.customization.lora.TARGETS` is a UNet set: refused;
    * anything else is a regex over the denoiser's module names, used as given.

    (:func:`motionmatcher.backbones.dit_features.lora_targets` builds both sets.)
    """
    from ..customization.lora import TARGETS
    from .dit_features import lora_targets

    if targets == "official":
        pattern = lora_targets(arch, ffn=False, cross_attention=True)
    elif targets == "motionmatcher":
        pattern = lora_targets(arch, ffn=True, cross_attention=False)
    elif targets in TARGETS:
        raise BackboneError(f"LoRA targets {targets!r} name UNet modules; on the {arch} backbone use "
                            "`motionmatcher`, `official` or a regex over `transformer.…` module names")
    else:
        return targets
    return rf"transformer\.(?:{pattern})"

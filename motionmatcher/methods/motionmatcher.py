"""MotionMatcher: motion feature matching (Wu et al. 2025, Sec. 3) -- the ``motion_matching``
loss of the ``motionmatcher`` method and its ablations (``motionmatcher_ca``, ...).

Notation: :mod:`motionmatcher.customization.diffusion`. Instead of matching the noise, match *motion
features* -- the attention maps CA (cross-attention, where each word is) and TSA (temporal
self-attention, frame-to-frame correspondence) that the frozen pre-trained UNet ``ε_φ``
produces on a slightly denoised latent:

1. one deterministic DDIM step (η = 0) from ``t`` to ``t' = t − k`` (``k`` =
   ``num_denoise_steps``), once with the predicted noise and once with the true one::

       x̂_0 = (z_t − √(1−ᾱ_t) ε̂) / √ᾱ_t,       ẑ_{t'} = √ᾱ_{t'} x̂_0 + √(1−ᾱ_{t'}) ε̂
       x_0  = (z_t − √(1−ᾱ_t) ε ) / √ᾱ_t,       z*_{t'} = √ᾱ_{t'} x_0 + √(1−ᾱ_{t'}) ε

2. motion features of both with the *base* model (LoRA off) at ``t'``:
   ``F(z) = (CA_φ(z, t', c), TSA_φ(z, t', c))`` (:func:`~motionmatcher.customization.motion_features.motion_features`);

3. ``L = λ_CA · MSE(CA(ẑ), CA(z*)) + λ_TSA · MSE(TSA(ẑ), TSA(z*))``.

On a DiT backbone (docs/backbones.md) the step of 1. is that schedule's own
(:func:`~motionmatcher.customization.diffusion.denoise_step`: DDIM from v̂ on CogVideoX, the Euler step
``z_{σ'} = z_σ + (σ' − σ) v̂`` with σ = t/1000 on Wan, and the true target v / ε − z_0 for
``z*``) and the features of 2. our DiT definitions of CA and TSA
(:mod:`motionmatcher.backbones.dit_features`).

All three forwards run without the base model's dropout
(:func:`~motionmatcher.customization.diffusion.base_dropout_disabled`; the official UNet is built with dropout
0, stock diffusers' ``TemporalConvLayer`` with 0.1); the LoRA's own dropout stays. MotionDirector
and VMC keep the dropout as built, as their official code (``unet.train()`` on a UNet whose
temporal convs have dropout 0.1).

The gradient reaches the LoRA weights only through ``ε̂`` (the extractor runs with the
adapter disabled); the target branch ``z*`` does not depend on θ, so it runs under
``torch.no_grad`` -- the same gradient, without storing its graph.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F

from ..customization.diffusion import base_dropout_disabled, denoise_step, noise_target, noisy_prediction
from ..customization.lora import lora_disabled
from ..customization.module_index import index_of
from ..customization.motion_features import motion_features

__all__ = ["MotionFeatureLayers", "MotionLossWeights", "motion_matching_loss"]


@contextmanager
def _restore_requires_grad(module: torch.nn.Module):
    """peft's ``enable_adapters(True)`` (used to switch the adapter back on) marks the active
    adapter trainable; put every parameter's ``requires_grad`` back as it was."""
    index = index_of(module)  # inside the training loop: listed once (customization.module_index)
    flags = [(p, p.requires_grad) for p in (index.parameters if index is not None else module.parameters())]
    try:
        yield
    finally:
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)


@contextmanager
def _as_base_model(unet, device_type: str, fp32: bool):
    """The frozen pre-trained ``ε_φ`` of the feature extractor: the adapter disabled (and
    ``requires_grad`` flags restored after), autocast off when ``fp32``."""
    autocast_off = torch.autocast(device_type, enabled=False) if fp32 else nullcontext()
    with _restore_requires_grad(unet), lora_disabled(unet), autocast_off:
        yield


@dataclass(frozen=True)
class MotionLossWeights:
    """λ_CA, λ_TSA of ``L = λ_CA · MSE(CA(ẑ), CA(z*)) + λ_TSA · MSE(TSA(ẑ), TSA(z*))``
    (Wu et al. 2025, Sec. 3; the official configs use 2000 and 2000). A term with weight 0 is
    not computed."""

    ca_weight: float = 2000.0
    tsa_weight: float = 2000.0

    def __post_init__(self):
        if self.ca_weight < 0 or self.tsa_weight < 0:
            raise ValueError("loss weights must be non-negative")
        if not (self.uses_ca or self.uses_tsa):
            raise ValueError("ca_weight and tsa_weight are both 0: the loss would be constant")

    @property
    def uses_ca(self) -> bool:
        return self.ca_weight > 0

    @property
    def uses_tsa(self) -> bool:
        return self.tsa_weight > 0

    def combine(self, pred, target, device) -> dict[str, torch.Tensor]:
        """``{"loss", "ca", "tsa"}`` from the (CA, TSA) features of ẑ (``pred``) and z*
        (``target``); each MSE in float32, a term not computed reported as NaN."""
        (ca_pred, tsa_pred), (ca_tgt, tsa_tgt) = pred, target
        nan = torch.full((), float("nan"), device=device)
        loss = torch.zeros((), device=device)
        out = {}
        if self.uses_ca:
            l_ca = F.mse_loss(ca_pred.float(), ca_tgt.float())
            loss = loss + self.ca_weight * l_ca
            out["ca"] = l_ca.detach()
        else:
            out["ca"] = nan
        if self.uses_tsa:
            l_tsa = F.mse_loss(tsa_pred.float(), tsa_tgt.float())
            loss = loss + self.tsa_weight * l_tsa
            out["tsa"] = l_tsa.detach()
        else:
            out["tsa"] = nan
        return {"loss": loss, **out}


@dataclass(frozen=True)
class MotionFeatureLayers:
    """Where the motion features CA and TSA are read. On the UNet: their resolution as a
    fraction of the latent size and the temporal self-attentions that make TSA
    (:func:`~motionmatcher.customization.motion_features.motion_features`); on a DiT
    (:class:`~motionmatcher.backbones.base.DiTDenoiser`): the transformer blocks of CA and TSA
    (None: ``DEFAULT_LAYERS``) and the TSA mode (:mod:`motionmatcher.backbones.dit_features`)."""

    spatial_scale_factor: int = 4
    temporal_scale_factor: int = 4
    temporal_attn_layers: Sequence[str] = ("attn1", "attn2")
    ca_blocks: Sequence[int] | None = None
    tsa_blocks: Sequence[int] | None = None
    feature_mode: str = "same_position"

    def extractor(self, unet, return_ca: bool, return_tsa: bool):
        """``F(z, t, c) -> (CA, TSA)`` of ``unet`` as it is (a feature not asked for is None)."""
        if hasattr(unet, "motion_features"):  # a DiT backbone (motionmatcher.backbones.base.DiTDenoiser)
            return partial(unet.motion_features, ca_blocks=self.ca_blocks, tsa_blocks=self.tsa_blocks,
                           mode=self.feature_mode, return_ca=return_ca, return_tsa=return_tsa)
        return partial(motion_features, unet, spatial_scale_factor=self.spatial_scale_factor,
                       temporal_scale_factor=self.temporal_scale_factor,
                       temporal_attn_layers=self.temporal_attn_layers,
                       return_ca=return_ca, return_tsa=return_tsa)


def motion_matching_loss(
    unet,
    scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    text_embeddings: torch.Tensor,
    *,
    spatial_scale_factor: int = 4,
    temporal_scale_factor: int = 4,
    ca_weight: float = 2000.0,
    tsa_weight: float = 2000.0,
    num_denoise_steps: int = 1,
    temporal_attn_layers: Sequence[str] = ("attn1", "attn2"),
    target_no_grad: bool = True,
    base_dropout: bool = False,
    fp32_extractor: bool = False,
    ca_blocks: Sequence[int] | None = None,
    tsa_blocks: Sequence[int] | None = None,
    feature_mode: str = "same_position",
) -> dict[str, torch.Tensor]:
    """Motion feature matching loss ``λ_CA·MSE(CA(ẑ), CA(z*)) + λ_TSA·MSE(TSA(ẑ), TSA(z*))``.

    Args:
        unet: ``UNet3DConditionModel`` with the LoRA being trained, adapter enabled.
        scheduler: a diffusers ``DDIMScheduler`` or ``DDPMScheduler`` (only ``add_noise`` and
            ``alphas_cumprod`` are used).
        latents: clean latent video ``z_0``, (B, C, F, h, w).
        noise: ε, same shape.
        timesteps: (B,) integer timesteps ``t`` (per sample).
        text_embeddings: (B, 77, D).
        spatial_scale_factor, temporal_scale_factor: resolution of CA / TSA as a fraction of
            the latent size (see :func:`~motionmatcher.customization.motion_features.motion_features`).
        ca_weight, tsa_weight: λ_CA, λ_TSA (the official configs use 2000 and 2000). A term
            with weight 0 is not computed (its layers are not captured, the forward may stop
            earlier) and is reported as NaN.
        num_denoise_steps: ``k``, the DDIM stride: features are read at ``t' = max(t − k, 0)``.
        temporal_attn_layers: which temporal self-attentions make TSA (default both, as the
            official code).
        target_no_grad: run the target branch ``z*`` under ``torch.no_grad`` (default). False
            records its graph as the official code does -- the gradient is the same (the
            target does not depend on the trained weights); only for tests and benchmarks.
        base_dropout: keep the base model's dropout layers active in train mode. Default False
            (:func:`~motionmatcher.customization.diffusion.base_dropout_disabled` around all three forwards),
            as the official UNet, built with dropout 0: the matched signal ``ẑ − z* = c·(ε̂ − ε)``
            with ``|c| ≈ 0.003–0.006`` for t ∈ [500, 1000) is far below dropout's noise.
        fp32_extractor: run both feature-extractor passes in float32 (autocast off) while the
            ``ε̂`` forward stays under the caller's autocast (the DDIM step and the MSE are
            float32 always); see docs/precision.md.
        ca_blocks, tsa_blocks, feature_mode: on a DiT backbone (``unet`` a
            :class:`~motionmatcher.backbones.base.DiTDenoiser`), the transformer blocks whose
            attention makes CA / TSA (None: ``DEFAULT_LAYERS`` of
            :mod:`motionmatcher.backbones.dit_features`) and the TSA mode; the scale factors
            and ``temporal_attn_layers`` are the UNet's and unused there (one token grid).
            The one-step update is the backbone schedule's
            (:func:`~motionmatcher.customization.diffusion.denoise_step`: DDIM for ε and v, Euler for flow
            matching), the target branch steps with the true target
            (:func:`~motionmatcher.customization.diffusion.noise_target`: ε, v or ε − z_0).

    Returns:
        ``{"loss": weighted total, "ca": MSE of CA, "tsa": MSE of TSA}`` -- scalar float32
        tensors; ``loss`` carries the graph to the LoRA weights, ``ca``/``tsa`` are detached
        (NaN when not computed).

    The model is left as found: attention processors, adapter enabled/disabled state,
    ``requires_grad`` flags and train/eval mode (never changed).
    """
    if num_denoise_steps < 1:
        raise ValueError(f"num_denoise_steps must be >= 1, got {num_denoise_steps}")
    weights = MotionLossWeights(ca_weight, tsa_weight)
    layers = MotionFeatureLayers(spatial_scale_factor, temporal_scale_factor, temporal_attn_layers,
                                 ca_blocks, tsa_blocks, feature_mode)
    features = layers.extractor(unet, weights.uses_ca, weights.uses_tsa)

    with base_dropout_disabled(unet, not base_dropout):
        # 1. one denoising step t -> t' from ε̂ (graph to the LoRA) and from the true ε
        timesteps, noisy, noise_pred = noisy_prediction(unet, scheduler, latents, noise, timesteps,
                                                        text_embeddings)
        prev_t = (timesteps - num_denoise_steps).clamp(min=0)
        z_pred = denoise_step(scheduler, noisy, noise_pred, timesteps, prev_t)
        # 2. motion features of both with the base model
        with _as_base_model(unet, latents.device.type, fp32_extractor):
            with torch.no_grad() if target_no_grad else nullcontext():
                z_target = denoise_step(scheduler, noisy, noise_target(scheduler, latents, noise, timesteps),
                                        timesteps, prev_t)
                target = features(z_target, prev_t, text_embeddings)
            pred = features(z_pred, prev_t, text_embeddings)
    # 3. the weighted feature MSEs
    return weights.combine(pred, target, latents.device)

"""Training losses: MotionMatcher's motion feature matching loss and the plain DDPM loss.

Notation (DDPM/DDIM): ``ᾱ_t`` = ``scheduler.alphas_cumprod[t]``; forward diffusion
``z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε`` with ε ~ N(0, I); the UNet with LoRA predicts ``ε̂_θ(z_t, t, c)``.

**Motion feature matching** (MotionMatcher, Wu et al. 2025, Sec. 3). Instead of matching the
noise, match *motion features* -- the attention maps CA (cross-attention, where each word
is) and TSA (temporal self-attention, frame-to-frame correspondence) that the frozen
pre-trained UNet ``ε_φ`` produces on a slightly denoised latent:

1. one deterministic DDIM step (η = 0) from ``t`` to ``t' = t − k`` (``k`` =
   ``num_denoise_steps``), once with the predicted noise and once with the true one::

       x̂_0 = (z_t − √(1−ᾱ_t) ε̂) / √ᾱ_t,       ẑ_{t'} = √ᾱ_{t'} x̂_0 + √(1−ᾱ_{t'}) ε̂
       x_0  = (z_t − √(1−ᾱ_t) ε ) / √ᾱ_t,       z*_{t'} = √ᾱ_{t'} x_0 + √(1−ᾱ_{t'}) ε

2. motion features of both with the *base* model (LoRA off) at ``t'``:
   ``F(z) = (CA_φ(z, t', c), TSA_φ(z, t', c))`` (:func:`~motionmatcher.motion_features.motion_features`);

3. ``L = λ_CA · MSE(CA(ẑ), CA(z*)) + λ_TSA · MSE(TSA(ẑ), TSA(z*))``.

The gradient reaches the LoRA weights only through ``ε̂`` (the extractor runs with the
adapter disabled); the target branch ``z*`` does not depend on θ, so it runs under
``torch.no_grad`` -- the same gradient, without storing its graph.

**Noise prediction** (DDPM, Ho et al. 2020): ``L = ‖ε̂_θ(z_t, t, c) − ε‖²`` (mean), the
``ddpm_lora`` baseline.

Both losses take ``(unet, scheduler, latents, noise, timesteps, text_embeddings)`` and return
a dict of scalar tensors with at least ``loss`` (differentiable); see :data:`LOSSES`.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .lora import lora_disabled
from .motion_features import motion_features

__all__ = ["motion_matching_loss", "noise_prediction_loss", "ddim_step", "LOSSES"]


def _alphas_cumprod(scheduler, device) -> torch.Tensor:
    return torch.as_tensor(scheduler.alphas_cumprod).to(device=device, dtype=torch.float32)


def _expand(a: torch.Tensor, ndim: int) -> torch.Tensor:
    return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def ddim_step(
    sample: torch.Tensor,
    noise_pred: torch.Tensor,
    timesteps: torch.Tensor,
    prev_timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    final_alpha_cumprod: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Deterministic DDIM step (η = 0, ε-prediction, no clipping) from ``t`` to ``t_prev``.

    ``x̂_0 = (z_t − √(1−ᾱ_t) ε) / √ᾱ_t``; ``z_{t_prev} = √ᾱ_{t_prev} x̂_0 + √(1−ᾱ_{t_prev}) ε``.
    Per-sample ``timesteps``/``prev_timesteps`` (shape (B,) or scalar). As in
    ``DDIMScheduler.step``, a negative ``t_prev`` uses ``final_alpha_cumprod`` (default
    ``alphas_cumprod[0]``, i.e. ``set_alpha_to_one=False``). Computed in float32, returned in
    ``sample``'s dtype.
    """
    ac = alphas_cumprod.to(device=sample.device, dtype=torch.float32)
    t = torch.as_tensor(timesteps, device=sample.device).long().expand(sample.shape[0])
    tp = torch.as_tensor(prev_timesteps, device=sample.device).long().expand(sample.shape[0])
    final = ac[0] if final_alpha_cumprod is None else torch.as_tensor(
        final_alpha_cumprod, device=sample.device, dtype=torch.float32)
    a_t = _expand(ac[t], sample.ndim)
    a_prev = _expand(torch.where(tp >= 0, ac[tp.clamp(min=0)], final), sample.ndim)
    z, eps = sample.float(), noise_pred.float()
    x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).to(sample.dtype)


@contextmanager
def _restore_requires_grad(module: torch.nn.Module):
    """peft's ``enable_adapters(True)`` (used to switch the adapter back on) marks the active
    adapter trainable; put every parameter's ``requires_grad`` back as it was."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        yield
    finally:
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)


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
            the latent size (see :func:`~motionmatcher.motion_features.motion_features`).
        ca_weight, tsa_weight: λ_CA, λ_TSA (the official configs use 2000 and 2000). A term
            with weight 0 is not computed (its layers are not captured, the forward may stop
            earlier) and is reported as NaN.
        num_denoise_steps: ``k``, the DDIM stride: features are read at ``t' = max(t − k, 0)``.
        temporal_attn_layers: which temporal self-attentions make TSA (default both, as the
            official code).
        target_no_grad: run the target branch ``z*`` under ``torch.no_grad`` (default). False
            records its graph as the official code does -- the gradient is the same (the
            target does not depend on the trained weights); only for tests and benchmarks.

    Returns:
        ``{"loss": weighted total, "ca": MSE of CA, "tsa": MSE of TSA}`` -- scalar float32
        tensors; ``loss`` carries the graph to the LoRA weights, ``ca``/``tsa`` are detached
        (NaN when not computed).

    The model is left as found: attention processors, adapter enabled/disabled state,
    ``requires_grad`` flags and train/eval mode (never changed).
    """
    if num_denoise_steps < 1:
        raise ValueError(f"num_denoise_steps must be >= 1, got {num_denoise_steps}")
    if ca_weight < 0 or tsa_weight < 0:
        raise ValueError("loss weights must be non-negative")
    do_ca, do_tsa = ca_weight > 0, tsa_weight > 0
    if not (do_ca or do_tsa):
        raise ValueError("ca_weight and tsa_weight are both 0: the loss would be constant")
    bsz = latents.shape[0]
    timesteps = torch.as_tensor(timesteps, device=latents.device).long().expand(bsz)
    prev_t = (timesteps - num_denoise_steps).clamp(min=0)
    ac = _alphas_cumprod(scheduler, latents.device)
    feature_kwargs = dict(spatial_scale_factor=spatial_scale_factor,
                          temporal_scale_factor=temporal_scale_factor,
                          temporal_attn_layers=temporal_attn_layers,
                          return_ca=do_ca, return_tsa=do_tsa)

    noisy = scheduler.add_noise(latents, noise, timesteps)
    noise_pred = unet(noisy, timesteps, encoder_hidden_states=text_embeddings, return_dict=False)[0]
    z_pred = ddim_step(noisy, noise_pred, timesteps, prev_t, ac)

    with _restore_requires_grad(unet), lora_disabled(unet):
        with torch.no_grad() if target_no_grad else nullcontext():
            z_target = ddim_step(noisy, noise, timesteps, prev_t, ac)
            ca_tgt, tsa_tgt = motion_features(unet, z_target, prev_t, text_embeddings, **feature_kwargs)
        ca_pred, tsa_pred = motion_features(unet, z_pred, prev_t, text_embeddings, **feature_kwargs)

    nan = torch.full((), float("nan"), device=latents.device)
    loss = torch.zeros((), device=latents.device)
    out = {}
    if do_ca:
        l_ca = F.mse_loss(ca_pred, ca_tgt)
        loss = loss + ca_weight * l_ca
        out["ca"] = l_ca.detach()
    else:
        out["ca"] = nan
    if do_tsa:
        l_tsa = F.mse_loss(tsa_pred, tsa_tgt)
        loss = loss + tsa_weight * l_tsa
        out["tsa"] = l_tsa.detach()
    else:
        out["tsa"] = nan
    return {"loss": loss, **out}


def noise_prediction_loss(
    unet,
    scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    text_embeddings: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """DDPM loss ``mean((ε̂_θ(z_t, t, c) − ε)²)`` with ``z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε``.

    (ε-prediction, as Zeroscope; for a ``v_prediction`` scheduler the target is the velocity.)
    """
    timesteps = torch.as_tensor(timesteps, device=latents.device).long().expand(latents.shape[0])
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, encoder_hidden_states=text_embeddings, return_dict=False)[0]
    prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    return {"loss": F.mse_loss(pred.float(), target.float())}


#: Registry used by the training loop: ``LOSSES[name](unet, scheduler, latents, noise,
#: timesteps, text_embeddings, **loss_kwargs)`` → dict of scalar tensors with ``loss``.
LOSSES: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "motion_matching": motion_matching_loss,
    "noise_prediction": noise_prediction_loss,
}

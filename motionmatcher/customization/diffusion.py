"""The diffusion pieces the training losses share: forward noising, the prediction target, one
deterministic DDIM step, and the base model's dropout switch.

Notation (DDPM/DDIM): ``ᾱ_t`` = ``scheduler.alphas_cumprod[t]``; forward diffusion

    z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε,   ε ~ N(0, I)

(:func:`noisy_prediction`); the UNet with the method's adapter predicts ``ε̂_θ(z_t, t, c)``,
compared with ε (or the velocity ``v`` for a ``v_prediction`` scheduler: :func:`noise_target`).
A deterministic DDIM step (η = 0) from ``t`` to ``t_prev`` (:func:`ddim_step`)::

    x̂_0 = (z_t − √(1−ᾱ_t) ε̂) / √ᾱ_t,      z_{t_prev} = √ᾱ_{t_prev} x̂_0 + √(1−ᾱ_{t_prev}) ε̂

Each method's loss is in its own module of :mod:`motionmatcher.methods`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from .module_index import index_of

__all__ = ["alphas_cumprod", "base_dropout_disabled", "ddim_step", "denoise_step", "noise_target",
           "noisy_prediction"]


def alphas_cumprod(scheduler, device) -> torch.Tensor:
    """``scheduler.alphas_cumprod`` as a float32 tensor on ``device``."""
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


def denoise_step(scheduler, sample: torch.Tensor, prediction: torch.Tensor, timesteps, prev_timesteps) -> torch.Tensor:
    """One deterministic step from ``t`` to ``t_prev`` of the schedule, given the model's
    ``prediction`` (what :func:`noise_target` names):

    * ``epsilon``: :func:`ddim_step` exactly;
    * ``v_prediction``: DDIM (η = 0) from ``x̂_0 = √ᾱ_t z_t − √(1−ᾱ_t) v̂`` and
      ``ε̂ = √ᾱ_t v̂ + √(1−ᾱ_t) z_t``: ``z_{t_prev} = √ᾱ_{t_prev} x̂_0 + √(1−ᾱ_{t_prev}) ε̂``
      (no division by √ᾱ_t, so zero-terminal-SNR schedules are fine);
    * ``flow_prediction``: the Euler step ``z_{σ'} = z_σ + (σ' − σ) v̂``, σ = t/T
      (:class:`motionmatcher.backbones.flow.FlowMatchSchedule`).
    """
    prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
    if prediction_type == "epsilon":
        return ddim_step(sample, prediction, timesteps, prev_timesteps, alphas_cumprod(scheduler, sample.device))
    if prediction_type == "flow_prediction":
        return scheduler.step(sample, prediction, timesteps, prev_timesteps)
    if prediction_type != "v_prediction":
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    ac = alphas_cumprod(scheduler, sample.device)
    t = torch.as_tensor(timesteps, device=sample.device).long().expand(sample.shape[0])
    tp = torch.as_tensor(prev_timesteps, device=sample.device).long().expand(sample.shape[0])
    final = torch.as_tensor(getattr(scheduler, "final_alpha_cumprod", ac[0]), device=sample.device,
                            dtype=torch.float32)
    a_t = _expand(ac[t], sample.ndim)
    a_prev = _expand(torch.where(tp >= 0, ac[tp.clamp(min=0)], final), sample.ndim)
    z, v = sample.float(), prediction.float()
    x0 = a_t.sqrt() * z - (1 - a_t).sqrt() * v
    eps = a_t.sqrt() * v + (1 - a_t).sqrt() * z
    return (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).to(sample.dtype)


def noisy_prediction(unet, scheduler, latents, noise, timesteps, text_embeddings):
    """``(t, z_t, ε̂_θ(z_t, t, c))`` with ``z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε``, t broadcast over the batch."""
    timesteps = torch.as_tensor(timesteps, device=latents.device).long().expand(latents.shape[0])
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, encoder_hidden_states=text_embeddings, return_dict=False)[0]
    return timesteps, noisy, pred


def noise_target(scheduler, latents, noise, timesteps) -> torch.Tensor:
    """What the UNet predicts: ε (``epsilon``) or the velocity (``v_prediction``)."""
    prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if prediction_type == "flow_prediction":  # flow matching (Wan): dz_σ/dσ = ε − z_0
        return scheduler.velocity(latents, noise)
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


@contextmanager
def base_dropout_disabled(unet: torch.nn.Module, disabled: bool = True):
    """Inside the block every dropout layer of the base model has ``p = 0`` (the LoRA's own
    ``lora_dropout`` stays); ``p`` is put back after. Stock diffusers builds each
    ``TemporalConvLayer`` with dropout 0.1, the official MotionMatcher UNet with 0.0: in train
    mode the former draws a new mask in every forward. ``disabled=False``: no change.
    (MotionMatcher's loss and the ``ddpm_lora`` ablation use it.)"""
    saved = []
    if disabled:
        index = index_of(unet)  # inside the training loop: listed once (customization.module_index)
        dropouts = index.dropouts if index is not None else (
            (n, m) for n, m in unet.named_modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd))
        for name, m in dropouts:
            if ".lora_dropout." not in f".{name}.":
                saved.append((m, m.p))
                m.p = 0.0
    try:
        yield unet
    finally:
        for m, p in saved:
            m.p = p

"""DDPM-LoRA: the plain noise-prediction loss (Ho et al. 2020) of the ``ddpm_lora`` baseline
(a LoRA trained as a diffusion model, the ablation of MotionMatcher's feature matching).

Notation: :mod:`motionmatcher.customization.diffusion`. With ``z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε``:

    L = ‖ε̂_θ(z_t, t, c) − ε‖²   (mean over all elements)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..customization.diffusion import base_dropout_disabled, noise_target, noisy_prediction

__all__ = ["noise_prediction_loss"]


def noise_prediction_loss(
    unet,
    scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    text_embeddings: torch.Tensor,
    *,
    base_dropout: bool = True,
) -> dict[str, torch.Tensor]:
    """DDPM loss ``mean((ε̂_θ(z_t, t, c) − ε)²)`` with ``z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε``.

    (ε-prediction, as Zeroscope; for a ``v_prediction`` scheduler the target is the velocity.)
    ``base_dropout=False`` switches the base model's dropout off
    (:func:`~motionmatcher.customization.diffusion.base_dropout_disabled`): the ``ddpm_lora`` ablation then
    runs on the same dropout-free UNet as MotionMatcher.
    """
    with base_dropout_disabled(unet, not base_dropout):
        timesteps, _, pred = noisy_prediction(unet, scheduler, latents, noise, timesteps, text_embeddings)
    target = noise_target(scheduler, latents, noise, timesteps)
    return {"loss": F.mse_loss(pred.float(), target.float())}

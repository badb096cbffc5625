"""VMC (Jeong et al. 2024, "VMC: Video Motion Customization using Temporal Attention Adaption
for Text-to-Video Diffusion Models"): the motion distillation loss (``motion_distillation``),
on Zeroscope with a full fine-tune of the temporal attentions' q/k/v (``trainable:
temporal_qkv``).

With the frame residuals of a (B, C, F, h, w) tensor (notation: :mod:`motionmatcher.customization.diffusion`)

    R(x) = |x[:, :, 1:] − x[:, :, :-1]|     (:func:`frame_residual`)

the loss is

    L = 1 − mean(cos(R(ε̂_θ(z_t, t, c)), R(ε)))

the cosine taken along the frame axis, as the official code. The base model's dropout stays as
built (official ``unet.train()``). At inference VMC samples from the DDIM inversion of the
reference (``sample.noise_prior: 1.0``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..customization.diffusion import noise_target, noisy_prediction

__all__ = ["frame_residual", "motion_distillation_loss", "motion_distillation_residual_loss"]


def frame_residual(x: torch.Tensor) -> torch.Tensor:
    """``|x[:, :, 1:] − x[:, :, :-1]|`` of a (B, C, F, h, w) tensor: (B, C, F−1, h, w)."""
    return (x[:, :, 1:] - x[:, :, :-1]).abs()


def motion_distillation_residual_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − mean(cos(R(pred), R(target)))``, cosine along the frame axis (dim 2); float32."""
    if pred.shape[2] < 2:
        raise ValueError("the VMC loss needs at least 2 frames")
    cos = F.cosine_similarity(frame_residual(pred.float()), frame_residual(target.float()), dim=2)
    return 1.0 - cos.mean()


def motion_distillation_loss(
    unet,
    scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    text_embeddings: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """VMC's motion distillation loss ``1 − mean(cos(R(ε̂_θ(z_t)), R(ε)))`` (module docstring)."""
    timesteps, _, pred = noisy_prediction(unet, scheduler, latents, noise, timesteps, text_embeddings)
    target = noise_target(scheduler, latents, noise, timesteps)
    return {"loss": motion_distillation_residual_loss(pred, target)}

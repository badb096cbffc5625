"""Zeroscope's ``UNet3DConditionModel`` behind the backbone interface.

Everything here delegates to the modules that implemented this path before the interface
existed (:mod:`motionmatcher.backbones.models`, :mod:`motionmatcher.customization.diffusion`,
:mod:`motionmatcher.customization.motion_features`, :mod:`motionmatcher.customization.lora`), so the Zeroscope path is
bit-identical: ε-prediction on ``ᾱ_t``, DDIM sampling and inversion, CA/TSA from the down
blocks' spatial cross-attention and temporal self-attention, the forward cut after the last
captured down block (:func:`motionmatcher.customization.motion_features.forward_until`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Backbone


class UNet3DBackbone(Backbone):
    name = "unet3d"
    arch = None
    denoiser_class = "UNet3DConditionModel"
    denoiser_folder = "unet"
    latent_layout = "BCFHW"
    prediction_type = "epsilon"
    supported_losses = None  # every method
    supports_guidance = True
    sampling_defaults = {"num_steps": 75, "guidance_scale": 12.0}  # the paper's protocol

    def temporal_compression(self, vae_config=None) -> int:
        return 1  # a 2-D VAE, frame by frame

    def load(self, path: Path, device: torch.device, dtype: torch.dtype):
        from .models import load_t2v_model

        return load_t2v_model(path, device, dtype)

    def training_schedule(self, scheduler_config: dict):
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(scheduler_config)

    def lora_targets(self, targets: str) -> str:
        from ..customization.lora import TARGETS

        return TARGETS.get(targets, targets)

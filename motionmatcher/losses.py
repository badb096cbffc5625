"""Compatibility re-exports: the losses now live one module per method in
:mod:`motionmatcher.methods` (``motionmatcher``, ``ddpm_lora``, ``motiondirector``, ``vmc``),
the shared diffusion pieces in :mod:`motionmatcher.diffusion` and the registry in
:mod:`motionmatcher.methods.registry`. New code imports from there.
"""

from __future__ import annotations

from .diffusion import base_dropout_disabled, ddim_step
from .methods.ddpm_lora import noise_prediction_loss
from .methods.motiondirector import (appearance_debiased_mse, motiondirector_loss, temporal_layer_names,
                                     temporal_layers_bypassed)
from .methods.motionmatcher import motion_matching_loss
from .methods.registry import LOSSES
from .methods.vmc import frame_residual, motion_distillation_loss, motion_distillation_residual_loss

__all__ = ["motion_matching_loss", "noise_prediction_loss", "motiondirector_loss", "motion_distillation_loss",
           "appearance_debiased_mse", "frame_residual", "motion_distillation_residual_loss",
           "temporal_layers_bypassed", "temporal_layer_names", "ddim_step", "base_dropout_disabled", "LOSSES"]

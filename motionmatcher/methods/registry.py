"""The registries of the methods: a trained method's ``train.loss`` names a key of
:data:`LOSSES`, a training-free method's ``guidance.type`` a key of :data:`GUIDANCES`.

The one training loop (:func:`motionmatcher.customization.training.train`) calls
``LOSSES[name](unet, scheduler, latents, noise, timesteps, text_embeddings, **loss_kwargs)``
(plus ``generator=`` when the loss takes one) and backpropagates ``out["loss"]``; the one
sampler (:func:`motionmatcher.customization.sampler.sample_latents`) calls the hooks of the
:class:`motionmatcher.customization.guidance.Guidance` that ``GUIDANCES[type](**options)`` builds.

=================  ==========================  ===========================================
method             hook                        module
=================  ==========================  ===========================================
motionmatcher      ``motion_matching``         :mod:`motionmatcher.methods.motionmatcher`
ddpm_lora          ``noise_prediction``        :mod:`motionmatcher.methods.ddpm_lora`
motiondirector     ``motiondirector``          :mod:`motionmatcher.methods.motiondirector`
vmc                ``motion_distillation``     :mod:`motionmatcher.methods.vmc`
dmt                guidance ``dmt``            :mod:`motionmatcher.methods.dmt`
motionclone        guidance ``motionclone``    :mod:`motionmatcher.methods.motionclone`
=================  ==========================  ===========================================
"""

from __future__ import annotations

from typing import Callable

import torch

from ..customization.guidance import Guidance
from .ddpm_lora import noise_prediction_loss
from .dmt import DMTGuidance
from .motionclone import MotionCloneGuidance
from .motiondirector import motiondirector_loss
from .motionmatcher import motion_matching_loss
from .vmc import motion_distillation_loss

__all__ = ["GUIDANCES", "LOSSES", "guidance_types", "make_guidance"]

#: Registry used by the training loop: ``LOSSES[name](unet, scheduler, latents, noise,
#: timesteps, text_embeddings, **loss_kwargs)`` → dict of scalar tensors with ``loss``.
LOSSES: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "motion_matching": motion_matching_loss,
    "noise_prediction": noise_prediction_loss,
    "motiondirector": motiondirector_loss,
    "motion_distillation": motion_distillation_loss,
}

#: ``type`` of a ``guidance:`` entry → its :class:`~motionmatcher.customization.guidance.Guidance` class.
GUIDANCES: dict[str, type] = {
    "dmt": DMTGuidance,
    "motionclone": MotionCloneGuidance,
}


def guidance_types() -> dict:
    """``type`` name of a ``guidance:`` entry → its
    :class:`~motionmatcher.customization.guidance.Guidance` class (:data:`GUIDANCES`)."""
    return dict(GUIDANCES)


def make_guidance(spec: dict | None) -> Guidance | None:
    """The guidance of a method's ``guidance:`` entry (``type`` + its options), or None."""
    if not spec:
        return None
    spec = dict(spec)
    kind = spec.pop("type", None)
    types = guidance_types()
    if kind not in types:
        raise ValueError(f"unknown guidance type {kind!r} (known: {', '.join(types)})")
    return types[kind](**spec)

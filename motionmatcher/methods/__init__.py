"""The methods of the pipeline, one module each, named after the method (a new method, or a
change to one method's loss or guidance, belongs here; what all methods share belongs in
:mod:`motionmatcher.customization`):

* trained (a loss for the one training loop, :mod:`motionmatcher.customization.training`):
  :mod:`.motionmatcher` (motion feature matching), :mod:`.ddpm_lora` (noise prediction),
  :mod:`.motiondirector` (dual-path LoRA), :mod:`.vmc` (motion distillation);
* training-free (a guidance for the one sampler, :mod:`motionmatcher.customization.sampler` /
  :mod:`motionmatcher.customization.guidance`): :mod:`.dmt`, :mod:`.motionclone`.

:mod:`.registry` maps config names to them (``LOSSES``, ``GUIDANCES``); :mod:`.config` resolves a
method's entry under ``methods:`` (re-exported here; importing this package does not import
torch, so the Snakefile can use it). The diffusion pieces the losses share are in
:mod:`motionmatcher.customization.diffusion`.
"""

from __future__ import annotations

from .config import (DEFAULT_RESOURCES, DEFAULT_SAMPLE_RESOURCES, MethodError, load_video_overrides,
                     method_config, method_entry, video_override)

__all__ = ["DEFAULT_RESOURCES", "DEFAULT_SAMPLE_RESOURCES", "GUIDANCES", "LOSSES", "MethodError", "load_video_overrides",
           "method_config", "method_entry", "video_override"]


def __getattr__(name: str):
    # the registries import torch and every method: only on use
    if name in ("LOSSES", "GUIDANCES"):
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Backbones: the text-to-video architectures the pipeline runs on (interface:
:mod:`.base`; one module each: :mod:`.unet3d` (Zeroscope), :mod:`.wan` (Wan 2.1 T2V),
:mod:`.cogvideox` (CogVideoX)), with what they share: loading a diffusers model directory and the
seeded tiny models (:mod:`.models`, :mod:`.tiny`), the VAEs' encoding to latents and back
(:mod:`.latents`), flow-matching schedules (:mod:`.flow`) and the DiT features
(:mod:`.dit_features`). Support for a new model architecture, or a change that concerns one
architecture only, belongs here; what every method does on any backbone belongs in
:mod:`motionmatcher.customization`.

:func:`load_model` loads any diffusers model directory, picking the backbone from the
denoiser class it declares (``model_index.json`` / the transformer's ``_class_name``);
:func:`backbone_of` names it without loading; :func:`backbone_for_config` does the same for the
config's ``model:`` value before a tiny model is built (``tiny``, ``wan-tiny``,
``cogvideox-tiny``). Importing this package does not import torch-heavy modules beyond torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from .spec import TINY_MODELS, BackboneError, backbone_spec, backbone_spec_for_config, denoiser_class

# torch only where a backbone is used: `Backbone`, `pack_text`, `unpack_text` from .base on
# first access (the workflow's DAG process imports this package for the checks in .spec)
_FROM_BASE = ("Backbone", "pack_text", "unpack_text")


def __getattr__(name):
    if name in _FROM_BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BACKBONES", "TINY_MODELS", "Backbone", "BackboneError", "backbone_for_config", "backbone_of",
           "backbone_spec", "backbone_spec_for_config",
           "get_backbone", "latent_frames_of", "load_model", "pack_text", "unpack_text", "write_tiny"]

#: config ``model:`` values of the seeded tiny models -> their backbone
def _registry() -> dict[str, Backbone]:
    from .cogvideox import CogVideoXBackbone
    from .unet3d import UNet3DBackbone
    from .wan import WanBackbone

    return {b.name: b for b in (UNet3DBackbone(), WanBackbone(), CogVideoXBackbone())}


BACKBONES = ("unet3d", "wan", "cogvideox")


def get_backbone(name: str) -> Backbone:
    reg = _registry()
    if name not in reg:
        raise BackboneError(f"unknown backbone {name!r} (known: {', '.join(reg)})")
    return reg[name]


def backbone_of(path: str | os.PathLike) -> Backbone:
    """The backbone of a diffusers model directory, from the denoiser class it declares.

    Raises :class:`BackboneError` naming the class when no backbone supports it, and
    FileNotFoundError when ``path`` is not a directory."""
    return get_backbone(backbone_spec(path).name)  # one lookup: the torch-free spec's


def backbone_for_config(model: str, model_dir: str | os.PathLike | None = None) -> Backbone:
    """The backbone of the config's ``model:`` value (a tiny model's name or a directory)."""
    if model in TINY_MODELS:
        return get_backbone(TINY_MODELS[model])
    return backbone_of(model_dir or model)


def load_model(path: str | os.PathLike, device="cpu", dtype=None):
    """Load a diffusers text-to-video directory of any backbone onto ``device`` (frozen, eval):
    a :class:`motionmatcher.backbones.models.T2VModel` (Zeroscope) or a
    :class:`motionmatcher.backbones.base.DiTModel`."""
    import torch

    backbone = backbone_of(path)
    return backbone.load(backbone.check_dir(Path(path)), torch.device(device), dtype or torch.float32)


def latent_frames_of(path: str | os.PathLike, n_frames: int) -> int:
    """Latent frames of an ``n_frames`` video for the model at ``path`` (its VAE config read,
    the model not loaded): ``n_frames`` on Zeroscope, (n − 1)/4 + 1 on Wan and CogVideoX."""
    from types import SimpleNamespace

    from .spec import read_json

    backbone = backbone_of(path)
    vae_cfg = Path(path) / "vae" / "config.json"
    cfg = SimpleNamespace(**read_json(vae_cfg)) if vae_cfg.is_file() else None
    return backbone.latent_frames(int(n_frames), cfg)


def write_tiny(name: str, out: str | os.PathLike, seed: int = 0) -> Path:
    """Write the seeded tiny model ``name`` (a key of :data:`TINY_MODELS`) to ``out``."""
    if name not in TINY_MODELS:
        raise BackboneError(f"unknown tiny model {name!r} (known: {', '.join(TINY_MODELS)})")
    if name == "tiny":
        from .models import write_tiny_model

        return write_tiny_model(out, seed=seed)
    return get_backbone(TINY_MODELS[name]).write_tiny(out, seed=seed)

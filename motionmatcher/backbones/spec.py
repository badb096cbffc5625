"""What the workflow's DAG process needs of a backbone, without torch: its name, denoiser class
and folders, the frame counts its VAE encodes and the methods that run on it.

:class:`motionmatcher.backbones.base.Backbone` (torch) extends :class:`BackboneSpec`; the
Snakefile checks the config against :func:`backbone_spec_for_config` so that building a DAG of
hundreds of thousands of jobs does not import torch (~1.4 s and ~700 MB per snakemake call,
issue 21). ``tests/test_scale.py`` checks :data:`SPECS` against the loaded backbones.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

__all__ = ["BackboneError", "BackboneSpec", "SPECS", "backbone_spec", "backbone_spec_for_config",
           "denoiser_class", "read_json"]


class BackboneError(ValueError):
    """A model directory, frame count or method that a backbone cannot run (the message says
    which and why)."""


class BackboneSpec:
    """A backbone's torch-free description and checks (attributes set by subclasses)."""

    #: short name used in configs, records and the summary
    name: str = ""
    #: ``arch`` of :func:`motionmatcher.backbones.dit_features.dit_motion_features` (DiTs)
    arch: str | None = None
    #: the denoiser's class name in ``model_index.json`` / ``transformer/config.json``
    denoiser_class: str = ""
    #: the denoiser's subfolder
    denoiser_folder: str = "transformer"
    #: axis order of the denoiser's own latent input
    latent_layout: str = "BCFHW"
    #: what the denoiser is trained to predict: epsilon | v_prediction | flow_prediction
    prediction_type: str = "epsilon"
    #: methods whose training loss / guidance runs on this backbone (None: all)
    supported_losses: tuple[str, ...] | None = None
    supports_guidance: bool = True
    #: the official pipeline's sampling defaults (steps, classifier-free guidance)
    sampling_defaults: dict = {}
    required_subfolders: tuple[str, ...] = ("vae", "text_encoder", "tokenizer", "scheduler")
    #: blocks of the published model the default feature layers were chosen for
    real_depth: int = 30

    # -- frames ---------------------------------------------------------------------------
    def temporal_compression(self, vae_config=None) -> int:
        """Pixel frames per latent frame of the VAE (1: frame-wise 2-D VAE)."""
        return 1

    #: the VAE encodes frame 0, then chunks of this many frames whatever its temporal
    #: compression (``AutoencoderKLWan``: 4), dropping a shorter last chunk
    frame_chunk: int = 1

    def frame_step(self, vae_config=None) -> int:
        """Valid frame counts are ``frame_step·k + 1``."""
        return math.lcm(self.temporal_compression(vae_config), self.frame_chunk)

    def valid_frame_count(self, n_frames: int, vae_config=None) -> bool:
        return n_frames >= 1 and (n_frames - 1) % self.frame_step(vae_config) == 0

    def check_frames(self, n_frames: int, where: str = "video.n_frames", vae_config=None) -> None:
        """Raise :class:`BackboneError` unless ``n_frames`` is a frame count the VAE encodes
        (4k + 1 for Wan and CogVideoX), naming the nearest valid ones."""
        r = self.temporal_compression(vae_config)
        step = self.frame_step(vae_config)
        if not isinstance(n_frames, int) or not self.valid_frame_count(n_frames, vae_config):
            k = max(0, (int(n_frames) - 1) // step)
            how = (f"{step}k+1 frames into {step // r}k+1 latent frames" if step != r else
                   f"{r}k+1 frames into k+1 latent frames")
            chunk = (f" (frame 0, then chunks of {self.frame_chunk}; a shorter last chunk is "
                     f"dropped)" if self.frame_chunk > 1 else "")
            raise BackboneError(
                f"{where} = {n_frames}: the {self.name} VAE encodes {how}{chunk}; "
                f"use {step * k + 1} or {step * (k + 1) + 1}")

    def latent_frames(self, n_frames: int, vae_config=None) -> int:
        """Latent frames of an ``n_frames`` video (checked)."""
        self.check_frames(n_frames, vae_config=vae_config)
        return (n_frames - 1) // self.temporal_compression(vae_config) + 1

    # -- methods --------------------------------------------------------------------------
    def check_method(self, method: str, loss: str | None, guidance: str | None) -> None:
        """Raise :class:`BackboneError` if method ``method`` (its training ``loss`` or its
        ``guidance`` type) does not run on this backbone."""
        if guidance is not None and not self.supports_guidance:
            raise BackboneError(
                f"method {method!r} (guidance {guidance!r}) is not available on the {self.name} "
                f"backbone: its features are UNet decoder blocks; it runs on unet3d (Zeroscope) only")
        if loss is not None and self.supported_losses is not None and loss not in self.supported_losses:
            raise BackboneError(
                f"method {method!r} (loss {loss!r}) is not available on the {self.name} backbone "
                f"(runs there: {', '.join(self.supported_losses)} losses; see docs/backbones.md)")

    # -- loading --------------------------------------------------------------------------
    def check_dir(self, path: Path) -> Path:
        folders = (self.denoiser_folder, *self.required_subfolders)
        missing = [s for s in folders if not (path / s).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"model directory {path} ({self.name}) lacks the subfolder(s) {', '.join(missing)}; "
                f"expected {', '.join(s + '/' for s in folders)} (diffusers layout).")
        return path


def read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def denoiser_class(path: str | os.PathLike) -> str:
    """The denoiser class a diffusers directory declares: ``model_index.json``'s ``unet`` /
    ``transformer`` entry, else ``transformer/config.json``'s or ``unet/config.json``'s
    ``_class_name``."""
    path = Path(path)
    index = path / "model_index.json"
    if index.is_file():
        meta = read_json(index)
        for key in ("transformer", "unet"):
            entry = meta.get(key)
            if isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1]:
                return str(entry[1])
    for folder in ("transformer", "unet"):
        cfg = path / folder / "config.json"
        if cfg.is_file():
            return str(read_json(cfg).get("_class_name", ""))
    return ""


def _spec(name: str, temporal: int, **attrs) -> BackboneSpec:
    cls = type(f"{name}_spec", (BackboneSpec,), {"name": name, **attrs,
                                                  "temporal_compression": lambda self, vae_config=None: temporal})
    return cls()


#: the backbones' descriptions (temporal compression: without a VAE config, as the DAG checks)
SPECS: dict[str, BackboneSpec] = {s.name: s for s in (
    _spec("unet3d", 1, denoiser_class="UNet3DConditionModel", denoiser_folder="unet", arch=None,
          latent_layout="BCFHW", prediction_type="epsilon", supported_losses=None, supports_guidance=True,
          sampling_defaults={"num_steps": 75, "guidance_scale": 12.0}),
    _spec("wan", 4, frame_chunk=4, denoiser_class="WanTransformer3DModel", arch="wan", latent_layout="BCFHW",
          prediction_type="flow_prediction", supported_losses=("motion_matching", "noise_prediction"),
          supports_guidance=False, sampling_defaults={"num_steps": 50, "guidance_scale": 5.0}),
    _spec("cogvideox", 4, denoiser_class="CogVideoXTransformer3DModel", arch="cogvideox", latent_layout="BFCHW",
          prediction_type="v_prediction", supported_losses=("motion_matching", "noise_prediction"),
          supports_guidance=False, sampling_defaults={"num_steps": 50, "guidance_scale": 6.0}),
)}

#: the tiny models rule build_tiny_model writes -> their backbone
TINY_MODELS = {"tiny": "unet3d", "wan-tiny": "wan", "cogvideox-tiny": "cogvideox"}


def backbone_spec(path: str | os.PathLike) -> BackboneSpec:
    """The description of a diffusers model directory's backbone, from the denoiser class it
    declares (as :func:`motionmatcher.backbones.backbone_of`, same errors)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model directory {path} does not exist. Set `model:` in the config to `tiny`, `wan-tiny`, "
            "`cogvideox-tiny` or to a local diffusers-format text-to-video model (Zeroscope, Wan 2.1 "
            "T2V, CogVideoX).")
    cls = denoiser_class(path)
    for b in SPECS.values():
        if cls == b.denoiser_class:
            return b
    known = ", ".join(f"{b.denoiser_class} ({b.name})" for b in SPECS.values())
    if not cls:
        raise BackboneError(f"model directory {path}: no model_index.json, transformer/config.json or "
                            f"unet/config.json names its denoiser class (supported: {known})")
    raise BackboneError(f"model directory {path}: denoiser class {cls!r} is not supported "
                        f"(supported: {known})")


def backbone_spec_for_config(model: str, model_dir: str | os.PathLike | None = None) -> BackboneSpec:
    """The description of the config's ``model:`` value (a tiny model's name or a directory)."""
    if model in TINY_MODELS:
        return SPECS[TINY_MODELS[model]]
    return backbone_spec(model_dir or model)

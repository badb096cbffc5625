"""What a trained method leaves behind, and how it is put back onto a base model.

:func:`save_trained` writes what :func:`motionmatcher.customization.training.train` trained into a
folder (``adapter_config.json`` + ``adapter_model.safetensors``): a one-adapter method
(``lora:`` alone: MotionMatcher, DDPM-LoRA) in plain peft format, named parts (``trainable:``:
MotionDirector's two adapters, VMC's full fine-tune, :class:`TrainedParts`) as the changed
tensors only with a small JSON index. :func:`load_trained` puts a saved method onto a base UNet,
optionally only some parts; :func:`trained_parts` lists them. Here, below the training loop,
because the sampler and DDIM inversion load trained weights too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files.atomic import write_json
from ..files.tensor_files import read_checked, write_checked
from . import lora as lora_lib

__all__ = ["PARTS_FORMAT", "TrainedParts", "load_trained", "save_trained", "trained_parts"]

PARTS_FORMAT = "motionmatcher.trained_parts"


@dataclass
class TrainedParts:
    """What :func:`~motionmatcher.customization.training.attach_trainable` attached for a
    ``trainable:`` declaration: per part its type, its peft config (LoRA) or its module regex
    (full) and its parameter names."""

    parts: dict[str, dict]


def save_trained(unet: torch.nn.Module, out_dir: str | os.PathLike, spec) -> Path:
    """Save what :func:`~motionmatcher.customization.training.train` trained into ``out_dir``:
    ``adapter_config.json`` + ``adapter_model.safetensors``.

    A one-adapter method (``spec`` a ``LoraConfig``) is saved in plain peft format. A
    :class:`TrainedParts` is saved as the trained tensors only -- each LoRA part's weights (peft
    keys) and each full part's changed parameters, under ``"<part>/<key>"`` -- with a small JSON
    index (``format: motionmatcher.trained_parts``: per part its type, LoRA config or module
    regex, tensor names).
    """
    if not isinstance(spec, TrainedParts):
        return lora_lib.save_adapter(unet, out_dir, spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, index = {}, {}
    params = dict(unet.named_parameters())
    for name, part in spec.parts.items():
        if part["type"] == "lora":
            state = lora_lib.adapter_state_dict(unet, name)
            cfg = part["config"].to_dict()
            if isinstance(cfg.get("target_modules"), set):
                cfg["target_modules"] = sorted(cfg["target_modules"])
            index[name] = {"type": "lora", "lora_config": cfg, "tensors": sorted(state)}
        else:
            state = {n: params[n].detach().to("cpu", torch.float32) for n in part["params"]}
            index[name] = {"type": "full", "targets": part["targets"], "tensors": sorted(state)}
        tensors.update({f"{name}/{k}": v for k, v in state.items()})
    write_checked(out / "adapter_model.safetensors", tensors, metadata={"format": PARTS_FORMAT},
                  step=f"training of parts {', '.join(spec.parts)}")
    write_json(out / "adapter_config.json", {"format": PARTS_FORMAT, "version": 1, "parts": index})
    return out


def trained_parts(weights_dir: str | os.PathLike) -> dict[str, str]:
    """``{part: type}`` of a saved method (a plain peft adapter is one LoRA part ``motion``)."""
    meta = json.loads((Path(weights_dir) / "adapter_config.json").read_text())
    if meta.get("format") != PARTS_FORMAT:
        return {lora_lib.DEFAULT_ADAPTER: "lora"}
    return {n: p["type"] for n, p in meta["parts"].items()}


def load_trained(unet: torch.nn.Module, weights_dir: str | os.PathLike, parts=None) -> dict:
    """Put a saved method (:func:`save_trained`) onto a base ``unet``, frozen.

    ``parts``: the part names to load (None: all). LoRA parts are injected as named adapters,
    all active; full parts overwrite the matching base weights. Returns ``{"lora": [names],
    "full": [names]}`` -- ``bool(result["lora"])`` is the sampler's ``has_adapter``.
    """
    weights_dir = Path(weights_dir)
    available = trained_parts(weights_dir)
    wanted = list(available) if parts is None else list(parts)
    unknown = [p for p in wanted if p not in available]
    if unknown:
        raise ValueError(f"{weights_dir}: no part(s) {unknown} (saved parts: {', '.join(available)})")
    meta = json.loads((weights_dir / "adapter_config.json").read_text())
    if meta.get("format") != PARTS_FORMAT:
        if wanted:
            lora_lib.load_adapter(unet, weights_dir)
        return {"lora": wanted, "full": []}
    tensors = read_checked(weights_dir / "adapter_model.safetensors")[0]  # content hash checked before use
    params = dict(unet.named_parameters())
    loaded = {"lora": [], "full": []}
    for name in wanted:
        part = meta["parts"][name]
        state = {k: tensors[f"{name}/{k}"] for k in part["tensors"]}
        if part["type"] == "lora":
            config = lora_lib.lora_config_from_dict(part["lora_config"])
            lora_lib.load_adapter_state(unet, config, state, name)
        else:
            missing = [k for k in state if k not in params]
            if missing:
                raise ValueError(f"{weights_dir}: part {name!r}: the UNet has no parameter {missing[0]}")
            with torch.no_grad():
                for k, v in state.items():
                    if params[k].shape != v.shape:
                        raise ValueError(f"{weights_dir}: part {name!r}: {k} has shape {tuple(v.shape)}, "
                                         f"the UNet's is {tuple(params[k].shape)}")
                    params[k].copy_(v.to(params[k].device, params[k].dtype))
        loaded[part["type"]].append(name)
    unet.requires_grad_(False)
    return loaded

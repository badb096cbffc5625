"""Helpers only the tests use (they were in the library, which never called them): which modules
carry a LoRA adapter and whether it is on, and plain safetensors I/O to write test inputs and read
the workflow's tensor outputs."""

from __future__ import annotations

import os

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, safe_open

from motionmatcher.customization.lora import tuner_layers
from motionmatcher.files.atomic import write_bytes_atomic
from motionmatcher.files.tensor_files import serialize


def lora_module_names(unet: torch.nn.Module) -> list[str]:
    """Names of the modules that carry a LoRA adapter."""
    return [n for n, m in unet.named_modules() if isinstance(m, BaseTunerLayer)]


def lora_enabled(unet: torch.nn.Module) -> bool:
    layers = tuner_layers(unet)
    return bool(layers) and not layers[0].disable_adapters


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write safetensors atomically (:func:`motionmatcher.files.atomic.atomic_write`); metadata
    values are stringified and written in sorted key order (identical inputs give identical
    bytes). No content hash: the library writes with :func:`~motionmatcher.files.tensor_files.write_checked`."""
    write_bytes_atomic(path, serialize(tensors, metadata))


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(path), device=str(device))


def tensor_metadata(path: str | os.PathLike) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})

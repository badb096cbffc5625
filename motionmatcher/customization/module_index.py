"""Walks of a model's module tree done once while the tree is fixed (the training loop, guided sampling).

Every step of a customization switches things on and off across the whole UNet: the LoRA
layers (:func:`~motionmatcher.customization.lora.lora_disabled`), the base model's dropout
(:func:`~motionmatcher.customization.diffusion.base_dropout_disabled`), the parameters'
``requires_grad`` flags, and the attention processors of the layers whose maps are read
(:func:`~motionmatcher.customization.attention.capture_attention`, which goes through diffusers'
``attn_processors`` / ``set_attn_processor``: five recursive walks with a ``hasattr`` on every
module). Each walk visits thousands of modules once LoRA is injected; on the toy UNet they cost
more than the step's arithmetic (``benchmarks/toy_customization_cost.py``).

Inside :func:`fixed_structure` those functions take the modules from a :class:`ModuleIndex`
built once on entry instead of walking the tree. Nothing else changes: the same modules, in the
same order, get the same calls, so training is bit-identical (``tests/test_module_index.py``).
The caller promises that no module is added, removed or replaced inside the block (LoRA
injection happens before it, as in :func:`~motionmatcher.customization.training.train`).
The sampler opens a block around a guided batch
(:func:`~motionmatcher.customization.sampler.sample_latents`): MotionClone captures attention
maps at every step, so the same walks would run there once per denoising step.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["ModuleIndex", "fixed_structure", "index_of"]

#: id(model) -> its index while a ``fixed_structure`` block on it is open
_OPEN: dict[int, "ModuleIndex"] = {}


class ModuleIndex:
    """The lists the per-step helpers would otherwise walk the tree for."""

    def __init__(self, model: torch.nn.Module) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.model = model
        named = list(model.named_modules())
        #: (name, module) of every attention layer, as diffusers' ``attn_processors`` names them
        #: (``<name>.processor``): the modules with ``get_processor``/``set_processor``
        self.attention = [(n, m) for n, m in named
                          if n and hasattr(m, "get_processor") and hasattr(m, "set_processor")]
        #: peft's LoRA (tuner) layers, in ``model.modules()`` order
        self.tuner_layers = [m for _, m in named if isinstance(m, BaseTunerLayer)]
        #: (name, module) of every dropout layer, in ``model.named_modules()`` order
        self.dropouts = [(n, m) for n, m in named if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
        #: ``model.parameters()``
        self.parameters = list(model.parameters())


@contextmanager
def fixed_structure(model: torch.nn.Module) -> Iterator[ModuleIndex]:
    """Index ``model``'s modules once; the helpers named in the module docstring use the index
    inside the block. Nested blocks on the same model share the outer index."""
    key = id(model)
    if key in _OPEN and _OPEN[key].model is model:
        yield _OPEN[key]
        return
    index = ModuleIndex(model)
    _OPEN[key] = index
    try:
        yield index
    finally:
        _OPEN.pop(key, None)


def index_of(model: torch.nn.Module) -> ModuleIndex | None:
    """The open index of ``model``, or None outside a :func:`fixed_structure` block."""
    index = _OPEN.get(id(model))
    return index if index is not None and index.model is model else None

"""Gradient checkpointing for diffusers' ``UNet3DConditionModel`` (and, the same way, for each
transformer block of a DiT backbone's denoiser, :class:`motionmatcher.backbones.base.DiTDenoiser`).

diffusers does not implement gradient checkpointing for this model
(``_supports_gradient_checkpointing = False``), so :func:`enable_gradient_checkpointing`
wraps the ``forward`` of each sub-module of every down/mid/up block -- each ``resnets[i]``,
``temp_convs[i]``, ``attentions[i]``, ``temp_attentions[i]`` -- and ``transformer_in`` in
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` (the same granularity as the
official implementation). Only the sub-modules' inputs are kept for backward; their
internals are recomputed. It applies only while ``torch.is_grad_enabled()`` and the module is
in training mode; otherwise the plain forward runs.

Recomputation happens during ``backward()``, i.e. *after* the forward has returned. A
forward that ran with different module state than the one at backward time would be
recomputed wrongly -- MotionMatcher's extractor runs with the LoRA disabled and with
capturing attention processors, both switched back before the loss is backpropagated. So
the wrapper snapshots, at forward time, the state that changes a sub-module's computation
-- each ``Attention``'s processor, each peft LoRA layer's enabled flag, active adapters,
scaling and weights' ``requires_grad`` (MotionDirector's temporal path), each dropout's ``p``
(MotionMatcher switches the base model's dropout off) -- and re-applies exactly that state
during recomputation (restoring the
then-current state afterwards). Dropout masks are recomputed identically
(``preserve_rng_state=True``, the default). (The official implementation switches the LoRA
scale instead and does not do this, so with its ``gradient_checkpointing: True`` the
extractor is recomputed with LoRA scale 1.)
"""

from __future__ import annotations

import types

import torch
from torch.utils.checkpoint import checkpoint

__all__ = [
    "enable_gradient_checkpointing",
    "disable_gradient_checkpointing",
    "is_gradient_checkpointing_enabled",
    "checkpointed_module_names",
]

_FLAG = "_mm_grad_ckpt"
_SUBMODULE_LISTS = ("resnets", "temp_convs", "attentions", "temp_attentions")


def checkpointed_module_names(unet: torch.nn.Module) -> list[str]:
    """Names of the sub-modules whose forward is checkpointed."""
    names = []
    dit = _dit(unet)
    if dit is not None:  # a DiT backbone's denoiser: each transformer block
        blocks = "blocks" if hasattr(dit, "blocks") else "transformer_blocks"
        return [f"transformer.{blocks}.{i}" for i in range(len(getattr(dit, blocks)))]
    if getattr(unet, "transformer_in", None) is not None:
        names.append("transformer_in")
    blocks = [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)]
    if getattr(unet, "mid_block", None) is not None:
        blocks.append(("mid_block", unet.mid_block))
    blocks += [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    for prefix, block in blocks:
        for attr in _SUBMODULE_LISTS:
            for j, _ in enumerate(getattr(block, attr, None) or []):
                names.append(f"{prefix}.{attr}.{j}")
    return names


def _snapshot(module: torch.nn.Module):
    """The state that changes ``module``'s computation without being an input or a weight."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    procs, tuners, drops, grads = [], [], [], []
    for m in module.modules():
        if isinstance(m, BaseTunerLayer):
            tuners.append((m, m._disable_adapters, m._active_adapter,
                           dict(getattr(m, "scaling", {}))))
            grads += [(p, p.requires_grad) for p in m.parameters()]
        elif hasattr(m, "set_processor") and hasattr(m, "processor"):
            procs.append((m, m.processor))
        elif isinstance(m, torch.nn.modules.dropout._DropoutNd):
            drops.append((m, m.p))
    return procs, tuners, drops, grads


def _apply(state):
    """Apply a snapshot; return the snapshot of what was there (to restore)."""
    procs, tuners, drops, grads = state
    undo_procs, undo_tuners = [], []
    undo_drops = [(m, m.p) for m, p in drops if m.p != p]
    for m, p in drops:
        m.p = p
    undo_grads = [(p, p.requires_grad) for p, flag in grads if p.requires_grad != flag]
    for p, flag in grads:
        if p.requires_grad != flag:
            p.requires_grad_(flag)
    for m, proc in procs:
        if m.processor is not proc:
            undo_procs.append((m, m.processor))
            m.set_processor(proc)
    for m, disabled, active, scaling in tuners:
        cur_scaling = getattr(m, "scaling", None)
        if m._disable_adapters != disabled or m._active_adapter != active or (
                cur_scaling is not None and cur_scaling != scaling):
            undo_tuners.append((m, m._disable_adapters, m._active_adapter, dict(cur_scaling or {})))
            # set the private fields directly: peft's enable_adapters() would also flip the
            # adapters' requires_grad flags
            m._disable_adapters = disabled
            m._active_adapter = active
            if cur_scaling is not None:
                cur_scaling.clear()
                cur_scaling.update(scaling)
    return undo_procs, undo_tuners, undo_drops, undo_grads


def _run_with_state(module, state, *args, **kwargs):
    undo = _apply(state)
    try:
        return type(module).forward(module, *args, **kwargs)
    finally:
        _apply(undo)


def _checkpointed_forward(self, *args, **kwargs):
    if self.training and torch.is_grad_enabled():
        return checkpoint(_run_with_state, self, _snapshot(self), *args,
                          use_reentrant=False, preserve_rng_state=True, **kwargs)
    return type(self).forward(self, *args, **kwargs)


def _dit(unet: torch.nn.Module):
    """The transformer of a DiT backbone's denoiser (``motionmatcher.backbones.base.DiTDenoiser``),
    else None."""
    t = unet._modules.get("transformer")
    return t if t is not None and (hasattr(t, "blocks") or hasattr(t, "transformer_blocks")) else None


def enable_gradient_checkpointing(unet: torch.nn.Module) -> None:
    """Checkpoint every resnet / temporal conv / transformer of ``unet`` (idempotent)."""
    for name in checkpointed_module_names(unet):
        m = unet.get_submodule(name)
        if "forward" in m.__dict__ and not getattr(m, _FLAG, False):
            raise RuntimeError(f"{name}.forward is already patched by something else")
        m.forward = types.MethodType(_checkpointed_forward, m)
        setattr(m, _FLAG, True)
    setattr(unet, _FLAG, True)


def disable_gradient_checkpointing(unet: torch.nn.Module) -> None:
    """Undo :func:`enable_gradient_checkpointing` (no-op when not enabled)."""
    for m in unet.modules():
        if getattr(m, _FLAG, False):
            m.__dict__.pop("forward", None)
            delattr(m, _FLAG)


def is_gradient_checkpointing_enabled(unet: torch.nn.Module) -> bool:
    return bool(getattr(unet, _FLAG, False))

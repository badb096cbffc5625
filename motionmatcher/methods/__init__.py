"""Methods as configuration: a method is a loss, the parameters it trains, its sampling settings
and the resources of its training job, declared under ``methods:`` in the config and merged
over the ``training:`` and ``sampling:`` defaults. A method without ``train:`` is sampled from
the base model; a training-free method (``dmt``, ``motionclone``) adds a ``guidance:`` section
(``type`` + options: ``motionmatcher.guidance``, one module per method in this package).

An entry::

    methods:
      motiondirector:
        description: MotionDirector (Zhao et al. 2024), dual-path LoRA
        train:                      # over `training:` -> motionmatcher.training.TrainConfig
          loss: motiondirector      # a key of motionmatcher.losses.LOSSES
          loss_kwargs: {spatial_skip_prob: 0.2, beta: 1.0}
          steps: 150
          trainable:                # named parts; without it: one LoRA from `lora:`
            spatial: {type: lora, targets: spatial_self_attn_ff}
            temporal: {type: lora, targets: temporal_attn_ff}
        sample:                     # over `sampling:` -> motionmatcher.sampler.SamplingConfig
          load_parts: [temporal]    # parts put on the UNet at inference (null: all)
          noise_prior: 0.0
          lora_min_timestep: 0
        resources: {mem_mb: 32000, runtime: 60}   # the customize job (over customize_resources)
      motionmatcher_ca:
        extends: motionmatcher      # a variant: the parent's entry, then these keys over it
        train: {loss_kwargs: {tsa_weight: 0.0}}

Merging is recursive for mappings; lists and scalars are replaced.
"""

from __future__ import annotations

import copy

__all__ = ["DEFAULT_RESOURCES", "MethodError", "method_config", "method_entry"]

#: Resources of a method's customize job when neither the method nor `customize_resources` set
#: them (host memory in MB, wall time in minutes; the paper protocol on one 40-80 GB GPU).
DEFAULT_RESOURCES = {"mem_mb": 40000, "runtime": 120}


class MethodError(KeyError):
    """A method that is not defined or not well formed (``args[0]`` is the message)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def method_entry(config: dict, name: str, _seen: tuple = ()) -> dict:
    """The method's own entry with its ``extends`` chain resolved (no defaults merged)."""
    methods = config.get("methods") or {}
    if name not in methods:
        where = f" (extended by {_seen[-1]!r})" if _seen else ""
        raise MethodError(f"method {name!r}{where} is not defined under `methods:` "
                          f"(defined: {', '.join(methods)})")
    if name in _seen:
        raise MethodError(f"method {name!r}: `extends` cycle {' -> '.join((*_seen, name))}")
    entry = copy.deepcopy(methods[name] or {})
    parent = entry.pop("extends", None)
    if parent is None:
        return entry
    return _merge(method_entry(config, parent, (*_seen, name)), entry)


def _check(name: str, train: dict | None, sample: dict, guidance: dict | None = None) -> None:
    if guidance is not None:
        from ..guidance import guidance_types

        if not isinstance(guidance, dict) or guidance.get("type") not in guidance_types():
            raise MethodError(f"method {name!r}: guidance.type must be one of "
                              f"{', '.join(guidance_types())}, got {(guidance or {}).get('type')!r}")
    parts = None
    if train is not None:
        if not train.get("loss"):
            raise MethodError(f"method {name!r}: train.loss is not set")
        trainable = train.get("trainable")
        if trainable:
            if not isinstance(trainable, dict):
                raise MethodError(f"method {name!r}: train.trainable must map part names to specs")
            for part, spec in trainable.items():
                kind = (spec or {}).get("type", "lora")
                if kind not in ("lora", "full"):
                    raise MethodError(f"method {name!r}: part {part!r}: type must be lora or full, "
                                      f"got {kind!r}")
                if not (spec or {}).get("targets"):
                    raise MethodError(f"method {name!r}: part {part!r}: `targets` is required")
            parts = list(trainable)
        else:
            parts = ["motion"]  # the one adapter of a `lora:` method (motionmatcher.lora.DEFAULT_ADAPTER)
    load = sample.get("load_parts")
    if load is not None:
        if train is None:
            raise MethodError(f"method {name!r}: sample.load_parts is set but the method trains nothing")
        unknown = [p for p in load if p not in parts]
        if unknown:
            raise MethodError(f"method {name!r}: sample.load_parts {unknown} are not trained parts "
                              f"(parts: {', '.join(parts)})")


def method_config(config: dict, name: str) -> dict:
    """``{"name", "description", "trains", "train": {...} | None, "sample": {...},
    "resources": {...}, "guidance": {...} | None}`` for method ``name`` (``extends`` resolved, defaults merged).

    Raises :class:`MethodError` (a ``KeyError``) for an undefined or malformed method.
    """
    entry = method_entry(config, name)
    train = entry.get("train")
    train = _merge(config.get("training", {}), train) if train is not None else None
    sample = _merge(config.get("sampling", {}), entry.get("sample", {}))
    guidance = entry.get("guidance")
    _check(name, train, sample, guidance)
    resources = _merge(_merge(DEFAULT_RESOURCES, config.get("customize_resources", {})),
                       entry.get("resources", {}))
    return {
        "name": name,
        "description": entry.get("description", ""),
        "trains": train is not None,
        "train": train,
        "sample": sample,
        "resources": resources,
        "guidance": guidance,
    }

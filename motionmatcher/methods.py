"""Methods as configuration: a method is a loss, the parameters it trains and its sampling
settings, declared under ``methods:`` in the config and merged over the ``training:`` and
``sampling:`` defaults. A method without ``train:`` is sampled from the base model."""

from __future__ import annotations

import copy


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def method_config(config: dict, name: str) -> dict:
    """``{"name", "trains", "train": {...} | None, "sample": {...}}`` for method ``name``."""
    methods = config.get("methods", {})
    if name not in methods:
        raise KeyError(f"method {name!r} is not defined under `methods:` (defined: {', '.join(methods)})")
    entry = methods[name] or {}
    train = entry.get("train")
    return {
        "name": name,
        "trains": train is not None,
        "train": _merge(config.get("training", {}), train) if train is not None else None,
        "sample": _merge(config.get("sampling", {}), entry.get("sample", {})),
    }

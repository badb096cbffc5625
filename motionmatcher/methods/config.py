"""Method configuration: a method is a loss, the parameters it trains, its sampling settings
and the resources of its training job, declared under ``methods:`` in the config and merged
over the ``training:`` and ``sampling:`` defaults. A method without ``train:`` is sampled from
the base model; a training-free method (``dmt``, ``motionclone``) adds a ``guidance:`` section
(``type`` + options: ``motionmatcher.customization.guidance``; the registries of losses and guidances are in
:mod:`motionmatcher.methods.registry`, one module per method in this package).

An entry::

    methods:
      motiondirector:
        description: MotionDirector (Zhao et al. 2024), dual-path LoRA
        train:                      # over `training:` -> motionmatcher.customization.training.TrainConfig
          loss: motiondirector      # a key of motionmatcher.methods.LOSSES
          loss_kwargs: {spatial_skip_prob: 0.2, beta: 1.0}
          steps: 150
          trainable:                # named parts; without it: one LoRA from `lora:`
            spatial: {type: lora, targets: spatial_self_attn_ff}
            temporal: {type: lora, targets: temporal_attn_ff}
        sample:                     # over `sampling:` -> motionmatcher.customization.sampler.SamplingConfig
          load_parts: [temporal]    # parts put on the UNet at inference (null: all)
          noise_prior: 0.0
          lora_min_timestep: 0
        resources: {mem_mb: 32000, runtime: 60}   # the customize job (over customize_resources)
        sample_resources: {runtime: 120}          # its sample jobs (over sample_resources)
      motionmatcher_ca:
        extends: motionmatcher      # a variant: the parent's entry, then these keys over it
        train: {loss_kwargs: {tsa_weight: 0.0}}

Merging is recursive for mappings; lists and scalars are replaced.

**Per-video overrides** (``video_overrides:`` names a YAML file; :func:`load_video_overrides`)::

    bear:                         # a video_id of the manifest
      motionmatcher:              # a method defined under `methods:`
        train: {steps: 200}       # over the method's `train:` (TrainConfig fields)
        sample: {noise_prior: 0.2}

A video's override of method ``m`` is merged over ``m``'s own entry, *before* the keys of a method
that ``extends: m``: ``motionmatcher_ca`` on bear trains 200 steps and keeps its TSA weight 0.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

__all__ = ["DEFAULT_RESOURCES", "DEFAULT_SAMPLE_RESOURCES", "MethodError", "load_video_overrides", "method_config", "method_entry",
           "video_override"]

#: Resources of a method's customize job when neither the method nor `customize_resources` set
#: them (host memory in MB, wall time in minutes; the paper protocol on one 40-80 GB GPU).
DEFAULT_RESOURCES = {"mem_mb": 40000, "runtime": 120}
#: Resources of a method's sample job (all prompts x seeds of one video) when neither the method's
#: `sample_resources` nor the top-level `sample_resources` set them: plain sampling on one GPU.
DEFAULT_SAMPLE_RESOURCES = {"mem_mb": 24000, "runtime": 120}


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


# The keys a method's `train:`, `sample:` and `guidance:` entries may have and the guidance
# types, written out: the workflow validates every method in its DAG process, which must not
# import torch, diffusers and peft for it (training.TrainConfig, sampler.SamplingConfig and the
# guidance classes do; ~4 s and ~1 GB per snakemake call, issue 21). tests/test_scale.py checks
# them against those classes.
TRAIN_KEYS = frozenset({
    "batch_size", "checkpoint_every", "grad_clip", "gradient_checkpointing", "lora", "loss", "loss_kwargs",
    "lr", "max_timestep", "min_timestep", "steps", "trainable", "weight_decay"})
#: SamplingConfig's fields, plus what the sample job reads itself
SAMPLE_KEYS = frozenset({
    "batch_size", "eta", "guidance_scale", "lora_min_timestep", "lora_scale", "negative_prompt",
    "noise_prior", "num_steps", "vae_chunk_size"}) | {"seeds", "load_parts", "contact_sheet_frames", "prompt_prefix"}
#: guidance `type` -> its options (the guidance class's constructor parameters)
GUIDANCE_OPTIONS = {
    "dmt": frozenset({"downsample_factor", "features", "gradient_checkpointing", "inversion_prompt",
                      "inversion_steps", "lr", "max_guidance_timestep", "min_guidance_timestep",
                      "optimization_steps", "restart_sampling", "weight"}),
    "motionclone": frozenset({"cool_up_fraction", "grad_guidance_scale", "grad_threshold", "gradient_checkpointing",
                              "guidance_fraction", "inversion_prompt", "inversion_steps", "mask_block", "mask_sigma",
                              "mask_threshold_app", "mask_threshold_example", "rank_k", "reference_timestep",
                              "semantic_weights", "temporal_weights", "warm_up_fraction", "weight"}),
}


def _train_keys() -> set[str]:
    return set(TRAIN_KEYS)


def _sample_keys() -> set[str]:
    return set(SAMPLE_KEYS)


def _guidance_keys() -> set[str]:
    """Options of any training-free guidance (its constructor's parameters)."""
    return set().union(*GUIDANCE_OPTIONS.values())


@functools.lru_cache(maxsize=8)
def _read_overrides(path: str, mtime: float, methods: tuple) -> dict:
    import yaml

    where = f"video_overrides file {path}"
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise MethodError(f"{where}: no such file (config key `video_overrides`)") from None
    except yaml.YAMLError as e:
        raise MethodError(f"{where}: not valid YAML: {e}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise MethodError(f"{where}: must map video ids to {{method: {{train: ..., sample: ...}}}}")
    keys = {"train": _train_keys(), "sample": _sample_keys(), "guidance": _guidance_keys()}
    for video, per_method in data.items():
        if not isinstance(per_method, dict):
            raise MethodError(f"{where}: video {video!r}: must map method names to {{train, sample}}")
        for method, over in per_method.items():
            if method not in methods:
                raise MethodError(f"{where}: video {video!r}: method {method!r} is not defined under "
                                  f"`methods:` (defined: {', '.join(methods)})")
            if not isinstance(over, dict):
                raise MethodError(f"{where}: video {video!r}: method {method!r}: must be a mapping "
                                  "with `train` and/or `sample`")
            for section, values in over.items():
                if section not in keys:
                    raise MethodError(f"{where}: video {video!r}: method {method!r}: unknown key "
                                      f"{section!r} (allowed: train, sample, guidance)")
                if not isinstance(values, dict):
                    raise MethodError(f"{where}: video {video!r}: method {method!r}: {section} must be a mapping")
                unknown = sorted(set(values) - keys[section])
                if unknown:
                    raise MethodError(f"{where}: video {video!r}: method {method!r}: unknown {section} "
                                      f"key {unknown[0]!r} (allowed: {', '.join(sorted(keys[section]))})")
    return {str(v): m for v, m in data.items()}


def load_video_overrides(config: dict) -> dict:
    """``{video_id: {method: {"train": {...}, "sample": {...}}}}`` from the file named by
    ``config["video_overrides"]`` (empty without one), validated: a malformed file, a method
    not under ``methods:`` or a key that is not a train/sample setting raises
    :class:`MethodError` naming the file, video, method and key."""
    path = config.get("video_overrides")
    if not path:
        return {}
    mtime = os.path.getmtime(path) if os.path.exists(path) else -1.0
    data = copy.deepcopy(_read_overrides(str(path), mtime, tuple(config.get("methods") or {})))
    for video, per_method in data.items():
        for method, over in per_method.items():
            if "train" in over and method_entry(config, method).get("train") is None:
                raise MethodError(f"video_overrides file {path}: video {video!r}: method {method!r} "
                                  "trains nothing, so it has no `train` settings to override")
            if "guidance" in over and not method_entry(config, method).get("guidance"):
                raise MethodError(f"video_overrides file {path}: video {video!r}: method {method!r} "
                                  "has no `guidance` settings to override")
    return data


def video_override(config: dict, name: str, video: str) -> dict:
    """The overrides applied to method ``name`` on ``video``, along its ``extends`` chain
    (``{method: {train, sample}}``; empty when none)."""
    over = load_video_overrides(config).get(str(video), {})
    out, seen = {}, set()
    while name and name not in seen:
        seen.add(name)
        if name in over:
            out[name] = over[name]
        name = ((config.get("methods") or {}).get(name) or {}).get("extends")
    return out


def method_entry(config: dict, name: str, _seen: tuple = (), video: str | None = None) -> dict:
    """The method's own entry with its ``extends`` chain resolved (no defaults merged), with
    ``video``'s overrides (:func:`load_video_overrides`) merged over each entry of the chain."""
    methods = config.get("methods") or {}
    if name not in methods:
        where = f" (extended by {_seen[-1]!r})" if _seen else ""
        raise MethodError(f"method {name!r}{where} is not defined under `methods:` "
                          f"(defined: {', '.join(methods)})")
    if name in _seen:
        raise MethodError(f"method {name!r}: `extends` cycle {' -> '.join((*_seen, name))}")
    entry = copy.deepcopy(methods[name] or {})
    if video is not None:
        over = load_video_overrides(config).get(str(video), {}).get(name)
        if over:
            entry = _merge(entry, over)
    parent = entry.pop("extends", None)
    if parent is None:
        return entry
    return _merge(method_entry(config, parent, (*_seen, name), video), entry)


def _check(name: str, train: dict | None, sample: dict, guidance: dict | None = None) -> None:
    if guidance is not None:
        if not isinstance(guidance, dict) or guidance.get("type") not in GUIDANCE_OPTIONS:
            raise MethodError(f"method {name!r}: guidance.type must be one of "
                              f"{', '.join(GUIDANCE_OPTIONS)}, got {(guidance or {}).get('type')!r}")
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
            parts = ["motion"]  # the one adapter of a `lora:` method (motionmatcher.customization.lora.DEFAULT_ADAPTER)
    seeds = sample.get("seeds") or []
    if sample.get("noise_prior") == 1.0 and not sample.get("eta") and len(set(seeds)) > 1:
        raise MethodError(
            f"method {name!r}: sample.noise_prior 1.0 with eta 0 starts every seed from the same "
            f"inverted latents and draws the same video {len(set(seeds))} times (seeds {seeds}); set "
            "`sample: {seeds: [one seed]}` (VMC's official inference samples once per prompt) or eta > 0")
    load = sample.get("load_parts")
    if load is not None:
        if train is None:
            raise MethodError(f"method {name!r}: sample.load_parts is set but the method trains nothing")
        unknown = [p for p in load if p not in parts]
        if unknown:
            raise MethodError(f"method {name!r}: sample.load_parts {unknown} are not trained parts "
                              f"(parts: {', '.join(parts)})")


def method_config(config: dict, name: str, video: str | None = None) -> dict:
    """``{"name", "description", "trains", "train": {...} | None, "sample": {...},
    "resources": {...}, "sample_resources": {...}, "guidance": {...} | None}`` for method ``name`` (``extends`` resolved,
    defaults merged), on ``video`` with its per-video overrides (None: none).

    Raises :class:`MethodError` (a ``KeyError``) for an undefined or malformed method.
    """
    entry = method_entry(config, name, video=video)
    train = entry.get("train")
    train = _merge(config.get("training", {}), train) if train is not None else None
    sample = _merge(config.get("sampling", {}), entry.get("sample", {}))
    guidance = entry.get("guidance")
    _check(name, train, sample, guidance)
    resources = _merge(_merge(DEFAULT_RESOURCES, config.get("customize_resources", {})),
                       entry.get("resources", {}))
    sample_resources = _merge(_merge(DEFAULT_SAMPLE_RESOURCES, config.get("sample_resources", {})),
                              entry.get("sample_resources", {}))
    return {
        "name": name,
        "description": entry.get("description", ""),
        "trains": train is not None,
        "train": train,
        "sample": sample,
        "resources": resources,
        "sample_resources": sample_resources,
        "guidance": guidance,
    }

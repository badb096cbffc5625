"""The one training loop of every customization method.

A method is a loss from :data:`motionmatcher.methods.registry.LOSSES` (one module per method
in :mod:`motionmatcher.methods`) plus the parameters it trains and a
timestep range; this loop samples timesteps and noise, calls the loss, steps AdamW, logs,
checkpoints and resumes. What trains is declared (:func:`attach_trainable`):

* ``lora: {rank, dropout, targets}`` alone -- one LoRA adapter (``motion``), saved in plain peft
  format (MotionMatcher, DDPM-LoRA);
* ``trainable: {part: spec}`` -- named parts, each a LoRA adapter
  (``{type: lora, targets, rank, dropout, alpha}``, missing rank/dropout/alpha taken from
  ``lora``) or a full fine-tune of the matched modules' own weights
  (``{type: full, targets}``); a part may set its own ``lr``. MotionDirector: two adapters,
  ``spatial`` and ``temporal``; VMC: ``temporal_qkv``, full. Saved by
  :func:`~motionmatcher.customization.trained_weights.save_trained` (changed tensors only) and put
  on a base UNet by :func:`~motionmatcher.customization.trained_weights.load_trained`, optionally only some
  parts (MotionDirector samples with the temporal adapter alone).

Each step:

    t ~ U[min_timestep, max_timestep),  ε ~ N(0, I),
    out = loss_fn(unet, scheduler, z0, ε, t, c, **loss_kwargs);  out["loss"].backward()

Checkpoints (adapter + optimizer state + RNG states + step + log so far, all safetensors/JSON)
are written every ``checkpoint_every`` steps into a folder outside the rule's outputs; a rerun
resumes from the last one and, for a given seed, ends with the same adapter as an uninterrupted
run. Every checkpoint file carries a content hash; a damaged checkpoint is skipped with a
warning naming it, falling back to the previous one (the newest two are kept) or starting over
(:class:`Checkpointer`).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from motionmatcher.customization import lora as lora_lib
from motionmatcher.customization.module_index import fixed_structure
from motionmatcher.customization.trained_weights import TrainedParts
from motionmatcher.methods.registry import LOSSES
from motionmatcher.jobs.provenance import config_hash
from motionmatcher.files.atomic import atomic_directory, write_json
from motionmatcher.files.tensor_files import CorruptFileError, read_checked, write_checked

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    pass


@dataclass
class TrainConfig:
    loss: str = "motion_matching"
    loss_kwargs: dict = field(default_factory=dict)
    min_timestep: int = 0
    max_timestep: int | None = None  # default: the scheduler's num_train_timesteps
    steps: int = 400
    batch_size: int = 1
    lr: float = 5e-4
    weight_decay: float = 1e-2
    grad_clip: float | None = None
    checkpoint_every: int = 50
    gradient_checkpointing: bool = False
    lora: dict = field(default_factory=lambda: {"rank": 32, "dropout": 0.1, "targets": "motionmatcher"})
    #: named trainable parts (see the module docstring); None: one LoRA adapter from ``lora``.
    trainable: dict | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _autocast_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype | None:
    """The autocast dtype of a training step: bf16/fp16 on CUDA, none (fp32) elsewhere."""
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        return dtype
    return None


def _autocast(device: torch.device, dtype: torch.dtype):
    if _autocast_dtype(device, dtype) is not None:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"state.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, idx, k = key.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


class Checkpointer:
    """Writes/reads training checkpoints in ``folder/step-XXXXXX`` (atomic rename).

    Every file of a checkpoint carries a content hash (the safetensors files through
    :mod:`motionmatcher.files.tensor_files`, ``state.json`` its own ``content_sha256``), checked
    before anything is restored. The newest ``keep`` checkpoints are kept, so a damaged last
    one (a crash of the disk, not of the process: the rename is atomic) falls back to the one
    before; with none good, training starts over. Each skipped checkpoint is logged with its
    path and reason and listed in :attr:`skipped`.
    """

    FILES = ("trainable", "optimizer", "rng")

    def __init__(self, folder: str | os.PathLike, fingerprint: str, keep: int = 2):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.keep = keep
        self.skipped: list[dict] = []

    def _skip(self, path: Path, reason: str) -> None:
        log.warning("skipping resume checkpoint %s: %s", path, reason)
        self.skipped.append({"path": str(path), "reason": reason})

    def candidates(self) -> list[Path]:
        """Complete checkpoint folders, newest first."""
        if not self.folder.is_dir():
            return []
        return sorted((p for p in self.folder.glob("step-*") if p.is_dir()), reverse=True)

    def read(self, path: Path) -> dict:
        """Every file of checkpoint ``path``, verified; raises CorruptFileError or ValueError."""
        state_file = path / "state.json"
        try:
            meta = json.loads(state_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptFileError(state_file, f"unreadable ({e.__class__.__name__}: {e})") from None
        recorded = meta.pop("content_sha256", None) if isinstance(meta, dict) else None
        if recorded is None or config_hash(meta, full=True) != recorded:
            raise CorruptFileError(state_file, "content does not match its recorded sha256")
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError("written with another config")
        files = {name: read_checked(path / f"{name}.safetensors")[0] for name in self.FILES}
        return {"meta": meta, **files}

    def latest(self) -> dict | None:
        """The newest checkpoint that verifies (``{"path", "meta", "trainable", ...}``), or None."""
        for p in self.candidates():
            try:
                ck = self.read(p)
            except (CorruptFileError, ValueError) as e:
                self._skip(p, str(e))
                continue
            return {"path": p, **ck}
        return None

    def save(self, step: int, params: dict[str, torch.Tensor], opt, generator: torch.Generator,
             rows: list[dict], scaler=None) -> Path:
        final = self.folder / f"step-{step:06d}"
        rebuild = f"delete {self.folder} to start training over"
        with atomic_directory(final) as tmp:
            write_checked(tmp / "trainable.safetensors", params, rebuild=rebuild)
            opt_tensors, opt_meta = _optimizer_tensors(opt)
            write_checked(tmp / "optimizer.safetensors", opt_tensors, rebuild=rebuild)
            rng = {"generator": generator.get_state(), "torch_cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
            write_checked(tmp / "rng.safetensors", rng, rebuild=rebuild)
            state = {"step": step, "fingerprint": self.fingerprint, "optimizer": opt_meta, "log": rows,
                     "grad_scaler": scaler.state_dict() if scaler is not None else None}
            write_json(tmp / "state.json", {**state, "content_sha256": config_hash(state, full=True)})
        for old in self.candidates()[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def restore(ck: dict, named_params: dict[str, torch.nn.Parameter], opt, generator: torch.Generator,
                scaler=None) -> tuple[int, list[dict]]:
        """Put a verified checkpoint (:meth:`latest`) back into params, optimizer, RNGs and the
        fp16 loss scaler (when both the run and the checkpoint have one)."""
        meta, values = ck["meta"], ck["trainable"]
        missing = [n for n in named_params if n not in values]
        if missing:
            raise CorruptFileError(ck["path"] / "trainable.safetensors", f"has no tensor {missing[0]}")
        with torch.no_grad():
            for name, p in named_params.items():
                p.copy_(values[name].to(p.device, p.dtype))
        opt.load_state_dict(_optimizer_state(ck["optimizer"], meta["optimizer"]))
        rng = ck["rng"]
        generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch_cpu"])
        if torch.cuda.is_available():
            states = [rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        if scaler is not None and meta.get("grad_scaler"):
            scaler.load_state_dict(meta["grad_scaler"])
        return meta["step"], meta["log"]


def _part_specs(cfg: TrainConfig) -> dict[str, dict]:
    specs = {}
    for name, spec in (cfg.trainable or {}).items():
        spec = dict(spec or {})
        kind = spec.get("type", "lora")
        if kind not in ("lora", "full"):
            raise TrainingError(f"trainable part {name!r}: type must be 'lora' or 'full', got {kind!r}")
        if not spec.get("targets"):
            raise TrainingError(f"trainable part {name!r}: `targets` is required")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise TrainingError(f"trainable part {name!r}: use letters, digits and _ only")
        if kind == "lora":
            for k in ("rank", "dropout", "alpha"):
                spec.setdefault(k, cfg.lora.get(k))
        specs[name] = {**spec, "type": kind}
    return specs


def _full_part_params(unet: torch.nn.Module, name: str, targets: str) -> dict[str, torch.nn.Parameter]:
    regex = lora_lib.TARGETS.get(targets, targets)
    out = {}
    for mname, module in unet.named_modules():
        if re.fullmatch(regex, mname):
            for pname, p in module.named_parameters(recurse=False):
                out[f"{mname}.{pname}"] = p
    if not out:
        raise TrainingError(f"trainable part {name!r}: no module matches {targets!r}")
    return out


def attach_trainable(unet: torch.nn.Module, cfg: TrainConfig) -> tuple[dict[str, torch.nn.Parameter], object]:
    """Attach what the method trains; returns (named trainable params, spec).

    Without ``cfg.trainable`` the spec is the peft ``LoraConfig`` of the one adapter (as
    before); with it, a :class:`TrainedParts`. Every other parameter is frozen
    (``requires_grad=False``).
    """
    if not cfg.trainable:
        lcfg = lora_lib.lora_config(**cfg.lora)
        lora_lib.add_lora(unet, lcfg)
        named = {n: p for n, p in unet.named_parameters() if p.requires_grad}
        return named, lcfg

    specs = _part_specs(cfg)
    module_names = [n for n, _ in unet.named_modules()]
    for name, spec in specs.items():
        if spec["type"] == "lora" and any(f".{name}." in f".{m}." for m in module_names):
            # peft finds an adapter's weights by its name inside parameter names
            raise TrainingError(f"trainable part {name!r}: the name occurs in the UNet's module names")
    configs = {n: lora_lib.lora_config(rank=s["rank"], dropout=s["dropout"], targets=s["targets"],
                                       alpha=s.get("alpha"))
               for n, s in specs.items() if s["type"] == "lora"}
    try:
        lora_params = lora_lib.add_loras(unet, configs) if configs else {}
    except ValueError as e:
        raise TrainingError(str(e)) from None
    if not configs:
        unet.requires_grad_(False)
    ids = {n: {id(p) for p in ps} for n, ps in lora_params.items()}
    parts, named = {}, {}
    all_named = dict(unet.named_parameters())
    for name, spec in specs.items():
        if spec["type"] == "lora":
            pnames = [n for n, p in all_named.items() if id(p) in ids[name]]
            parts[name] = {"type": "lora", "config": configs[name], "params": pnames}
        else:
            full = _full_part_params(unet, name, spec["targets"])
            for pname, p in full.items():
                if pname in named:
                    raise TrainingError(f"trainable part {name!r}: parameter {pname} is in two parts")
                p.requires_grad_(True)
            parts[name] = {"type": "full", "targets": lora_lib.TARGETS.get(spec["targets"], spec["targets"]),
                           "params": list(full)}
        parts[name]["lr"] = spec.get("lr")
        for pname in parts[name]["params"]:
            named[pname] = all_named[pname]
    return named, TrainedParts(parts)


def _param_groups(named: dict[str, torch.nn.Parameter], spec, lr: float) -> list[dict]:
    """One AdamW group per part that sets its own ``lr``, one for the rest."""
    if not isinstance(spec, TrainedParts) or not any(p.get("lr") for p in spec.parts.values()):
        return [{"params": list(named.values())}]
    groups, rest = [], set(named)
    for part in spec.parts.values():
        if part.get("lr"):
            groups.append({"params": [named[n] for n in part["params"]], "lr": float(part["lr"])})
            rest -= set(part["params"])
    if rest:
        groups.insert(0, {"params": [p for n, p in named.items() if n in rest], "lr": lr})
    return groups


def _loss_function(cfg: TrainConfig, label: str):
    """The method's loss from :data:`LOSSES` and whether it takes the run's ``generator``."""
    if cfg.loss not in LOSSES:
        raise TrainingError(f"{label}: unknown loss {cfg.loss!r} (known: {', '.join(LOSSES)})")
    loss_fn = LOSSES[cfg.loss]
    return loss_fn, "generator" in inspect.signature(loss_fn).parameters


def _timestep_range(cfg: TrainConfig, scheduler, label: str) -> tuple[int, int]:
    """``[t_lo, t_hi)`` the timesteps are drawn from: ``[min_timestep, max_timestep or T)``."""
    T = scheduler.config.num_train_timesteps
    t_lo, t_hi = cfg.min_timestep, cfg.max_timestep or T
    if not 0 <= t_lo < t_hi <= T:
        raise TrainingError(f"{label}: timestep range [{t_lo}, {t_hi}) outside [0, {T})")
    return t_lo, t_hi


def _trainable_and_optimizer(unet, cfg: TrainConfig):
    """Attach what the method trains (:func:`attach_trainable`), switch on gradient
    checkpointing if asked, and make AdamW over it; returns (named params, spec, optimizer)."""
    named, spec = attach_trainable(unet, cfg)
    if cfg.gradient_checkpointing:
        from motionmatcher.customization.checkpointing import enable_gradient_checkpointing

        enable_gradient_checkpointing(unet)
    opt = torch.optim.AdamW(_param_groups(named, spec, cfg.lr), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return named, spec, opt


def _run_fingerprint(cfg: TrainConfig, seed: int, caption: str, latents_shape) -> str:
    """What a checkpoint must have been written with to be resumed from."""
    # (`trainable: None` left out: checkpoints written before the field existed stay valid)
    # (gradient_checkpointing left out: it changes memory, not the result -- a job retried at a
    # higher memory level resumes from the checkpoints of the attempt that ran out of memory)
    fp_cfg = {k: v for k, v in cfg.__dict__.items()
              if not (k == "trainable" and v is None) and k != "gradient_checkpointing"}
    return config_hash({"cfg": fp_cfg, "seed": seed, "caption": caption, "shape": list(latents_shape)})


def _resume(ckpt: Checkpointer, named, opt, generator, scaler, label: str, record: dict | None,
            checkpoint_dir):
    """Restore the newest good checkpoint, if any; returns (steps done, log rows so far) and
    notes how the run started in ``record``."""
    start, rows = 0, []
    if (last := ckpt.latest()) is not None:
        start, rows = Checkpointer.restore(last, named, opt, generator, scaler)
        log.info("%s: resumed from %s (step %d)", label, last["path"], start)
    elif ckpt.skipped:
        log.warning("%s: no usable resume checkpoint in %s; training starts over", label, checkpoint_dir)
    if record is not None:
        record["resumed_from"] = str(last["path"]) if last is not None else None
        record["resumed_at_step"] = start
        record["skipped_checkpoints"] = list(ckpt.skipped)
    return start, rows


def _draw_timesteps_and_noise(generator: torch.Generator, t_lo: int, t_hi: int, batch_size: int, shape,
                              device) -> tuple[torch.Tensor, torch.Tensor]:
    """t ~ U[t_lo, t_hi) per sample, then ε ~ N(0, I), both from the run's CPU generator (its
    state is checkpointed, so a resumed run draws what an uninterrupted one would)."""
    timesteps = torch.randint(t_lo, t_hi, (batch_size,), generator=generator).to(device)
    noise = torch.randn(shape, generator=generator).to(device)
    return timesteps, noise


def _check_loss_finite(loss: torch.Tensor, label: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(f"{label}: loss is {loss.item()} at step {step}; stopping "
                            "(try a lower lr, fp32, or check the reference latents)")


def _optimizer_step(loss: torch.Tensor, opt, params: list, grad_clip: float | None, scaler) -> None:
    """Backward, optional gradient-norm clipping, AdamW step, gradients cleared. With an fp16
    loss scaler the loss is scaled and the gradients unscaled before clipping."""
    if scaler is None:
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
    else:
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(opt)
        scaler.update()
    opt.zero_grad(set_to_none=True)


def _log_row(step: int, timesteps: torch.Tensor, opt, seconds: float, scaler, out: dict) -> dict:
    """One row of the training log: step, first timestep, lr, time, loss scale, loss terms."""
    row = {"step": step, "timestep": int(timesteps[0]), "lr": opt.param_groups[0]["lr"], "seconds": seconds}
    if scaler is not None:  # the scale of the next step (it backs off on overflow)
        row["loss_scale"] = float(scaler.get_scale())
    row.update({k: float(v.detach()) for k, v in out.items()})
    return row


def _finish(unet, cfg: TrainConfig, rows: list[dict], label: str) -> pd.DataFrame:
    """Put the UNet back in eval mode (gradient checkpointing off); the log as a frame."""
    unet.eval()
    if cfg.gradient_checkpointing:
        from motionmatcher.customization.checkpointing import disable_gradient_checkpointing

        disable_gradient_checkpointing(unet)
    frame = pd.DataFrame(rows)
    if not frame.empty and not math.isfinite(frame["loss"].iloc[-1]):
        raise TrainingError(f"{label}: final loss is not finite")
    return frame


def train(
    model,
    latents: torch.Tensor,
    caption: str,
    cfg: TrainConfig,
    *,
    seed: int,
    checkpoint_dir: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    label: str = "",
    progress: bool = True,
    on_step=None,
    record: dict | None = None,
) -> tuple[object, pd.DataFrame]:
    """Train ``model.unet`` in place on one reference video; return (spec, log frame) -- spec as
    :func:`attach_trainable` returns it (a peft config for a one-adapter method); save the
    result with :func:`~motionmatcher.customization.trained_weights.save_trained`.

    ``latents``: cached reference latents (1, 4, F, h, w). ``on_step(step, out)`` is called
    after every optimizer step (tests use it to simulate a crash). ``record``, a dict, gets
    how the run started: ``resumed_from`` (checkpoint folder or None), ``resumed_at_step`` and
    ``skipped_checkpoints`` (damaged or foreign ones, with the reason) -- for ``run.json``.
    """
    loss_fn, accepts_generator = _loss_function(cfg, label)
    unet = model.unet
    device = unet.device
    if getattr(model, "backbone", None) is not None:  # a DiT: its own LoRA target modules
        cfg = model.backbone.train_config(cfg, label)
    scheduler = model.ddim_scheduler()
    t_lo, t_hi = _timestep_range(cfg, scheduler, label)

    torch.manual_seed(seed)  # LoRA init, then dropout masks
    named, spec, opt = _trainable_and_optimizer(unet, cfg)
    text = model.encode_prompt([caption], warn_context=label).expand(cfg.batch_size, -1, -1)
    z0 = latents.to(device=device, dtype=torch.float32).expand(cfg.batch_size, -1, -1, -1, -1)
    generator = torch.Generator().manual_seed(seed)  # timesteps and noise, drawn on the CPU
    # fp16 autocast: scale the loss (as the official code's accelerate fp16), else the small
    # MotionMatcher gradients underflow to zero (benchmarks/precision.py)
    scaler = torch.amp.GradScaler(device.type) if _autocast_dtype(device, dtype) == torch.float16 else None
    ckpt = Checkpointer(checkpoint_dir, _run_fingerprint(cfg, seed, caption, latents.shape))
    start, rows = _resume(ckpt, named, opt, generator, scaler, label, record, checkpoint_dir)
    loss_kwargs = {**cfg.loss_kwargs, **({"generator": generator} if accepts_generator else {})}

    unet.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {label}",
               disable=not progress, mininterval=1.0)
    with fixed_structure(unet):  # LoRA in: the per-step walks of the module tree done once
        for step in bar:
            t0 = time.perf_counter()
            timesteps, noise = _draw_timesteps_and_noise(generator, t_lo, t_hi, cfg.batch_size, z0.shape, device)
            with _autocast(device, dtype):
                out = loss_fn(unet, scheduler, z0, noise, timesteps, text, **loss_kwargs)
            _check_loss_finite(out["loss"], label, step + 1)
            _optimizer_step(out["loss"], opt, list(named.values()), cfg.grad_clip, scaler)
            rows.append(_log_row(step + 1, timesteps, opt, time.perf_counter() - t0, scaler, out))
            bar.set_postfix(loss=f"{rows[-1]['loss']:.4g}")
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                ckpt.save(step + 1, {n: p.detach() for n, p in named.items()}, opt, generator, rows, scaler)
            if on_step is not None:
                on_step(step + 1, out)
    bar.close()
    return spec, _finish(unet, cfg, rows, label)

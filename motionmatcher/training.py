"""The one training loop of every customization method.

A method is a loss from :data:`motionmatcher.losses.LOSSES` plus the parameters it trains (a
LoRA adapter on chosen modules) and a timestep range; this loop samples timesteps and noise,
calls the loss, steps AdamW, logs, checkpoints and resumes. Each step:

    t ~ U[min_timestep, max_timestep),  ε ~ N(0, I),
    out = loss_fn(unet, scheduler, z0, ε, t, c, **loss_kwargs);  out["loss"].backward()

Checkpoints (adapter + optimizer state + RNG states + step + log so far, all safetensors/JSON)
are written every ``checkpoint_every`` steps into a folder outside the rule's outputs; a rerun
resumes from the last one and, for a given seed, ends with the same adapter as an uninterrupted
run.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from motionmatcher import lora as lora_lib
from motionmatcher.losses import LOSSES
from motionmatcher.runtime import config_hash, load_tensors, save_tensors, write_json

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
    lora: dict = field(default_factory=lambda: {"rank": 32, "dropout": 0.1, "targets": "all_transformer_linears"})

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _autocast(device: torch.device, dtype: torch.dtype):
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
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
    """Writes/reads training checkpoints in ``folder/step-XXXXXX`` (atomic rename)."""

    def __init__(self, folder: str | os.PathLike, fingerprint: str):
        self.folder = Path(folder)
        self.fingerprint = fingerprint

    def latest(self) -> Path | None:
        if not self.folder.is_dir():
            return None
        done = sorted(p for p in self.folder.glob("step-*") if (p / "state.json").is_file())
        for p in reversed(done):
            meta = json.loads((p / "state.json").read_text())
            if meta.get("fingerprint") == self.fingerprint:
                return p
            log.warning("ignoring checkpoint %s: written with another config", p)
        return None

    def save(self, step: int, params: dict[str, torch.Tensor], opt, generator: torch.Generator,
             rows: list[dict]) -> Path:
        final = self.folder / f"step-{step:06d}"
        tmp = self.folder / f".tmp-step-{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_tensors(params, tmp / "trainable.safetensors")
        opt_tensors, opt_meta = _optimizer_tensors(opt)
        save_tensors(opt_tensors, tmp / "optimizer.safetensors")
        rng = {"generator": generator.get_state(), "torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_tensors(rng, tmp / "rng.safetensors")
        write_json(tmp / "state.json", {"step": step, "fingerprint": self.fingerprint, "optimizer": opt_meta, "log": rows})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.folder.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load(path: Path, named_params: dict[str, torch.nn.Parameter], opt, generator: torch.Generator) -> tuple[int, list[dict]]:
        meta = json.loads((path / "state.json").read_text())
        values = load_tensors(path / "trainable.safetensors")
        with torch.no_grad():
            for name, p in named_params.items():
                p.copy_(values[name].to(p.device, p.dtype))
        opt.load_state_dict(_optimizer_state(load_tensors(path / "optimizer.safetensors"), meta["optimizer"]))
        rng = load_tensors(path / "rng.safetensors")
        generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch_cpu"])
        if torch.cuda.is_available():
            states = [rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        return meta["step"], meta["log"]


def attach_trainable(unet: torch.nn.Module, cfg: TrainConfig) -> tuple[dict[str, torch.nn.Parameter], object]:
    """Attach what the method trains; returns (named trainable params, peft config)."""
    lcfg = lora_lib.lora_config(**cfg.lora)
    lora_lib.add_lora(unet, lcfg)
    named = {n: p for n, p in unet.named_parameters() if p.requires_grad}
    return named, lcfg


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
) -> tuple[object, pd.DataFrame]:
    """Train ``model.unet`` in place on one reference video; return (peft config, log frame).

    ``latents``: cached reference latents (1, 4, F, h, w). ``on_step(step, out)`` is called
    after every optimizer step (tests use it to simulate a crash).
    """
    if cfg.loss not in LOSSES:
        raise TrainingError(f"{label}: unknown loss {cfg.loss!r} (known: {', '.join(LOSSES)})")
    loss_fn = LOSSES[cfg.loss]
    accepts_generator = "generator" in inspect.signature(loss_fn).parameters
    unet = model.unet
    device = unet.device
    scheduler = model.ddim_scheduler()
    T = scheduler.config.num_train_timesteps
    t_lo, t_hi = cfg.min_timestep, cfg.max_timestep or T
    if not 0 <= t_lo < t_hi <= T:
        raise TrainingError(f"{label}: timestep range [{t_lo}, {t_hi}) outside [0, {T})")

    torch.manual_seed(seed)  # LoRA init, then dropout masks
    named, lcfg = attach_trainable(unet, cfg)
    if cfg.gradient_checkpointing:
        from motionmatcher.checkpointing import enable_gradient_checkpointing

        enable_gradient_checkpointing(unet)
    opt = torch.optim.AdamW(list(named.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    text = model.encode_prompt([caption], warn_context=label).expand(cfg.batch_size, -1, -1)
    z0 = latents.to(device=device, dtype=torch.float32).expand(cfg.batch_size, -1, -1, -1, -1)

    generator = torch.Generator().manual_seed(seed)  # timesteps and noise, drawn on the CPU
    fingerprint = config_hash({"cfg": cfg.__dict__, "seed": seed, "caption": caption, "shape": list(latents.shape)})
    ckpt = Checkpointer(checkpoint_dir, fingerprint)
    start, rows = 0, []
    if (last := ckpt.latest()) is not None:
        start, rows = Checkpointer.load(last, named, opt, generator)
        log.info("%s: resumed from %s (step %d)", label, last, start)

    unet.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {label}",
               disable=not progress, mininterval=1.0)
    for step in bar:
        t0 = time.perf_counter()
        timesteps = torch.randint(t_lo, t_hi, (cfg.batch_size,), generator=generator).to(device)
        noise = torch.randn(z0.shape, generator=generator).to(device)
        kwargs = dict(cfg.loss_kwargs)
        if accepts_generator:
            kwargs["generator"] = generator
        with _autocast(device, dtype):
            out = loss_fn(unet, scheduler, z0, noise, timesteps, text, **kwargs)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise TrainingError(f"{label}: loss is {loss.item()} at step {step + 1}; stopping "
                                "(try a lower lr, fp32, or check the reference latents)")
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(list(named.values()), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        row = {"step": step + 1, "timestep": int(timesteps[0]), "lr": opt.param_groups[0]["lr"],
               "seconds": time.perf_counter() - t0}
        row.update({k: float(v.detach()) for k, v in out.items()})
        rows.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4g}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            ckpt.save(step + 1, {n: p.detach() for n, p in named.items()}, opt, generator, rows)
        if on_step is not None:
            on_step(step + 1, out)
    bar.close()
    unet.eval()
    if cfg.gradient_checkpointing:
        from motionmatcher.checkpointing import disable_gradient_checkpointing

        disable_gradient_checkpointing(unet)
    frame = pd.DataFrame(rows)
    if not frame.empty and not math.isfinite(frame["loss"].iloc[-1]):
        raise TrainingError(f"{label}: final loss is not finite")
    return lcfg, frame

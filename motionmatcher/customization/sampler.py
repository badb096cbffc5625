"""DDIM sampling of videos with classifier-free guidance, a timestep-gated motion LoRA and an
optional DDIM-inversion noise prior.

diffusers' ``TextToVideoSDPipeline`` is deprecated, so the loop is written here directly on the
``UNet3DConditionModel``, a :class:`~diffusers.DDIMScheduler` and the VAE:

* classifier-free guidance in one batched UNet forward: ε = ε_u + g · (ε_c − ε_u) (with g = 1
  only the conditional half runs);
* LoRA gating (MotionDirector-style): with an adapter, it is enabled exactly for the timesteps
  t ≥ ``lora_min_timestep`` (the high-noise steps that lay out the motion) and disabled below,
  scaled by ``lora_scale``; the adapter's enabled state and scale are restored afterwards;
* noise prior: z_init = √p · z_inv + √(1 − p) · ε (p = ``noise_prior``, z_inv the DDIM-inverted
  reference latents, ε ~ N(0, I) from the sample's own seed);
* training-free guidance (DMT, MotionClone): an optional :class:`motionmatcher.customization.guidance.Guidance`
  may transform the initial latents, optimise the latent before a step, add a gradient on the
  latent to the step's update, and restart steps (see :mod:`motionmatcher.customization.guidance`). Without
  one the loop is the plain one above, under ``torch.inference_mode``.

Every (prompt, seed) sample draws its initial noise (and, for η > 0, its step noise) from its own
CPU ``torch.Generator`` seeded with ``seed``, so its result does not depend on which other
samples share its batch nor on the device the noise ends up on.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import lora as lora_mod
from .inversion import make_ddim_scheduler
from .module_index import fixed_structure
from ..backbones.latents import decode_latents
from ..files.tensor_files import check_finite

log = logging.getLogger(__name__)

__all__ = ["SamplingConfig", "initial_latents", "sample_latents", "sample_videos"]


@dataclass
class SamplingConfig:
    num_steps: int = 75
    guidance_scale: float = 12.0
    negative_prompt: str = ""
    #: p in z_init = √p · z_inv + √(1 − p) · ε; 0 = pure noise (no inversion latents needed).
    noise_prior: float = 0.3
    #: the adapter is enabled for timesteps t >= lora_min_timestep, disabled below.
    lora_min_timestep: int = 500
    lora_scale: float = 1.0
    #: (prompt, seed) samples per UNet forward (×2 with classifier-free guidance).
    batch_size: int = 1
    vae_chunk_size: int = 8
    eta: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_generators(generator, batch: int) -> list[torch.Generator]:
    gens = generator if isinstance(generator, (list, tuple)) else [generator] * batch
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch}")
    return list(gens)


def initial_latents(shape, generator, inversion_latents: torch.Tensor | None = None,
                    noise_prior: float = 0.0) -> torch.Tensor:
    """Initial latents √p · z_inv + √(1 − p) · ε, float32, ``shape`` = ``(B, 4, F, h, w)``.

    ε ~ N(0, I) is drawn on the CPU in float32: with a list of B generators, row i from
    ``generator[i]`` (shape ``(1, …)`` each, so a row does not depend on the others); with a single
    generator, all rows from it in one draw. ``p = noise_prior`` ∈ [0, 1]; p = 0 gives pure noise
    (``inversion_latents`` may then be None), p = 1 gives z_inv. ``inversion_latents``
    ``(1 or B, 4, F, h, w)`` broadcast over the batch. The result is on ``inversion_latents``'
    device, else on the CPU.
    """
    shape = tuple(shape)
    if not 0.0 <= noise_prior <= 1.0:
        raise ValueError(f"noise_prior must be in [0, 1], got {noise_prior}")
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        noise = torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32)
                           for g in generator])
    else:
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    if noise_prior == 0.0:
        return noise if inversion_latents is None else noise.to(inversion_latents.device)
    if inversion_latents is None:
        raise ValueError(f"noise_prior={noise_prior} > 0 needs inversion latents")
    if inversion_latents.ndim != len(shape) or tuple(inversion_latents.shape[1:]) != shape[1:] \
            or inversion_latents.shape[0] not in (1, shape[0]):
        raise ValueError(
            f"inversion latents of shape {tuple(inversion_latents.shape)} do not fit the sample shape "
            f"{shape} (frames, height and width must match the reference video's)"
        )
    z_inv = inversion_latents.to(torch.float32)
    noise = noise.to(z_inv.device)
    return noise_prior**0.5 * z_inv + (1.0 - noise_prior) ** 0.5 * noise


class _AdapterState:
    """Snapshot of every LoRA layer's enabled flag and scaling, restored on exit."""

    def __init__(self, unet):
        self.layers = lora_mod.tuner_layers(unet)
        self.saved = [(layer.disable_adapters, dict(layer.scaling)) for layer in self.layers]

    def restore(self):
        for layer, (disabled, scaling) in zip(self.layers, self.saved):
            layer.enable_adapters(not disabled)
            layer.scaling.update(scaling)


class _LoraGate:
    """MotionDirector-style timestep gating of a LoRA adapter.

    With an adapter (``has_adapter``) it is scaled by ``scale`` and enabled exactly at the
    timesteps t ≥ ``min_timestep`` (the high-noise steps that lay out the motion), disabled
    below; :meth:`restore` puts every layer's enabled flag and scaling back as they were when the
    gate was made. Without one the UNet runs as it is.
    """

    def __init__(self, unet, has_adapter: bool, min_timestep: int, scale: float):
        self.unet, self.has_adapter = unet, has_adapter
        self.min_timestep, self.scale = min_timestep, scale
        self.layers = lora_mod.tuner_layers(unet)
        if has_adapter and not self.layers:
            raise ValueError("has_adapter=True but the UNet carries no LoRA adapter")
        self.enabled: bool | None = None  # as last switched (None: not yet)
        self._state: _AdapterState | None = None

    def save(self) -> None:
        if self.has_adapter:
            self._state = _AdapterState(self.unet)

    def apply_scale(self) -> None:
        if self.has_adapter:
            lora_mod.set_lora_scale(self.unet, self.scale)

    def switch(self, t) -> None:
        """Enable the adapter for timestep ``t`` iff t ≥ ``min_timestep`` (toggled on change only)."""
        if self.has_adapter:
            on = t >= self.min_timestep
            if on != self.enabled:
                lora_mod.set_lora_enabled(self.unet, on)
                self.enabled = on

    def is_enabled(self) -> bool:
        """Whether the UNet's adapter runs at the current step (False without one)."""
        if self.has_adapter:
            return bool(self.enabled)
        return bool(self.layers) and not self.layers[0].disable_adapters

    def restore(self) -> None:
        if self._state is not None:
            self._state.restore()


class _NoisePrediction:
    """ε̂(z_t, t) with classifier-free guidance (Ho & Salimans 2022, Eq. 6, with g = 1 + w):
    ε̂ = ε_u + g · (ε_c − ε_u), the unconditional and conditional halves in one batched UNet
    forward; with g = 1 only the conditional half runs. Float32 in and out, the UNet in its
    parameters' dtype."""

    def __init__(self, unet, text_embeddings: torch.Tensor, negative_embeddings: torch.Tensor | None,
                 guidance_scale: float, batch: int):
        param = next(unet.parameters())
        self.unet, self.device, self.dtype = unet, param.device, param.dtype
        self.guidance_scale = guidance_scale
        self.guided = guidance_scale != 1.0
        self.cond = text_embeddings.to(device=self.device, dtype=self.dtype)
        self.neg = None
        if self.guided:
            self.neg = negative_embeddings.to(device=self.device, dtype=self.dtype).expand(batch, -1, -1)
            self.embeddings = torch.cat([self.neg, self.cond])
        else:
            self.embeddings = self.cond

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        z_in = torch.cat([z, z]) if self.guided else z
        out = self.unet(z_in.to(self.dtype), torch.tensor(t, device=self.device),
                        encoder_hidden_states=self.embeddings).sample.to(torch.float32)
        if self.guided:
            eps_u, eps_c = out.chunk(2)
            out = eps_u + self.guidance_scale * (eps_c - eps_u)
        return out

    def guidance_context(self) -> dict:
        """What a :class:`~motionmatcher.customization.guidance.Guidance` hook gets as ``ctx``."""
        return {"cond": self.cond, "neg": self.neg, "guided": self.guided,
                "guidance_scale": self.guidance_scale}


def _row_noise(gens: list[torch.Generator], shape, device) -> torch.Tensor:
    """ε ~ N(0, I) of shape ``(len(gens), *shape)``, row i from ``gens[i]`` on the CPU in float32
    (independent of the batch's other rows and of the device), then moved to ``device``."""
    return torch.cat([torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in gens]).to(device)


def _check_sampling_inputs(text_embeddings, negative_embeddings, batch: int, guided: bool,
                           generator, guidance) -> list[torch.Generator] | None:
    """Raise on inputs that do not fit together; return the rows' CPU generators (None: none)."""
    if text_embeddings.shape[0] != batch:
        raise ValueError(f"text_embeddings batch {text_embeddings.shape[0]} != latents batch {batch}")
    if guided and negative_embeddings is None:
        raise ValueError("guidance_scale != 1 needs negative_embeddings")
    gens = _cpu_generators(generator, batch) if generator is not None else None
    if guidance is not None and guidance.restart_sampling and gens is None:
        raise ValueError(f"guidance {guidance.name!r} restarts steps: pass the rows' generators")
    return gens


def _ddim_step(scheduler, eps: _NoisePrediction, z: torch.Tensor, t, eta: float,
               row_noise: Callable[[], torch.Tensor] | None) -> torch.Tensor:
    """One scheduler step z_t → z_{t−1} on ε̂(z_t, t) (on the UNet DDIM, Song et al. 2021, Eq. 12;
    on a DiT its schedule's own step); for η > 0 the step noise comes from the rows' generators
    (``row_noise``), else the scheduler's."""
    out = eps(z, t)
    variance_noise = row_noise() if eta > 0 and row_noise is not None else None
    return scheduler.step(out, t, z, eta=eta, variance_noise=variance_noise).prev_sample


def _guided_ddim_step(guidance, unet, scheduler, eps: _NoisePrediction, z: torch.Tensor, i: int,
                      timesteps: list, eta: float, row_noise, ctx: dict) -> torch.Tensor:
    """Step i of a guided trajectory (:mod:`motionmatcher.customization.guidance`): the guidance's
    ``before_step`` on z_k, the DDIM step, its score in the direction term
    (:func:`_guided_update`) and, for a restarting guidance except at the last step, the result
    re-noised back to t_k (:func:`_renoise`) and stepped again."""
    t = timesteps[i]
    z = guidance.before_step(unet, z, i, t, ctx)
    z_prev = _ddim_step(scheduler, eps, z, t, eta, row_noise)
    z_prev = _guided_update(guidance, unet, scheduler, z, z_prev, i, t, ctx)
    if guidance.restart_sampling and i < len(timesteps) - 1:
        z_prev = _renoise(scheduler, z_prev, timesteps[i + 1], row_noise)
        z_prev = _ddim_step(scheduler, eps, z_prev, t, eta, row_noise)
    return z_prev


def sample_latents(unet, scheduler_config, text_embeddings: torch.Tensor,
                   negative_embeddings: torch.Tensor | None, latents_init: torch.Tensor,
                   cfg: SamplingConfig, *, has_adapter: bool, progress=None,
                   on_step: Callable[[int, bool], None] | None = None,
                   generator=None, guidance=None) -> torch.Tensor:
    """DDIM-sample latents from ``latents_init`` ``(B, 4, F, h, w)``; returns float32 latents.

    ``text_embeddings`` ``(B, 77, D)``; ``negative_embeddings`` ``(1 or B, 77, D)`` (unused, may
    be None, when ``cfg.guidance_scale == 1``). ``has_adapter``: the UNet carries a LoRA adapter to
    gate by ``cfg.lora_min_timestep`` and scale by ``cfg.lora_scale``; when False the UNet runs as
    it is. ``progress``: a tqdm-like bar advanced by B (samples) per step, ``True`` for an own bar,
    or None/False. ``on_step(t, adapter_enabled)`` is called before each UNet forward.
    ``generator``: for ``eta > 0``, one CPU generator per row (or one for all) for the step noise
    (and for a guidance's restart noise). ``guidance``: a set-up
    :class:`motionmatcher.customization.guidance.Guidance` whose hooks run at every step (None: plain DDIM).
    """
    scheduler = make_ddim_scheduler(scheduler_config)
    scheduler.set_timesteps(cfg.num_steps)
    batch = latents_init.shape[0]
    gens = _check_sampling_inputs(text_embeddings, negative_embeddings, batch, cfg.guidance_scale != 1.0,
                                  generator, guidance)
    gate = _LoraGate(unet, has_adapter, cfg.lora_min_timestep, cfg.lora_scale)

    own_bar = progress is True
    bar = tqdm(total=cfg.num_steps * batch, desc="sampling", leave=False) if own_bar else (progress or None)
    gate.save()
    # guided steps take gradients: autograd must see these tensors (no inference_mode)
    no_grad = torch.inference_mode() if guidance is None else torch.no_grad()
    # a guidance captures attention maps at every step: the attention layers listed once
    index = fixed_structure(unet) if guidance is not None else nullcontext()
    try:
        with no_grad, index:
            eps = _NoisePrediction(unet, text_embeddings, negative_embeddings, cfg.guidance_scale, batch)
            gate.apply_scale()
            z = latents_init.to(device=eps.device, dtype=torch.float32)
            ctx = eps.guidance_context()
            row_noise = partial(_row_noise, gens, z.shape[1:], eps.device) if gens is not None else None
            timesteps = scheduler.timesteps.tolist()
            for i, t in enumerate(timesteps):
                gate.switch(t)
                if on_step is not None:
                    on_step(int(t), gate.is_enabled())
                if guidance is None:
                    z = _ddim_step(scheduler, eps, z, t, cfg.eta, row_noise)
                else:
                    z = _guided_ddim_step(guidance, unet, scheduler, eps, z, i, timesteps, cfg.eta,
                                          row_noise, ctx)
                if bar is not None:
                    bar.update(batch)
            return z
    finally:
        gate.restore()
        if own_bar:
            bar.close()


def _alpha_prod(scheduler, t: int) -> torch.Tensor:
    return scheduler.alphas_cumprod[t] if t >= 0 else scheduler.final_alpha_cumprod


def _guided_update(guidance, unet, scheduler, z, z_prev, i, t, ctx):
    """z_{k−1} − √(1 − ᾱ_{k−1})·√(1 − ᾱ_k)·score: the guidance's score on ε̂ in the DDIM
    direction term (``motionmatcher.customization.guidance``)."""
    score = guidance.score(unet, z, i, t, ctx)
    if score is None:
        return z_prev
    prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    coef = ((1 - _alpha_prod(scheduler, prev_t)) * (1 - _alpha_prod(scheduler, t))) ** 0.5
    return z_prev - coef.to(z_prev.device, torch.float32) * score.to(torch.float32)


def _renoise(scheduler, z, t_from: int, noise):
    """Noise z at t_from back up by Δ = T/N train steps with the single-step betas
    β[t_from], …, β[t_from + Δ − 1]: z ← √a·z + √(1 − a)·ε, a = Π(1 − β) (DMT's restart)."""
    n = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    a = torch.prod(1 - scheduler.betas[t_from: t_from + n].double()).float()
    return a.sqrt().to(z.device) * z + (1 - a).sqrt().to(z.device) * noise()


def sample_videos(model, prompts: list[str], seeds: list[int], *, n_frames: int, height: int,
                  width: int, cfg: SamplingConfig, inversion_latents: torch.Tensor | None = None,
                  has_adapter: bool = False, row_labels: list[str] | None = None,
                  progress: bool = True, guidance=None, reference=None,
                  guidance_inputs: list[dict | None] | None = None) -> list[dict]:
    """Sample one video per pair (``prompts[i]``, ``seeds[i]``) (equal lengths; repeat a prompt
    to sample it with several seeds).

    Returns, in the same order, dicts ``{"prompt", "seed", "latents" (1, 4, F, h, w) float32 CPU,
    "frames" uint8 numpy (F, H, W, 3), "seconds"}``; ``seconds`` is the wall time of the sample's
    batch (sampling + decoding) divided by the batch's size. Samples are batched
    ``cfg.batch_size`` at a time. Prompts longer than the text encoder's context are truncated
    with a warning naming ``row_labels[i]``. ``inversion_latents`` ``(1, 4, F, h, w)`` is needed
    when ``cfg.noise_prior > 0``. ``guidance`` (a :class:`motionmatcher.customization.guidance.Guidance`, set up
    here once with ``reference``, a :class:`motionmatcher.customization.guidance.Reference`) guides every batch
    and transforms its initial latents; ``guidance_inputs[i]`` are sample i's own inputs to it
    (MotionClone's object words; :meth:`~motionmatcher.customization.guidance.Guidance.prepare_samples`).
    """
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: pass one seed per prompt")
    if row_labels is not None and len(row_labels) != len(prompts):
        raise ValueError(f"{len(row_labels)} row labels for {len(prompts)} prompts")
    if guidance_inputs is not None and len(guidance_inputs) != len(prompts):
        raise ValueError(f"{len(guidance_inputs)} guidance inputs for {len(prompts)} prompts")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    s = model.vae_scale_factor
    if height % s or width % s:
        raise ValueError(f"height/width {height}x{width} must be multiples of {s}")
    # a DiT's VAE compresses time (4k+1 frames -> k+1 latent frames): the model says how many
    frames = model.latent_frames(n_frames) if hasattr(model, "latent_frames") else n_frames
    latent_shape = (model.unet.config.in_channels, frames, height // s, width // s)
    if cfg.noise_prior > 0 and inversion_latents is None:
        raise ValueError(f"noise_prior={cfg.noise_prior} > 0 needs inversion latents")

    # guidance differentiates through these embeddings: plain tensors, not inference tensors
    no_grad = torch.inference_mode() if guidance is None else torch.no_grad()
    with no_grad:
        # Each prompt on its own, so its embedding does not depend on the batch composition;
        # once per (prompt, row label), so a truncation is reported once per row, not per seed.
        labels = list(row_labels) if row_labels is not None else [""] * len(prompts)
        cache: dict[tuple[str, str], torch.Tensor] = {}
        for p, label in zip(prompts, labels):
            if (p, label) not in cache:
                cache[(p, label)] = model.encode_prompt([p], warn_context=label)
        embeddings = [cache[(p, label)] for p, label in zip(prompts, labels)]
        negative = None
        if cfg.guidance_scale != 1.0:
            negative = model.encode_prompt([cfg.negative_prompt], warn_context="negative_prompt")

    if guidance is not None:
        guidance.setup(model.unet, model.scheduler_config, cfg.num_steps, reference)
        guidance.prepare_samples(model.tokenizer, list(prompts), guidance_inputs)

    jobs = list(enumerate(seeds))
    results = []
    bar = tqdm(total=len(jobs) * cfg.num_steps, desc="sampling", disable=not progress)
    try:
        for start in range(0, len(jobs), cfg.batch_size):
            batch = jobs[start : start + cfg.batch_size]
            t0 = time.perf_counter()
            gens = [torch.Generator("cpu").manual_seed(int(seed)) for _, seed in batch]
            z0 = initial_latents((len(batch), *latent_shape), gens, inversion_latents, cfg.noise_prior)
            if guidance is not None:
                guidance.start_batch([i for i, _ in batch])
                z0 = guidance.initial_latents(z0)
            emb = torch.cat([embeddings[i] for i, _ in batch])
            z = sample_latents(
                model.unet, model.scheduler_config, emb, negative, z0, cfg,
                has_adapter=has_adapter, progress=bar, generator=gens, guidance=guidance,
            )
            # NaN latents would decode to black frames that score as perfectly consistent video
            where = ", ".join(dict.fromkeys(labels[i] or f"prompt {prompts[i]!r}" for i, _ in batch))
            check_finite({"latents": z}, step=f"sampling ({where}, {cfg.num_steps} denoising steps)")
            frames = decode_latents(model.vae, z, chunk_size=cfg.vae_chunk_size)
            seconds = (time.perf_counter() - t0) / len(batch)
            z = z.cpu()
            for k, (i, seed) in enumerate(batch):
                results.append({
                    "prompt": prompts[i],
                    "seed": int(seed),
                    "latents": z[k : k + 1].clone(),
                    "frames": np.ascontiguousarray(frames[k]),
                    "seconds": seconds,
                })
    finally:
        bar.close()
    return results

"""Training-free guidance: the hook the one sampler takes, and the tools guided steps share.

A training-free method (DMT, MotionClone; ``motionmatcher/methods/``) trains nothing: it steers
sampling with features of the reference video. The sampler (:func:`motionmatcher.customization.sampler.
sample_latents`) calls a :class:`Guidance` at every DDIM step k (timestep t_k, latent z_k):

* :meth:`Guidance.initial_latents` once on the initial latents (DMT's low-frequency init);
* :meth:`Guidance.before_step` before the UNet forward: may return *new* latents (DMT optimises
  z_k with Adam against its feature loss);
* :meth:`Guidance.score` after it: a gradient s·∇_z L(z_k) that enters the DDIM update as a
  classifier-guidance correction of the noise estimate in the direction term only
  (MotionClone)::

      ε̃ = ε̂ − s·√(1 − ᾱ_k)·∇_z L
      z_{k−1} = √ᾱ_{k−1}·x̂0(ε̂) + √(1 − ᾱ_{k−1})·ε̃
             = DDIM(ε̂) − √(1 − ᾱ_{k−1})·√(1 − ᾱ_k)·s·∇_z L

* ``restart_sampling`` (DMT): after each step but the last, z_{k−1} is noised back to t_k and
  the step is taken again.

Gradients are taken with respect to the latent only: :func:`guided_forward` switches off
``requires_grad`` of every UNet weight while a guided forward runs (so no weight ever gets a
``.grad`` and no weight gradient is computed), turns on the training-time gradient
checkpointing of :mod:`motionmatcher.customization.checkpointing` (without putting any dropout into training
mode), and :func:`forward_until` stops the UNet after the last block whose features the loss
needs. Only the needed maps are captured (:func:`motionmatcher.customization.attention.capture_attention`,
:class:`OutputStore`).

The reference enters through :class:`Reference`: its cached clean latents z_0 and the prompts'
embeddings. :meth:`Guidance.setup` DDIM-inverts z_0 as the official code does: a *fine*
inversion with ``inversion_steps`` steps (DMT 999, MotionClone 1000 officially: one step per
train timestep) with the caption (``inversion_prompt: caption``), kept only at the sampling
timesteps t_k, so ``reference_latents[t_k]`` is the fine inversion's z at t_k
(:func:`motionmatcher.customization.inversion.ddim_inversion`, ``keep_timesteps``). ``inversion_steps: null``
inverts at the sampler's own steps instead (cheap; tests and the demo).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from .checkpointing import (checkpointed_module_names, enable_gradient_checkpointing,
                            is_gradient_checkpointing_enabled)
from .inversion import ddim_inversion
from .motion_features import forward_until

__all__ = ["Guidance", "OutputStore", "Reference", "forward_until", "guided_forward", "guided_window"]


@dataclass
class Reference:
    """The reference video as the guidance sees it.

    ``latents``: clean scaled VAE latents z_0 (1, 4, F, h, w) (the ``cache_latents`` output);
    ``text_embeddings``: its caption's embeddings (1, 77, D) (the prompt of the reference
    branch); ``inversion_embeddings``: the inversion prompt's (1, 77, D) (``inversion.prompt``,
    as the ``cache_inversion`` rule uses); ``caption``: the caption's text (MotionClone looks
    its object word up in it).
    """

    latents: torch.Tensor
    text_embeddings: torch.Tensor
    inversion_embeddings: torch.Tensor
    caption: str | None = None


class OutputStore:
    """Forward outputs of named sub-modules, captured by forward hooks while installed.

    Like :class:`motionmatcher.customization.attention.AttentionStore` it only writes while ``active`` (the
    install context clears it on exit), so a recomputation by gradient checkpointing during
    backward stores nothing.
    """

    def __init__(self) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.active = True

    @contextmanager
    def capture(self, unet, names) -> Iterator["OutputStore"]:
        handles = []

        def hook(name):
            def fn(module, args, output):
                if self.active:
                    self.outputs[name] = output
            return fn

        self.outputs = {}
        self.active = True
        try:
            for name in names:
                handles.append(unet.get_submodule(name).register_forward_hook(hook(name)))
            yield self
        finally:
            self.active = False
            for h in handles:
                h.remove()


@contextmanager
def guided_forward(unet, gradient_checkpointing: bool = True) -> Iterator[None]:
    """Gradients on for a forward whose gradient is taken w.r.t. its *input latents* only.

    Every UNet parameter gets ``requires_grad=False`` for the duration (restored after), so
    autograd builds no weight gradient and no ``.grad`` appears on a weight. With
    ``gradient_checkpointing`` the UNet's sub-modules are checkpointed as in training
    (:mod:`motionmatcher.customization.checkpointing`): the wrappers run only for modules flagged as training,
    so exactly the wrapped modules get ``training = True`` (their children, dropout included,
    stay in eval mode).
    """
    params = [p for p in unet.parameters() if p.requires_grad]
    wrapped = []
    if gradient_checkpointing:
        if not is_gradient_checkpointing_enabled(unet):
            enable_gradient_checkpointing(unet)
        for name in checkpointed_module_names(unet):
            m = unet.get_submodule(name)
            if not m.training:
                wrapped.append(m)
                m.training = True  # the flag only; children keep theirs
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for p in params:
            p.requires_grad_(True)
        for m in wrapped:
            m.training = False


def guided_window(num_steps: int, max_guidance_timestep: float, min_guidance_timestep: float
                  ) -> range:
    """Indices of the sampling steps that are guided, DMT's ``get_timesteps`` rule.

    Steps are counted from the noisiest (index 0); with n steps the window is
    [n − ⌊n·max⌋, n − ⌊n·min⌋) (max = 1, min = 0.6: the first 40 % of the steps).
    """
    if not 0.0 <= min_guidance_timestep <= max_guidance_timestep <= 1.0:
        raise ValueError("need 0 <= min_guidance_timestep <= max_guidance_timestep <= 1, got "
                         f"{min_guidance_timestep}, {max_guidance_timestep}")
    start = max(num_steps - min(int(num_steps * max_guidance_timestep), num_steps), 0)
    end = num_steps - int(num_steps * min_guidance_timestep)
    return range(start, end)


class Guidance:
    """Base class of a training-free method's guidance (every hook a no-op).

    Subclasses set ``name`` and override what they use. The sampler guarantees the call order
    ``setup`` → ``prepare_samples`` → (per batch) ``start_batch``, ``initial_latents`` → per
    step ``before_step``, UNet, ``score``.
    """

    name = "none"
    #: after each step but the last, noise z_{k−1} back to t_k and take the step again (DMT)
    restart_sampling = False

    def __init__(self, inversion_steps: int | None = None, inversion_prompt: str = "caption") -> None:
        if inversion_prompt not in ("caption", "inversion"):
            raise ValueError(f"{self.name}: inversion_prompt must be 'caption' or 'inversion', "
                             f"got {inversion_prompt!r}")
        if inversion_steps is not None and int(inversion_steps) < 1:
            raise ValueError(f"{self.name}: inversion_steps must be >= 1 or null, got {inversion_steps}")
        #: steps of the reference's fine DDIM inversion (None: the sampler's own steps)
        self.inversion_steps = None if inversion_steps is None else int(inversion_steps)
        #: "caption": invert with the caption (official); "inversion": with ``inversion.prompt``
        self.inversion_prompt = inversion_prompt
        self.timesteps: list[int] = []
        self.reference_latents: dict[int, torch.Tensor] = {}
        #: (t, z_t) at the fine inversion's last (noisiest) timestep
        self.noisiest: tuple[int, torch.Tensor] | None = None
        self.reference: Reference | None = None

    # -- once per sampling job -------------------------------------------------------------
    def setup(self, unet, scheduler_config, num_steps: int, reference: Reference | None) -> None:
        """Invert the reference: ``reference_latents[t_k]`` = the fine inversion's z at each
        sampling timestep t_k (``inversion_steps``; None: the sampler's ``num_steps``)."""
        self.reference = reference
        if reference is None:
            raise ValueError(f"guidance {self.name!r} needs the reference (latents and prompts)")
        from .inversion import make_ddim_scheduler

        sched = make_ddim_scheduler(scheduler_config)
        sched.set_timesteps(num_steps)
        self.timesteps = sorted(int(t) for t in sched.timesteps.tolist())  # ascending
        emb = (reference.text_embeddings if self.inversion_prompt == "caption"
               else reference.inversion_embeddings)
        out = ddim_inversion(unet, scheduler_config, reference.latents.float(), emb,
                             num_steps=self.inversion_steps or num_steps, progress=False,
                             keep_timesteps=self.timesteps)
        param = next(unet.parameters())
        self.reference_latents = {t: out["kept"][t].clone().to(param.device) for t in self.timesteps}
        self.noisiest = (int(out["timesteps"][-1]), out["latents"].float().to(param.device))

    def prepare_samples(self, tokenizer, prompts: list[str], inputs: list[dict | None] | None
                        ) -> None:
        """Per-sample inputs of the job (``inputs[i]`` for ``prompts[i]``, e.g. MotionClone's
        ``caption_object``/``prompt_object``); checked here, before any step. Default: ignored."""

    def sample_record(self, sample: int) -> dict:
        """What to record about sample ``sample`` of the job (its row of the samples table)."""
        return {}

    # -- per batch / per step -------------------------------------------------------------
    def start_batch(self, samples: list[int]) -> None:
        """The job's sample indices of the batch about to be sampled (in batch order)."""

    def initial_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def before_step(self, unet, z: torch.Tensor, step: int, t: int, ctx: dict) -> torch.Tensor:
        return z

    def score(self, unet, z: torch.Tensor, step: int, t: int, ctx: dict) -> torch.Tensor | None:
        return None

r"""DMT: space-time feature guidance (Yatim et al., CVPR 2024, "Space-Time Diffusion Features for
Zero-Shot Text-Driven Motion Transfer"; official code ``diffusion-motion-transfer``, on Zeroscope).

Space-time feature loss. Let f(z_t) ∈ R^{F×C×h×w} be the features of a chosen UNet decoder
module for the latent video z_t, and its *space-time descriptor* the spatial marginal mean

.. math:: φ(z_t)_f = \frac{1}{hw} \sum_{y,x} f(z_t)_{f,:,y,x} ∈ R^C.

With the reference's features ψ = φ(z_t^{ref}) (its DDIM inversion at the same t, reference
caption) and the sample's φ = φ(z_t) (target prompt, no CFG), the loss compares frame
differences to every anchor frame a:

.. math:: L(z_t) = \sum_{\text{features}} \frac{1}{F} \sum_{a=1}^{F} \Big(1 − \frac{1}{F}
          \sum_{f=1}^{F} \cos\big(φ_f − φ_a,\; ψ_f − ψ_a\big)\Big)

(the anchor term f = a is the cosine of two zero vectors, 0, a constant, as in the official
code). At each guided step the latent is optimised before the denoising step,
z_t ← Adam-minimise L(z_t) for ``optimization_steps`` steps with learning rate linearly
decayed from ``lr[0]`` at the first to ``lr[1]`` at the last guided step.

Official defaults (``configs/guidance_config.yaml``), all of them the defaults here:
50 DDIM steps, CFG 10, guided steps the first 40 % (``max_guidance_timestep: 1``,
``min_guidance_timestep: 0.6``), 10 Adam steps, lr 0.007 → 0.004, features of decoder block
``up_blocks.1``: its upsampler's output, ``resnets[1]``'s residual branch before the skip
(``conv2``'s output: ``guidance_before_res``) and ``temp_convs[1]``'s output (``up_res_dict
{1: [1]}``; ``up_blocks.1`` has no spatial/temporal attention features in the official code as
those are only hooked for ``res == 0``); the UNet is cut after ``up_blocks.1`` during
optimisation. *Restart sampling*: after every step but the last, z_{t_{k−1}} is noised back to
t_k with the forward process' single-step betas,
z ← √(Π_j(1−β_j))·z + √(1 − Π_j(1−β_j))·ε over the Δ = 1000/N train steps from t_{k−1}, and the
step is taken again. *Initial noise*: the low frequencies of the reference's inverted z_T plus
the high frequencies of Gaussian noise,

.. math:: z_T^{init} = \mathrm{up}(\mathrm{down}_4(z_T^{ref})) + ε − \mathrm{up}(\mathrm{down}_4(ε))

(bilinear, antialiased, per frame; ``downsample_factor: 4``).

Reference inversion (``preprocess_video_ddim.py``, ``configs/preprocess_config.yaml``): 999 DDIM
inversion steps with the source prompt (the caption), the latents kept at the 50 sampling
timesteps (``run.py``: ``load_source_latents_t``); ``inversion_steps: 999``,
``inversion_prompt: caption``. The initial latent is the official ``prepare_latents``
(:meth:`DMTGuidance.reference_init`).

Differences from the official code: the loss is computed in float32 without a GradScaler
(the UNet runs in the model's dtype); the Δ renoising draws are combined into one Gaussian
draw (the same distribution) from the sample's own generator; a batch of B samples is
optimised with the sum of their losses (Adam is per element, so each row's update is the one
it would get alone).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..customization.guidance import Guidance, OutputStore, forward_until, guided_forward, guided_window
from ..customization.inversion import make_ddim_scheduler

log = logging.getLogger(__name__)

__all__ = ["DMTGuidance", "dmt_loss", "space_time_descriptor", "low_frequency_init"]

DEFAULT_FEATURES = ("up_blocks.1.upsamplers.0", "up_blocks.1.resnets.1.conv2",
                    "up_blocks.1.temp_convs.1")


def space_time_descriptor(features: torch.Tensor, batch: int) -> torch.Tensor:
    """(B·F, C, h, w) features → (B, F, C) spatial means, in float32."""
    bf, c = features.shape[:2]
    return features.float().mean(dim=(2, 3)).reshape(batch, bf // batch, c)


def dmt_loss(gen: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The anchor-difference cosine loss of one feature: ``gen`` (B, F, C), ``ref`` (F, C) →
    (B,) per-sample losses (see the module docstring)."""
    frames = gen.shape[1]
    diff_g = gen[:, :, None, :] - gen[:, None, :, :]  # (B, anchor a, frame f, C): φ_f − φ_a
    diff_r = (ref[:, None, :] - ref[None, :, :])[None]  # ψ_f − ψ_a
    cos = F.cosine_similarity(diff_g, diff_r.expand_as(diff_g), dim=-1)  # (B, a, f)
    return (1.0 - cos.mean(dim=2)).sum(dim=1) / frames


def low_frequency_init(noise: torch.Tensor, reference_zT: torch.Tensor, factor: int) -> torch.Tensor:
    """up(down(z_T^ref)) + ε − up(down(ε)) per frame; ``noise`` (B, 4, F, h, w), ``reference_zT``
    (1, 4, F, h, w); ``factor`` ≤ 1 returns ``noise`` unchanged."""
    if factor <= 1:
        return noise
    b, c, f, h, w = noise.shape

    def low(x):
        x2 = x.permute(0, 2, 1, 3, 4).reshape(-1, c, h, w).float()
        down = F.interpolate(x2, size=(h // factor, w // factor), mode="bilinear",
                             align_corners=True, antialias=True)
        up = F.interpolate(down, size=(h, w), mode="bilinear", align_corners=True, antialias=True)
        return up.reshape(x.shape[0], f, c, h, w).permute(0, 2, 1, 3, 4)

    ref = reference_zT.to(noise.device, torch.float32)
    return low(ref).expand(b, -1, -1, -1, -1) + noise - low(noise)


class DMTGuidance(Guidance):
    """DMT's latent optimisation on the shared sampler (see the module docstring).

    ``weight`` multiplies the loss (the official ``features_diff_loss_weight``); 0 makes every
    Adam update exactly zero. ``losses`` records ``(t, iteration, loss)`` of every optimisation
    step of the last sampled batch.
    """

    name = "dmt"

    def __init__(self, features: Sequence[str] = DEFAULT_FEATURES, optimization_steps: int = 10,
                 lr: Sequence[float] = (0.007, 0.004), max_guidance_timestep: float = 1.0,
                 min_guidance_timestep: float = 0.6, weight: float = 1.0,
                 restart_sampling: bool = True, downsample_factor: int = 4,
                 gradient_checkpointing: bool = True, inversion_steps: int | None = 999,
                 inversion_prompt: str = "caption"):
        super().__init__(inversion_steps, inversion_prompt)
        if not features:
            raise ValueError("dmt: `features` is empty")
        if len(lr) != 2:
            raise ValueError(f"dmt: lr must be [first, last], got {lr!r}")
        self.features = list(features)
        self.optimization_steps = int(optimization_steps)
        self.lr = (float(lr[0]), float(lr[1]))
        self.window = (float(max_guidance_timestep), float(min_guidance_timestep))
        self.weight = float(weight)
        self.restart_sampling = bool(restart_sampling)
        self.downsample_factor = int(downsample_factor)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        # the UNet stops after the block holding the last feature: up_blocks.<i>
        blocks = {".".join(n.split(".")[:2]) for n in self.features}
        if any(not b.startswith(("up_blocks.", "down_blocks.")) for b in blocks):
            raise ValueError(f"dmt: features must be modules of down/up blocks, got {self.features}")
        self.last_block = max(blocks, key=lambda b: (b.startswith("up_blocks."), int(b.split(".")[1])))
        self.losses: list[tuple[int, int, float]] = []
        self._ref_desc: dict[int, dict[str, torch.Tensor]] = {}

    def setup(self, unet, scheduler_config, num_steps, reference):
        names = {n for n, _ in unet.named_modules()}
        missing = [n for n in self.features if n not in names]
        if missing:
            raise ValueError(f"dmt: features {missing} are not modules of the UNet")
        super().setup(unet, scheduler_config, num_steps, reference)
        self._alphas = make_ddim_scheduler(scheduler_config).alphas_cumprod.float()
        self.guided = guided_window(num_steps, *self.window)
        self._lrs = np.linspace(self.lr[0], self.lr[1], max(len(self.guided), 1))
        self._ref_desc = {}

    def initial_latents(self, latents):
        self.losses = []
        return low_frequency_init(latents, self.reference_init(), self.downsample_factor)

    def reference_init(self) -> torch.Tensor:
        """The official ``prepare_latents``: z_0 noised to the first sampling timestep t_0 with
        the noise the inversion implies at its noisiest timestep t_N,
        z = √ᾱ_{t_0}·z_0 + √(1−ᾱ_{t_0})·(z_{t_N} − √ᾱ_{t_N}·z_0)/√(1−ᾱ_{t_N})
        (= the inversion's z_{t_0} when the inversion runs at the sampling steps)."""
        t_n, z_n = self.noisiest
        t_0 = self.timesteps[-1]
        z0 = self.reference.latents.float().to(z_n.device)
        a_n, a_0 = self._alphas[t_n].to(z_n.device), self._alphas[t_0].to(z_n.device)
        eps = (z_n - a_n.sqrt() * z0) / (1 - a_n).sqrt()
        return a_0.sqrt() * z0 + (1 - a_0).sqrt() * eps

    def _descriptors(self, unet, z, t, emb) -> dict[str, torch.Tensor]:
        store = OutputStore()
        param = next(unet.parameters())
        with store.capture(unet, self.features):
            forward_until(unet, z.to(param.dtype), t, emb.to(param.dtype), self.last_block)
        missing = [n for n in self.features if n not in store.outputs]
        if missing:
            raise RuntimeError(f"dmt: features {missing} were not computed before {self.last_block}")
        return {n: space_time_descriptor(store.outputs[n], z.shape[0]) for n in self.features}

    def reference_descriptors(self, unet, t: int) -> dict[str, torch.Tensor]:
        """ψ at timestep t: the features of the reference's inverted z_t (caption prompt)."""
        if t not in self._ref_desc:
            with torch.no_grad():
                d = self._descriptors(unet, self.reference_latents[t], t,
                                      self.reference.text_embeddings)
            self._ref_desc[t] = {n: v[0].detach() for n, v in d.items()}
        return self._ref_desc[t]

    def loss(self, unet, z, t, cond) -> torch.Tensor:
        """Σ over the batch of the per-sample losses (differentiable w.r.t. ``z``)."""
        ref = self.reference_descriptors(unet, t)
        gen = self._descriptors(unet, z, t, cond)
        total = sum(dmt_loss(gen[n], ref[n]) for n in self.features)
        return self.weight * total.sum()

    def before_step(self, unet, z, step, t, ctx):
        if step not in self.guided:
            return z
        lr = float(self._lrs[step - self.guided.start])
        x = z.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        with guided_forward(unet, self.gradient_checkpointing):
            for it in range(self.optimization_steps):
                opt.zero_grad(set_to_none=True)
                loss = self.loss(unet, x, t, ctx["cond"])
                loss.backward()
                opt.step()
                self.losses.append((int(t), it, float(loss.detach())))
        log.debug("dmt t=%d: loss %.4f -> %.4f", t, self.losses[-self.optimization_steps][2],
                  self.losses[-1][2])
        return x.detach()

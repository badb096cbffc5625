r"""MotionClone: sparse temporal-attention guidance (Ling et al. 2024, "MotionClone: Training-Free
Motion Cloning for Controllable Video Generation"; official code ``Bujiazi/MotionClone``, on
AnimateDiff), ported to Zeroscope's temporal transformers.

Motion guidance. Let A^l(z_t) ∈ R^{(h w)×H×F×F} be the temporal self-attention probabilities of
layer l (per spatial position, head and query frame, a distribution over key frames), A_ref^l
those of the reference's inverted latent z_t^{ref} (reference caption). The mask keeps, per
query, the reference's k largest entries (its primary components, k = ``rank_k`` = 1):

.. math:: M^l = \mathbb{1}[A_{ref}^l \text{ among the top-}k \text{ of its row}],\qquad
          L_m = \frac{1}{|\mathcal{L}|}\sum_{l∈\mathcal{L}} w_l\,
          \frac{\| M^l ⊙ (A_{ref}^l − A^l(z_t)) \|^2}{\|M^l\|_1}

Semantic guidance matches the temporal-attention keys K^l of the sample to those of an
*appearance branch* (the same initial noise sampled with the target prompt and no motion
guidance). The official code pools them with foreground/background masks from an object
token's cross-attention when ``obj_pairs`` are given (location-aware) and globally without them;
the global form runs here (see the port notes):

.. math:: L_s = \frac{1}{|\mathcal{L}_s|}\sum_{l} w^s_l\,
          \big\| \overline{K^l_{app}}^{\,(hw, F)} − \overline{K^l(z_t)}^{\,(hw)} \big\|^2

The guidance enters DDIM as a gradient on the latent, in the direction term only
(``customized_step`` of the official code):
ε̃ = ε̂ − s·√(1−ᾱ_t)·∇_{z_t}\,ρ_k(L_m + L_s), s = ``grad_guidance_scale``, with the warm-up
ramp ρ_k = (k+1)/K_w for the first K_w guided steps; the motion term is dropped in the last
``cool_up`` steps of the guided window.

Official defaults (``configs/inference_config/*.yaml``): guidance on the first 60 % of the steps
(``guidance_step: 120`` of ``num_inference_step: 200``; 300 of 500 for two examples), warm-up
10 steps (5 %), cool-up 0, k = 1, motion weights ``up_blocks.1: 20000, up_blocks.2: 10000``,
semantic weights ``up_blocks.1: 500, up_blocks.2: 0`` on the temporal keys (``block_type:
temp``), s = 1, CFG 7.5 in the form ε_c + 7.5·(ε_c − ε_u) (= 8.5 in the usual ε_u + g·(ε_c −
ε_u)), the reference map at every guided step from the inversion latent of that step
(``all_latents[step_t]``), random initial noise.

Choices the port to Zeroscope forced (README, "Training-free methods"):

* **Layers.** AnimateDiff inserts a motion module (two ``Temporal_Self`` attentions) after each
  resnet/attention pair of every block; Zeroscope's ``CrossAttnUpBlock3D`` has a
  ``TransformerTemporalModel`` at the same place whose block has two frame-to-frame
  self-attentions (``attn1``, ``attn2``, ``double_self_attention``). ``up_blocks.i`` maps to
  ``up_blocks.i.temp_attentions.*.transformer_blocks.0.attn{1,2}``: 3 × 2 = 6 layers per block
  as in AnimateDiff (whose weights the official code repeats 6 times). Zeroscope has no temporal
  position encoding; AnimateDiff's is inside the module and needs nothing here.
* **Resolution.** The same block indices hold the same relative resolutions (1/4 and 1/2 of the
  latent for ``up_blocks.1``/``2``) on both UNets.
* **Steps and schedule.** Zeroscope's DDIM schedule (its betas) instead of AnimateDiff's; the
  guided window, warm-up and cool-up are fractions of ``num_steps`` so that the official
  120/200, 10/200 hold at any step count.
* **Classifier-free guidance** uses the sampler's ε_u + g·(ε_c − ε_u); the official 7.5 is
  g = 8.5 (``sample.guidance_scale`` of the method).
* **Semantic masks: not ported.** The location-aware masks (foreground/background from the
  cross-attention of an object token, official ``obj_pairs``) need an object word in each
  reference caption and each target prompt; the manifest has no such columns. The global form
  of the official code (its behaviour without ``obj_pairs``) runs.
* **Reference timestep.** ``reference_timestep: null`` follows the official code (the map of the
  current step); an integer t uses the reference map at the one inversion timestep nearest t for
  every guided step (the paper's single-timestep variant).
* The loss is computed in float32; the official /100 · ×100 fp16 rescaling is not needed.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from ..attention import capture_attention
from ..guidance import Guidance, OutputStore, forward_until, guided_forward
from ..inversion import make_ddim_scheduler

log = logging.getLogger(__name__)

__all__ = ["MotionCloneGuidance", "sparse_mask", "temporal_attention_layers", "motion_loss"]


def sparse_mask(reference: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of ``reference`` along its last axis (per query)."""
    n = reference.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"rank_k must be in [1, {n}] (the number of frames), got {k}")
    idx = reference.topk(k, dim=-1).indices
    return torch.zeros_like(reference, dtype=torch.bool).scatter_(-1, idx, True)


def motion_loss(ref: torch.Tensor, gen: torch.Tensor, k: int) -> torch.Tensor:
    """Per-sample masked MSE: ``ref`` (1, …, F, F), ``gen`` (B, …, F, F) → (B,)."""
    mask = sparse_mask(ref, k).expand_as(gen)
    sq = (gen - ref.detach()) ** 2 * mask
    return sq.flatten(1).sum(1) / mask[0].sum()


def temporal_attention_layers(unet, blocks: Sequence[str]) -> dict[str, list[str]]:
    """``up_blocks.i`` → the names of its temporal self-attention layers (attn1, attn2 of every
    ``temp_attentions[j]``), the counterpart of AnimateDiff's motion-module attentions."""
    out = {}
    for b in blocks:
        block = unet.get_submodule(b)
        temps = getattr(block, "temp_attentions", None)
        if not temps:
            raise ValueError(f"motionclone: {b} has no temporal transformers")
        names = []
        for j, tr in enumerate(temps):
            for i, tb in enumerate(tr.transformer_blocks):
                for a in ("attn1", "attn2"):
                    if getattr(tb, a, None) is not None:
                        names.append(f"{b}.temp_attentions.{j}.transformer_blocks.{i}.{a}")
        out[b] = names
    return out


def _last(blocks) -> str:
    return max(blocks, key=lambda b: (b.startswith("up_blocks."), int(b.split(".")[1])))


class MotionCloneGuidance(Guidance):
    """MotionClone's guidance on the shared sampler (see the module docstring).

    ``weight`` scales the whole guidance gradient (0: the sampler's result is bit-for-bit the
    unguided one). ``maps_used`` records, per guided step, the timestep and layers the
    reference maps came from.
    """

    name = "motionclone"

    def __init__(self, temporal_weights: Mapping[str, float] | None = None, rank_k: int = 1,
                 semantic_weights: Mapping[str, float] | None = None,
                 guidance_fraction: float = 0.6, warm_up_fraction: float = 0.05,
                 cool_up_fraction: float = 0.0, grad_guidance_scale: float = 1.0,
                 grad_threshold: float | None = None, reference_timestep: int | None = None,
                 weight: float = 1.0, gradient_checkpointing: bool = True):
        super().__init__()
        self.temporal_weights = dict(temporal_weights if temporal_weights is not None
                                     else {"up_blocks.1": 20000.0, "up_blocks.2": 10000.0})
        self.semantic_weights = dict(semantic_weights if semantic_weights is not None
                                     else {"up_blocks.1": 500.0, "up_blocks.2": 0.0})
        if not self.temporal_weights:
            raise ValueError("motionclone: temporal_weights is empty")
        self.rank_k = int(rank_k)
        self.fractions = (float(guidance_fraction), float(warm_up_fraction), float(cool_up_fraction))
        self.grad_guidance_scale = float(grad_guidance_scale)
        self.grad_threshold = grad_threshold
        self.reference_timestep = reference_timestep
        self.weight = float(weight)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.maps_used: list[dict] = []
        self._ref_maps: dict[int, dict[str, torch.Tensor]] = {}

    # -- setup -----------------------------------------------------------------------------
    def setup(self, unet, scheduler_config, num_steps, reference):
        super().setup(unet, scheduler_config, num_steps, reference)
        self.layers = temporal_attention_layers(unet, list(self.temporal_weights))
        sem = [b for b, w in self.semantic_weights.items() if w]
        self.sem_layers = temporal_attention_layers(unet, list(self.semantic_weights)) if sem else {}
        self.last_block = _last(list(self.temporal_weights) + list(self.sem_layers))
        g, w, c = self.fractions
        self.n_guided = int(round(num_steps * g))
        self.n_warm = int(round(num_steps * w))
        self.n_cool = int(round(num_steps * c))
        self.scheduler = make_ddim_scheduler(scheduler_config)
        self.scheduler.set_timesteps(num_steps)
        self._ref_maps = {}

    def initial_latents(self, latents):
        self.maps_used = []
        self._app = None  # the appearance branch starts from the sample's own initial latents
        self._app_init = latents.clone()
        return latents

    # -- maps ------------------------------------------------------------------------------
    def _reference_t(self, t: int) -> int:
        if self.reference_timestep is None:
            return t
        return min(self.timesteps, key=lambda s: abs(s - int(self.reference_timestep)))

    def reference_maps(self, unet, t: int) -> dict[str, torch.Tensor]:
        """Per-head temporal attention of the reference's inverted z_t (caption prompt):
        layer name → (1, h·w, heads, F, F). Only the latest timestep's maps are kept (per-step
        maps of Zeroscope at 384² are ~50 MB each; the fixed ``reference_timestep`` is one)."""
        if t not in self._ref_maps:
            z = self.reference_latents[t]
            with torch.no_grad():
                maps = {k: v.detach() for k, v in self._maps(
                    unet, z, t, self.reference.text_embeddings)[0].items()}
            self._ref_maps = {t: maps}
        return self._ref_maps[t]

    def _maps(self, unet, z, t, emb):
        """(temporal maps by layer, temporal keys by layer) of one forward, cut after the last
        needed block."""
        names = [n for ls in self.layers.values() for n in ls]
        key_layers = [n for ls in self.sem_layers.values() for n in ls]
        keys = OutputStore()
        param = next(unet.parameters())
        b = z.shape[0]
        with capture_attention(unet, {n: n for n in names}, keep_heads=True) as store, \
                keys.capture(unet, [f"{n}.to_k" for n in key_layers]):
            forward_until(unet, z.to(param.dtype), t, emb.to(param.dtype), self.last_block)
        maps = {}
        for n in names:
            m = store.maps[n][0]  # (B·h·w, heads, F, F)
            maps[n] = m.reshape(b, m.shape[0] // b, *m.shape[1:])
        ks = {}
        for n in key_layers:
            k = keys.outputs[f"{n}.to_k"].float()  # (B·h·w, F, D)
            ks[n] = k.reshape(b, k.shape[0] // b, *k.shape[1:])
        return maps, ks

    # -- the appearance branch ---------------------------------------------------------------
    def _appearance_keys(self, unet, step, t, ctx):
        """Keys of the appearance branch at this step (no grad), then advance it one DDIM step."""
        if self._app is None:
            self._app = self._app_init
        z = self._app
        param = next(unet.parameters())
        key_layers = [n for ls in self.sem_layers.values() for n in ls]
        keys = OutputStore()
        with torch.no_grad():
            b = z.shape[0]
            emb = torch.cat([ctx["neg"], ctx["cond"]]) if ctx["guided"] else ctx["cond"]
            z_in = torch.cat([z, z]) if ctx["guided"] else z
            with keys.capture(unet, [f"{n}.to_k" for n in key_layers]):
                out = unet(z_in.to(param.dtype), torch.tensor(t, device=z.device),
                           encoder_hidden_states=emb.to(param.dtype)).sample.float()
            if ctx["guided"]:
                eps_u, eps_c = out.chunk(2)
                out = eps_u + ctx["guidance_scale"] * (eps_c - eps_u)
            self._app = self.scheduler.step(out, t, z).prev_sample
        ks = {}
        for n in key_layers:
            k = keys.outputs[f"{n}.to_k"].float()
            k = k[k.shape[0] // 2:] if ctx["guided"] else k  # the conditional half
            ks[n] = k.reshape(b, k.shape[0] // b, *k.shape[1:])
        return ks

    # -- the hook ----------------------------------------------------------------------------
    def score(self, unet, z, step, t, ctx):
        if step >= self.n_guided:
            return None
        t_ref = self._reference_t(t)
        ref = self.reference_maps(unet, t_ref)
        self.maps_used.append({"step": step, "t": int(t), "reference_t": int(t_ref),
                               "layers": list(ref)})
        app = self._appearance_keys(unet, step, t, ctx) if self.sem_layers else {}
        x = z.detach().clone().requires_grad_(True)
        with guided_forward(unet, self.gradient_checkpointing):
            maps, keys = self._maps(unet, x, t, ctx["cond"])
            per_layer = []
            for block, names in self.layers.items():
                for n in names:
                    per_layer.append(self.temporal_weights[block] * motion_loss(ref[n], maps[n], self.rank_k))
            loss_m = torch.stack(per_layer).mean(0)
            if step >= self.n_guided - self.n_cool:
                loss_m = loss_m * 0.0
            loss = loss_m
            if self.sem_layers:
                per_layer = []
                for block, names in self.sem_layers.items():
                    for n in names:
                        a = app[n].mean(dim=(1, 2))  # (B, D): over positions and frames
                        g = keys[n].mean(dim=1)  # (B, F, D): over positions
                        per_layer.append(self.semantic_weights[block]
                                         * ((g - a[:, None]) ** 2).flatten(1).mean(1))
                loss = loss + torch.stack(per_layer).mean(0)
            if step < self.n_warm:
                loss = loss * ((step + 1) / self.n_warm)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        if self.grad_threshold is not None:
            grad = grad.clamp(-float(self.grad_threshold), float(self.grad_threshold))
        self.last_loss = loss.detach()
        return self.weight * self.grad_guidance_scale * grad.detach()

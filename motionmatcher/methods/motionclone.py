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

Semantic guidance matches the temporal-attention keys K^l ∈ R^{(h w)×F×D} of the sample to those
of an *appearance branch* (the same initial noise sampled with the target prompt and no motion
guidance). Without object words (official: no ``obj_pairs``) they are pooled globally:

.. math:: L_s = \frac{1}{|\mathcal{L}_s|}\sum_{l} w^s_l\,
          \big\| \overline{K^l_{app}}^{\,(hw, F)} − \overline{K^l(z_t)}^{\,(hw)} \big\|^2

**Location-aware masks** (official ``obj_pairs = [example word, new word]``; here the manifest
columns ``caption_object`` and ``prompt_object`` of the sample's row). Let c_{ex} ∈ R^{F×hw}
be the column of the caption's object token in the spatial cross-attention (``attn2`` of the
spatial transformers) of the block ``mask_block`` (``up_blocks.1``), averaged over heads and
layers, for the reference branch (the reference's inverted z_t, caption prompt), and c_{app}
that of the target object token in the appearance branch (its z_t, target prompt), both under
no_grad. Per frame f, min-max over the positions p and a threshold τ (0.3 for both):

.. math:: \tilde c_f(p) = \frac{c_f(p) − \min_q c_f(q)}{\max_q c_f(q) − \min_q c_f(q) + 10^{-5}},
          \qquad B_f(p) = \mathbb{1}[\tilde c_f(p) > τ]

The reference's masks weight its binary mask B^{ex} with a Gaussian on B^{ex}'s centroid
(μ_f = Σ_p B^{ex}_f(p)·(y_p, x_p) / Σ_p B^{ex}_f(p)); the appearance masks are binary:

.. math:: G_f(p) = \exp\!\Big(−\frac{(y_p − μ_{f,y})^2 + (x_p − μ_{f,x})^2}{2σ^2}\Big),\quad
          M^{ex,fg} = G ⊙ B^{ex},\quad M^{ex,bg} = (1 − G) ⊙ (1 − B^{ex}),\quad
          M^{app,fg} = B^{app},\quad M^{app,bg} = 1 − B^{app}

Other blocks get the ``mask_block`` masks resized by nearest neighbour to their grid (×2 for
``up_blocks.2``, as official). The semantic loss then compares, per frame, the masked spatial
mean of the appearance keys under the *appearance* masks with that of the sample's keys under
the *reference's* masks (the object is to appear where the reference has it):

.. math:: \overline{K}^{M}_f = \frac{\sum_p M_f(p)\,K_f(p)}{\sum_p M_f(p) + 10^{-5}} ∈ R^D,\qquad
          L_s = \frac{1}{|\mathcal{L}_s|}\sum_l w^s_l\Big(
          \big\|\overline{K^l_{app}}^{M^{app,fg}} − \overline{K^l(z_t)}^{M^{ex,fg}}\big\|^2_{F×D}
          + \big\|\overline{K^l_{app}}^{M^{app,bg}} − \overline{K^l(z_t)}^{M^{ex,bg}}\big\|^2_{F×D}\Big)

with ‖·‖²_{F×D} the mean square over frames and channels (``F.mse_loss``). Unlike the global
form the appearance keys are *not* averaged over frames. A sample without words keeps the global
form (rows of one batch may mix both).

The guidance enters DDIM as a gradient on the latent, in the direction term only
(``customized_step`` of the official code):
ε̃ = ε̂ − s·√(1−ᾱ_t)·∇_{z_t}\,ρ_k(L_m + L_s), s = ``grad_guidance_scale``, with the warm-up
ramp ρ_k = (k+1)/K_w for the first K_w guided steps; the motion term is dropped at the guided
steps k > K_g − K_c (K_g guided steps, K_c = ``cool_up`` steps: the official
``step_index > guidance_step - cool_up_step``, so K_c − 1 steps; none when K_c = 0).

Official defaults (``configs/inference_config/*.yaml``): guidance on the first 60 % of the steps
(``guidance_step: 120`` of ``num_inference_step: 200``; 300 of 500 for two examples), warm-up
10 steps (5 %), cool-up 0, k = 1, motion weights ``up_blocks.1: 20000, up_blocks.2: 10000``,
semantic weights ``up_blocks.1: 500, up_blocks.2: 0`` on the temporal keys (``block_type:
temp``), s = 1, CFG 7.5 in the form ε_c + 7.5·(ε_c − ε_u) (= 8.5 in the usual ε_u + g·(ε_c −
ε_u)), the reference map at every guided step from the inversion latent of that step
(``all_latents[step_t]``) of a fine inversion (``invert.py``: 1000 steps with the caption,
``inversion_prompt``; here ``inversion_steps: 999``, every train timestep 1 … 999 of Zeroscope's
``leading`` schedule with ``steps_offset: 1``, where 1000 steps would reach t = 1000), random
initial noise; masks from ``up_blocks.1``
(``cross_attn_blocks: [up_blocks.1, up_blocks.2]``, the second interpolated), thresholds
``cross_attn_mask_tr_example: 0.3``, ``cross_attn_mask_tr_app: 0.3``, σ = 5 (``get_gaussian_blur``).

Choices the port to Zeroscope forced (docs/methods.md, "Training-free methods"):

* **Layers.** AnimateDiff inserts a motion module (two ``Temporal_Self`` attentions) after each
  resnet/attention pair of every block; Zeroscope's ``CrossAttnUpBlock3D`` has a
  ``TransformerTemporalModel`` at the same place whose block has two frame-to-frame
  self-attentions (``attn1``, ``attn2``, ``double_self_attention``). ``up_blocks.i`` maps to
  ``up_blocks.i.temp_attentions.*.transformer_blocks.0.attn{1,2}``: 3 × 2 = 6 layers per block
  as in AnimateDiff (whose weights the official code repeats 6 times). Zeroscope has no temporal
  position encoding; AnimateDiff's is inside the module and needs nothing here. The mask maps
  are ``up_blocks.1.attentions.*.transformer_blocks.0.attn2`` on both UNets (3 layers).
* **Resolution.** The same block indices hold the same relative resolutions (1/4 and 1/2 of the
  latent for ``up_blocks.1``/``2``) on both UNets: AnimateDiff's official 512² gives a 16×16
  ``up_blocks.1`` grid, Zeroscope at 384² a 12×12 one (576×320: 18×10). The official code
  assumes a square grid; here the grid is (⌈h/4⌉, ⌈w/4⌉) of the latent (found from the number
  of positions), so non-square videos work, and other blocks' masks are resized to their own
  grid (nearest; exactly the official ×2 when the sizes are even).
* **Gaussian σ.** Official σ = 5 grid cells of the 16×16 grid, 5/16 of its side. Here σ is a
  fraction of the grid side (``mask_sigma`` = 5/16, times √(h'·w') cells), so the Gaussian covers
  the same part of the frame at any resolution: 3.75 cells at Zeroscope's 12×12 (a literal 5
  would be 5/12 of the frame). With ``mask_sigma = 5/16`` a 16×16 grid gets exactly σ = 5.
* **Empty mask.** When no position of a frame passes the threshold (a spatially constant column:
  the min-max gives 0 everywhere) the official centroid is 0/0 and the loss NaN; here that
  frame's Gaussian is 0, so its foreground masks are 0 and its background masks 1.
* **Token index.** As ``get_object_index``: the first CLIP sub-token of the lower-cased word, at
  its first position in the lower-cased prompt's tokens (``<|startoftext|>`` = 0), with the
  model's own tokenizer (Zeroscope's CLIP BPE; the same vocabulary as AnimateDiff's SD 1.5), cut
  at the text encoder's 77 tokens; a word that is not there is an error naming word and prompt
  (the manifest already checks that it is a word of the caption / prompt). The reference's
  token is looked up in the *caption* (the prompt of our reference branch; the official code's
  example branch uses its inversion prompt, which is the video's caption).
* **Steps and schedule.** Zeroscope's DDIM schedule (its betas) instead of AnimateDiff's; the
  guided window, warm-up and cool-up are fractions of ``num_steps`` so that the official
  120/200, 10/200 hold at any step count.
* **Classifier-free guidance** uses the sampler's ε_u + g·(ε_c − ε_u); the official 7.5 is
  g = 8.5 (``sample.guidance_scale`` of the method).
* **Reference timestep.** ``reference_timestep: null`` follows the official code (the map of the
  current step); an integer t uses the reference map at the one inversion timestep nearest t for
  every guided step (the paper's single-timestep variant); the reference's cross-attention masks
  come from the same forward.
* **Capture.** The cross-attention maps are materialised (explicit softmax, head mean) only in
  ``mask_block``'s ``attn2`` layers and only when a sample of the job has words; a job without
  words runs exactly the global code path. The appearance branch's map is read in the forward it
  runs anyway (its CFG forward; the conditional half).
* The loss is computed in float32; the official /100 · ×100 fp16 rescaling is not needed.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from ..customization.attention import capture_attention
from ..customization.guidance import Guidance, OutputStore, forward_until, guided_forward
from ..customization.inversion import make_ddim_scheduler

log = logging.getLogger(__name__)

__all__ = ["MotionCloneGuidance", "sparse_mask", "temporal_attention_layers", "motion_loss",
           "cross_attention_layers", "object_token_index", "object_masks", "gaussian_at_centroid",
           "resize_masks", "block_grid", "semantic_loss_global", "semantic_loss_masked"]

#: the denominators' epsilon of the official min-max and masked means
EPS = 1e-5
CA_KEY = "motionclone_ca"


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


def cross_attention_layers(unet, block: str) -> list[str]:
    """The text cross-attentions (``attn2``) of ``block``'s spatial transformers: the layers the
    official ``get_cross_attn_prob`` reads (``attn2`` of ``attentions``)."""
    attns = getattr(unet.get_submodule(block), "attentions", None)
    if not attns:
        raise ValueError(f"motionclone: {block} has no spatial transformers (mask_block)")
    return [f"{block}.attentions.{j}.transformer_blocks.{i}.attn2"
            for j, tr in enumerate(attns) for i, _ in enumerate(tr.transformer_blocks)]


def _last(blocks) -> str:
    return max(blocks, key=lambda b: (b.startswith("up_blocks."), int(b.split(".")[1])))


# -- location-aware masks -------------------------------------------------------------------
def object_token_index(tokenizer, prompt: str, word: str) -> int:
    """Position of ``word`` in ``prompt``'s CLIP tokens, as the official ``get_object_index``:
    the first sub-token of the lower-cased word at its first position in the lower-cased prompt
    (0 is ``<|startoftext|>``), within the text encoder's context. ValueError when absent."""
    limit = int(getattr(tokenizer, "model_max_length", 77))
    ids = tokenizer(prompt.lower(), truncation=True, max_length=limit).input_ids
    sub = tokenizer(word.strip().lower()).input_ids[1:-1]  # without start/end tokens
    if not sub:
        raise ValueError(f"motionclone: object word {word!r} has no tokens")
    try:
        return ids.index(sub[0])
    except ValueError:
        token = tokenizer.convert_ids_to_tokens([sub[0]])[0]
        raise ValueError(f"motionclone: object word {word!r} (token {token!r}) is not in the "
                         f"prompt {prompt!r} (within its first {limit} tokens)") from None


def block_grid(n_positions: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """(h', w') of a UNet level with ``n_positions`` = h'·w' for an h×w latent: the latent
    halved (rounding up, as a stride-2 conv k3 p1) until the count matches."""
    h, w = latent_hw
    while h * w > n_positions and (h > 1 or w > 1):
        h, w = (h + 1) // 2, (w + 1) // 2
    if h * w != n_positions:
        raise ValueError(f"motionclone: {n_positions} positions is no level of a {latent_hw} latent")
    return h, w


def gaussian_at_centroid(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(−‖(y, x) − μ‖² / 2σ²) on the grid of ``mask`` (…, h, w), μ the centroid of each
    (h, w) mask (official ``get_gaussian_blur``); 0 where the mask is empty (official: NaN)."""
    h, w = mask.shape[-2:]
    y = torch.arange(h, dtype=mask.dtype, device=mask.device).view(h, 1)
    x = torch.arange(w, dtype=mask.dtype, device=mask.device).view(1, w)
    mass = mask.sum(dim=(-2, -1), keepdim=True)
    safe = mass.clamp_min(torch.finfo(mask.dtype).tiny)
    cy = (mask * y).sum(dim=(-2, -1), keepdim=True) / safe
    cx = (mask * x).sum(dim=(-2, -1), keepdim=True) / safe
    gauss = torch.exp(-((y - cy) ** 2) / (2 * sigma ** 2)) * torch.exp(-((x - cx) ** 2) / (2 * sigma ** 2))
    return torch.where(mass > 0, gauss, torch.zeros_like(gauss))


def object_masks(column: torch.Tensor, grid: tuple[int, int], threshold: float,
                 sigma: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(foreground, background) masks (…, F, h'·w') from an object token's cross-attention
    ``column`` (…, F, h'·w'): min-max per frame over the positions, then ``> threshold``.

    ``sigma`` (grid cells) given: the reference's masks, G·B and (1 − G)·(1 − B) with G the
    Gaussian on B's centroid; None: the appearance masks B and 1 − B.
    """
    lo = column.amin(dim=-1, keepdim=True)
    hi = column.amax(dim=-1, keepdim=True)
    norm = (column - lo) / (hi - lo + EPS)
    binary = (norm > threshold).to(column.dtype)
    if sigma is None:
        return binary, 1 - binary
    gauss = gaussian_at_centroid(binary.unflatten(-1, grid), sigma).flatten(-2)
    return gauss * binary, (1 - gauss) * (1 - binary)


def resize_masks(mask: torch.Tensor, grid: tuple[int, int], to: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of masks (…, h'·w') from ``grid`` to ``to`` (official: ×2)."""
    if tuple(grid) == tuple(to):
        return mask
    lead = mask.shape[:-1]
    m = mask.reshape(-1, 1, *grid)
    return F.interpolate(m, size=tuple(to), mode="nearest").reshape(*lead, to[0] * to[1])


def semantic_loss_global(app: torch.Tensor, gen: torch.Tensor) -> torch.Tensor:
    """Official semantic loss without ``obj_pairs``: keys (B, h'·w', F, D) → (B,)."""
    a = app.mean(dim=(1, 2))  # (B, D): over positions and frames
    g = gen.mean(dim=1)  # (B, F, D): over positions
    return ((g - a[:, None]) ** 2).flatten(1).mean(1)


def _masked_mean(keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # keys (B, P, F, D), mask (B, F, P) -> (B, F, D)
    m = mask.transpose(1, 2)[..., None]  # (B, P, F, 1)
    return (keys * m).sum(1) / (m.sum(1) + EPS)


def semantic_loss_masked(app: torch.Tensor, gen: torch.Tensor, example_fg: torch.Tensor,
                         example_bg: torch.Tensor, app_fg: torch.Tensor, app_bg: torch.Tensor
                         ) -> torch.Tensor:
    """Official location-aware semantic loss: keys (B, h'·w', F, D), masks (B, F, h'·w') → (B,).

    The appearance keys are pooled with the appearance masks, the sample's with the
    reference's; MSE of the foreground means plus MSE of the background means (over F × D).
    """
    app = app.detach()
    fg = (_masked_mean(app, app_fg) - _masked_mean(gen, example_fg)) ** 2
    bg = (_masked_mean(app, app_bg) - _masked_mean(gen, example_bg)) ** 2
    return fg.flatten(1).mean(1) + bg.flatten(1).mean(1)


class MotionCloneGuidance(Guidance):
    """MotionClone's guidance on the shared sampler (see the module docstring).

    ``weight`` scales the whole guidance gradient (0: the sampler's result is bit-for-bit the
    unguided one). ``maps_used`` records, per guided step, the timestep and layers the
    reference maps came from and which rows of the batch used the location-aware masks.
    Object words come per sample through :meth:`prepare_samples` (``caption_object``,
    ``prompt_object``); ``mask_block``, ``mask_threshold_example``, ``mask_threshold_app`` and
    ``mask_sigma`` (fraction of the grid side) set the masks.
    """

    name = "motionclone"

    def __init__(self, temporal_weights: Mapping[str, float] | None = None, rank_k: int = 1,
                 semantic_weights: Mapping[str, float] | None = None,
                 guidance_fraction: float = 0.6, warm_up_fraction: float = 0.05,
                 cool_up_fraction: float = 0.0, grad_guidance_scale: float = 1.0,
                 grad_threshold: float | None = None, reference_timestep: int | None = None,
                 weight: float = 1.0, gradient_checkpointing: bool = True,
                 mask_block: str = "up_blocks.1", mask_threshold_example: float = 0.3,
                 mask_threshold_app: float = 0.3, mask_sigma: float = 5.0 / 16.0,
                 inversion_steps: int | None = 999, inversion_prompt: str = "caption"):
        super().__init__(inversion_steps, inversion_prompt)
        self.temporal_weights = dict(temporal_weights if temporal_weights is not None
                                     else {"up_blocks.1": 20000.0, "up_blocks.2": 10000.0})
        # a null weight drops the block (official street: blocks [up_blocks.1], a 6-layer mean)
        self.semantic_weights = {b: w for b, w in dict(
            semantic_weights if semantic_weights is not None
            else {"up_blocks.1": 500.0, "up_blocks.2": 0.0}).items() if w is not None}
        if not self.temporal_weights:
            raise ValueError("motionclone: temporal_weights is empty")
        self.rank_k = int(rank_k)
        self.fractions = (float(guidance_fraction), float(warm_up_fraction), float(cool_up_fraction))
        self.grad_guidance_scale = float(grad_guidance_scale)
        self.grad_threshold = grad_threshold
        self.reference_timestep = reference_timestep
        self.weight = float(weight)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.mask_block = str(mask_block)
        self.mask_threshold_example = float(mask_threshold_example)
        self.mask_threshold_app = float(mask_threshold_app)
        self.mask_sigma = float(mask_sigma)
        self.maps_used: list[dict] = []
        self._ref_maps: dict[int, dict[str, torch.Tensor]] = {}
        self._ref_ca: dict[int, torch.Tensor] = {}
        #: per sample of the job: (caption token, prompt token) or None (global form)
        self.objects: list[tuple[int, int] | None] = []
        self._batch: list[int] | None = None
        self.last_masks: dict[str, torch.Tensor] = {}

    # -- setup -----------------------------------------------------------------------------
    def setup(self, unet, scheduler_config, num_steps, reference):
        super().setup(unet, scheduler_config, num_steps, reference)
        self.layers = temporal_attention_layers(unet, list(self.temporal_weights))
        sem = [b for b, w in self.semantic_weights.items() if w]
        self.sem_layers = temporal_attention_layers(unet, list(self.semantic_weights)) if sem else {}
        self.last_block = _last(list(self.temporal_weights) + list(self.sem_layers))
        self.ca_layers = cross_attention_layers(unet, self.mask_block)
        g, w, c = self.fractions
        self.n_guided = int(round(num_steps * g))
        self.n_warm = int(round(num_steps * w))
        self.n_cool = int(round(num_steps * c))
        self.scheduler = make_ddim_scheduler(scheduler_config)
        self.scheduler.set_timesteps(num_steps)
        self._ref_maps, self._ref_ca = {}, {}
        self.objects, self._batch = [], None

    def prepare_samples(self, tokenizer, prompts, inputs) -> None:
        """Per sample: its object words (``caption_object`` in the reference caption,
        ``prompt_object`` in its prompt) → their token indices; no words: the global form."""
        self.objects = []
        self._ref_maps, self._ref_ca = {}, {}
        for i, prompt in enumerate(prompts):
            spec = (inputs[i] if inputs is not None else None) or {}
            words = [spec.get(k) for k in ("caption_object", "prompt_object")]
            words = [w.strip() if isinstance(w, str) and w.strip() else None for w in words]
            if words == [None, None]:
                self.objects.append(None)
                continue
            if None in words:
                raise ValueError(f"motionclone: sample {i} ({prompt!r}) needs both caption_object "
                                 f"and prompt_object, got {words}")
            caption = getattr(self.reference, "caption", None)
            if caption is None:
                raise ValueError("motionclone: object words need the reference caption "
                                 "(Reference.caption)")
            self.objects.append((object_token_index(tokenizer, caption, words[0]),
                                 object_token_index(tokenizer, prompt, words[1])))
        if any(self.objects) and not self.sem_layers:
            log.warning("motionclone: object words given but the semantic guidance is off "
                        "(semantic_weights): no masks")

    def uses_masks(self, sample: int) -> bool:
        """Whether sample ``sample`` of the job is guided with the location-aware masks."""
        return bool(self.sem_layers) and sample < len(self.objects) and self.objects[sample] is not None

    def sample_record(self, sample: int) -> dict:
        obj = self.objects[sample] if sample < len(self.objects) else None
        return {"semantic_masks": self.uses_masks(sample),
                "object_tokens": list(obj) if obj is not None else None}

    def start_batch(self, samples) -> None:
        self._batch = list(samples)

    def initial_latents(self, latents):
        self.maps_used = []
        self._app = None  # the appearance branch starts from the sample's own initial latents
        self._app_init = latents.clone()
        return latents

    def _batch_objects(self, n: int) -> list[tuple[int, int] | None]:
        if not self.sem_layers or self._batch is None or not self.objects:
            return [None] * n
        if len(self._batch) != n:
            raise RuntimeError(f"motionclone: batch of {n} latents for samples {self._batch}")
        return [self.objects[i] for i in self._batch]

    # -- maps ------------------------------------------------------------------------------
    def _reference_t(self, t: int) -> int:
        if self.reference_timestep is None:
            return t
        return min(self.timesteps, key=lambda s: abs(s - int(self.reference_timestep)))

    def reference_maps(self, unet, t: int) -> dict[str, torch.Tensor]:
        """Per-head temporal attention of the reference's inverted z_t (caption prompt):
        layer name → (1, h·w, heads, F, F). Only the latest timestep's maps are kept (per-step
        maps of Zeroscope at 384² are ~50 MB each; the fixed ``reference_timestep`` is one).
        When a sample of the job has object words the same forward keeps the reference's
        cross-attention of ``mask_block`` (:meth:`reference_cross_attention`)."""
        cross = bool(self.sem_layers) and any(o is not None for o in self.objects)
        if t not in self._ref_maps or (cross and t not in self._ref_ca):
            z = self.reference_latents[t]
            with torch.no_grad():
                maps, _, ca = self._maps(unet, z, t, self.reference.text_embeddings, cross=cross)
            self._ref_maps = {t: {k: v.detach() for k, v in maps.items()}}
            self._ref_ca = {t: ca} if ca is not None else {}
        return self._ref_maps[t]

    def reference_cross_attention(self, unet, t: int) -> torch.Tensor:
        """The reference's cross-attention of ``mask_block`` at t: (1, F, h'·w', 77)."""
        self.reference_maps(unet, t)
        if t not in self._ref_ca:
            raise RuntimeError("motionclone: no reference cross-attention (no object words)")
        return self._ref_ca[t]

    def _cross_attention(self, store, b: int, frames: int) -> torch.Tensor:
        """Head- and layer-mean of the captured ``mask_block`` attn2 maps → (b, F, h'·w', 77)
        (the last ``b`` samples of the forward's batch: the conditional half under CFG)."""
        m = store.mean(CA_KEY).float()  # (B'·F, h'·w', 77), batch index = sample·F + frame
        m = m.reshape(m.shape[0] // frames, frames, *m.shape[1:])
        return m[m.shape[0] - b:].detach()

    def _maps(self, unet, z, t, emb, cross: bool = False):
        """(temporal maps by layer, temporal keys by layer, cross-attention or None) of one
        forward, cut after the last needed block."""
        names = [n for ls in self.layers.values() for n in ls]
        key_layers = [n for ls in self.sem_layers.values() for n in ls]
        keys = OutputStore()
        param = next(unet.parameters())
        b = z.shape[0]
        layers = {n: n for n in names}
        last = self.last_block
        if cross:
            layers.update({n: CA_KEY for n in self.ca_layers})
            last = _last([last, self.mask_block])
        with capture_attention(unet, layers, keep_heads=True) as store, \
                keys.capture(unet, [f"{n}.to_k" for n in key_layers]):
            forward_until(unet, z.to(param.dtype), t, emb.to(param.dtype), last)
        maps = {}
        for n in names:
            m = store.maps[n][0]  # (B·h·w, heads, F, F)
            maps[n] = m.reshape(b, m.shape[0] // b, *m.shape[1:])
        ks = {}
        for n in key_layers:
            k = keys.outputs[f"{n}.to_k"].float()  # (B·h·w, F, D)
            ks[n] = k.reshape(b, k.shape[0] // b, *k.shape[1:])
        ca = None
        if cross:  # keep_heads: (B·F, heads, h'·w', 77) -> head mean first
            store.maps[CA_KEY] = [m.mean(dim=1) for m in store.maps[CA_KEY]]
            ca = self._cross_attention(store, b, z.shape[2])
        return maps, ks, ca

    # -- the appearance branch ---------------------------------------------------------------
    def _appearance_keys(self, unet, step, t, ctx, cross: bool = False):
        """Keys of the appearance branch at this step (no grad), then advance it one DDIM step.
        With ``cross``: also its conditional cross-attention of ``mask_block``."""
        if self._app is None:
            self._app = self._app_init
        z = self._app
        param = next(unet.parameters())
        key_layers = [n for ls in self.sem_layers.values() for n in ls]
        keys = OutputStore()
        ca = None
        with torch.no_grad():
            b = z.shape[0]
            emb = torch.cat([ctx["neg"], ctx["cond"]]) if ctx["guided"] else ctx["cond"]
            z_in = torch.cat([z, z]) if ctx["guided"] else z
            if cross:
                with capture_attention(unet, {n: CA_KEY for n in self.ca_layers}) as store, \
                        keys.capture(unet, [f"{n}.to_k" for n in key_layers]):
                    out = unet(z_in.to(param.dtype), torch.tensor(t, device=z.device),
                               encoder_hidden_states=emb.to(param.dtype)).sample.float()
                ca = self._cross_attention(store, b, z.shape[2])
            else:
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
        return (ks, ca) if cross else ks

    def semantic_masks(self, ref_ca: torch.Tensor, app_ca: torch.Tensor,
                       objects: list[tuple[int, int]], latent_hw: tuple[int, int]) -> dict:
        """The four masks on ``mask_block``'s grid, (B, F, h'·w') each, for rows with words:
        ``ref_ca`` (1, F, h'·w', 77), ``app_ca`` (B, F, h'·w', 77), ``objects`` the rows'
        (caption token, prompt token)."""
        grid = block_grid(ref_ca.shape[2], latent_hw)
        ex = torch.stack([ref_ca[0, ..., i] for i, _ in objects])  # (B, F, h'·w')
        ap = torch.stack([app_ca[r, ..., j] for r, (_, j) in enumerate(objects)])
        sigma = self.mask_sigma * math.sqrt(grid[0] * grid[1])
        ex_fg, ex_bg = object_masks(ex, grid, self.mask_threshold_example, sigma)
        app_fg, app_bg = object_masks(ap, grid, self.mask_threshold_app)
        return {"grid": grid, "example_fg": ex_fg, "example_bg": ex_bg,
                "app_fg": app_fg, "app_bg": app_bg}

    # -- the hook ----------------------------------------------------------------------------
    def score(self, unet, z, step, t, ctx):
        if step >= self.n_guided:
            return None
        t_ref = self._reference_t(t)
        ref = self.reference_maps(unet, t_ref)
        objs = self._batch_objects(z.shape[0])
        rows = [r for r, o in enumerate(objs) if o is not None]
        self.maps_used.append({"step": step, "t": int(t), "reference_t": int(t_ref),
                               "layers": list(ref), "masked_rows": rows})
        masks = None
        if rows:
            app, app_ca = self._appearance_keys(unet, step, t, ctx, cross=True)
            masks = self.semantic_masks(self.reference_cross_attention(unet, t_ref), app_ca[rows],
                                        [objs[r] for r in rows], tuple(z.shape[-2:]))
            self.last_masks = masks
        else:
            app = self._appearance_keys(unet, step, t, ctx) if self.sem_layers else {}
        x = z.detach().clone().requires_grad_(True)
        with guided_forward(unet, self.gradient_checkpointing):
            maps, keys, _ = self._maps(unet, x, t, ctx["cond"])
            per_layer = []
            for block, names in self.layers.items():
                for n in names:
                    per_layer.append(self.temporal_weights[block] * motion_loss(ref[n], maps[n], self.rank_k))
            loss_m = torch.stack(per_layer).mean(0)
            if step > self.n_guided - self.n_cool:  # official `step_index > guidance_step - cool_up_step`
                loss_m = loss_m * 0.0
            loss = loss_m
            if self.sem_layers:
                per_layer = []
                for block, names in self.sem_layers.items():
                    for n in names:
                        sem = semantic_loss_global(app[n], keys[n])
                        if masks is not None:
                            sem = self._with_masked_rows(sem, app[n], keys[n], rows, masks,
                                                         tuple(z.shape[-2:]))
                        per_layer.append(self.semantic_weights[block] * sem)
                loss = loss + torch.stack(per_layer).mean(0)
            if step < self.n_warm:
                loss = loss * ((step + 1) / self.n_warm)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        if self.grad_threshold is not None:
            grad = grad.clamp(-float(self.grad_threshold), float(self.grad_threshold))
        self.last_loss = loss.detach()
        return self.weight * self.grad_guidance_scale * grad.detach()

    def _with_masked_rows(self, glob, app, gen, rows, masks, latent_hw):
        """The per-row semantic loss with the masked form in ``rows`` (the global elsewhere)."""
        to = block_grid(app.shape[1], latent_hw)
        m = {k: resize_masks(masks[k], masks["grid"], to)
             for k in ("example_fg", "example_bg", "app_fg", "app_bg")}
        masked = semantic_loss_masked(app[rows], gen[rows], m["example_fg"], m["example_bg"],
                                      m["app_fg"], m["app_bg"])
        pos = {r: j for j, r in enumerate(rows)}
        return torch.stack([masked[pos[r]] if r in pos else glob[r] for r in range(glob.shape[0])])

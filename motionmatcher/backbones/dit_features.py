"""MotionMatcher's motion features (CA, TSA) on a diffusion transformer: Wan 2.1 and CogVideoX.

On Zeroscope's UNet (:mod:`motionmatcher.customization.motion_features`) the two features are attention maps
the network computes anyway: CA, the spatial cross-attention to the text, and TSA, the temporal
self-attention, which only ever attends across frames at one spatial position. A DiT has
neither as such: its video self-attention is full 3-D (every token attends to every token of
every frame), and on CogVideoX the text is not a separate cross-attention but part of one joint
attention. **Our DiT definitions (our design, not the MotionMatcher paper's)**, with
``q_h(i)``, ``k_h(j)`` the post-RoPE query/key of head ``h`` at token ``i``/``j``, ``d`` the head
size and ``(f, p)`` a video token at latent frame ``f`` and spatial position ``p``:

* **CA** (B, F', h', w', T): for each video query, a softmax over the *text* keys only,
  averaged over the H heads and the matched layers::

      CA(f, p, t) = 1/H Σ_h  exp(q_h(f,p)·k_h(t)/√d) · m_t / Σ_t' exp(q_h(f,p)·k_h(t')/√d) · m_t'

  with ``m_t`` = 1 for a real text token, 0 for padding (``text_mask``). Wan: the
  cross-attention ``blocks.{i}.attn2`` (512 UMT5 tokens, zero-padded; the model itself masks
  nothing, so the map masks the padding and renormalises). CogVideoX: the video-query × text-key
  block of the joint ``transformer_blocks.{i}.attn1``, renormalised over the text keys (the
  formula above, since renormalising a block of a softmax is the softmax of that block).
* **TSA** (B, h'·w', F', F'): for each spatial position ``p``, the same-position frame × frame
  block of the video self-attention, renormalised over the key frames::

      TSA(p, f, g) = 1/H Σ_h softmax_g( q_h(f,p)·k_h(g,p)/√d )

  Wan: ``blocks.{i}.attn1`` (post-RoPE q, k); CogVideoX: the video × video block of
  ``transformer_blocks.{i}.attn1`` (post-RoPE where the model uses RoPE, i.e. the 5B / 1.5
  models; the 2B adds fixed sin-cos positions to the tokens instead). On a UNet this is exactly
  what the temporal attention computes.

* ``mode="cross_position"`` replaces TSA by the *attention motion flow* of DiTFlow (Pondaven et
  al., 2025, ``guidance_utils/motion_flow_utils.py``): for each query (f, p) and key frame g,
  the expected displacement under a per-frame-pair softmax over *all* key positions of frame g
  of the head-averaged scores at temperature τ::

      A(f,p; g,p') = softmax_p'( τ · 1/H Σ_h q_h(f,p)·k_h(g,p')/√d )
      AMF(p, f, g) = Σ_p' A(f,p; g,p') · (x(p') − x(p), y(p') − y(p))       -> (B, h'·w', F', F', 2)

  It follows content that moves between positions, which same-position TSA cannot;
  :func:`same_position_share` measures how much of the model's own attention the same-position
  keys carry (docs/dit_features.md reports it).

How the maps are read. Every captured layer keeps its model's own attention processor
(``WanAttnProcessor``, ``CogVideoXAttnProcessor2_0``): it is wrapped, not replaced (a generic
``AttnProcessor2_0`` computes the wrong attention on both DiTs). While the wrapped processor
runs, a :class:`torch.overrides.TorchFunctionMode` observes its call to
``F.scaled_dot_product_attention`` and takes the exact query and key tensors the model attends
with (after the q/k RMS/LayerNorm and RoPE), so the layer's output is untouched. From those,
CA and TSA are computed per chunk of heads: the full S × S map (CogVideoX-2B at 49×480×720:
17,550 video tokens, 1.26 GB per head per layer in fp32) is never materialised; the largest
temporary is one head chunk of the CA block (S × T) or of the TSA block (P × F'²). With
gradients on, each chunk is recomputed in the backward (activation checkpointing), so the
autograd graph holds only q and k (which the model saves anyway). Only the matched layers are
captured and, with ``early_stop``, the forward stops right after the last needed block.

Requires the attention to run through PyTorch's SDPA (diffusers' default ``native`` backend);
any other backend (flash, sage, ...) is refused with an error naming the layer.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = [
    "ARCHS",
    "DEFAULT_LAYERS",
    "MODES",
    "capture_layers",
    "dit_motion_features",
    "lora_targets",
    "same_position_share",
    "token_grid",
]

ARCHS = ("wan", "cogvideox")
MODES = ("same_position", "cross_position")

#: Transformer blocks whose attention makes CA and TSA on the real architectures (0-based block
#: indices, both 30 blocks deep). All published motion work on these DiTs reads a single middle
#: block's video self-attention Q/K:
#:
#: * DiTFlow (``ditflow/ditflow``, ``configs/guidance_config.yaml``): ``guidance_blocks_2b: [15]``
#:   (CogVideoX-2B; ``[20]`` on the 5B), attention motion flow from post-RoPE Q/K of ``attn1``'s
#:   video × video block, heads averaged, temperature 2;
#: * DiffTrack (``soow0n/difftrack-v1``, README and ``pipeline_cogvideox_tracking.py``):
#:   query-key matching at ``matching_layer=[17]`` (CogVideoX-2B, 0-based
#:   ``enumerate(self.transformer_blocks)``), where temporal correspondence peaks; its
#:   attention guidance uses 13/17/21;
#: * FastVMT (``mayuelala/FastVMT``, ``diffsynth/pipelines/wan_video.py``): Wan2.1-T2V-1.3B
#:   ``blocks[14]`` (``if i == 14``), post-RoPE head-averaged Q/K, windowed AMF.
#:
#: So CogVideoX-2B reads blocks 15 and 17 (DiTFlow's and DiffTrack's, averaged as MotionMatcher
#: averages the layers at one resolution), Wan-1.3B block 14 (FastVMT's). CA is read from the
#: same blocks: no published work picks a text-attention block for motion, and sharing the
#: blocks keeps one early-stop point (the forward runs 18 of 30 blocks on CogVideoX-2B, 15 of
#: 30 on Wan).
DEFAULT_LAYERS = {
    "wan": {"ca": (14,), "tsa": (14,)},
    "cogvideox": {"ca": (15, 17), "tsa": (15, 17)},
}

#: DiTFlow's ``motion_temp`` (``configs/guidance_config.yaml``) for ``mode="cross_position"``.
DEFAULT_FLOW_TEMPERATURE = 2.0
#: Largest temporary (bytes) one head chunk may take; heads are processed in chunks under it.
DEFAULT_CHUNK_BYTES = 256 * 2**20

_BLOCKS = {"wan": "blocks", "cogvideox": "transformer_blocks"}


class _StopForward(Exception):
    """Raised by a forward hook once the last block with a captured map has run."""


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")


def lora_targets(arch: str, *, ffn: bool = True, cross_attention: bool = True) -> str:
    """LoRA target modules for ``arch``, as one regex ``re.fullmatch``-ed by peft.

    The attention projections follow the official fine-tuning scripts: diffusers'
    ``examples/cogvideo/train_cogvideox_lora.py`` (``["to_k", "to_q", "to_v", "to_out.0"]``; on
    CogVideoX every attention is the joint ``attn1``) and finetrainers' Wan recipe
    (``"blocks.*(to_q|to_k|to_v|to_out.0)"``, which includes the cross-attention ``attn2``;
    ``cross_attention=False`` leaves ``attn2`` out, as MotionMatcher never adapts the UNet's
    spatial cross-attention). ``ffn`` adds the feed-forward, as MotionMatcher's own LoRA set on
    the UNet does (``motionmatcher.customization.lora.MOTIONMATCHER_TARGETS``): Wan's is named ``ffn``
    (``ffn.net.0.proj``, ``ffn.net.2``), CogVideoX's ``ff``.
    """
    _check_arch(arch)
    proj = r"(to_q|to_k|to_v|to_out\.0)"
    if arch == "wan":
        attn = rf"blocks\.\d+\.attn{'[12]' if cross_attention else '1'}\.{proj}"
        ff = r"blocks\.\d+\.ffn\.net\.(0\.proj|2)"
    else:
        attn = rf"transformer_blocks\.\d+\.attn1\.{proj}"
        ff = r"transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)"
    return rf"{attn}|{ff}" if ffn else attn


def token_grid(transformer, arch: str, latents: torch.Tensor) -> tuple[int, int, int]:
    """(F', h', w'): the token grid of ``latents`` (native layout) after patchification."""
    _check_arch(arch)
    if latents.ndim != 5:
        raise ValueError(f"latents must be 5-D, got shape {tuple(latents.shape)}")
    cfg = transformer.config
    if arch == "wan":
        pt, ph, pw = cfg.patch_size
        _, _, frames, height, width = latents.shape
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"Wan latents (B,C,F,H,W)={tuple(latents.shape)} not divisible by patch {cfg.patch_size}")
        return frames // pt, height // ph, width // pw
    _, frames, _, height, width = latents.shape
    p, pt = cfg.patch_size, cfg.patch_size_t
    if height % p or width % p:
        raise ValueError(f"CogVideoX latents (B,F,C,H,W)={tuple(latents.shape)} not divisible by patch {p}")
    return (frames if pt is None else (frames + pt - 1) // pt), height // p, width // p


def capture_layers(arch: str, ca_blocks: Sequence[int], tsa_blocks: Sequence[int]) -> dict[str, tuple[str, ...]]:
    """Attention module name -> which features it gives (``"ca"``, ``"tsa"``)."""
    _check_arch(arch)
    out: dict[str, list[str]] = {}
    blocks = _BLOCKS[arch]
    for kind, idxs in (("ca", ca_blocks), ("tsa", tsa_blocks)):
        for i in idxs:
            attn = "attn2" if (arch == "wan" and kind == "ca") else "attn1"
            out.setdefault(f"{blocks}.{int(i)}.{attn}", []).append(kind)
    return {k: tuple(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Observing the model's own attention call


class _SDPASpy(TorchFunctionMode):
    """Records (query, key, scale) of every ``F.scaled_dot_product_attention`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor, float | None, object]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
            bound = dict(zip(names, args))
            bound.update(kwargs)
            self.calls.append((bound["query"], bound["key"], bound.get("scale"), bound.get("attn_mask")))
        return func(*args, **kwargs)


def _wrap_processor(inner, name: str, on_qk: Callable) -> object:
    """The layer's own processor ``inner``, calling ``on_qk(q, k, scale)`` with the query and key
    (B, heads, len, d) of its attention. ``__call__``'s signature is ``inner``'s (diffusers'
    ``Attention.forward`` filters keyword arguments, e.g. ``image_rotary_emb``, by it)."""

    @functools.wraps(type(inner).__call__)
    def __call__(self, attn, *args, **kwargs):
        spy = _SDPASpy()
        with spy:
            out = inner(attn, *args, **kwargs)
        if not spy.calls:
            raise RuntimeError(
                f"{name}: the attention did not run through torch's scaled_dot_product_attention "
                f"(diffusers attention backend other than 'native'?); motion features need it")
        # Wan I2V calls SDPA for the image context first; the text / video call is the last
        q, k, scale, mask = spy.calls[-1]
        if mask is not None:
            raise RuntimeError(f"{name}: attention with a mask is not supported by the feature capture")
        on_qk(q, k, scale)
        return out

    cls = type(f"Capturing{type(inner).__name__}", (), {"__call__": __call__})
    wrapper = cls()
    wrapper.inner = inner
    return wrapper


@contextmanager
def _wrapped_processors(transformer, callbacks: dict[str, Callable]) -> Iterator[None]:
    originals = {}
    try:
        for name, cb in callbacks.items():
            attn = transformer.get_submodule(name)
            originals[name] = attn.processor
            attn.set_processor(_wrap_processor(attn.processor, name, cb))
        yield
    finally:
        for name, proc in originals.items():
            transformer.get_submodule(name).set_processor(proc)


# ---------------------------------------------------------------------------------------------
# Forward pass


def _forward(transformer, arch: str, latents, timesteps, text_embeddings, stop_after: str | None) -> None:
    handle = None
    if stop_after is not None:
        def stop(module, args, output):
            raise _StopForward

        handle = transformer.get_submodule(stop_after).register_forward_hook(stop)
    t = torch.as_tensor(timesteps, device=latents.device)
    if t.ndim == 0:
        t = t.expand(latents.shape[0])
    try:
        if arch == "wan":
            transformer(latents, t, text_embeddings, return_dict=False)
        else:
            transformer(latents, text_embeddings, t, image_rotary_emb=cogvideox_rotary_emb(transformer, latents),
                        return_dict=False)
    except _StopForward:
        pass
    finally:
        if handle is not None:
            handle.remove()


def cogvideox_rotary_emb(transformer, latents: torch.Tensor):
    """``image_rotary_emb`` for CogVideoX latents (B, F, C, H, W), as diffusers' CogVideoX
    pipeline computes it (``_prepare_rotary_positional_embeddings``); None when the model uses
    fixed positional embeddings (``use_rotary_positional_embeddings=False``, the 2B)."""
    cfg = transformer.config
    if not cfg.use_rotary_positional_embeddings:
        return None
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    p, pt = cfg.patch_size, cfg.patch_size_t
    grid_h, grid_w = latents.shape[3] // p, latents.shape[4] // p
    base_w, base_h = cfg.sample_width // p, cfg.sample_height // p
    num_frames = latents.shape[1]
    if pt is None:
        crops = get_resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
        cos, sin = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops,
                                           grid_size=(grid_h, grid_w), temporal_size=num_frames,
                                           device=latents.device)
    else:
        cos, sin = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=None,
                                           grid_size=(grid_h, grid_w), temporal_size=(num_frames + pt - 1) // pt,
                                           grid_type="slice", max_size=(base_h, base_w), device=latents.device)
    return cos, sin


# ---------------------------------------------------------------------------------------------
# Maps from q, k (per head chunk)


def _no_autocast(device: torch.device):
    """fp32 maps even under autocast (which would run the matmuls in half precision)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


def _heads_per_chunk(bytes_per_head: int, heads: int, chunk_bytes: int) -> int:
    return max(1, min(heads, chunk_bytes // max(1, bytes_per_head)))


class _Chunked(torch.autograd.Function):
    """``out = combine(fn(q[qs_i], k[ks_i], *extra) for each chunk i)``, recomputed chunk by chunk
    in the backward. q and k are kept as attributes of ``ctx`` (not ``save_for_backward``): this
    node then registers no saved tensor, so a model run under diffusers' gradient checkpointing
    saves exactly the same tensors in its forward and in its recomputation (the maps are never
    recomputed there) and its checkpointing stays valid."""

    @staticmethod
    def forward(ctx, q, k, fn, slices, stack_dim, extra):
        ctx.q, ctx.k, ctx.fn, ctx.slices, ctx.stack_dim, ctx.extra = q, k, fn, slices, stack_dim, extra
        outs = [fn(q[qs], k[ks], *extra) for qs, ks in slices]
        return torch.stack(outs, stack_dim) if stack_dim is not None else sum(outs)

    @staticmethod
    def backward(ctx, grad):
        q, k = ctx.q, ctx.k
        gq = torch.zeros_like(q) if ctx.needs_input_grad[0] else None
        gk = torch.zeros_like(k) if ctx.needs_input_grad[1] else None
        for i, (qs, ks) in enumerate(ctx.slices):
            g = grad.select(ctx.stack_dim, i) if ctx.stack_dim is not None else grad
            with torch.enable_grad(), _no_autocast(q.device):
                qc, kc = q[qs].detach().requires_grad_(), k[ks].detach().requires_grad_()
                out = ctx.fn(qc, kc, *ctx.extra)
                dq, dk = torch.autograd.grad(out, (qc, kc), g)
            if gq is not None:
                gq[qs] += dq
            if gk is not None:
                gk[ks] += dk
        return gq, gk, None, None, None, None


def _chunked(fn, q, k, slices, stack_dim=None, extra=()):
    with _no_autocast(q.device):
        return _Chunked.apply(q, k, fn, slices, stack_dim, extra)


def _head_slices(heads: int, hc: int) -> list:
    return [((slice(None), slice(h, h + hc)),) * 2 for h in range(0, heads, hc)]


def _ca_chunk(q, k, scale, neg_mask):
    # q (B,h,S,d), k (B,h,T,d) -> sum over heads of softmax over T: (B,S,T)
    s = torch.matmul(q.float() * scale, k.float().transpose(-1, -2))
    if neg_mask is not None:
        s = s + neg_mask
    return s.softmax(-1).sum(1)


def ca_from_qk(q: torch.Tensor, k: torch.Tensor, scale: float, text_mask: torch.Tensor | None = None,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """CA (B, S, T) from video queries ``q`` (B, H, S, d) and text keys ``k`` (B, H, T, d): the
    head average of the softmax over the (unmasked) text keys."""
    bsz, heads, s_len, _ = q.shape
    t_len = k.shape[2]
    neg = None
    if text_mask is not None:
        if text_mask.shape != (bsz, t_len):
            raise ValueError(f"text_mask must be (B, T)=({bsz}, {t_len}), got {tuple(text_mask.shape)}")
        if not bool(text_mask.any(-1).all()):
            raise ValueError("text_mask masks every text token of a sample")
        neg = torch.zeros(bsz, 1, 1, t_len, device=q.device)
        neg = neg.masked_fill(~text_mask.bool().to(q.device)[:, None, None, :], float("-inf"))
    hc = _heads_per_chunk(3 * 4 * bsz * s_len * t_len, heads, chunk_bytes)
    return _chunked(_ca_chunk, q, k, _head_slices(heads, hc), extra=(scale, neg)) / heads


def _tsa_chunk(q, k, scale):
    # q, k (B,h,F,P,d) -> sum over heads of softmax over key frames: (B,P,F,F)
    s = torch.einsum("bhfpd,bhgpd->bhpfg", q.float() * scale, k.float())
    return s.softmax(-1).sum(1)


def tsa_from_qk(q: torch.Tensor, k: torch.Tensor, scale: float, frames: int,
                chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """TSA (B, P, F, F) from video queries/keys (B, H, F·P, d) (frame-major tokens): for each
    position p, the head average of softmax_g(q(f,p)·k(g,p)·scale)."""
    bsz, heads, s_len, d = q.shape
    if s_len % frames:
        raise ValueError(f"{s_len} video tokens are not a multiple of {frames} frames")
    pos = s_len // frames
    q = q.reshape(bsz, heads, frames, pos, d)
    k = k.reshape(bsz, heads, frames, pos, d)
    hc = _heads_per_chunk(3 * 4 * bsz * pos * frames * frames, heads, chunk_bytes)
    return _chunked(_tsa_chunk, q, k, _head_slices(heads, hc), extra=(scale,)) / heads


def _flow_frame(qf, k, scale, temperature, rel):
    # qf (B,P,hd) one query frame, heads concatenated; k (B,F,P,hd); rel (P,P,2) -> (B,P,F,2)
    s = torch.einsum("bpc,bgqc->bpgq", qf.float(), k.float()) * scale
    a = (s * temperature).softmax(-1)
    return torch.einsum("bpgq,pqc->bpgc", a, rel)


def flow_from_qk(q: torch.Tensor, k: torch.Tensor, scale: float, grid: tuple[int, int, int],
                 temperature: float = DEFAULT_FLOW_TEMPERATURE) -> torch.Tensor:
    """DiTFlow's attention motion flow (B, P, F, F, 2) = (dx, dy) in tokens, from video q/k
    (B, H, F·P, d). Scores are averaged over heads *before* the per-frame-pair softmax over key
    positions (as ``compute_motion_flow``: ``A_all.mean(0)``), one query frame at a time."""
    bsz, heads, s_len, d = q.shape
    frames, h, w = grid
    pos = h * w
    # mean over heads of q_h·k_h = (concatenated q)·(concatenated k) / H
    qc = q.permute(0, 2, 1, 3).reshape(bsz, frames, pos, heads * d)
    kc = k.permute(0, 2, 1, 3).reshape(bsz, frames, pos, heads * d)
    yy, xx = torch.meshgrid(torch.arange(h, device=q.device), torch.arange(w, device=q.device), indexing="ij")
    xx, yy = xx.flatten().float(), yy.flatten().float()
    rel = torch.stack([xx[None, :] - xx[:, None], yy[None, :] - yy[:, None]], -1)  # (P query, P key, 2)
    slices = [((slice(None), f), (slice(None),)) for f in range(frames)]
    return _chunked(_flow_frame, qc, kc, slices, stack_dim=2, extra=(scale / heads, temperature, rel))  # (B,P,F,F,2)


# ---------------------------------------------------------------------------------------------
# Public entry points


def _split(arch: str, name: str, q, k, text_len: int):
    """(q_video, k_text, k_video) of a captured layer's attention."""
    if arch == "wan":
        if name.endswith("attn2"):
            return q, k, None
        return q, None, k
    return q[:, :, text_len:], k[:, :, :text_len], k[:, :, text_len:]


def dit_motion_features(
    transformer,
    arch: str,
    latents: torch.Tensor,
    timesteps,
    text_embeddings: torch.Tensor,
    *,
    ca_blocks: Sequence[int],
    tsa_blocks: Sequence[int],
    text_mask: torch.Tensor | None = None,
    return_ca: bool = True,
    return_tsa: bool = True,
    early_stop: bool = True,
    mode: str = "same_position",
    flow_temperature: float = DEFAULT_FLOW_TEMPERATURE,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Motion features (CA, TSA) of ``latents`` at ``timesteps`` from a DiT *as it is*
    (adapters, train/eval mode as the caller set them).

    Args:
        transformer: a diffusers ``WanTransformer3DModel`` (``arch="wan"``) or
            ``CogVideoXTransformer3DModel`` (``arch="cogvideox"``).
        latents: native layout: Wan (B, C, F, H, W), CogVideoX (B, F, C, H, W).
        timesteps: (B,) or a scalar, in the model's own timestep units.
        text_embeddings: (B, T, D) text-encoder states, as the model takes them.
        ca_blocks, tsa_blocks: 0-based block indices (see :data:`DEFAULT_LAYERS`).
        text_mask: (B, T) bool, True for real text tokens; padding is left out of CA.
        return_ca, return_tsa: compute only what is asked (the other is None).
        early_stop: stop the forward after the last needed block (False runs the whole model:
            same maps, for tests and benchmarks).
        mode: ``"same_position"`` (TSA as defined in the module docstring) or
            ``"cross_position"`` (the second output is DiTFlow's attention motion flow).
        flow_temperature: τ of the cross-position flow.
        chunk_bytes: memory bound of one head chunk's temporary.

    Returns:
        ``ca`` (B, F', h', w', T), sums to 1 over the unmasked T; ``tsa`` (B, h'·w', F', F')
        summing to 1 over the key frame, or with ``mode="cross_position"`` the flow
        (B, h'·w', F', F', 2) = (dx, dy) in tokens. float32, averaged over heads and the
        matched blocks, differentiable w.r.t. ``latents`` and the model's parameters.
    """
    _check_arch(arch)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not (return_ca or return_tsa):
        return None, None
    ca_blocks = tuple(ca_blocks) if return_ca else ()
    tsa_blocks = tuple(tsa_blocks) if return_tsa else ()
    n_blocks = len(getattr(transformer, _BLOCKS[arch]))
    for what, idxs in (("ca_blocks", ca_blocks), ("tsa_blocks", tsa_blocks)):
        if (return_ca if what == "ca_blocks" else return_tsa) and not idxs:
            raise ValueError(f"{what} is empty")
        bad = [i for i in idxs if not (0 <= int(i) < n_blocks)]
        if bad:
            raise ValueError(f"{what} {bad} out of range: the {arch} transformer has {n_blocks} blocks")
    grid = token_grid(transformer, arch, latents)
    frames, h, w = grid
    bsz, text_len = text_embeddings.shape[0], text_embeddings.shape[1]
    if text_mask is not None and text_mask.shape != (bsz, text_len):
        raise ValueError(f"text_mask must be (B, T)=({bsz}, {text_len}), got {tuple(text_mask.shape)}")

    sums: dict[str, list[torch.Tensor]] = {"ca": [], "tsa": []}
    layers = capture_layers(arch, ca_blocks, tsa_blocks)

    def make_cb(name, kinds):
        def cb(q, k, scale):
            scale = q.shape[-1] ** -0.5 if scale is None else scale
            qv, kt, kv = _split(arch, name, q, k, text_len)
            if qv.shape[2] != frames * h * w:
                raise RuntimeError(f"{name}: {qv.shape[2]} video queries, expected {frames}x{h}x{w}")
            if "ca" in kinds:
                sums["ca"].append(ca_from_qk(qv, kt, scale, text_mask, chunk_bytes))
            if "tsa" in kinds:
                if mode == "same_position":
                    sums["tsa"].append(tsa_from_qk(qv, kv, scale, frames, chunk_bytes))
                else:
                    sums["tsa"].append(flow_from_qk(qv, kv, scale, grid, flow_temperature))
        return cb

    last = max(int(i) for i in ca_blocks + tsa_blocks)
    with _wrapped_processors(transformer, {n: make_cb(n, kinds) for n, kinds in layers.items()}):
        _forward(transformer, arch, latents, timesteps, text_embeddings,
                 f"{_BLOCKS[arch]}.{last}" if early_stop else None)

    ca = tsa = None
    if return_ca:
        ca = torch.stack(sums["ca"]).mean(0).reshape(bsz, frames, h, w, text_len)
    if return_tsa:
        tsa = torch.stack(sums["tsa"]).mean(0)
    return ca, tsa


def same_position_share(
    transformer,
    arch: str,
    latents: torch.Tensor,
    timesteps,
    text_embeddings: torch.Tensor,
    *,
    blocks: Sequence[int],
    query_chunk: int = 1024,
) -> dict[int, dict[str, float]]:
    """How much of each video query's self-attention falls on keys at its own spatial position.

    For block i, with A the model's full attention of ``attn1`` (softmax over all its keys):
    ``share`` = mean over queries (f,p) and heads of Σ_g A((f,p), (g,p)) -- the mass TSA keeps
    (uniform attention gives ``uniform`` = F'/S_keys); on CogVideoX also ``text_share``, the mass
    on the text keys, and ``share_of_video`` = share / (1 − text_share) (per query). Computed by
    query chunks from log-sum-exp, never the full map. Returns {block: {...}}.
    """
    _check_arch(arch)
    frames, h, w = token_grid(transformer, arch, latents)
    pos = h * w
    text_len = text_embeddings.shape[1]
    out: dict[int, dict[str, float]] = {}

    def make_cb(i):
        def cb(q, k, scale):
            scale = q.shape[-1] ** -0.5 if scale is None else scale
            q, k = q.detach().float(), k.detach().float()
            off = text_len if arch == "cogvideox" else 0
            qv, kv = q[:, :, off:], k[:, :, off:]
            bsz, heads, s_len, d = qv.shape
            kvr = kv.reshape(bsz, heads, frames, pos, d)
            tot = {"share": 0.0, "text_share": 0.0, "share_of_video": 0.0}
            for s0 in range(0, s_len, query_chunk):
                qc = qv[:, :, s0:s0 + query_chunk]
                idx = torch.arange(s0, s0 + qc.shape[2], device=q.device)
                lse = torch.logsumexp(torch.matmul(qc, k.transpose(-1, -2)) * scale, -1)  # all keys
                same = torch.einsum("bhqd,bhfqd->bhqf", qc, kvr[:, :, :, idx % pos]) * scale
                share = (same - lse[..., None]).exp().sum(-1)
                tot["share"] += share.sum().item()
                if off:
                    text = (torch.logsumexp(torch.matmul(qc, k[:, :, :off].transpose(-1, -2)) * scale, -1)
                            - lse).exp()
                    tot["text_share"] += text.sum().item()
                    tot["share_of_video"] += (share / (1 - text)).sum().item()
            n = bsz * heads * s_len
            res = {"share": tot["share"] / n, "uniform": frames / k.shape[2]}
            if off:
                res.update(text_share=tot["text_share"] / n, share_of_video=tot["share_of_video"] / n,
                           uniform_of_video=1 / pos)
            out[int(i)] = res
        return cb

    with torch.no_grad(), _wrapped_processors(
            transformer, {f"{_BLOCKS[arch]}.{int(i)}.attn1": make_cb(i) for i in blocks}):
        _forward(transformer, arch, latents, timesteps, text_embeddings, f"{_BLOCKS[arch]}.{max(blocks)}")
    return out

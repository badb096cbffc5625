"""Attention processors that capture attention probabilities, and helpers to install them.

diffusers runs every :class:`~diffusers.models.attention_processor.Attention` layer through a
*processor*; the default one (``AttnProcessor2_0``) calls ``F.scaled_dot_product_attention``,
which never materialises the probability matrix ``softmax(Q K^T · scale)``. The motion
features of MotionMatcher are such matrices, so the layers whose maps are wanted get a
:class:`CapturingAttnProcessor` that computes them explicitly, stores their mean over heads
in an :class:`AttentionStore` and applies them to V (so the layer's output is unchanged up
to float rounding). Every other layer keeps SDPA: materialising a map costs
``O(heads · S · T)`` memory per layer, and the full-resolution spatial self-attention maps
are by far the largest tensors of the UNet.

Install with :func:`capture_attention`, a context manager that restores the model's own
processors (the same objects) on exit.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator, Mapping

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from .module_index import index_of

__all__ = [
    "AttentionStore",
    "CapturingAttnProcessor",
    "attention_probabilities",
    "capture_attention",
    "attention_layer_names",
]


class AttentionStore:
    """Head-averaged attention maps captured during one forward, grouped by a key.

    ``maps[key]`` is a list with one tensor per captured layer, in call order. Each tensor is
    ``(batch, query_len, key_len)`` where *batch* is the batch the attention layer sees
    (``B·F`` for a spatial transformer, ``B·h·w`` for a temporal one).
    """

    def __init__(self) -> None:
        self.maps: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.layers: dict[str, list[str]] = defaultdict(list)
        #: processors only write while this is True (the install context clears it on exit, so
        #: a later recomputation of the forward, e.g. by gradient checkpointing, stores nothing)
        self.active = True

    def add(self, key: str, layer: str, attn_map: torch.Tensor) -> None:
        if self.active:
            self.maps[key].append(attn_map)
            self.layers[key].append(layer)

    def mean(self, key: str) -> torch.Tensor:
        """The mean over layers of the maps stored under ``key``."""
        maps = self.maps.get(key)
        if not maps:
            raise KeyError(f"no attention maps were captured under {key!r}")
        if len(maps) == 1:
            return maps[0]
        return torch.stack(maps).mean(0)

    def clear(self) -> None:
        self.maps.clear()
        self.layers.clear()


def attention_probabilities(
    attn, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax(Q K^T · scale + mask)`` in float32, shape (batch, heads, query_len, key_len).

    ``query``/``key`` are (batch, heads, len, head_dim); ``scale`` is the layer's own
    (``head_dim ** -0.5`` for every layer of a UNet3D), as SDPA uses by default.
    """
    # float32 even under autocast (which would run the matmul in half precision)
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale
        if attention_mask is not None:
            scores = scores + attention_mask.float()
        return scores.softmax(dim=-1)


class CapturingAttnProcessor:
    """Attention with materialised probabilities; the head-mean of them goes to ``store``.

    Computes exactly what ``AttnProcessor2_0`` computes (same projections, norms, residual
    and rescale handling), but as ``P = softmax(Q K^T · scale)`` (float32) then ``P V``
    instead of a fused SDPA kernel, and calls ``store.add(key, name, P.mean(heads))``.
    With ``store=None`` it only materialises (used to re-create the official implementation,
    which runs every layer this way).
    """

    def __init__(self, store: AttentionStore | None = None, key: str = "", name: str = "",
                 keep_heads: bool = False) -> None:
        self.store = store
        self.key = key
        self.name = name
        #: store (batch, heads, Q, K) instead of the head mean (MotionClone matches per head)
        self.keep_heads = keep_heads

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        probs = attention_probabilities(attn, query, key, attention_mask)  # (B, H, Q, K) fp32
        if self.store is not None:
            self.store.add(self.key, self.name, probs if self.keep_heads else probs.mean(dim=1))

        hidden_states = torch.matmul(probs.to(value.dtype), value)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def capture_attention(
    model: torch.nn.Module,
    layers: Mapping[str, str],
    store: AttentionStore | None = None,
    *,
    others: str = "sdpa",
    keep_heads: bool = False,
) -> Iterator[AttentionStore]:
    """Install :class:`CapturingAttnProcessor` on ``layers``; restore every processor on exit.

    Args:
        model: a diffusers model with ``attn_processors``/``set_attn_processor``
            (``UNet3DConditionModel``).
        layers: attention module name (e.g. ``down_blocks.2.attentions.0.transformer_blocks.0.attn2``)
            → the store key its maps are grouped under.
        store: where maps go (a fresh :class:`AttentionStore` when None); yielded.
        others: what the other layers run: ``"sdpa"`` (diffusers' ``AttnProcessor2_0``,
            memory-efficient, never materialises the probabilities), ``"keep"`` (whatever they
            run now) or ``"materialize"`` (explicit softmax, nothing stored: the official
            implementation's behaviour, for benchmarks).
        keep_heads: store each map per head, (batch, heads, Q, K), instead of its head mean.

    The model's previous processors (the very same objects) are put back on exit, also on
    error, and the store is deactivated so that a recomputation of the forward after the
    block (gradient checkpointing) does not write into it.
    """
    if others not in ("sdpa", "keep", "materialize"):
        raise ValueError(f"others must be 'sdpa', 'keep' or 'materialize', not {others!r}")
    store = AttentionStore() if store is None else store
    index = index_of(model)  # inside the training loop: the layers listed once, not walked twice per call
    original = ({f"{n}.processor": m.get_processor() for n, m in index.attention} if index is not None
                else model.attn_processors)
    names = {k[: -len(".processor")] for k in original}
    unknown = sorted(set(layers) - names)
    if unknown:
        raise ValueError(f"not attention layers of the model: {unknown[:3]}{'…' if len(unknown) > 3 else ''}")
    sdpa = AttnProcessor2_0()
    new = {}
    for k, proc in original.items():
        name = k[: -len(".processor")]
        if name in layers:
            new[k] = CapturingAttnProcessor(store, layers[name], name, keep_heads)
        elif others == "sdpa":
            new[k] = sdpa
        elif others == "materialize":
            new[k] = CapturingAttnProcessor(None)
        else:
            new[k] = proc
    store.active = True
    _set_processors(model, index, new)
    try:
        yield store
    finally:
        store.active = False
        _set_processors(model, index, dict(original))


def _set_processors(model, index, processors: dict) -> None:
    """``model.set_attn_processor(processors)``, or the same ``set_processor`` calls on the
    indexed layers (:mod:`motionmatcher.customization.module_index`)."""
    if index is None:
        model.set_attn_processor(processors)
        return
    for n, m in index.attention:
        m.set_processor(processors[f"{n}.processor"])

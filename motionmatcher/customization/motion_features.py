"""MotionMatcher's motion features: attention maps of the UNet's down blocks.

MotionMatcher (Wu et al., 2025) uses the pre-trained text-to-video UNet itself as a motion
feature extractor. For a (noisy) latent video ``z_t`` it runs the UNet and reads, at a
chosen fraction of the latent resolution,

* **CA** -- the cross-attention probabilities ``softmax(Q K^T / sqrt(d))`` of the spatial
  transformers (``attn2`` of ``down_blocks[i].attentions[j]``): for every frame and latent
  position, a distribution over the 77 text tokens (where and when each word is -- the
  *appearance/position* part of motion), shaped ``(B, F, h', w', 77)``;
* **TSA** -- the temporal self-attention probabilities of the temporal transformers
  (``down_blocks[i].temp_attentions[j]``): for every latent position, a frame-to-frame
  ``F × F`` distribution (how content moves over time), shaped ``(B, h'·w', F, F)``;

each averaged over heads and over the transformer layers at that resolution. Only the down
blocks are used (as in the official implementation), so the forward stops after the last
down block that holds a captured layer: the mid block, the up blocks and the output conv --
more than half of the UNet -- are never run.

Which temporal attention layers: diffusers' ``TransformerTemporalModel`` in a UNet3D uses
``double_self_attention``, so its block has *two* frame-to-frame self-attentions, ``attn1``
and ``attn2`` (the latter gets no text). The official code stores every self-attention map
whose shape is ``(B·h'·w'·heads, F, F)`` from the down blocks, i.e. both; that is the
default here (``temporal_attn_layers=("attn1", "attn2")``); pass ``("attn1",)`` for
``attn1`` only. ``transformer_in`` (the temporal transformer after ``conv_in``, full
resolution) is never used: the official code leaves it out too.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .attention import AttentionStore, capture_attention

__all__ = ["motion_features", "motion_layers", "MotionLayers", "valid_scale_factors"]

CA_KEY = "ca"
TSA_KEY = "tsa"


class _StopForward(Exception):
    """Raised by a forward hook once the last down block with a captured map has run."""


def _down_resolutions(unet, height: int, width: int) -> list[tuple[int, int]]:
    """Spatial size of the input of each down block (the resolution its attentions run at)."""
    res = []
    h, w = height, width
    for block in unet.down_blocks:
        res.append((h, w))
        if getattr(block, "downsamplers", None):
            # Downsample2D: conv k3 s2 p1 -> ceil(n / 2)
            h, w = (h + 1) // 2, (w + 1) // 2
    return res


def valid_scale_factors(unet, height: int, width: int) -> list[int]:
    """Scale factors that select a down block with attention layers, for an h×w latent."""
    out = []
    for i, (h, w) in enumerate(_down_resolutions(unet, height, width)):
        block = unet.down_blocks[i]
        if len(getattr(block, "attentions", [])) == 0:
            continue
        if height % h == 0 and width % w == 0 and height // h == width // w:
            s = height // h
            if s not in out:
                out.append(s)
    return out


class MotionLayers:
    """The attention layers (module names) whose maps make the motion features."""

    def __init__(self, ca: list[str], tsa: list[str], ca_hw: tuple[int, int], tsa_hw: tuple[int, int],
                 last_block: int):
        self.ca, self.tsa = ca, tsa
        self.ca_hw, self.tsa_hw = ca_hw, tsa_hw
        #: index of the last down block the extractor has to run
        self.last_block = last_block

    def __repr__(self) -> str:
        return f"MotionLayers(ca={self.ca}, tsa={self.tsa}, ca_hw={self.ca_hw}, tsa_hw={self.tsa_hw})"


def _blocks_at(unet, height: int, width: int, scale: int, what: str) -> tuple[list[int], tuple[int, int]]:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"{what}_scale_factor must be a positive integer, got {scale!r}")
    valid = valid_scale_factors(unet, height, width)
    if height % scale or width % scale:
        raise ValueError(
            f"{what}_scale_factor={scale} does not divide the latent size {height}x{width}; "
            f"valid factors for this size: {valid}"
        )
    target = (height // scale, width // scale)
    blocks = [
        i for i, hw in enumerate(_down_resolutions(unet, height, width))
        if hw == target and len(getattr(unet.down_blocks[i], "attentions", [])) > 0
    ]
    if not blocks:
        raise ValueError(
            f"{what}_scale_factor={scale}: no down block with attention layers runs at "
            f"{target[0]}x{target[1]} for a {height}x{width} latent; valid factors: {valid}"
        )
    return blocks, target


def motion_layers(
    unet,
    height: int,
    width: int,
    spatial_scale_factor: int = 4,
    temporal_scale_factor: int = 4,
    temporal_attn_layers: Sequence[str] = ("attn1", "attn2"),
) -> MotionLayers:
    """Which attention layers give CA and TSA for an ``height``×``width`` latent.

    Raises ValueError when a scale factor does not select a down block with attention.
    """
    temporal_attn_layers = tuple(temporal_attn_layers)
    if not temporal_attn_layers or set(temporal_attn_layers) - {"attn1", "attn2"}:
        raise ValueError(f"temporal_attn_layers must be a non-empty subset of ('attn1', 'attn2'), "
                         f"got {temporal_attn_layers!r}")
    ca_blocks, ca_hw = _blocks_at(unet, height, width, spatial_scale_factor, "spatial")
    tsa_blocks, tsa_hw = _blocks_at(unet, height, width, temporal_scale_factor, "temporal")
    ca, tsa = [], []
    for i in ca_blocks:
        for j, tr in enumerate(unet.down_blocks[i].attentions):
            for b, block in enumerate(tr.transformer_blocks):
                if getattr(block, "attn2", None) is not None:
                    ca.append(f"down_blocks.{i}.attentions.{j}.transformer_blocks.{b}.attn2")
    for i in tsa_blocks:
        for j, tr in enumerate(unet.down_blocks[i].temp_attentions):
            for b, block in enumerate(tr.transformer_blocks):
                for a in temporal_attn_layers:
                    if getattr(block, a, None) is not None:
                        tsa.append(f"down_blocks.{i}.temp_attentions.{j}.transformer_blocks.{b}.{a}")
    if not ca:
        raise ValueError(f"no cross-attention layer at spatial_scale_factor={spatial_scale_factor}")
    if not tsa:
        raise ValueError(f"no temporal attention layer at temporal_scale_factor={temporal_scale_factor}")
    return MotionLayers(ca, tsa, ca_hw, tsa_hw, max(ca_blocks + tsa_blocks))


def motion_features(
    unet,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    text_embeddings: torch.Tensor,
    *,
    spatial_scale_factor: int = 4,
    temporal_scale_factor: int = 4,
    temporal_attn_layers: Sequence[str] = ("attn1", "attn2"),
    return_ca: bool = True,
    return_tsa: bool = True,
    early_stop: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Motion features (CA, TSA) of ``latents`` at ``timesteps``, from the UNet *as it is*.

    Args:
        unet: a ``UNet3DConditionModel`` (adapters, train/eval mode as the caller set them:
            nothing is switched here).
        latents: (B, C, F, h, w).
        timesteps: (B,) or scalar, the diffusion timestep(s) of ``latents``.
        text_embeddings: (B, 77, D) text-encoder hidden states.
        spatial_scale_factor: CA is read at (h/ssf, w/ssf); 1, 2, 4 for Zeroscope's UNet
            (a down block with cross-attention must run at that resolution).
        temporal_scale_factor: TSA is read at (h/tsf, w/tsf).
        temporal_attn_layers: which self-attentions of the temporal transformer blocks make
            TSA (see the module docstring).
        return_ca, return_tsa: capture only what is asked (the other is returned as None; the
            forward then stops as early as the remaining one allows).
        early_stop: stop after the last needed down block (True) or run the full UNet
            (False; same maps, for tests and benchmarks).

    Returns:
        ``ca``: (B, F, h/ssf, w/ssf, T) with T the number of text tokens, sums to 1 over T;
        ``tsa``: (B, (h/tsf)·(w/tsf), F, F) (query frame, key frame), sums to 1 over the key
        frame. Both float32, averaged over heads and over the layers at that resolution, and
        differentiable w.r.t. ``latents`` and the UNet's parameters.
    """
    if latents.ndim != 5:
        raise ValueError(f"latents must be (B, C, F, h, w), got shape {tuple(latents.shape)}")
    if not (return_ca or return_tsa):
        return None, None
    bsz, _, frames, height, width = latents.shape
    layers = motion_layers(unet, height, width, spatial_scale_factor, temporal_scale_factor,
                           temporal_attn_layers)
    capture = {}
    last_block = -1
    if return_ca:
        capture.update({n: CA_KEY for n in layers.ca})
        last_block = max(last_block, *[int(n.split(".")[1]) for n in layers.ca])
    if return_tsa:
        capture.update({n: TSA_KEY for n in layers.tsa})
        last_block = max(last_block, *[int(n.split(".")[1]) for n in layers.tsa])

    timesteps = torch.as_tensor(timesteps, device=latents.device)
    if timesteps.ndim == 0:
        timesteps = timesteps.expand(bsz)

    with capture_attention(unet, capture) as store:
        forward_until(unet, latents, timesteps, text_embeddings,
                      f"down_blocks.{last_block}" if early_stop else None)
        ca = _aggregate_ca(store, bsz, frames, layers.ca_hw) if return_ca else None
        tsa = _aggregate_tsa(store, bsz, frames, layers.tsa_hw) if return_tsa else None
    return ca, tsa


def forward_until(unet, latents: torch.Tensor, t, text_embeddings: torch.Tensor,
                  last: str | None) -> None:
    """Run ``unet`` on (``latents``, ``t``, ``text_embeddings``) and stop right after the module
    named ``last`` (e.g. ``up_blocks.1``); the rest of the UNet (later up blocks, output conv)
    never runs. ``last=None`` runs the whole UNet. Returns nothing: read what hooks captured.
    """
    handle = None
    if last is not None:
        def stop(module, args, output):
            raise _StopForward

        handle = unet.get_submodule(last).register_forward_hook(stop)
    t = torch.as_tensor(t, device=latents.device)
    if t.ndim == 0:
        t = t.expand(latents.shape[0])
    try:
        unet(latents, t, encoder_hidden_states=text_embeddings, return_dict=False)
    except _StopForward:
        pass
    finally:
        if handle is not None:
            handle.remove()


def _aggregate_ca(store: AttentionStore, bsz: int, frames: int, hw: tuple[int, int]) -> torch.Tensor:
    # each map: (B·F, h'·w', T), batch index = b·F + f (UNet3D folds frames into the batch)
    m = store.mean(CA_KEY)
    h, w = hw
    if m.shape[0] != bsz * frames or m.shape[1] != h * w:
        raise RuntimeError(f"unexpected cross-attention map shape {tuple(m.shape)} for "
                           f"B={bsz}, F={frames}, {h}x{w}")
    return m.reshape(bsz, frames, h, w, m.shape[-1])


def _aggregate_tsa(store: AttentionStore, bsz: int, frames: int, hw: tuple[int, int]) -> torch.Tensor:
    # each map: (B·h'·w', F, F), batch index = (b·h' + y)·w' + x (TransformerTemporalModel)
    m = store.mean(TSA_KEY)
    h, w = hw
    if m.shape != (bsz * h * w, frames, frames):
        raise RuntimeError(f"unexpected temporal attention map shape {tuple(m.shape)} for "
                           f"B={bsz}, F={frames}, {h}x{w}")
    return m.reshape(bsz, h * w, frames, frames)

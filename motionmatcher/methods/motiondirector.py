"""MotionDirector (Zhao et al. 2024, "MotionDirector: Motion Customization of Text-to-Video
Diffusion Models"): the dual-path LoRA and its appearance-debiased loss (``motiondirector``).

A spatial LoRA (spatial transformers' self-attention + FF) and a temporal LoRA (temporal
transformers, ``transformer_in`` included) on one UNet (notation: :mod:`motionmatcher.customization.diffusion`).
Each step, with probability ``spatial_skip_prob`` the spatial path is skipped; otherwise the
**spatial path** denoises one random frame ``f`` as a one-frame video with every temporal layer
bypassed (:func:`temporal_layers_bypassed`) and the temporal LoRA off:

    L_s = ‖ε̂(z_t[f]) − ε[f]‖²

The **temporal path** runs the whole clip with both LoRAs on (the spatial one off on a skipped
step, as the official code) and adds the appearance-debiased term with a random anchor frame
``a`` (:func:`appearance_debiased_mse`):

    L_t = ‖ε̂ − ε‖² + ‖√(β²+1)·ε̂ − β·ε̂_a − (√(β²+1)·ε − β·ε_a)‖²

Updates, as the official loop (``backward(L_s)``, spatial optimizer step, then
``backward(L_t)``, temporal optimizer step): the spatial LoRA is stepped from ``∇L_s`` only and
the temporal LoRA from ``∇L_t`` only. Here one ``backward()`` of ``loss = L_s + L_t`` in the
shared training loop gives exactly that, because the temporal path's graph does not reach the
spatial LoRA weights (it runs with them, but with their ``requires_grad`` off) and the spatial
path runs with the temporal LoRA off. (Both official forwards run before the spatial step, so
both see the same spatial weights, as here.) The base model's dropout stays as built (the
official code trains in ``unet.train()`` with the temporal convs' dropout 0.1). At inference the
temporal LoRA alone is loaded (``sample.load_parts: [temporal]``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..customization.diffusion import noise_target
from ..customization.lora import adapter_names, adapters_disabled

__all__ = ["appearance_debiased_mse", "motiondirector_loss", "temporal_layer_names",
           "temporal_layers_bypassed"]


class _TemporalBypass(torch.nn.Module):
    """Stands in for a temporal layer (``TemporalConvLayer`` / ``TransformerTemporalModel``) and
    returns its input unchanged, in the layer's own output convention."""

    def __init__(self, transformer: bool):
        super().__init__()
        self.transformer = transformer

    def forward(self, hidden_states, *args, return_dict: bool = True, **kwargs):
        if not self.transformer:
            return hidden_states
        if not return_dict:
            return (hidden_states,)
        from diffusers.models.transformers.transformer_temporal import TransformerTemporalModelOutput

        return TransformerTemporalModelOutput(sample=hidden_states)


def _temporal_classes():
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel
    from diffusers.models.unets.unet_3d_blocks import TemporalConvLayer

    return TemporalConvLayer, TransformerTemporalModel


def temporal_layer_names(unet: torch.nn.Module) -> list[str]:
    """Names of the UNet's temporal layers: every ``temp_convs[i]`` (``TemporalConvLayer``),
    every ``temp_attentions[i]`` and ``transformer_in`` (``TransformerTemporalModel``)."""
    classes = _temporal_classes()
    names = []
    for name, m in unet.named_modules():
        if isinstance(m, classes) and not any(name.startswith(n + ".") for n in names):
            names.append(name)
    return names


@contextmanager
def temporal_layers_bypassed(unet: torch.nn.Module):
    """Run ``unet`` as an image model: every temporal layer (:func:`temporal_layer_names`) is
    replaced by an identity inside the block, so none of them -- nor any LoRA on them -- is in
    the computation (stock diffusers runs them even for a one-frame video, where a temporal
    attention of a frame with itself is *not* the identity). The layers are put back after."""
    _, transformer_cls = _temporal_classes()
    swapped = []
    try:
        for name in temporal_layer_names(unet):
            parent_name, _, child = name.rpartition(".")
            parent = unet.get_submodule(parent_name) if parent_name else unet
            layer = parent._modules[child]
            parent._modules[child] = _TemporalBypass(isinstance(layer, transformer_cls))
            swapped.append((parent, child, layer))
        yield unet
    finally:
        for parent, child, layer in reversed(swapped):
            parent._modules[child] = layer


@contextmanager
def _no_grad_to(unet: torch.nn.Module, adapter: str):
    """The adapter stays in the forward, but the graph does not reach its weights
    (``requires_grad`` off inside the block, put back after)."""
    params = [p for n, p in unet.named_parameters() if f".{adapter}." in n and "lora_" in n and p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield unet
    finally:
        for p in params:
            p.requires_grad_(True)


def appearance_debiased_mse(pred: torch.Tensor, target: torch.Tensor, anchor: int,
                            beta: float = 1.0) -> torch.Tensor:
    """MotionDirector's appearance-debiased term on (B, C, F, h, w):
    ``MSE(√(β²+1)·pred − β·pred[:, :, a], √(β²+1)·target − β·target[:, :, a])`` (anchor frame
    ``a`` broadcast over the frames; float32)."""
    alpha = (beta**2 + 1) ** 0.5
    pred, target = pred.float(), target.float()
    p = alpha * pred - beta * pred[:, :, anchor : anchor + 1]
    t = alpha * target - beta * target[:, :, anchor : anchor + 1]
    return F.mse_loss(p, t)


def motiondirector_loss(
    unet,
    scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    text_embeddings: torch.Tensor,
    *,
    spatial_adapter: str = "spatial",
    temporal_adapter: str = "temporal",
    spatial_skip_prob: float = 0.2,
    beta: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """MotionDirector's dual-path loss ``L_s + L_t`` (see the module docstring).

    ``unet`` carries both adapters (``spatial_adapter``, ``temporal_adapter``), enabled. The skip
    decision, the spatial frame and the anchor frame are drawn from ``generator`` (CPU; three
    draws every step, so the random stream does not depend on the decision).

    Returns ``{"loss", "spatial", "temporal", "debiased", "spatial_skipped"}``: ``spatial`` is NaN
    on a skipped step; ``spatial_skipped`` is 1.0 / 0.0.
    """
    if not 0.0 <= spatial_skip_prob <= 1.0:
        raise ValueError(f"spatial_skip_prob must be in [0, 1], got {spatial_skip_prob}")
    present = adapter_names(unet)
    missing = [a for a in (spatial_adapter, temporal_adapter) if a not in present]
    if missing:
        raise ValueError(f"motiondirector loss: the UNet has no LoRA adapter(s) {missing} (has: {present}); "
                         "name the `trainable` parts as loss_kwargs spatial_adapter / temporal_adapter")
    bsz, n_frames = latents.shape[0], latents.shape[2]
    timesteps = torch.as_tensor(timesteps, device=latents.device).long().expand(bsz)
    skip = bool(torch.rand((), generator=generator) < spatial_skip_prob)
    frame = int(torch.randint(0, n_frames, (1,), generator=generator))
    anchor = int(torch.randint(0, n_frames, (1,), generator=generator))
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = noise_target(scheduler, latents, noise, timesteps).float()
    dev = latents.device
    loss = torch.zeros((), device=dev)
    out = {}
    if skip:
        out["spatial"] = torch.full((), float("nan"), device=dev)
    else:
        with adapters_disabled(unet, [temporal_adapter]), temporal_layers_bypassed(unet):
            pred_s = unet(noisy[:, :, frame : frame + 1], timesteps, encoder_hidden_states=text_embeddings,
                          return_dict=False)[0]
        l_s = F.mse_loss(pred_s.float(), target[:, :, frame : frame + 1])
        loss = loss + l_s
        out["spatial"] = l_s.detach()
    # skipped: the spatial LoRA is off; else on, but L_t must not reach its weights
    with adapters_disabled(unet, [spatial_adapter]) if skip else _no_grad_to(unet, spatial_adapter):
        pred = unet(noisy, timesteps, encoder_hidden_states=text_embeddings, return_dict=False)[0]
    l_t = F.mse_loss(pred.float(), target)
    l_ad = appearance_debiased_mse(pred, target, anchor, beta)
    loss = loss + l_t + l_ad
    out.update(temporal=l_t.detach(), debiased=l_ad.detach(),
               spatial_skipped=torch.tensor(float(skip), device=dev))
    return {"loss": loss, **out}

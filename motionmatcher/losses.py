"""Training losses: MotionMatcher's motion feature matching loss and the plain DDPM loss.

Notation (DDPM/DDIM): ``ᾱ_t`` = ``scheduler.alphas_cumprod[t]``; forward diffusion
``z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε`` with ε ~ N(0, I); the UNet with LoRA predicts ``ε̂_θ(z_t, t, c)``.

**Motion feature matching** (MotionMatcher, Wu et al. 2025, Sec. 3). Instead of matching the
noise, match *motion features* -- the attention maps CA (cross-attention, where each word
is) and TSA (temporal self-attention, frame-to-frame correspondence) that the frozen
pre-trained UNet ``ε_φ`` produces on a slightly denoised latent:

1. one deterministic DDIM step (η = 0) from ``t`` to ``t' = t − k`` (``k`` =
   ``num_denoise_steps``), once with the predicted noise and once with the true one::

       x̂_0 = (z_t − √(1−ᾱ_t) ε̂) / √ᾱ_t,       ẑ_{t'} = √ᾱ_{t'} x̂_0 + √(1−ᾱ_{t'}) ε̂
       x_0  = (z_t − √(1−ᾱ_t) ε ) / √ᾱ_t,       z*_{t'} = √ᾱ_{t'} x_0 + √(1−ᾱ_{t'}) ε

2. motion features of both with the *base* model (LoRA off) at ``t'``:
   ``F(z) = (CA_φ(z, t', c), TSA_φ(z, t', c))`` (:func:`~motionmatcher.motion_features.motion_features`);

3. ``L = λ_CA · MSE(CA(ẑ), CA(z*)) + λ_TSA · MSE(TSA(ẑ), TSA(z*))``.

All three forwards run without the base model's dropout (:func:`base_dropout_disabled`; the
official UNet is built with dropout 0, stock diffusers' ``TemporalConvLayer`` with 0.1); the
LoRA's own dropout stays. MotionDirector and VMC keep the dropout as built, as their official
code (``unet.train()`` on a UNet whose temporal convs have dropout 0.1).

The gradient reaches the LoRA weights only through ``ε̂`` (the extractor runs with the
adapter disabled); the target branch ``z*`` does not depend on θ, so it runs under
``torch.no_grad`` -- the same gradient, without storing its graph.

**Noise prediction** (DDPM, Ho et al. 2020): ``L = ‖ε̂_θ(z_t, t, c) − ε‖²`` (mean), the
``ddpm_lora`` baseline.

**MotionDirector** (Zhao et al. 2024, dual-path LoRA): a spatial LoRA (spatial transformers'
self-attention + FF) and a temporal LoRA (temporal transformers, ``transformer_in`` included)
on one UNet. Each step, with probability ``spatial_skip_prob`` the spatial path is skipped;
otherwise the **spatial path** denoises one random frame ``f`` as a one-frame video with every
temporal layer bypassed (:func:`temporal_layers_bypassed`) and the temporal LoRA off:
``L_s = ‖ε̂(z_t[f]) − ε[f]‖²``. The **temporal path** runs the whole clip with both LoRAs on
(the spatial one off on a skipped step, as the official code) and adds the
appearance-debiased term with a random anchor frame ``a`` (:func:`appearance_debiased_mse`):
``L_t = ‖ε̂ − ε‖² + ‖√(β²+1)·ε̂ − β·ε̂_a − (√(β²+1)·ε − β·ε_a)‖²``.

Updates, as the official loop (``backward(L_s)``, spatial optimizer step, then
``backward(L_t)``, temporal optimizer step): the spatial LoRA is stepped from ``∇L_s`` only and
the temporal LoRA from ``∇L_t`` only. Here one ``backward()`` of ``loss = L_s + L_t`` gives
exactly that, because the temporal path's graph does not reach the spatial LoRA weights (it
runs with them, but with their ``requires_grad`` off) and the spatial path runs with the
temporal LoRA off. (Both official forwards run before the spatial step, so both see the same
spatial weights, as here.)

**VMC** (Jeong et al. 2024, motion distillation): with frame residuals
``R(x) = |x[:, :, 1:] − x[:, :, :-1]|`` on (B, C, F, h, w),
``L = 1 − mean(cos(R(ε̂), R(ε)))``, the cosine taken along the frame axis
(:func:`motion_distillation_loss`, as the official code).

Every loss takes ``(unet, scheduler, latents, noise, timesteps, text_embeddings)`` and return
a dict of scalar tensors with at least ``loss`` (differentiable); see :data:`LOSSES`.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .lora import adapter_names, adapters_disabled, lora_disabled
from .motion_features import motion_features

__all__ = ["motion_matching_loss", "noise_prediction_loss", "motiondirector_loss", "motion_distillation_loss",
           "appearance_debiased_mse", "frame_residual", "temporal_layers_bypassed", "temporal_layer_names",
           "ddim_step", "base_dropout_disabled", "LOSSES"]


def _alphas_cumprod(scheduler, device) -> torch.Tensor:
    return torch.as_tensor(scheduler.alphas_cumprod).to(device=device, dtype=torch.float32)


def _expand(a: torch.Tensor, ndim: int) -> torch.Tensor:
    return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def ddim_step(
    sample: torch.Tensor,
    noise_pred: torch.Tensor,
    timesteps: torch.Tensor,
    prev_timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    final_alpha_cumprod: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Deterministic DDIM step (η = 0, ε-prediction, no clipping) from ``t`` to ``t_prev``.

    ``x̂_0 = (z_t − √(1−ᾱ_t) ε) / √ᾱ_t``; ``z_{t_prev} = √ᾱ_{t_prev} x̂_0 + √(1−ᾱ_{t_prev}) ε``.
    Per-sample ``timesteps``/``prev_timesteps`` (shape (B,) or scalar). As in
    ``DDIMScheduler.step``, a negative ``t_prev`` uses ``final_alpha_cumprod`` (default
    ``alphas_cumprod[0]``, i.e. ``set_alpha_to_one=False``). Computed in float32, returned in
    ``sample``'s dtype.
    """
    ac = alphas_cumprod.to(device=sample.device, dtype=torch.float32)
    t = torch.as_tensor(timesteps, device=sample.device).long().expand(sample.shape[0])
    tp = torch.as_tensor(prev_timesteps, device=sample.device).long().expand(sample.shape[0])
    final = ac[0] if final_alpha_cumprod is None else torch.as_tensor(
        final_alpha_cumprod, device=sample.device, dtype=torch.float32)
    a_t = _expand(ac[t], sample.ndim)
    a_prev = _expand(torch.where(tp >= 0, ac[tp.clamp(min=0)], final), sample.ndim)
    z, eps = sample.float(), noise_pred.float()
    x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).to(sample.dtype)


@contextmanager
def base_dropout_disabled(unet: torch.nn.Module, disabled: bool = True):
    """Inside the block every dropout layer of the base model has ``p = 0`` (the LoRA's own
    ``lora_dropout`` stays); ``p`` is put back after. Stock diffusers builds each
    ``TemporalConvLayer`` with dropout 0.1, the official MotionMatcher UNet with 0.0: in train
    mode the former draws a new mask in every forward. ``disabled=False``: no change."""
    saved = []
    if disabled:
        for name, m in unet.named_modules():
            if isinstance(m, torch.nn.modules.dropout._DropoutNd) and ".lora_dropout." not in f".{name}.":
                saved.append((m, m.p))
                m.p = 0.0
    try:
        yield unet
    finally:
        for m, p in saved:
            m.p = p


@contextmanager
def _restore_requires_grad(module: torch.nn.Module):
    """peft's ``enable_adapters(True)`` (used to switch the adapter back on) marks the active
    adapter trainable; put every parameter's ``requires_grad`` back as it was."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        yield
    finally:
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)


def motion_matching_loss(
    unet,
    scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    text_embeddings: torch.Tensor,
    *,
    spatial_scale_factor: int = 4,
    temporal_scale_factor: int = 4,
    ca_weight: float = 2000.0,
    tsa_weight: float = 2000.0,
    num_denoise_steps: int = 1,
    temporal_attn_layers: Sequence[str] = ("attn1", "attn2"),
    target_no_grad: bool = True,
    base_dropout: bool = False,
    fp32_extractor: bool = False,
) -> dict[str, torch.Tensor]:
    """Motion feature matching loss ``λ_CA·MSE(CA(ẑ), CA(z*)) + λ_TSA·MSE(TSA(ẑ), TSA(z*))``.

    Args:
        unet: ``UNet3DConditionModel`` with the LoRA being trained, adapter enabled.
        scheduler: a diffusers ``DDIMScheduler`` or ``DDPMScheduler`` (only ``add_noise`` and
            ``alphas_cumprod`` are used).
        latents: clean latent video ``z_0``, (B, C, F, h, w).
        noise: ε, same shape.
        timesteps: (B,) integer timesteps ``t`` (per sample).
        text_embeddings: (B, 77, D).
        spatial_scale_factor, temporal_scale_factor: resolution of CA / TSA as a fraction of
            the latent size (see :func:`~motionmatcher.motion_features.motion_features`).
        ca_weight, tsa_weight: λ_CA, λ_TSA (the official configs use 2000 and 2000). A term
            with weight 0 is not computed (its layers are not captured, the forward may stop
            earlier) and is reported as NaN.
        num_denoise_steps: ``k``, the DDIM stride: features are read at ``t' = max(t − k, 0)``.
        temporal_attn_layers: which temporal self-attentions make TSA (default both, as the
            official code).
        target_no_grad: run the target branch ``z*`` under ``torch.no_grad`` (default). False
            records its graph as the official code does -- the gradient is the same (the
            target does not depend on the trained weights); only for tests and benchmarks.
        base_dropout: keep the base model's dropout layers active in train mode. Default False
            (:func:`base_dropout_disabled` around all three forwards), as the official UNet,
            built with dropout 0: the matched signal ``ẑ − z* = c·(ε̂ − ε)`` with
            ``|c| ≈ 0.003–0.006`` for t ∈ [500, 1000) is far below dropout's noise.
        fp32_extractor: run both feature-extractor passes in float32 (autocast off) while the
            ``ε̂`` forward stays under the caller's autocast (the DDIM step and the MSE are
            float32 always); see README "Precision".

    Returns:
        ``{"loss": weighted total, "ca": MSE of CA, "tsa": MSE of TSA}`` -- scalar float32
        tensors; ``loss`` carries the graph to the LoRA weights, ``ca``/``tsa`` are detached
        (NaN when not computed).

    The model is left as found: attention processors, adapter enabled/disabled state,
    ``requires_grad`` flags and train/eval mode (never changed).
    """
    if num_denoise_steps < 1:
        raise ValueError(f"num_denoise_steps must be >= 1, got {num_denoise_steps}")
    if ca_weight < 0 or tsa_weight < 0:
        raise ValueError("loss weights must be non-negative")
    do_ca, do_tsa = ca_weight > 0, tsa_weight > 0
    if not (do_ca or do_tsa):
        raise ValueError("ca_weight and tsa_weight are both 0: the loss would be constant")
    ac = _alphas_cumprod(scheduler, latents.device)
    feature_kwargs = dict(spatial_scale_factor=spatial_scale_factor,
                          temporal_scale_factor=temporal_scale_factor,
                          temporal_attn_layers=temporal_attn_layers,
                          return_ca=do_ca, return_tsa=do_tsa)

    with base_dropout_disabled(unet, not base_dropout):
        timesteps, noisy, noise_pred = _noisy_prediction(unet, scheduler, latents, noise, timesteps,
                                                         text_embeddings)
        prev_t = (timesteps - num_denoise_steps).clamp(min=0)
        z_pred = ddim_step(noisy, noise_pred, timesteps, prev_t, ac)

        fp32 = torch.autocast(latents.device.type, enabled=False) if fp32_extractor else nullcontext()
        with _restore_requires_grad(unet), lora_disabled(unet), fp32:
            with torch.no_grad() if target_no_grad else nullcontext():
                z_target = ddim_step(noisy, noise, timesteps, prev_t, ac)
                ca_tgt, tsa_tgt = motion_features(unet, z_target, prev_t, text_embeddings, **feature_kwargs)
            ca_pred, tsa_pred = motion_features(unet, z_pred, prev_t, text_embeddings, **feature_kwargs)

    nan = torch.full((), float("nan"), device=latents.device)
    loss = torch.zeros((), device=latents.device)
    out = {}
    if do_ca:
        l_ca = F.mse_loss(ca_pred.float(), ca_tgt.float())
        loss = loss + ca_weight * l_ca
        out["ca"] = l_ca.detach()
    else:
        out["ca"] = nan
    if do_tsa:
        l_tsa = F.mse_loss(tsa_pred.float(), tsa_tgt.float())
        loss = loss + tsa_weight * l_tsa
        out["tsa"] = l_tsa.detach()
    else:
        out["tsa"] = nan
    return {"loss": loss, **out}


def _noisy_prediction(unet, scheduler, latents, noise, timesteps, text_embeddings):
    """``(t, z_t, ε̂_θ(z_t, t, c))`` with ``z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε``, t broadcast over the batch."""
    timesteps = torch.as_tensor(timesteps, device=latents.device).long().expand(latents.shape[0])
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, encoder_hidden_states=text_embeddings, return_dict=False)[0]
    return timesteps, noisy, pred


def noise_prediction_loss(
    unet,
    scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    text_embeddings: torch.Tensor,
    *,
    base_dropout: bool = True,
) -> dict[str, torch.Tensor]:
    """DDPM loss ``mean((ε̂_θ(z_t, t, c) − ε)²)`` with ``z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε``.

    (ε-prediction, as Zeroscope; for a ``v_prediction`` scheduler the target is the velocity.)
    ``base_dropout=False`` switches the base model's dropout off (:func:`base_dropout_disabled`):
    the ``ddpm_lora`` ablation then runs on the same dropout-free UNet as MotionMatcher.
    """
    with base_dropout_disabled(unet, not base_dropout):
        timesteps, _, pred = _noisy_prediction(unet, scheduler, latents, noise, timesteps, text_embeddings)
    target = _noise_target(scheduler, latents, noise, timesteps)
    return {"loss": F.mse_loss(pred.float(), target.float())}


def _noise_target(scheduler, latents, noise, timesteps) -> torch.Tensor:
    prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


# ---- MotionDirector ----------------------------------------------------------------------------


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
    """MotionDirector's dual-path loss (see the module docstring).

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
    target = _noise_target(scheduler, latents, noise, timesteps).float()
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


# ---- VMC -------------------------------------------------------------------------------------


def frame_residual(x: torch.Tensor) -> torch.Tensor:
    """``|x[:, :, 1:] − x[:, :, :-1]|`` of a (B, C, F, h, w) tensor: (B, C, F−1, h, w)."""
    return (x[:, :, 1:] - x[:, :, :-1]).abs()


def motion_distillation_residual_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − mean(cos(R(pred), R(target)))``, cosine along the frame axis (dim 2); float32."""
    if pred.shape[2] < 2:
        raise ValueError("the VMC loss needs at least 2 frames")
    cos = F.cosine_similarity(frame_residual(pred.float()), frame_residual(target.float()), dim=2)
    return 1.0 - cos.mean()


def motion_distillation_loss(
    unet,
    scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    text_embeddings: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """VMC's motion distillation loss ``1 − mean(cos(R(ε̂_θ(z_t)), R(ε)))`` (module docstring)."""
    timesteps, _, pred = _noisy_prediction(unet, scheduler, latents, noise, timesteps, text_embeddings)
    target = _noise_target(scheduler, latents, noise, timesteps)
    return {"loss": motion_distillation_residual_loss(pred, target)}


#: Registry used by the training loop: ``LOSSES[name](unet, scheduler, latents, noise,
#: timesteps, text_embeddings, **loss_kwargs)`` → dict of scalar tensors with ``loss``.
LOSSES: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "motion_matching": motion_matching_loss,
    "noise_prediction": noise_prediction_loss,
    "motiondirector": motiondirector_loss,
    "motion_distillation": motion_distillation_loss,
}

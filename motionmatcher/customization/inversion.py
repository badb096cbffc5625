"""DDIM inversion of video latents (Song et al., "Denoising Diffusion Implicit Models").

Deterministic DDIM sampling (η = 0) is an ODE discretisation, so it can be run backwards: starting
from clean latents z_0, walk the *sampling* timesteps upwards and obtain a z_T from which DDIM
sampling (with the same prompt, guidance 1 and the same number of steps) approximately
reconstructs z_0. MotionDirector / Tune-A-Video use this z_T as a noise prior for sampling.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

__all__ = ["ddim_inversion", "invert_reference", "make_ddim_scheduler"]


def make_ddim_scheduler(scheduler_or_config):
    """A fresh :class:`~diffusers.DDIMScheduler` from a config dict or from a scheduler's config.

    A fresh one is built even from a scheduler, so the caller's scheduler state (its timesteps)
    is never changed.
    """
    from diffusers import DDIMScheduler

    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    name = dict(config).get("_class_name")
    if name in _DIT_SAMPLERS:  # a DiT backbone's own scheduler (motionmatcher.backbones)
        return _DIT_SAMPLERS[name](config)
    return DDIMScheduler.from_config(config)


def _flow_sampler(config):
    from ..backbones.flow import FlowSampler

    return FlowSampler(config)


def _cogvideox_sampler(config):
    from ..backbones.cogvideox import sampling_scheduler

    return sampling_scheduler(config)


#: scheduler classes of the DiT backbones: Wan's flow schedulers, CogVideoX's DDIM/DPM (sampled
#: with its DDIM on the same ᾱ); every other config (Zeroscope's) is read as a DDIMScheduler
_DIT_SAMPLERS = {
    "UniPCMultistepScheduler": _flow_sampler,
    "FlowMatchEulerDiscreteScheduler": _flow_sampler,
    "CogVideoXDDIMScheduler": _cogvideox_sampler,
    "CogVideoXDPMScheduler": _cogvideox_sampler,
}


def _x0_eps(model_output: torch.Tensor, sample: torch.Tensor, alpha_prod: torch.Tensor,
            prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂0, ε̂) from the model output, exactly as :meth:`DDIMScheduler.step` computes them."""
    beta_prod = 1 - alpha_prod
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (sample - beta_prod**0.5 * eps) / alpha_prod**0.5
    elif prediction_type == "v_prediction":
        x0 = alpha_prod**0.5 * sample - beta_prod**0.5 * model_output
        eps = alpha_prod**0.5 * model_output + beta_prod**0.5 * sample
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - alpha_prod**0.5 * x0) / beta_prod**0.5
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    return x0, eps


def ddim_inversion(unet, scheduler_config, latents: torch.Tensor, text_embeddings: torch.Tensor,
                   num_steps: int = 75, *, progress: bool = True,
                   return_trajectory: bool = False, keep_timesteps=None) -> dict:
    r"""Invert clean latents ``z_0`` (``(B, 4, F, h, w)``, scaled) to ``z_T`` by DDIM inversion.

    Let t_1 < t_2 < … < t_N be the DDIM sampling timesteps for ``num_steps`` = N (those of
    ``DDIMScheduler.set_timesteps(N)``, ascending; Zeroscope: 1, 14, …, 963 for N = 75), ᾱ the
    scheduler's ``alphas_cumprod`` and Δ = ``num_train_timesteps // N``. Sampling step k maps
    z_k -> z_{k-1} with ᾱ_k = ᾱ[t_k] and ᾱ_{k-1} = ᾱ[t_k − Δ], or, when t_k − Δ < 0 (the last
    sampling step), ``final_alpha_cumprod`` (= ᾱ[0] when ``set_alpha_to_one=False``, 1 otherwise).
    Inversion runs these steps backwards, k = 1 … N, with the same ᾱ pairs::

        ε̂_k     = ε_θ(z_{k-1}, t_k, c)
        x̂0_k    = (z_{k-1} − √(1 − ᾱ_{k-1}) · ε̂_k) / √ᾱ_{k-1}
        z_k     = √ᾱ_k · x̂0_k + √(1 − ᾱ_k) · ε̂_k

    so z_0 is treated as the latent at ᾱ = ``final_alpha_cumprod``, exactly the value at which
    ``DDIMScheduler.step`` lands at the end of sampling. The UNet is evaluated at the timestep
    t_k that sampling step k uses, on the latent at hand z_{k-1} (sampling evaluates it on z_k;
    that is the only approximation, as in Tune-A-Video's / MotionDirector's ``ddim_inversion``
    and diffusers' ``DDIMInverseScheduler``). No classifier-free guidance: reconstruct by
    sampling with guidance 1 and the same prompt and ``num_steps``.

    The UNet runs as given (with whichever adapters are enabled), under
    ``torch.inference_mode``, in its own dtype; the update itself is computed in float32.
    ``text_embeddings`` is ``(1 or B, 77, D)``.

    Returns ``{"latents": z_T (float32, on the input's device), "timesteps": ascending t_k
    (int64, CPU), "num_steps": N}`` plus, with ``return_trajectory=True``, ``"trajectory"``: the
    float32 CPU tensor ``(N + 1, B, 4, F, h, w)`` of z_0 … z_N; with ``keep_timesteps`` (a set
    of timesteps), ``"kept"``: ``{t: z at t}`` (float32, CPU) for those t only, so a fine
    inversion (999 steps) keeps the few latents the guided methods read (ValueError naming the
    timesteps that are not inversion timesteps).

    A flow-matching backbone's scheduler (Wan) is inverted by Euler steps up its sigmas instead
    (:func:`motionmatcher.backbones.flow.flow_inversion`; ``keep_timesteps`` is not available
    there); CogVideoX's by the steps above on its own ᾱ with v-prediction.
    """
    scheduler = make_ddim_scheduler(scheduler_config)
    if type(scheduler).__name__ == "FlowSampler":
        from ..backbones.flow import flow_inversion

        if keep_timesteps is not None:
            raise ValueError("keep_timesteps: not available for a flow-matching scheduler (the guided "
                             "methods that read it run on the UNet backbone only)")
        return flow_inversion(unet, scheduler_config, latents, text_embeddings, num_steps,
                              progress=progress, return_trajectory=return_trajectory)
    scheduler.set_timesteps(num_steps)
    if scheduler.config.clip_sample or getattr(scheduler.config, "thresholding", False):
        raise ValueError("DDIM inversion needs a scheduler without clip_sample/thresholding")
    prediction_type = scheduler.config.prediction_type
    step_ratio = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod.to(torch.float32)
    final_alpha = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32)
    timesteps = scheduler.timesteps.flip(0).cpu()  # ascending

    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    if latents.ndim != 5:
        raise ValueError(f"expected latents (B, C, F, h, w), got {tuple(latents.shape)}")
    out_device = latents.device
    batch = latents.shape[0]
    if text_embeddings.shape[0] not in (1, batch):
        raise ValueError(
            f"text_embeddings batch {text_embeddings.shape[0]} does not match latents batch {batch}"
        )

    keep = None if keep_timesteps is None else {int(t) for t in keep_timesteps}
    if keep is not None:
        missing = sorted(keep - set(timesteps.tolist()))
        if missing:
            raise ValueError(f"DDIM inversion with {num_steps} steps does not visit timesteps {missing} "
                             f"(its timesteps: {timesteps[:3].tolist()} ... {timesteps[-3:].tolist()})")
    if int(timesteps[-1]) >= len(alphas):
        raise ValueError(f"DDIM inversion with {num_steps} steps reaches timestep {int(timesteps[-1])}, "
                         f"beyond the schedule's {len(alphas)} train timesteps")
    trajectory, kept = [], {}
    with torch.inference_mode():
        emb = text_embeddings.to(device=device, dtype=dtype).expand(batch, -1, -1)
        z = latents.to(device=device, dtype=torch.float32)
        if return_trajectory:
            trajectory.append(z.cpu())
        for t in tqdm(timesteps.tolist(), desc="DDIM inversion", disable=not progress, leave=False):
            prev_t = t - step_ratio
            alpha_from = alphas[prev_t] if prev_t >= 0 else final_alpha
            alpha_to = alphas[t]
            t_in = torch.tensor(t, device=device)
            out = unet(z.to(dtype), t_in, encoder_hidden_states=emb).sample.to(torch.float32)
            x0, eps = _x0_eps(out, z, alpha_from.to(device), prediction_type)
            z = alpha_to.to(device) ** 0.5 * x0 + (1 - alpha_to.to(device)) ** 0.5 * eps
            if return_trajectory:
                trajectory.append(z.cpu())
            if keep is not None and t in keep:
                kept[t] = z.cpu()
        result = {"latents": z.to(out_device), "timesteps": timesteps, "num_steps": num_steps}
        if return_trajectory:
            result["trajectory"] = torch.stack(trajectory)
        if keep is not None:
            result["kept"] = kept
    return result


def invert_reference(model, latents: torch.Tensor, prompt: str = "", num_steps: int = 75, *,
                     weights_dir=None, parts=None, progress: bool = True) -> torch.Tensor:
    """The noise prior of a method: :func:`ddim_inversion` of a reference's latents with the
    method's trained weights on the UNet, as each official inference does (MotionMatcher: its
    LoRA at scale 1; MotionDirector: its temporal LoRA; VMC: its fine-tuned UNet).

    ``weights_dir``: a saved method (:func:`motionmatcher.customization.trained_weights.save_trained`), put onto
    ``model.unet`` in place (``parts``: the ones loaded at sampling, None: all); None inverts
    with the base model. The adapters are active at every timestep, scale 1. Returns z_T
    (float32).
    """
    if weights_dir is not None:
        from .trained_weights import load_trained

        load_trained(model.unet, weights_dir, parts)
    text = model.encode_prompt([prompt])
    return ddim_inversion(model.unet, model.scheduler_config, latents.float(), text,
                          num_steps=num_steps, progress=progress)["latents"].float()

r"""Flow matching (rectified flow) for the Wan backbone: the training schedule, the sampling
scheduler behind the sampler's DDIM-style calls, and flow-matching inversion.

Forward process (Wan 2.1, Lipman et al. / Esser et al.), with the pipeline's integer timestep
``t ∈ [0, 1000)`` mapped to ``σ = t / 1000`` (the transformer's own timestep input is 1000 σ)::

    z_σ = (1 − σ) z_0 + σ ε,        target  v = dz_σ/dσ = ε − z_0

One deterministic step from σ to σ' (Euler on the ODE ``dz/dσ = v``)::

    z_{σ'} = z_σ + (σ' − σ) v̂(z_σ, σ)

Inversion walks the sampling sigmas upwards, 0 = σ_0 < σ_1 < … < σ_N, with the same Euler
step, evaluating the model at the timestep that sampling uses for that interval (1000 σ_{k+1})
on the latent at hand z_{σ_k} -- the same one approximation as DDIM inversion
(:func:`motionmatcher.customization.inversion.ddim_inversion`).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from tqdm.auto import tqdm

__all__ = ["FLOW_SCHEDULERS", "FlowMatchSchedule", "FlowSampler", "flow_inversion"]

#: diffusers scheduler classes that sample a flow-matching model
FLOW_SCHEDULERS = ("UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler")


def _expand(a: torch.Tensor, ndim: int) -> torch.Tensor:
    return a.reshape(a.shape + (1,) * (ndim - a.ndim))


class FlowMatchSchedule:
    """The training schedule of a flow-matching model, with the attributes the training loop and
    the losses use on a diffusers DDPM/DDIM scheduler (``config.num_train_timesteps``,
    ``config.prediction_type``, ``add_noise``)."""

    def __init__(self, num_train_timesteps: int = 1000):
        self.config = SimpleNamespace(num_train_timesteps=int(num_train_timesteps),
                                      prediction_type="flow_prediction")

    def sigmas(self, timesteps: torch.Tensor, device=None) -> torch.Tensor:
        """σ = t / T (float32)."""
        t = torch.as_tensor(timesteps, device=device)
        return t.to(torch.float32) / self.config.num_train_timesteps

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``z_σ = (1 − σ) z_0 + σ ε``."""
        s = _expand(self.sigmas(timesteps, latents.device), latents.ndim)
        return ((1 - s) * latents.float() + s * noise.float()).to(latents.dtype)

    def velocity(self, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The training target ``ε − z_0``."""
        return noise - latents

    def step(self, sample: torch.Tensor, velocity: torch.Tensor, timesteps, prev_timesteps) -> torch.Tensor:
        """Euler step ``z_{σ'} = z_σ + (σ' − σ) v`` (float32 math, ``sample``'s dtype)."""
        s = _expand(self.sigmas(timesteps, sample.device).expand(sample.shape[0]), sample.ndim)
        sp = _expand(self.sigmas(prev_timesteps, sample.device).clamp(min=0).expand(sample.shape[0]), sample.ndim)
        return (sample.float() + (sp - s) * velocity.float()).to(sample.dtype)


class FlowSampler:
    """A diffusers flow scheduler (UniPC with flow sigmas, as Wan ships, or FlowMatch Euler)
    behind the sampler's ``scheduler.step(out, t, z, eta=, variance_noise=)`` call."""

    def __init__(self, config: dict):
        import diffusers

        cfg = dict(config)
        self.scheduler = getattr(diffusers, cfg["_class_name"]).from_config(cfg)

    @property
    def config(self):
        return self.scheduler.config

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    @property
    def sigmas(self) -> torch.Tensor:
        return self.scheduler.sigmas

    @property
    def num_inference_steps(self) -> int:
        return self.scheduler.num_inference_steps

    def set_timesteps(self, num_steps: int, device=None) -> None:
        self.scheduler.set_timesteps(num_steps, device=device)

    def step(self, model_output, timestep, sample, eta: float = 0.0, variance_noise=None, **_):
        if eta:
            raise ValueError(f"eta = {eta}: the flow-matching sampler of this backbone is deterministic; "
                             "set sampling.eta to 0")
        return self.scheduler.step(model_output, timestep, sample)


def flow_inversion(unet, scheduler_config, latents: torch.Tensor, text_embeddings: torch.Tensor,
                   num_steps: int = 50, *, progress: bool = True, return_trajectory: bool = False) -> dict:
    """Invert clean latents ``z_0`` (``(B, C, F, h, w)``) to ``z_1`` along the sampling sigmas of
    ``num_steps`` steps (module docstring). Returns the same dict as
    :func:`motionmatcher.customization.inversion.ddim_inversion` (``timesteps`` ascending)."""
    sampler = FlowSampler(scheduler_config)
    sampler.set_timesteps(num_steps)
    sigmas = sampler.sigmas.to(torch.float32).cpu()  # descending, ends at 0
    timesteps = sampler.timesteps.cpu()
    up = sigmas.flip(0)  # 0 = σ_0 < σ_1 < ... < σ_N
    t_up = timesteps.flip(0)
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    batch = latents.shape[0]
    out_device = latents.device
    trajectory = []
    with torch.inference_mode():
        emb = text_embeddings.to(device=device, dtype=dtype).expand(batch, -1, -1)
        z = latents.to(device=device, dtype=torch.float32)
        if return_trajectory:
            trajectory.append(z.cpu())
        for k in tqdm(range(len(t_up)), desc="flow inversion", disable=not progress, leave=False):
            t = t_up[k]
            v = unet(z.to(dtype), t.to(device), encoder_hidden_states=emb).sample.to(torch.float32)
            z = z + (up[k + 1] - up[k]).to(device) * v
            if return_trajectory:
                trajectory.append(z.cpu())
    result = {"latents": z.to(out_device), "timesteps": t_up, "num_steps": num_steps}
    if return_trajectory:
        result["trajectory"] = torch.stack(trajectory)
    return result

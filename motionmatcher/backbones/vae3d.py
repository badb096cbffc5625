"""The causal 3-D video VAEs of the DiT backbones: encode a pixel video to the latents the
transformer sees and decode back (layout ``(B, C, F', h, w)``, F' = (F − 1)/4 + 1).

* ``AutoencoderKLWan``: ``z = (μ − mean_c) / std_c`` per channel (``latents_mean`` /
  ``latents_std`` of the VAE config; Wan's pipelines), decode ``x = D(z · std_c + mean_c)``;
* ``AutoencoderKLCogVideoX``: ``z = scaling_factor · μ``, decode ``x = D(z / scaling_factor)``.

μ is the posterior mean (deterministic), as :func:`motionmatcher.backbones.latents.encode_video` uses for
the 2-D VAE. The whole clip goes through the VAE at once: both VAEs process time causally in
chunks inside (Wan: 1 + 4 frames at a time with a feature cache; CogVideoX: frame batches).
"""

from __future__ import annotations

import numpy as np
import torch

VIDEO_VAES = ("AutoencoderKLWan", "AutoencoderKLCogVideoX")


def is_video_vae(vae) -> bool:
    return type(vae).__name__ in VIDEO_VAES


def _stats(vae, device):
    c = vae.config
    if type(vae).__name__ == "AutoencoderKLWan":
        mean = torch.tensor(c.latents_mean, dtype=torch.float32, device=device).view(1, -1, 1, 1, 1)
        std = torch.tensor(c.latents_std, dtype=torch.float32, device=device).view(1, -1, 1, 1, 1)
        return mean, std
    s = float(c.scaling_factor)
    return torch.zeros((), device=device), torch.tensor(1.0 / s, device=device)


def encode(vae, frames_uint8) -> torch.Tensor:
    """``uint8 (F, H, W, 3)`` -> latents ``(1, C, F', h, w)`` float32 on the VAE's device."""
    from .latents import frames_to_model_space

    x = frames_to_model_space(frames_uint8)  # (F, 3, H, W)
    param = next(vae.parameters())
    with torch.inference_mode():
        x = x.permute(1, 0, 2, 3).unsqueeze(0).to(device=param.device, dtype=param.dtype)
        mu = vae.encode(x).latent_dist.mean.to(torch.float32)
        mean, std = _stats(vae, mu.device)
        return ((mu - mean) / std).contiguous()


def decode(vae, latents: torch.Tensor) -> np.ndarray:
    """Latents ``(B, C, F', h, w)`` -> ``uint8`` numpy video ``(B, F, H, W, 3)``."""
    from .latents import model_space_to_uint8

    param = next(vae.parameters())
    with torch.inference_mode():
        z = latents.to(device=param.device, dtype=torch.float32)
        mean, std = _stats(vae, z.device)
        x = vae.decode((z * std + mean).to(param.dtype)).sample  # (B, 3, F, H, W)
        return model_space_to_uint8(x).permute(0, 2, 3, 4, 1).cpu().contiguous().numpy()

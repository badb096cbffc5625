"""VAE encoding of pixel videos to latents and decoding back, in bounded-memory frame chunks.

Zeroscope's VAE is the 2-D Stable Diffusion ``AutoencoderKL``: every frame is encoded and
decoded on its own, so a video is processed as a batch of frames, ``chunk_size`` frames per
forward pass (memory is bounded by the chunk, not by the video length).

Conventions (shared with the rest of the package):

* pixel video: ``uint8`` array ``(F, H, W, 3)``;
* model-space video: float ``(B, 3, F, H, W)`` in ``[-1, 1]``;
* latents: float ``(B, 4, F, H/s, W/s)`` (``s`` = the VAE's scale factor, 8 for Zeroscope)
  already multiplied by ``vae.config.scaling_factor`` (and shifted by ``shift_factor`` for the
  VAEs that have one), i.e. what the UNet sees.

The causal 3-D video VAEs of the DiT backbones (:data:`VIDEO_VAES`) encode a pixel video to the
latents the transformer sees and decode back (layout ``(B, C, F', h, w)``, F' = (F − 1)/4 + 1).

* ``AutoencoderKLWan``: ``z = (μ − mean_c) / std_c`` per channel (``latents_mean`` /
  ``latents_std`` of the VAE config; Wan's pipelines), decode ``x = D(z · std_c + mean_c)``;
* ``AutoencoderKLCogVideoX``: ``z = scaling_factor · μ``, decode ``x = D(z / scaling_factor)``.

μ is the posterior mean (deterministic), as :func:`encode_video` uses for
the 2-D VAE. The whole clip goes through the VAE at once: both VAEs process time causally in
chunks inside (Wan: 1 + 4 frames at a time with a feature cache; CogVideoX: frame batches).
"""

from __future__ import annotations

import numpy as np
import torch

from ..files.tensor_files import check_finite

__all__ = ["encode_video", "decode_latents", "frames_to_model_space", "model_space_to_uint8"]


def _scaling(vae) -> tuple[float, float]:
    scale = float(vae.config.scaling_factor)
    shift = getattr(vae.config, "shift_factor", None)
    return scale, float(shift) if shift is not None else 0.0


def _vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def frames_to_model_space(frames_uint8) -> torch.Tensor:
    """``uint8 (F, H, W, 3)`` (numpy or tensor) -> float32 ``(F, 3, H, W)`` in ``[-1, 1]``."""
    frames = frames_uint8 if torch.is_tensor(frames_uint8) else torch.from_numpy(np.asarray(frames_uint8))
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (F, H, W, 3), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    return frames.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0


def model_space_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in ``[-1, 1]`` (clamped) -> ``uint8`` in ``[0, 255]`` (rounded), same shape."""
    return ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def encode_video(vae, frames_uint8, chunk_size: int = 8, generator: torch.Generator | None = None,
                 sample: bool = False) -> torch.Tensor:
    """VAE-encode a pixel video to latents ``(1, 4, F, H/s, W/s)``, float32, on the VAE's device.

    Frames go through the VAE ``chunk_size`` at a time, in the VAE's dtype. By default the
    posterior mean is used (deterministic: the same video always gives the same latents);
    ``sample=True`` draws from the posterior with ``generator`` instead (then chunking changes
    the draw order, so chunked and unchunked results differ). The result is multiplied by
    ``vae.config.scaling_factor``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if is_video_vae(vae):  # a DiT's causal 3-D VAE: the clip at once
        return _encode_video_vae(vae, frames_uint8)
    x = frames_to_model_space(frames_uint8)
    s = _vae_scale_factor(vae)
    n_frames, _, height, width = x.shape
    if height % s or width % s:
        raise ValueError(f"frame size {height}x{width} is not a multiple of the VAE's scale factor {s}")
    scale, shift = _scaling(vae)
    param = next(vae.parameters())
    out = []
    with torch.inference_mode():
        for i in range(0, n_frames, chunk_size):
            chunk = x[i : i + chunk_size].to(device=param.device, dtype=param.dtype)
            dist = vae.encode(chunk).latent_dist
            z = dist.sample(generator=generator) if sample else dist.mean
            out.append(z.to(torch.float32))
        z = torch.cat(out)  # (F, 4, h, w)
        z = (z - shift) * scale
        return z.permute(1, 0, 2, 3).unsqueeze(0).contiguous()


def decode_latents(vae, latents: torch.Tensor, chunk_size: int = 8) -> np.ndarray:
    """Decode latents ``(B, 4, F, h, w)`` to a ``uint8`` numpy video ``(B, F, H, W, 3)``.

    Undoes the scaling (``/ scaling_factor``), decodes ``chunk_size`` frames per VAE forward in
    the VAE's dtype and device, clamps to ``[-1, 1]`` and rounds to ``uint8``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if latents.ndim != 5:
        raise ValueError(f"expected latents of shape (B, C, F, h, w), got {tuple(latents.shape)}")
    if is_video_vae(vae):
        return _decode_video_vae(vae, latents)
    scale, shift = _scaling(vae)
    param = next(vae.parameters())
    b, c, f, h, w = latents.shape
    with torch.inference_mode():
        z = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        z = z.to(torch.float32) / scale + shift
        frames = []
        for i in range(0, b * f, chunk_size):
            chunk = z[i : i + chunk_size].to(device=param.device, dtype=param.dtype)
            x = vae.decode(chunk).sample
            check_finite({"frames": x}, step=f"VAE decode (frames {i}-{i + len(chunk) - 1})")
            frames.append(model_space_to_uint8(x).cpu())
        video = torch.cat(frames)  # (B*F, 3, H, W)
        video = video.reshape(b, f, *video.shape[1:]).permute(0, 1, 3, 4, 2)
        return video.contiguous().numpy()


# ---- the causal 3-D video VAEs of the DiT backbones --------------------------------------------

#: the causal 3-D VAEs (the whole clip at once): Wan's and CogVideoX's
VIDEO_VAES = ("AutoencoderKLWan", "AutoencoderKLCogVideoX")


def is_video_vae(vae) -> bool:
    return type(vae).__name__ in VIDEO_VAES


def _video_vae_stats(vae, device):
    c = vae.config
    if type(vae).__name__ == "AutoencoderKLWan":
        mean = torch.tensor(c.latents_mean, dtype=torch.float32, device=device).view(1, -1, 1, 1, 1)
        std = torch.tensor(c.latents_std, dtype=torch.float32, device=device).view(1, -1, 1, 1, 1)
        return mean, std
    s = float(c.scaling_factor)
    return torch.zeros((), device=device), torch.tensor(1.0 / s, device=device)


def _encode_video_vae(vae, frames_uint8) -> torch.Tensor:
    """``uint8 (F, H, W, 3)`` -> latents ``(1, C, F', h, w)`` float32 on the VAE's device."""
    x = frames_to_model_space(frames_uint8)  # (F, 3, H, W)
    param = next(vae.parameters())
    with torch.inference_mode():
        x = x.permute(1, 0, 2, 3).unsqueeze(0).to(device=param.device, dtype=param.dtype)
        mu = vae.encode(x).latent_dist.mean.to(torch.float32)
        mean, std = _video_vae_stats(vae, mu.device)
        return ((mu - mean) / std).contiguous()


def _decode_video_vae(vae, latents: torch.Tensor) -> np.ndarray:
    """Latents ``(B, C, F', h, w)`` -> ``uint8`` numpy video ``(B, F, H, W, 3)``."""
    param = next(vae.parameters())
    with torch.inference_mode():
        z = latents.to(device=param.device, dtype=torch.float32)
        mean, std = _video_vae_stats(vae, z.device)
        x = vae.decode((z * std + mean).to(param.dtype)).sample  # (B, 3, F, H, W)
        return model_space_to_uint8(x).permute(0, 2, 3, 4, 1).cpu().contiguous().numpy()

"""VAE latent caching: shapes, scaling, determinism, chunking, decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from motionmatcher.backbones.latents import decode_latents, encode_video


def moving_pattern(n_frames=8, height=64, width=64) -> np.ndarray:
    """A smooth, moving colour pattern, uint8 (F, H, W, 3)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = [
        np.stack([127 + 120 * np.sin((xx + 3 * f) / 7.0),
                  127 + 120 * np.cos((yy - 2 * f) / 5.0),
                  127 + 100 * np.sin((xx + yy + f) / 9.0)], -1)
        for f in range(n_frames)
    ]
    return np.stack(frames).round().astype(np.uint8)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from motionmatcher.backbones.models import load_t2v_model

    return load_t2v_model(tiny_model_dir)


@pytest.mark.parametrize("size", [(64, 64), (128, 128), (64, 96)])
def test_encode_shape_dtype(model, size):
    frames = moving_pattern(8, *size)
    z = encode_video(model.vae, frames, chunk_size=8)
    assert z.shape == (1, 4, 8, size[0] // 8, size[1] // 8)
    assert z.dtype == torch.float32


def test_encode_applies_scaling_to_posterior_mean(model):
    frames = moving_pattern()
    z = encode_video(model.vae, frames)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        mean = model.vae.encode(x).latent_dist.mean  # (F, 4, h, w)
    expected = (mean * model.vae.config.scaling_factor).permute(1, 0, 2, 3)[None]
    assert model.vae.config.scaling_factor == pytest.approx(0.18215)
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-6)
    # ... and really scaled: not the raw mean.
    assert not torch.allclose(z, mean.permute(1, 0, 2, 3)[None], atol=1e-3)


def test_encode_deterministic_and_tensor_input(model):
    frames = moving_pattern()
    a = encode_video(model.vae, frames)
    b = encode_video(model.vae, frames)
    assert torch.equal(a, b)
    c = encode_video(model.vae, torch.from_numpy(frames))
    assert torch.equal(a, c)


def test_encode_chunked_equals_unchunked(model):
    frames = moving_pattern()
    full = encode_video(model.vae, frames, chunk_size=8)
    for chunk in (1, 3):
        torch.testing.assert_close(encode_video(model.vae, frames, chunk_size=chunk), full,
                                   rtol=1e-5, atol=1e-6)


def test_encode_sample_uses_generator(model):
    frames = moving_pattern()
    mean = encode_video(model.vae, frames)
    s1 = encode_video(model.vae, frames, sample=True, generator=torch.Generator().manual_seed(1))
    s2 = encode_video(model.vae, frames, sample=True, generator=torch.Generator().manual_seed(1))
    s3 = encode_video(model.vae, frames, sample=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, s3)
    assert not torch.allclose(s1, mean)


def test_encode_rejects_bad_input(model):
    with pytest.raises(ValueError, match="multiple"):
        encode_video(model.vae, moving_pattern(2, 60, 64))
    with pytest.raises(ValueError, match="uint8"):
        encode_video(model.vae, moving_pattern(2).astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        encode_video(model.vae, moving_pattern(2)[..., :2])


def test_decode_shape_chunking_and_scaling(model):
    frames = moving_pattern(4)
    z = encode_video(model.vae, frames)
    z2 = torch.cat([z, torch.randn(z.shape, generator=torch.Generator().manual_seed(0))])
    video = decode_latents(model.vae, z2, chunk_size=8)
    assert video.shape == (2, 4, 64, 64, 3) and video.dtype == np.uint8
    # Chunked decoding (chunks straddle the two samples) gives the same frames (a rounding
    # flip of one grey level at most).
    chunked = decode_latents(model.vae, z2, chunk_size=3)
    assert np.abs(chunked.astype(int) - video.astype(int)).max() <= 1
    # Divides by the scaling factor and clamps: compare with the raw VAE decode.
    with torch.no_grad():
        raw = model.vae.decode(z[0].permute(1, 0, 2, 3) / model.vae.config.scaling_factor).sample
    ref = ((raw.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(video[0].astype(int) - ref.astype(int)).max() <= 1
    # A single sample decodes as in the batch.
    assert np.abs(decode_latents(model.vae, z).astype(int) - video[:1].astype(int)).max() <= 1

"""DDIM inversion: bookkeeping, and the inversion -> sampling round trip.

The tiny model's UNet has random weights: it is not a denoiser, so the DDIM ODE it defines is
badly conditioned and no DDIM inversion reconstructs well through it (measured below). The round
trip is therefore checked with two ε-models built on the tiny UNet (both go through the real
``ddim_inversion`` and ``sample_latents`` code):

* ``LatentFreeEps``: ε(z, t, c) = UNet(0, t, c), i.e. independent of z. For such a model DDIM
  inversion is the exact inverse of DDIM sampling, so any mistake in the timestep/ᾱ bookkeeping
  (off-by-one timestep, wrong ᾱ for the first inversion step / last sampling step) shows as a
  reconstruction error; correct bookkeeping reconstructs to float precision.
* ``GaussianDenoiserEps``: the optimal denoiser for unit-variance Gaussian data,
  ε*(z, t) = √(1 − ᾱ_t) · z, plus the full tiny UNet as a text-conditioned residual. It depends
  on z like a trained model does, so the round trip has DDIM inversion's usual (first-order)
  error, which shrinks as the number of steps grows.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from motionmatcher.inversion import ddim_inversion
from motionmatcher.latents import encode_video
from motionmatcher.sampler import SamplingConfig, initial_latents, sample_latents
from test_latents import moving_pattern

PROMPT = "a red car driving along a coastal road"
OTHER = "a flock of birds flying over the sea at dawn"


class LatentFreeEps(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, z, t, encoder_hidden_states):
        out = self.unet(torch.zeros_like(z), t, encoder_hidden_states=encoder_hidden_states).sample
        return SimpleNamespace(sample=out)


class GaussianDenoiserEps(torch.nn.Module):
    def __init__(self, unet, alphas_cumprod, residual=1.0):
        super().__init__()
        self.unet = unet
        self.alphas_cumprod = alphas_cumprod
        self.residual = residual

    def forward(self, z, t, encoder_hidden_states):
        a = self.alphas_cumprod[int(t)]
        res = self.unet(z, t, encoder_hidden_states=encoder_hidden_states).sample
        return SimpleNamespace(sample=(1 - a) ** 0.5 * z + self.residual * res)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from motionmatcher.models import load_t2v_model

    return load_t2v_model(tiny_model_dir)


@pytest.fixture(scope="module")
def setup(model):
    z0 = encode_video(model.vae, moving_pattern(8, 64, 64))  # (1, 4, 8, 8, 8)
    emb = model.encode_prompt([PROMPT])
    other = model.encode_prompt([OTHER])
    return z0, emb, other


def rel_err(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def round_trip(unet, sched_cfg, z0, inv_emb, sample_emb, steps, noise_prior=1.0):
    inv = ddim_inversion(unet, sched_cfg, z0, inv_emb, steps, progress=False)
    cfg = SamplingConfig(num_steps=steps, guidance_scale=1.0, noise_prior=noise_prior)
    z_init = initial_latents(z0.shape, torch.Generator().manual_seed(0), inv["latents"], noise_prior)
    return sample_latents(unet, sched_cfg, sample_emb, None, z_init, cfg, has_adapter=False)


def test_round_trip_exact_for_latent_free_eps(model, setup):
    z0, emb, other = setup
    net = LatentFreeEps(model.unet)
    steps = 10
    rec = round_trip(net, model.scheduler_config, z0, emb, emb, steps)
    err, max_abs = rel_err(rec, z0), (rec - z0).abs().max().item()
    # Measured: 0.0 / 0.0 (bit-identical on CPU); tolerance leaves room for float reassociation.
    assert err < 1e-5 and max_abs < 1e-5, (err, max_abs)
    # Sampling with another prompt, or from pure noise (p = 0), is far off.
    # Measured: mismatched prompt 6.3, p = 0: 130 (relative L2).
    assert rel_err(round_trip(net, model.scheduler_config, z0, emb, other, steps), z0) > 1.0
    assert rel_err(round_trip(net, model.scheduler_config, z0, emb, emb, steps, 0.0), z0) > 10.0


def test_round_trip_denoiser_like_model(model, setup):
    z0, emb, other = setup
    z0 = z0 / z0.std()  # scaled SD-VAE latents have about unit variance; the random VAE's don't
    net = GaussianDenoiserEps(model.unet, model.ddim_scheduler().alphas_cumprod)
    sc = model.scheduler_config
    err10 = rel_err(round_trip(net, sc, z0, emb, emb, 10), z0)
    rec20 = round_trip(net, sc, z0, emb, emb, 20)
    err20, max20 = rel_err(rec20, z0), (rec20 - z0).abs().max().item()
    # Measured: 10 steps 0.216 (max abs 0.79), 20 steps 0.135 (max abs 0.50): first order.
    assert err10 < 0.26 and err20 < 0.16 and max20 < 0.6, (err10, err20, max20)
    assert err20 < 0.75 * err10
    # Measured at 20 steps: mismatched prompt 0.199, pure noise (p = 0) 1.47.
    mismatch = rel_err(round_trip(net, sc, z0, emb, other, 20), z0)
    noise = rel_err(round_trip(net, sc, z0, emb, emb, 20, 0.0), z0)
    assert mismatch > 1.3 * err20, (mismatch, err20)
    assert noise > 5 * err20, (noise, err20)


def test_round_trip_raw_tiny_unet(model, setup):
    """The random-weight UNet itself: reconstruction is poor (it is no denoiser), but still far
    closer than sampling from pure noise. Measured with 10 steps on (1, 4, 8, 8, 8) latents:
    relative L2 15.6 (max abs 4.9) vs. mismatched prompt 19.0 and p = 0: 128."""
    z0, emb, other = setup
    sc = model.scheduler_config
    err = rel_err(round_trip(model.unet, sc, z0, emb, emb, 10), z0)
    noise = rel_err(round_trip(model.unet, sc, z0, emb, emb, 10, 0.0), z0)
    assert err < 0.25 * noise, (err, noise)


def test_first_step_uses_final_alpha_cumprod(model, setup):
    z0, emb, _ = setup
    for set_alpha_to_one in (False, True):
        sc = dict(model.scheduler_config, set_alpha_to_one=set_alpha_to_one)
        # One step: timesteps [1] (steps_offset 1); from final_alpha_cumprod to ᾱ[1].
        out = ddim_inversion(model.unet, sc, z0, emb, 1, progress=False)
        assert out["timesteps"].tolist() == [1]
        from diffusers import DDIMScheduler

        s = DDIMScheduler.from_config(sc)
        a_from = s.final_alpha_cumprod
        assert float(a_from) == (1.0 if set_alpha_to_one else float(s.alphas_cumprod[0]))
        a_to = s.alphas_cumprod[1]
        with torch.no_grad():
            eps = model.unet(z0, torch.tensor(1), encoder_hidden_states=emb).sample
        x0 = (z0 - (1 - a_from) ** 0.5 * eps) / a_from**0.5
        expected = a_to**0.5 * x0 + (1 - a_to) ** 0.5 * eps
        torch.testing.assert_close(out["latents"], expected, rtol=1e-5, atol=1e-6)


def test_trajectory_and_scheduler_untouched(model, setup):
    z0, emb, _ = setup
    sched = model.ddim_scheduler()
    out = ddim_inversion(model.unet, sched, z0, emb, 4, progress=False, return_trajectory=True)
    assert sched.num_inference_steps is None  # a fresh scheduler was used
    assert out["timesteps"].tolist() == [1, 251, 501, 751]
    traj = out["trajectory"]
    assert traj.shape == (5, *z0.shape) and traj.dtype == torch.float32
    assert torch.equal(traj[0], z0) and torch.equal(traj[-1], out["latents"])
    assert out["latents"].shape == z0.shape and out["latents"].dtype == torch.float32
    # Same inputs, same result (deterministic); no trajectory unless asked.
    again = ddim_inversion(model.unet, model.scheduler_config, z0, emb, 4, progress=False)
    assert torch.equal(again["latents"], out["latents"]) and "trajectory" not in again

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

from motionmatcher.customization.inversion import ddim_inversion
from motionmatcher.backbones.latents import encode_video
from motionmatcher.customization.sampler import SamplingConfig, initial_latents, sample_latents
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
    from motionmatcher.backbones.models import load_t2v_model

    return load_t2v_model(tiny_model_dir)


@pytest.fixture(scope="module")
def setup(model):
    z0 = encode_video(model.vae, moving_pattern(8, 64, 64))  # (1, 4, 8, 8, 8)
    emb = model.encode_prompt([PROMPT])
    other = model.encode_prompt([OTHER])
    return z0, emb, other


def rel_err(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def invert(unet, sched_cfg, z0, emb, steps):
    return ddim_inversion(unet, sched_cfg, z0, emb, steps, progress=False)["latents"]


def sample(unet, sched_cfg, z_inv, emb, steps, noise_prior=1.0):
    """DDIM sampling with guidance 1 from √p·z_inv + √(1−p)·ε."""
    cfg = SamplingConfig(num_steps=steps, guidance_scale=1.0, noise_prior=noise_prior)
    z_init = initial_latents(z_inv.shape, torch.Generator().manual_seed(0), z_inv, noise_prior)
    return sample_latents(unet, sched_cfg, emb, None, z_init, cfg, has_adapter=False)


def test_round_trip_exact_for_latent_free_eps(model, setup):
    z0, emb, other = setup
    net, sc, steps = LatentFreeEps(model.unet), model.scheduler_config, 10
    z_inv = invert(net, sc, z0, emb, steps)
    rec = sample(net, sc, z_inv, emb, steps)
    err, max_abs = rel_err(rec, z0), (rec - z0).abs().max().item()
    # Measured (10 steps, latents (1, 4, 8, 8, 8)): relative L2 2.0e-6, max abs 7.1e-7 (float32
    # rounding only; bit-identical for some prompts); tolerance 1e-5 (5x margin).
    assert err < 1e-5 and max_abs < 1e-5, (err, max_abs)
    # Sampling with another prompt, or from pure noise (p = 0), is far off.
    # Measured: mismatched prompt 2.3, p = 0: 130 (relative L2).
    mismatch = rel_err(sample(net, sc, z_inv, other, steps), z0)
    noise = rel_err(sample(net, sc, z_inv, emb, steps, noise_prior=0.0), z0)
    assert mismatch > 1.0 and noise > 10.0, (mismatch, noise)


def test_round_trip_denoiser_like_model(model, setup):
    z0, emb, _ = setup
    z0 = z0 / z0.std()  # scaled SD-VAE latents have about unit variance; the random VAE's don't
    net = GaussianDenoiserEps(model.unet, model.ddim_scheduler().alphas_cumprod)
    sc = model.scheduler_config
    errs = {}
    for steps in (8, 16):
        rec = sample(net, sc, invert(net, sc, z0, emb, steps), emb, steps)
        errs[steps] = (rel_err(rec, z0), (rec - z0).abs().max().item())
    # Measured: 8 steps 0.242 (max abs 0.89), 16 steps 0.153 (max abs 0.57): first-order
    # convergence. (A mismatched prompt barely matters here, the random UNet residual's text
    # dependence being weak: 0.23 / 0.14; pure noise gives 1.4.)
    assert errs[8][0] < 0.3 and errs[16][0] < 0.19 and errs[16][1] < 0.7, errs
    assert errs[16][0] < 0.75 * errs[8][0], errs


def test_round_trip_raw_tiny_unet(model, setup):
    """The random-weight UNet itself: reconstruction is poor (it is no denoiser), but still far
    closer than sampling from pure noise. Measured with 10 steps on (1, 4, 8, 8, 8) latents:
    relative L2 14.0 (max abs 4.8) vs. mismatched prompt 14.7 and p = 0: 128."""
    z0, emb, _ = setup
    sc, steps = model.scheduler_config, 10
    z_inv = invert(model.unet, sc, z0, emb, steps)
    err = rel_err(sample(model.unet, sc, z_inv, emb, steps), z0)
    noise = rel_err(sample(model.unet, sc, z_inv, emb, steps, noise_prior=0.0), z0)
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


# ---- the noise prior of a trained method: inverted with its own weights --------------------


def test_invert_reference_uses_the_methods_adapter(tiny_model_dir, tmp_path):
    """Official inference inverts the reference with the customized UNet; ours does too."""
    import copy

    from motionmatcher.customization import lora as lora_lib
    from motionmatcher.customization.inversion import invert_reference
    from motionmatcher.backbones.models import load_t2v_model

    base = load_t2v_model(tiny_model_dir)
    trained = copy.copy(base)
    trained.unet = copy.deepcopy(base.unet)
    cfg = lora_lib.lora_config(rank=4, dropout=0.0)
    lora_lib.add_lora(trained.unet, cfg)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, p in trained.unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    trained.unet.eval()
    weights = lora_lib.save_adapter(trained.unet, tmp_path / "adapter", cfg)
    latents = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = base.encode_prompt([""])
    expected = ddim_inversion(trained.unet, base.scheduler_config, latents, text, num_steps=4,
                              progress=False)["latents"]
    plain = ddim_inversion(base.unet, base.scheduler_config, latents, text, num_steps=4,
                           progress=False)["latents"]
    assert (expected - plain).abs().max() > 1e-4

    fresh = copy.copy(base)
    fresh.unet = copy.deepcopy(base.unet).eval()
    got = invert_reference(fresh, latents, "", 4, weights_dir=weights, progress=False)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert lora_lib.adapter_names(fresh.unet) == ["motion"]
    torch.testing.assert_close(invert_reference(base, latents, "", 4, progress=False), plain,
                               rtol=0, atol=0)


def test_sample_jobs_take_the_methods_inversion(tmp_path):
    """DAG: a trained method's sample job inverts the reference with its own weights (it takes
    the latents, not a cached inversion; was rule method_inversion), `base` samples from the base
    model's; `inversion.with_method: false` gives every method the base one."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    manifest = repo.parent / "shared" / "reference_videos" / "manifest.csv"
    if not manifest.is_file():
        from motionmatcher.toy.ball_clips import write_demo_dataset

        write_demo_dataset(tmp_path / "demo", n_frames=20, size=(80, 64))
        manifest = tmp_path / "demo" / "manifest.csv"

    def dry(*extra):
        res = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(tmp_path),
             "-n", "--cores", "1", "--config", f"manifest={manifest}", *extra],
            capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout

    out = dry()
    samples = [b for b in out.split("rule ")[1:] if b.startswith("sample:")]
    mm = [b for b in samples if "method=motionmatcher," in b]
    base = [b for b in samples if "method=base," in b]
    assert mm and base
    assert all("resources/latents/" in b and "resources/inversion/" not in b for b in mm)
    assert all("resources/inversion/" in b and "resources/latents/" not in b for b in base)
    assert "rule method_inversion:" not in out
    off = tmp_path / "off.yaml"
    off.write_text('inversion: {num_steps: 20, prompt: "", with_method: false}\n')
    out = dry("--configfile", str(repo / "config" / "config.yaml"), str(off))
    samples = [b for b in out.split("rule ")[1:] if b.startswith("sample:")]
    assert samples and all("resources/inversion/" in b for b in samples)

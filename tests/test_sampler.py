"""DDIM sampling: noise prior, determinism, batching, guidance, LoRA gating and scale."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from helpers import lora_enabled
from motionmatcher.customization import lora
from motionmatcher.customization.sampler import SamplingConfig, initial_latents, sample_latents, sample_videos

SIZE = dict(n_frames=8, height=64, width=64)  # latents (1, 4, 8, 8, 8)
LATENT = (1, 4, 8, 8, 8)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """A shared base model for the tests that attach no adapter."""
    from motionmatcher.backbones.models import load_t2v_model

    return load_t2v_model(tiny_model_dir)


def cfg(**kw) -> SamplingConfig:
    base = dict(num_steps=4, guidance_scale=12.0, noise_prior=0.0)
    return SamplingConfig(**{**base, **kw})


def adapted(model, seed=0):
    """Attach a rank-4 LoRA adapter with perturbed (non-zero) weights."""
    lora.add_lora(model.unet, lora.lora_config(rank=4, dropout=0.0))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


# --- noise prior ---------------------------------------------------------------------------

def test_initial_latents_noise_prior_math():
    shape = (2, *LATENT[1:])
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    z_inv = torch.randn(LATENT, generator=torch.Generator().manual_seed(4))
    # p = 0: pure noise (no inversion latents needed, or ignored).
    assert torch.equal(initial_latents(shape, torch.Generator().manual_seed(3)), noise)
    assert torch.equal(initial_latents(shape, torch.Generator().manual_seed(3), z_inv, 0.0), noise)
    # p = 1: the inversion latents, broadcast over the batch.
    out = initial_latents(shape, torch.Generator().manual_seed(3), z_inv, 1.0)
    assert out.shape == shape and torch.equal(out, z_inv.expand(shape))
    # 0 < p < 1: √p·z_inv + √(1−p)·ε.
    out = initial_latents(shape, torch.Generator().manual_seed(3), z_inv, 0.3)
    torch.testing.assert_close(out, 0.3**0.5 * z_inv + 0.7**0.5 * noise)
    # Per-row generators: row i does not depend on the other rows.
    rows = initial_latents(shape, [torch.Generator().manual_seed(s) for s in (5, 6)])
    assert torch.equal(rows[1:], initial_latents(LATENT, torch.Generator().manual_seed(6)))


def test_initial_latents_variance_preserved():
    # Independent unit-variance z_inv and ε: Var = p + (1 − p) = 1 for every p.
    shape = (4, 4, 8, 32, 32)
    z_inv = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for p in (0.0, 0.1, 0.3, 0.5, 0.9, 1.0):
        out = initial_latents(shape, torch.Generator().manual_seed(2), z_inv, p)
        assert abs(out.var().item() - 1.0) < 0.03, p


def test_initial_latents_errors():
    with pytest.raises(ValueError, match="inversion latents"):
        initial_latents(LATENT, torch.Generator(), None, 0.3)
    with pytest.raises(ValueError, match="do not fit"):
        initial_latents(LATENT, torch.Generator(), torch.zeros(1, 4, 4, 8, 8), 0.3)
    with pytest.raises(ValueError, match="noise_prior"):
        initial_latents(LATENT, torch.Generator(), torch.zeros(LATENT), 1.5)


# --- determinism and batching --------------------------------------------------------------

def test_same_seed_bit_identical_different_seed_differs(model):
    c = cfg()
    a = sample_videos(model, ["a dog running on the beach"] * 2, [7, 8], **SIZE, cfg=c,
                      progress=False)
    b = sample_videos(model, ["a dog running on the beach"], [7], **SIZE, cfg=c, progress=False)
    assert [(r["prompt"], r["seed"]) for r in a] == [("a dog running on the beach", 7),
                                                      ("a dog running on the beach", 8)]
    r = a[0]
    assert r["frames"].shape == (8, 64, 64, 3) and r["frames"].dtype == np.uint8
    assert r["latents"].shape == LATENT and r["latents"].dtype == torch.float32
    assert r["seconds"] > 0
    assert np.array_equal(a[0]["frames"], b[0]["frames"])
    assert torch.equal(a[0]["latents"], b[0]["latents"])
    assert not torch.allclose(a[0]["latents"], a[1]["latents"])
    assert not np.array_equal(a[0]["frames"], a[1]["frames"])


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_batch_composition_does_not_change_a_sample(model, eta):
    prompts = ["a dog running on the beach", "a horse galloping in a field"]
    batched = sample_videos(model, prompts, [3, 3], **SIZE, cfg=cfg(batch_size=2, eta=eta),
                            progress=False)
    alone = sample_videos(model, prompts[1:], [3], **SIZE, cfg=cfg(batch_size=1, eta=eta),
                          progress=False)
    assert [r["prompt"] for r in batched] == prompts
    # Same initial (and, with eta > 0, step) noise and same embeddings, but NOT bit-identical:
    # the UNet's batched kernels (batch 4 with guidance vs. 2) sum in a different order.
    # Measured (4 steps, guidance 12): relative L2 1.5e-6, max abs 3.7e-5 on latents of std 5;
    # decoded frames differ by at most one grey level.
    x, y = batched[1]["latents"], alone[0]["latents"]
    assert ((x - y).norm() / y.norm()).item() < 2e-5
    torch.testing.assert_close(x, y, rtol=1e-4, atol=5e-4)
    assert np.abs(batched[1]["frames"].astype(int) - alone[0]["frames"].astype(int)).max() <= 1
    assert not torch.allclose(batched[0]["latents"], batched[1]["latents"])


def test_progress_bar_counts_samples_times_steps(model, monkeypatch):
    import motionmatcher.customization.sampler as sampler_mod

    bars = []

    class Bar:
        def __init__(self, total=None, **kw):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def close(self):
            pass

    monkeypatch.setattr(sampler_mod, "tqdm", Bar)
    sample_videos(model, ["a", "a", "b", "b"], [0, 1, 0, 1], **SIZE,
                  cfg=cfg(num_steps=2, guidance_scale=1.0, batch_size=3))
    assert len(bars) == 1 and bars[0].total == 8 and bars[0].n == 8


# --- guidance ------------------------------------------------------------------------------

def test_classifier_free_guidance_one_forward(model):
    emb = model.encode_prompt(["a cat jumping"])
    neg = model.encode_prompt([""])
    z = torch.randn(LATENT, generator=torch.Generator().manual_seed(0))
    batches = []
    hook = model.unet.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        c = cfg(num_steps=1, guidance_scale=7.5)
        out = sample_latents(model.unet, model.scheduler_config, emb, neg, z, c, has_adapter=False)
        assert batches == [2]  # unconditional + conditional in ONE forward
        batches.clear()
        sample_latents(model.unet, model.scheduler_config, emb, None, z,
                       cfg(num_steps=1, guidance_scale=1.0), has_adapter=False)
        assert batches == [1]  # g = 1: conditional half only
    finally:
        hook.remove()
    sched = model.ddim_scheduler()
    sched.set_timesteps(1)
    t = sched.timesteps[0]
    with torch.no_grad():
        e_u = model.unet(z, t, encoder_hidden_states=neg).sample
        e_c = model.unet(z, t, encoder_hidden_states=emb).sample
    expected = sched.step(e_u + 7.5 * (e_c - e_u), t, z).prev_sample
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


# --- LoRA ----------------------------------------------------------------------------------

def test_lora_gating_switches_exactly_at_threshold(tiny_model):
    model = adapted(tiny_model)
    lora.set_lora_scale(model.unet, 0.7)
    scalings = [dict(layer.scaling) for layer in lora.tuner_layers(model.unet)]
    emb = model.encode_prompt(["a cat jumping"])
    z = torch.randn(LATENT, generator=torch.Generator().manual_seed(0))
    steps = []
    # 20 steps: t = 951, 901, ..., 51, 1; the threshold 501 is itself a timestep.
    c = cfg(num_steps=20, guidance_scale=1.0, lora_min_timestep=501, lora_scale=2.0)
    for initially in (True, False):
        lora.set_lora_enabled(model.unet, initially)
        steps.clear()
        sample_latents(model.unet, model.scheduler_config, emb, None, z, c, has_adapter=True,
                       on_step=lambda t, on: steps.append((t, on)))
        assert [t for t, _ in steps] == list(range(951, -1, -50))
        assert all(on == (t >= 501) for t, on in steps), steps
        assert (501, True) in steps and (451, False) in steps
        # Adapter state and scale restored afterwards.
        assert lora_enabled(model.unet) is initially
        assert [dict(layer.scaling) for layer in lora.tuner_layers(model.unet)] == scalings


def test_lora_scale_zero_equals_base_model(tiny_model, model):
    emb = model.encode_prompt(["a cat jumping"])
    z = torch.randn(LATENT, generator=torch.Generator().manual_seed(0))
    base = sample_latents(model.unet, model.scheduler_config, emb, None, z,
                          cfg(guidance_scale=1.0), has_adapter=False)
    m = adapted(tiny_model)
    run = lambda **kw: sample_latents(  # noqa: E731
        m.unet, m.scheduler_config, emb, None, z,
        cfg(**{"guidance_scale": 1.0, "lora_min_timestep": 0, **kw}), has_adapter=True)
    # Scale 0: the adapter adds exactly zero, so the result is bit-identical to the base model.
    assert torch.equal(run(lora_scale=0.0), base)
    # Threshold above every timestep: the adapter never runs (bit-identical too).
    assert torch.equal(run(lora_scale=1.0, lora_min_timestep=1000), base)
    full = run(lora_scale=1.0)
    half = run(lora_scale=0.5)
    assert (full - base).abs().max() > 1e-2
    assert (full - half).abs().max() > 1e-3 and (half - base).abs().max() > 1e-3


def test_has_adapter_without_adapter_is_an_error(model):
    emb = model.encode_prompt(["a"])
    with pytest.raises(ValueError, match="no LoRA adapter"):
        sample_latents(model.unet, model.scheduler_config, emb, None, torch.zeros(LATENT),
                       cfg(guidance_scale=1.0), has_adapter=True)


# --- prompts and inputs --------------------------------------------------------------------

def test_truncation_warning_names_the_row(model, caplog):
    long_prompt = "a very long prompt about a dog " * 20
    with caplog.at_level(logging.WARNING):
        sample_videos(model, ["short", long_prompt, long_prompt], [0, 0, 1], **SIZE,
                      cfg=cfg(num_steps=1, guidance_scale=1.0),
                      row_labels=["row-3", "row-7", "row-7"], progress=False)
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("row-7" in m and "truncated" in m for m in msgs) == 1, msgs  # once per row
    assert not any("row-3" in m for m in msgs)


def test_one_seed_per_prompt(model):
    with pytest.raises(ValueError, match="one seed per prompt"):
        sample_videos(model, ["a", "b"], [0], **SIZE, cfg=cfg(), progress=False)


def test_noise_prior_needs_matching_inversion_latents(model):
    with pytest.raises(ValueError, match="inversion latents"):
        sample_videos(model, ["a"], [0], **SIZE, cfg=cfg(noise_prior=0.3), progress=False)
    with pytest.raises(ValueError, match="do not fit"):
        sample_videos(model, ["a"], [0], **SIZE, cfg=cfg(noise_prior=0.3, num_steps=1),
                      inversion_latents=torch.zeros(1, 4, 4, 8, 8), progress=False)


def test_noise_prior_one_starts_from_inversion_latents(model):
    z_inv = torch.randn(LATENT, generator=torch.Generator().manual_seed(9))
    c = cfg(noise_prior=1.0, num_steps=2)
    a = sample_videos(model, ["a", "a"], [0, 1], **SIZE, cfg=c, inversion_latents=z_inv,
                      progress=False)
    # p = 1: the seed no longer matters (eta = 0).
    assert torch.equal(a[0]["latents"], a[1]["latents"])

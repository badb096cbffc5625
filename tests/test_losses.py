"""Motion feature matching loss, noise prediction loss, the DDIM step helper."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from motionmatcher.customization.diffusion import ddim_step
from motionmatcher.customization.lora import add_lora, lora_config, lora_disabled, set_lora_scale
from helpers import lora_enabled
from motionmatcher.methods.ddpm_lora import noise_prediction_loss
from motionmatcher.methods.motionmatcher import motion_matching_loss
from motionmatcher.methods.registry import LOSSES
from motionmatcher.backbones.models import ZEROSCOPE_SCHEDULER
from motionmatcher.customization.motion_features import motion_features


def _lora_unet(base, dropout=0.0, std=0.05, seed=1):
    unet = copy.deepcopy(base.unet)
    torch.manual_seed(seed)  # peft draws lora_A from the global generator: not from the tests run before
    params = add_lora(unet, lora_config(rank=4, dropout=dropout))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    unet.train()
    return unet, params


def _batch(batch=1, frames=4, size=8, seed=0, t=(600,)):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, frames, size, size, generator=g)
    noise = torch.randn(latents.shape, generator=g)
    emb = torch.randn(batch, 77, 32, generator=g)
    return latents, noise, torch.tensor(list(t)), emb


def _grads(params):
    return [None if p.grad is None else p.grad.detach().clone() for p in params]


# --- DDIM step ------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 5])
def test_ddim_step_matches_diffusers(stride):
    sched = DDIMScheduler(**ZEROSCOPE_SCHEDULER)
    sched.set_timesteps(sched.config.num_train_timesteps // stride)
    g = torch.Generator().manual_seed(0)
    for t in [999, 600, 3, 0]:
        sample = torch.randn(1, 4, 3, 5, 5, generator=g)
        eps = torch.randn(sample.shape, generator=g)
        ref = sched.step(eps, t, sample, eta=0.0).prev_sample
        got = ddim_step(sample, eps, torch.tensor([t]), torch.tensor([t - stride]), sched.alphas_cumprod,
                        sched.final_alpha_cumprod)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # by hand, per-sample timesteps
    ac = sched.alphas_cumprod
    sample = torch.randn(2, 4, 3, 5, 5, generator=g)
    eps = torch.randn(sample.shape, generator=g)
    got = ddim_step(sample, eps, torch.tensor([700, 200]), torch.tensor([700 - stride, 200 - stride]), ac)
    for i, t in enumerate([700, 200]):
        a, ap = ac[t].item(), ac[t - stride].item()
        x0 = (sample[i] - math.sqrt(1 - a) * eps[i]) / math.sqrt(a)
        ref = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps[i]
        torch.testing.assert_close(got[i], ref, rtol=1e-5, atol=1e-5)


# --- noise prediction -----------------------------------------------------------------------


def test_noise_prediction_loss_by_hand(base):
    unet, params = _lora_unet(base)
    unet.eval()
    sched = base.ddim_scheduler()  # the scheduler training uses
    latents, noise, _, emb = _batch(batch=2)
    t = torch.tensor([10, 900])
    out = noise_prediction_loss(unet, sched, latents, noise, t, emb)
    ac = sched.alphas_cumprod[t].view(2, 1, 1, 1, 1)
    noisy = ac.sqrt() * latents + (1 - ac).sqrt() * noise
    with torch.no_grad():
        pred = unet(noisy, t, encoder_hidden_states=emb).sample
    torch.testing.assert_close(out["loss"], ((pred - noise) ** 2).mean(), rtol=1e-5, atol=0)
    out["loss"].backward()
    assert all(p.grad is not None for p in params)
    assert all(p.grad is None for p in unet.parameters() if not p.requires_grad)


# --- motion matching ------------------------------------------------------------------------


def test_motion_matching_loss_by_hand(base):
    """Plumbing: ε̂ with LoRA, diffusers' DDIM step t -> t-k, base-model features at t-k."""
    k = 3
    unet, _ = _lora_unet(base)
    unet.eval()
    sched = base.ddim_scheduler()
    latents, noise, t, emb = _batch(batch=1, size=16, t=(450,))
    out = motion_matching_loss(unet, sched, latents, noise, t, emb, num_denoise_steps=k,
                               ca_weight=3.0, tsa_weight=5.0)
    with torch.no_grad():
        noisy = sched.add_noise(latents, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=emb).sample
        step = DDIMScheduler.from_config(sched.config)
        step.set_timesteps(1000 // k)
        z_hat = step.step(pred, int(t), noisy, eta=0.0).prev_sample
        z_star = step.step(noise, int(t), noisy, eta=0.0).prev_sample
        with lora_disabled(unet):
            ca_h, tsa_h = motion_features(unet, z_hat, t - k, emb)
            ca_s, tsa_s = motion_features(unet, z_star, t - k, emb)
    ca, tsa = F.mse_loss(ca_h, ca_s), F.mse_loss(tsa_h, tsa_s)
    assert ca > 0 and tsa > 0
    torch.testing.assert_close(out["ca"], ca, rtol=1e-4, atol=0)
    torch.testing.assert_close(out["tsa"], tsa, rtol=1e-4, atol=0)
    torch.testing.assert_close(out["loss"], 3.0 * ca + 5.0 * tsa, rtol=1e-4, atol=0)
    for v in out.values():
        assert isinstance(v, torch.Tensor) and v.ndim == 0


def test_gradients_only_on_lora_and_model_left_as_found(base):
    unet, params = _lora_unet(base)
    sched = base.ddim_scheduler()  # the scheduler training uses
    latents, noise, t, emb = _batch()
    procs = dict(unet.attn_processors)
    flags = {n: p.requires_grad for n, p in unet.named_parameters()}
    for mode in (True, False):
        unet.train(mode)
        for p in params:
            p.grad = None
        out = motion_matching_loss(unet, sched, latents, noise, t, emb)
        assert torch.isfinite(out["loss"]) and out["loss"] > 0
        out["loss"].backward()
        # left as found
        assert unet.training is mode and all(m.training is mode for m in unet.modules())
        assert lora_enabled(unet)
        assert {n: p.requires_grad for n, p in unet.named_parameters()} == flags
        now = unet.attn_processors
        assert all(now[k] is procs[k] for k in procs)
    names = {id(p): n for n, p in unet.named_parameters()}
    # the mid block's spatial self-attention sees a single 1x1 token: its q/k cannot matter
    dead = {n for n in names.values() if n.startswith("mid_block.attentions.0.transformer_blocks.0.attn1.to_")
            and (".to_q." in n or ".to_k." in n)}
    norms = {names[id(p)]: p.grad.abs().sum().item() if p.grad is not None else None for p in params}
    assert all(v is not None for v in norms.values()), [n for n, v in norms.items() if v is None]
    live = [v for n, v in norms.items() if n not in dead]
    assert min(live) > 0, min(norms, key=lambda n: norms[n] if n not in dead else float("inf"))
    # mathematically zero; float32 rounding in the softmax backward leaves ~1e-8 of the live scale
    scale = sorted(live)[len(live) // 2]
    for n in dead & norms.keys():
        assert norms[n] <= 1e-5 * scale, (n, norms[n], scale)
    for n, p in unet.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n


def test_no_grad_target_equals_official_full_graph_formulation(base):
    """Our loss (target under no_grad, LoRA disabled for the extractor) has the same gradient
    as the official formulation (full graph for both branches, LoRA scale 0)."""
    unet, params = _lora_unet(base, dropout=0.0)
    sched = base.ddim_scheduler()
    latents, noise, t, emb = _batch()
    out = motion_matching_loss(unet, sched, latents, noise, t, emb)
    out["loss"].backward()
    ours = _grads(params)

    for p in params:
        p.grad = None
    out2 = motion_matching_loss(unet, sched, latents, noise, t, emb, target_no_grad=False)
    out2["loss"].backward()
    assert all(torch.equal(a, b) for a, b in zip(ours, _grads(params)))

    for p in params:
        p.grad = None
    ac = sched.alphas_cumprod
    noisy = sched.add_noise(latents, noise, t)
    pred = unet(noisy, t, encoder_hidden_states=emb).sample
    z_hat = ddim_step(noisy, pred, t, t - 1, ac)
    z_star = ddim_step(noisy, noise, t, t - 1, ac)
    set_lora_scale(unet, 0.0)
    try:
        ca_h, tsa_h = motion_features(unet, z_hat, t - 1, emb, early_stop=False)
        ca_s, tsa_s = motion_features(unet, z_star, t - 1, emb, early_stop=False)
    finally:
        set_lora_scale(unet, 1.0)
    assert ca_s.requires_grad  # the official target branch does record a graph
    ref = 2000 * F.mse_loss(ca_h, ca_s) + 2000 * F.mse_loss(tsa_h, tsa_s)
    ref.backward()
    torch.testing.assert_close(out["loss"], ref.detach(), rtol=1e-5, atol=0)
    for a, b in zip(ours, _grads(params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-12)


def test_batch_of_two_is_the_mean_of_singles(base):
    unet, _ = _lora_unet(base, std=0.3)
    unet.eval()
    sched = base.ddim_scheduler()  # the scheduler training uses
    latents, noise, _, emb = _batch(batch=2)
    t = torch.tensor([300, 800])
    with torch.no_grad():
        both = motion_matching_loss(unet, sched, latents, noise, t, emb)
        singles = [motion_matching_loss(unet, sched, latents[i:i + 1], noise[i:i + 1], t[i:i + 1],
                                        emb[i:i + 1]) for i in range(2)]
        swapped = motion_matching_loss(unet, sched, latents, noise, t.flip(0), emb)
    for key in ("loss", "ca", "tsa"):
        # (the MSEs are small differences of near-equal maps: float noise is ~1e-4 relative)
        torch.testing.assert_close(both[key], (singles[0][key] + singles[1][key]) / 2, rtol=2e-3, atol=0)
    # pairing matters: swapping the timesteps changes the loss by more than the 2e-3 noise above
    assert not torch.allclose(swapped["loss"], both["loss"], rtol=1e-2)


def test_zero_weight_skips_term(base):
    unet, _ = _lora_unet(base, std=0.3)
    unet.eval()
    sched = base.ddim_scheduler()  # the scheduler training uses
    latents, noise, t, emb = _batch()
    with torch.no_grad():
        full = motion_matching_loss(unet, sched, latents, noise, t, emb, ca_weight=1.0, tsa_weight=1.0)
        only_tsa = motion_matching_loss(unet, sched, latents, noise, t, emb, ca_weight=0.0, tsa_weight=7.0)
        only_ca = motion_matching_loss(unet, sched, latents, noise, t, emb, ca_weight=7.0, tsa_weight=0.0)
    assert torch.isnan(only_tsa["ca"]) and torch.isnan(only_ca["tsa"])
    # the skipped layers run SDPA instead of the explicit softmax: float-noise-level changes
    torch.testing.assert_close(only_tsa["loss"], 7.0 * full["tsa"], rtol=2e-3, atol=0)
    torch.testing.assert_close(only_ca["loss"], 7.0 * full["ca"], rtol=2e-3, atol=0)
    with pytest.raises(ValueError):
        motion_matching_loss(unet, sched, latents, noise, t, emb, ca_weight=0.0, tsa_weight=0.0)


def test_registry():
    assert LOSSES["motion_matching"] is motion_matching_loss
    assert LOSSES["noise_prediction"] is noise_prediction_loss


def test_loss_falls_when_training_on_one_video(base):
    unet, params = _lora_unet(base, dropout=0.0, std=0.05, seed=2)
    sched = base.ddim_scheduler()  # the scheduler training uses
    latents, noise, t, emb = _batch(seed=4, t=(600,))
    opt = torch.optim.AdamW(params, lr=1e-3)
    losses = []
    for _ in range(20):
        out = LOSSES["motion_matching"](unet, sched, latents, noise, t, emb)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, losses


def test_frozen_adapter_stays_frozen(base):
    """peft re-marks an adapter trainable when it is switched back on; the loss undoes that."""
    unet, params = _lora_unet(base)
    unet.requires_grad_(False)
    sched = base.ddim_scheduler()  # the scheduler training uses
    with torch.no_grad():
        out = motion_matching_loss(unet, sched, *_batch())
    assert torch.isfinite(out["loss"])
    assert not any(p.requires_grad for p in unet.parameters())
    assert lora_enabled(unet)


# --- base-model dropout (official MotionMatcher UNet: dropout 0) -----------------------------


def _nonzero_temporal_convs(unet, std=0.05, seed=3):
    """A trained model's TemporalConvLayer.conv4 is non-zero; a fresh one's is zero, which hides
    every dropout before it."""
    from diffusers.models.unets.unet_3d_blocks import TemporalConvLayer

    g = torch.Generator().manual_seed(seed)
    layers = [m for m in unet.modules() if isinstance(m, TemporalConvLayer)]
    assert layers
    with torch.no_grad():
        for m in layers:
            for p in m.conv4.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return unet


def test_motion_matching_loss_has_no_base_dropout_in_train_mode(base):
    """Training state, LoRA dropout 0, non-zero temporal conv outputs: two evaluations on
    identical inputs agree exactly (stock diffusers' TemporalConvLayer dropout 0.1 is off)."""
    unet, params = _lora_unet(base, dropout=0.0)
    _nonzero_temporal_convs(unet)
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in unet.modules())
    sched = base.ddim_scheduler()
    latents, noise, t, emb = _batch(size=16, t=(700,))
    runs = []
    for _ in range(2):
        for p in params:
            p.grad = None
        out = motion_matching_loss(unet, sched, latents, noise, t, emb)
        out["loss"].backward()
        runs.append((out["loss"].detach(), _grads(params)))
    assert unet.training
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    # the dropout layers are put back as they were
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in unet.modules())
    # base_dropout=True: the stock dropout draws a new mask every forward
    a = motion_matching_loss(unet, sched, latents, noise, t, emb, base_dropout=True)["loss"]
    b = motion_matching_loss(unet, sched, latents, noise, t, emb, base_dropout=True)["loss"]
    assert not torch.equal(a, b)


def test_lora_dropout_stays_active_in_motion_matching(base):
    unet, _ = _lora_unet(base, dropout=0.5)
    sched = base.ddim_scheduler()
    latents, noise, t, emb = _batch(size=16, t=(700,))
    a = motion_matching_loss(unet, sched, latents, noise, t, emb)["loss"]
    b = motion_matching_loss(unet, sched, latents, noise, t, emb)["loss"]
    assert not torch.equal(a, b)


def test_noise_prediction_loss_base_dropout_option(base):
    unet, _ = _lora_unet(base, dropout=0.0)
    _nonzero_temporal_convs(unet)
    sched = base.ddim_scheduler()  # the scheduler training uses
    latents, noise, t, emb = _batch(size=16, t=(700,))
    off = [noise_prediction_loss(unet, sched, latents, noise, t, emb, base_dropout=False)["loss"]
           for _ in range(2)]
    on = [noise_prediction_loss(unet, sched, latents, noise, t, emb)["loss"] for _ in range(2)]
    assert torch.equal(off[0], off[1])
    assert not torch.equal(on[0], on[1])


def test_no_base_dropout_under_gradient_checkpointing(base):
    """Recomputation in backward runs with the dropout state of the forward (p = 0)."""
    from motionmatcher.customization.checkpointing import (disable_gradient_checkpointing,
                                                           enable_gradient_checkpointing)

    unet, params = _lora_unet(base, dropout=0.0)
    _nonzero_temporal_convs(unet)
    sched = base.ddim_scheduler()
    latents, noise, t, emb = _batch(size=16, t=(700,))
    grads = []
    for ckpt in (False, True):
        (enable_gradient_checkpointing if ckpt else disable_gradient_checkpointing)(unet)
        for p in params:
            p.grad = None
        motion_matching_loss(unet, sched, latents, noise, t, emb)["loss"].backward()
        grads.append(_grads(params))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-12)


def test_fp32_extractor_under_bf16_autocast(base):
    """bf16's 8-bit mantissa is the size of the matched signal: the extractor in fp32 keeps the
    loss close to the fp32 one where all-bf16 does not (figures: benchmarks/precision.py)."""
    unet, _ = _lora_unet(base, dropout=0.0, std=1e-3)
    _nonzero_temporal_convs(unet)
    sched = base.ddim_scheduler()
    latents, noise, t, emb = _batch(frames=4, size=16, t=(750,))
    ref = motion_matching_loss(unet, sched, latents, noise, t, emb)["loss"].item()
    same = motion_matching_loss(unet, sched, latents, noise, t, emb, fp32_extractor=True)["loss"].item()
    assert same == ref  # no autocast: nothing changes
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = motion_matching_loss(unet, sched, latents, noise, t, emb, fp32_extractor=True)["loss"].item()
        low = motion_matching_loss(unet, sched, latents, noise, t, emb)["loss"].item()
    assert abs(mixed - ref) / ref < 2e-2
    assert abs(low - ref) / ref > 10 * abs(mixed - ref) / ref

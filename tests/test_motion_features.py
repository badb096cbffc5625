"""Motion features (CA / TSA attention maps) and the capturing attention processor."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from motionmatcher.customization.attention import AttentionStore, CapturingAttnProcessor, capture_attention
from motionmatcher.customization.diffusion import base_dropout_disabled
from motionmatcher.customization.lora import add_lora, lora_config, lora_disabled
from motionmatcher.customization.motion_features import motion_features, motion_layers, valid_scale_factors
from workflow_helpers import with_perturbed_temporal_convs


@pytest.fixture()
def unet(base):
    return copy.deepcopy(base.unet)


def _inputs(batch=2, frames=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, frames, size, size, generator=g)
    emb = torch.randn(batch, 77, 32, generator=g)
    t = torch.tensor([300, 700][:batch] + [500] * max(0, batch - 2))
    return x, t, emb


def _attn(unet, name):
    return unet.get_submodule(name)


# --- which layers ---------------------------------------------------------------------------


def test_layers_at_scale_4_tiny_and_zeroscope(unet):
    layers = motion_layers(unet, 16, 16, 4, 4)
    assert layers.ca == ["down_blocks.2.attentions.0.transformer_blocks.0.attn2"]
    assert layers.tsa == [
        "down_blocks.2.temp_attentions.0.transformer_blocks.0.attn1",
        "down_blocks.2.temp_attentions.0.transformer_blocks.0.attn2",
    ]
    assert motion_layers(unet, 16, 16, 4, 4, ("attn1",)).tsa == layers.tsa[:1]
    assert (layers.ca_hw, layers.tsa_hw) == ((4, 4), (4, 4))
    # different resolutions for the two features; transformer_in never used
    mixed = motion_layers(unet, 16, 16, 1, 2)
    assert mixed.ca == ["down_blocks.0.attentions.0.transformer_blocks.0.attn2"]
    assert all(n.startswith("down_blocks.1.temp_attentions.0.") for n in mixed.tsa)

    from diffusers import UNet3DConditionModel

    from motionmatcher.backbones.models import ZEROSCOPE_UNET

    with torch.device("meta"):
        zs = UNet3DConditionModel(**ZEROSCOPE_UNET)
    zl = motion_layers(zs, 48, 48, 4, 4)  # 384x384 px
    assert zl.ca == [f"down_blocks.2.attentions.{j}.transformer_blocks.0.attn2" for j in (0, 1)]
    assert zl.tsa == [f"down_blocks.2.temp_attentions.{j}.transformer_blocks.0.attn{a}"
                      for j in (0, 1) for a in (1, 2)]
    assert zl.ca_hw == (12, 12)
    assert valid_scale_factors(zs, 72, 40) == [1, 2, 4]  # 576x320 px


@pytest.mark.parametrize("ssf,tsf,size", [(8, 4, 16), (4, 16, 16), (3, 4, 16), (4, 4, 6), (0, 4, 16)])
def test_invalid_scale_factors_raise(unet, ssf, tsf, size):
    with pytest.raises(ValueError, match="scale_factor"):
        motion_layers(unet, size, size, ssf, tsf)


# --- the capturing processor ----------------------------------------------------------------


@pytest.mark.parametrize("name,enc", [
    ("down_blocks.2.attentions.0.transformer_blocks.0.attn2", True),   # cross-attention
    ("down_blocks.2.temp_attentions.0.transformer_blocks.0.attn1", False),  # temporal self
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1", False),  # spatial self
])
def test_capturing_processor_matches_sdpa(unet, name, enc):
    attn = _attn(unet, name)
    g = torch.Generator().manual_seed(0)
    dim = attn.to_q.in_features
    hidden = torch.randn(6, 10, dim, generator=g)
    ctx = torch.randn(6, 77, attn.to_k.in_features, generator=g) if enc else None
    ref = AttnProcessor2_0()(attn, hidden, ctx)
    store = AttentionStore()
    got = CapturingAttnProcessor(store, "k", name)(attn, hidden, ctx)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # the stored map is the head-mean of softmax(q k^T / sqrt(d)), computed here by hand
    (m,) = store.maps["k"]
    kv = ctx if enc else hidden
    h = attn.heads
    q = attn.to_q(hidden).unflatten(-1, (h, -1))
    k = attn.to_k(kv).unflatten(-1, (h, -1))
    probs = torch.einsum("bqhd,bkhd->bhqk", q, k).mul(q.shape[-1] ** -0.5).softmax(-1)
    torch.testing.assert_close(m, probs.mean(1), rtol=1e-5, atol=1e-6)


def test_capture_leaves_unet_output_and_processors_unchanged(unet):
    x, t, emb = _inputs(batch=1)
    before = dict(unet.attn_processors)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=emb).sample
        layers = motion_layers(unet, 8, 8, 2, 2)
        with capture_attention(unet, {n: "ca" for n in layers.ca} | {n: "tsa" for n in layers.tsa},
                               others="sdpa") as store:
            inside = unet.get_submodule(layers.ca[0]).processor
            assert isinstance(inside, CapturingAttnProcessor)
            got = unet(x, t, encoder_hidden_states=emb).sample
    assert len(store.maps["ca"]) == 1 and len(store.maps["tsa"]) == 2
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_processors_restored_after_error(unet):
    before = dict(unet.attn_processors)
    x, t, emb = _inputs(batch=1)
    with pytest.raises(RuntimeError):  # wrong text embedding width, fails inside the forward
        motion_features(unet, x, t, emb[..., :16])
    after = unet.attn_processors
    assert all(after[k] is before[k] for k in before)


# --- the extractor --------------------------------------------------------------------------


def test_shapes_and_normalisation(unet):
    x, t, emb = _inputs(batch=2, frames=4, size=16)
    with torch.no_grad():
        ca, tsa = motion_features(unet, x, t, emb)  # scale 4 -> 4x4
    assert ca.shape == (2, 4, 4, 4, 77)
    assert tsa.shape == (2, 16, 4, 4)
    assert ca.dtype == tsa.dtype == torch.float32
    torch.testing.assert_close(ca.sum(-1), torch.ones(2, 4, 4, 4), rtol=0, atol=1e-5)
    torch.testing.assert_close(tsa.sum(-1), torch.ones(2, 16, 4), rtol=0, atol=1e-5)
    assert (ca >= 0).all() and (tsa >= 0).all()
    # not trivially uniform
    assert ca.std() > 0 and tsa.std() > 0
    with torch.no_grad():
        ca2, tsa2 = motion_features(unet, x, t, emb, spatial_scale_factor=2, temporal_scale_factor=1,
                                    return_ca=True, return_tsa=True)
        none_ca, only_tsa = motion_features(unet, x, t, emb, return_ca=False)
    assert ca2.shape == (2, 4, 8, 8, 77) and tsa2.shape == (2, 256, 4, 4)
    assert none_ca is None
    torch.testing.assert_close(only_tsa, tsa, rtol=0, atol=1e-6)  # CA layers now run SDPA


def test_maps_match_reference_from_layer_inputs(unet):
    """Recompute each captured map from the attention layer's recorded input and lay it out
    (B, F, h, w, T) / (B, h·w, F, F) by diffusers' documented batch folding."""
    x, t, emb = _inputs(batch=2, frames=4, size=8)
    layers = motion_layers(unet, 8, 8, 4, 4)
    inputs = {}
    hooks = [unet.get_submodule(n).register_forward_pre_hook(
        lambda m, a, k, n=n: inputs.__setitem__(n, (a[0] if a else k["hidden_states"],
                                                    k.get("encoder_hidden_states"))), with_kwargs=True)
        for n in layers.ca + layers.tsa]
    try:
        with torch.no_grad():
            ca, tsa = motion_features(unet, x, t, emb)
    finally:
        for h in hooks:
            h.remove()

    def probs(name):
        attn = unet.get_submodule(name)
        hs, ctx = inputs[name]
        kv = hs if ctx is None else ctx
        q = attn.to_q(hs).unflatten(-1, (attn.heads, -1))
        k = attn.to_k(kv).unflatten(-1, (attn.heads, -1))
        return torch.einsum("bqhd,bkhd->bhqk", q, k).mul(q.shape[-1] ** -0.5).softmax(-1).mean(1)

    with torch.no_grad():
        ref_ca = torch.stack([probs(n) for n in layers.ca]).mean(0)      # (B*F, h*w, 77)
        ref_tsa = torch.stack([probs(n) for n in layers.tsa]).mean(0)    # (B*h*w, F, F)
    b, f, (h, w) = 2, 4, layers.ca_hw
    ref_ca = torch.stack([torch.stack([ref_ca[bi * f + fi].reshape(h, w, -1) for fi in range(f)])
                          for bi in range(b)])
    ref_tsa = torch.stack([torch.stack([ref_tsa[(bi * h + y) * w + xx] for y in range(h) for xx in range(w)])
                           for bi in range(b)])
    torch.testing.assert_close(ca, ref_ca, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tsa, ref_tsa, rtol=1e-5, atol=1e-6)


def test_batch_samples_are_independent(unet):
    x, t, emb = _inputs(batch=2)
    x2 = x.clone()
    x2[1] += torch.randn_like(x2[1])
    with torch.no_grad():
        ca, tsa = motion_features(unet, x, t, emb)
        ca2, tsa2 = motion_features(unet, x2, t, emb)
        ca0, tsa0 = motion_features(unet, x[:1], t[:1], emb[:1])
    torch.testing.assert_close(ca2[0], ca[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(tsa2[0], tsa[0], rtol=0, atol=1e-6)
    assert (ca2[1] - ca[1]).abs().max() > 1e-6 and (tsa2[1] - tsa[1]).abs().max() > 1e-6
    torch.testing.assert_close(ca0[0], ca[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tsa0[0], tsa[0], rtol=1e-5, atol=1e-6)
    # the timestep is per sample
    with torch.no_grad():
        ca_t, _ = motion_features(unet, x, torch.tensor([300, 100]), emb)
    torch.testing.assert_close(ca_t[0], ca[0], rtol=0, atol=1e-6)
    assert (ca_t[1] - ca[1]).abs().max() > 1e-6


def test_early_stop_equals_full_forward_and_skips_the_rest(unet):
    x, t, emb = _inputs(batch=2, size=16)
    calls = []
    hooks = [m.register_forward_hook(lambda *a, n=n: calls.append(n))
             for n, m in [("mid", unet.mid_block), ("up0", unet.up_blocks[0]), ("down3", unet.down_blocks[3]),
                          ("down2", unet.down_blocks[2])]]
    try:
        with torch.no_grad():
            ca, tsa = motion_features(unet, x, t, emb)
            assert calls == ["down2"]
            calls.clear()
            ca_full, tsa_full = motion_features(unet, x, t, emb, early_stop=False)
            assert set(calls) == {"down2", "down3", "mid", "up0"}
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(ca, ca_full) and torch.equal(tsa, tsa_full)


def test_lora_disabled_gives_base_model_maps(base):
    """With the adapter off (and the base model's dropout off, as the MotionMatcher loss runs
    it) a training-mode UNet gives exactly the base model's maps. The temporal convs are
    perturbed: on a fresh UNet their zero ``conv4`` makes them the identity, and a base model
    whose temporal path (dropout included) leaked into the maps would go unnoticed."""
    model = with_perturbed_temporal_convs(base)
    unet = copy.deepcopy(model.unet)
    x, t, emb = _inputs(batch=2)
    with torch.no_grad():
        ca_base, tsa_base = motion_features(model.unet, x, t, emb)  # eval mode: no dropout
        ca_fresh, tsa_fresh = motion_features(base.unet, x, t, emb)
    # the perturbed temporal convs do change the maps (else this test could not see them)
    assert (ca_base - ca_fresh).abs().max() > 1e-4 and (tsa_base - tsa_fresh).abs().max() > 1e-4
    add_lora(unet, lora_config(rank=4, dropout=0.1))
    unet.train()  # LoRA dropout active: must not matter with the adapter off
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), base_dropout_disabled(unet):
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        ca_on, tsa_on = motion_features(unet, x, t, emb)
        with lora_disabled(unet):
            ca_off, tsa_off = motion_features(unet, x, t, emb)
    assert (ca_on - ca_base).abs().max() > 1e-4 and (tsa_on - tsa_base).abs().max() > 1e-4
    torch.testing.assert_close(ca_off, ca_base, rtol=0, atol=1e-6)
    torch.testing.assert_close(tsa_off, tsa_base, rtol=0, atol=1e-6)


def test_maps_are_differentiable(unet):
    x, t, emb = _inputs(batch=1)
    x.requires_grad_(True)
    ca, tsa = motion_features(unet, x, t, emb)
    (ca.square().sum() + tsa.square().sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

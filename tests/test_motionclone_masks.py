"""MotionClone's location-aware semantic guidance (official ``obj_pairs``) on the tiny model:
token index, masks and masked loss against hand computations, the guidance's maps, and the
global form left as it was."""

from __future__ import annotations

import math

import pytest
import torch

from motionmatcher.customization.attention import capture_attention
from motionmatcher.customization.guidance import Reference
from motionmatcher.methods.registry import make_guidance
from motionmatcher.methods.motionclone import (EPS, block_grid, gaussian_at_centroid,
                                               object_masks, object_token_index, resize_masks,
                                               semantic_loss_global, semantic_loss_masked)
from motionmatcher.customization.sampler import SamplingConfig, sample_videos
from workflow_helpers import with_perturbed_temporal_convs

SIZE = dict(n_frames=8, height=64, width=64)  # latents (1, 4, 8, 8, 8): up_blocks.1 grid 2x2
CAPTION = "A bear walking on rocks, the bear is brown"
PROMPTS = ["a fox walking", "a cat"]
WORDS = [{"caption_object": "Bear", "prompt_object": "fox"}, None]


@pytest.fixture(scope="module")
def model(base):
    return with_perturbed_temporal_convs(base)


@pytest.fixture(scope="module")
def reference(model):
    z0 = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return Reference(z0, model.encode_prompt([CAPTION]), model.encode_prompt([""]),
                         caption=CAPTION)


def sample(model, reference, guidance, inputs=None, batch_size=1, rows=2):
    cfg = SamplingConfig(num_steps=5, guidance_scale=7.0, noise_prior=0.0, batch_size=batch_size)
    out = sample_videos(model, PROMPTS[:rows], [0, 1][:rows], cfg=cfg, progress=False,
                        guidance=guidance, reference=reference, guidance_inputs=inputs, **SIZE)
    return torch.cat([o["latents"] for o in out])


# -- token index ------------------------------------------------------------------------------
def test_object_token_index_is_the_words_first_subtoken(model):
    tok = model.tokenizer
    # <|startoftext|> a fox , walking
    assert object_token_index(tok, "a fox, walking", "fox") == 2
    assert object_token_index(tok, "A Fox, walking", "FOX") == 2  # lower-cased, as official
    assert object_token_index(tok, "a fox and another fox", "fox") == 2  # the first occurrence
    # a word of several sub-tokens: its first one ('armad' of 'armad' 'illo</w>')
    ids = tok("the armadillo runs").input_ids
    assert object_token_index(tok, "the armadillo runs", "armadillo") == 2
    assert tok.convert_ids_to_tokens([ids[2]]) == ["armad"]
    with pytest.raises(ValueError, match=r"'cat'.*not in the prompt 'a fox, walking'"):
        object_token_index(tok, "a fox, walking", "cat")
    with pytest.raises(ValueError, match="not in the prompt"):  # only a part of another word
        object_token_index(tok, "foxes walking", "fox")
    long = " ".join(["red"] * 80) + " fox"
    with pytest.raises(ValueError, match="first 77 tokens"):  # cut by the text encoder
        object_token_index(tok, long, "fox")


# -- masks --------------------------------------------------------------------------------------
def test_block_grid():
    assert block_grid(4, (8, 8)) == (2, 2)
    assert block_grid(144, (48, 48)) == (12, 12)  # Zeroscope 384²: up_blocks.1
    assert block_grid(18 * 10, (72, 40)) == (18, 10)  # 576x320
    assert block_grid(4 * 2, (15, 7)) == (4, 2)  # rounding up, as the stride-2 convs
    with pytest.raises(ValueError, match="no level"):
        block_grid(7, (8, 8))


def test_masks_of_a_hand_made_map_match_a_hand_computation():
    # 4x4 grid, 2 frames: frame 0 is 0..15 (row-major), frame 1 is constant
    col = torch.stack([torch.arange(16.0), torch.full((16,), 3.0)])[None]  # (1, F=2, 16)
    sigma = 1.25
    fg, bg = object_masks(col, (4, 4), 0.3, sigma)
    # frame 0: min-max v/15 (+1e-5) > 0.3  <=>  v >= 5
    binary = [1.0 if v / (15 + EPS) > 0.3 else 0.0 for v in range(16)]
    assert binary == [0.0] * 5 + [1.0] * 11
    on = [p for p in range(16) if binary[p]]
    cy = sum(p // 4 for p in on) / len(on)  # 23 / 11
    cx = sum(p % 4 for p in on) / len(on)  # 18 / 11
    assert (cy, cx) == (23 / 11, 18 / 11)
    gauss = [math.exp(-((p // 4 - cy) ** 2) / (2 * sigma ** 2))
             * math.exp(-((p % 4 - cx) ** 2) / (2 * sigma ** 2)) for p in range(16)]
    exp_fg = torch.tensor([g * b for g, b in zip(gauss, binary)])
    exp_bg = torch.tensor([(1 - g) * (1 - b) for g, b in zip(gauss, binary)])
    torch.testing.assert_close(fg[0, 0], exp_fg, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(bg[0, 0], exp_bg, rtol=1e-6, atol=1e-7)
    # frame 1: constant -> min-max 0 everywhere -> empty mask: no foreground, all background
    assert torch.equal(fg[0, 1], torch.zeros(16)) and torch.equal(bg[0, 1], torch.ones(16))
    # the appearance masks: the binary mask and its complement
    afg, abg = object_masks(col, (4, 4), 0.3)
    assert torch.equal(afg[0, 0], torch.tensor(binary)) and torch.equal(abg, 1 - afg)
    # a higher threshold keeps fewer positions: v/15 > 0.7 <=> v >= 11
    afg7, _ = object_masks(col, (4, 4), 0.7)
    assert afg7[0, 0].tolist() == [0.0] * 11 + [1.0] * 5
    # min-max is per frame: a scaled and shifted frame gives the same mask
    torch.testing.assert_close(object_masks(3 * col + 2, (4, 4), 0.3, sigma)[0], fg)
    # a frame 10..25: (v − 10)/(25 − 10 + 1e-5) > 0.3  <=>  v − 10 >= 5, the same positions
    # (dividing by the max alone would keep v − 10 >= 8)
    shifted, _ = object_masks(col[:, :1] + 10, (4, 4), 0.3)
    assert shifted[0, 0].tolist() == binary


def test_gaussian_sits_on_the_centroid():
    m = torch.zeros(1, 5, 7)
    m[0, 1, 2] = m[0, 3, 2] = 1.0  # centroid (2, 2)
    g = gaussian_at_centroid(m, 1.0)
    assert g[0, 2, 2] == 1.0 and g.argmax() == 2 * 7 + 2
    assert torch.isclose(g[0, 2, 4], torch.tensor(math.exp(-4 / 2)))
    assert torch.equal(gaussian_at_centroid(torch.zeros(2, 3, 3), 1.0), torch.zeros(2, 3, 3))


def test_masks_of_the_next_block_are_upsampled_x2_nearest():
    m = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])  # (1, 1, 2x2)
    up = resize_masks(m, (2, 2), (4, 4)).reshape(4, 4)
    assert up.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert resize_masks(m, (2, 2), (2, 2)) is m


def test_guidance_sigma_is_official_5_on_a_16x16_grid(model):
    g = make_guidance({"type": "motionclone", "inversion_steps": None})
    ca = torch.rand(1, 3, 256, 77, generator=torch.Generator().manual_seed(0))
    app = torch.rand(2, 3, 256, 77, generator=torch.Generator().manual_seed(1))
    masks = g.semantic_masks(ca, app, [(4, 5), (6, 7)], (64, 64))  # AnimateDiff 512²: latent 64
    assert masks["grid"] == (16, 16)
    fg, bg = object_masks(torch.stack([ca[0, ..., 4], ca[0, ..., 6]]), (16, 16), 0.3, 5.0)
    assert torch.equal(masks["example_fg"], fg) and torch.equal(masks["example_bg"], bg)
    afg, abg = object_masks(torch.stack([app[0, ..., 5], app[1, ..., 7]]), (16, 16), 0.3)
    assert torch.equal(masks["app_fg"], afg) and torch.equal(masks["app_bg"], abg)


# -- the masked loss ----------------------------------------------------------------------------
def test_masked_semantic_loss_matches_a_hand_computation():
    gen_ = torch.Generator().manual_seed(0)
    P, Fr, D = 4, 2, 3
    app = torch.randn(1, P, Fr, D, generator=gen_)
    gen = torch.randn(1, P, Fr, D, generator=gen_)
    ex_fg = torch.tensor([[[0.5, 0.0, 1.0, 0.2], [0.0, 0.0, 0.0, 0.0]]])
    ex_bg = torch.tensor([[[0.1, 0.9, 0.0, 0.3], [1.0, 1.0, 1.0, 1.0]]])
    app_fg = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])
    app_bg = 1 - app_fg

    def pooled(k, m, f, d):
        return sum(m[0, f, p].item() * k[0, p, f, d].item() for p in range(P)) / \
            (sum(m[0, f, p].item() for p in range(P)) + EPS)

    fg = sum((pooled(app, app_fg, f, d) - pooled(gen, ex_fg, f, d)) ** 2 for f in range(Fr) for d in range(D))
    bg = sum((pooled(app, app_bg, f, d) - pooled(gen, ex_bg, f, d)) ** 2 for f in range(Fr) for d in range(D))
    expected = (fg + bg) / (Fr * D)
    got = semantic_loss_masked(app, gen, ex_fg, ex_bg, app_fg, app_bg)
    assert got.shape == (1,)
    assert math.isclose(got.item(), expected, rel_tol=1e-5)
    # the same keys under the same masks: zero
    assert semantic_loss_masked(app, app, app_fg, app_bg, app_fg, app_bg).item() == 0.0


def test_masked_loss_reduces_to_the_global_one_for_whole_frame_masks():
    """Foreground = the whole frame, no background: the per-frame spatial means, scaled by
    P/(P + 1e-5); equal to the global form (which also averages the appearance keys over
    frames) when those per-frame means agree across frames."""
    g_ = torch.Generator().manual_seed(3)
    P, Fr, D = 6, 4, 5
    app = torch.randn(2, P, Fr, D, generator=g_)
    app = app - app.mean(1, keepdim=True) + torch.randn(2, 1, 1, D, generator=g_)  # same mean per frame
    gen = torch.randn(2, P, Fr, D, generator=g_)
    ones, zeros = torch.ones(2, Fr, P), torch.zeros(2, Fr, P)
    c = (P / (P + EPS)) ** 2
    torch.testing.assert_close(semantic_loss_masked(app, gen, ones, zeros, ones, zeros),
                               c * semantic_loss_global(app, gen), rtol=1e-5, atol=0)
    # per-frame means that differ across frames: not the global form
    app2 = torch.randn(2, P, Fr, D, generator=g_)
    assert not torch.allclose(semantic_loss_masked(app2, gen, ones, zeros, ones, zeros),
                              c * semantic_loss_global(app2, gen), rtol=1e-3)


def test_global_semantic_loss_is_the_former_formula_bit_for_bit():
    app = torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(5))
    gen = torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(6))
    a = app.mean(dim=(1, 2))  # the code before the masks, verbatim
    g = gen.mean(dim=1)
    assert torch.equal(semantic_loss_global(app, gen), ((g - a[:, None]) ** 2).flatten(1).mean(1))


# -- the guidance ------------------------------------------------------------------------------
def test_reference_cross_attention_is_the_head_and_layer_mean_of_up_blocks_1(model, reference):
    g = make_guidance({"type": "motionclone", "inversion_steps": None})
    g.setup(model.unet, model.scheduler_config, 5, reference)
    g.prepare_samples(model.tokenizer, PROMPTS, WORDS)
    assert g.objects[0] == (object_token_index(model.tokenizer, CAPTION, "bear"),
                            object_token_index(model.tokenizer, PROMPTS[0], "fox"))
    assert g.objects[0][0] == 2 and g.objects[1] is None
    assert g.ca_layers == [f"up_blocks.1.attentions.{j}.transformer_blocks.0.attn2" for j in range(2)]
    t = g.timesteps[-1]
    ca = g.reference_cross_attention(model.unet, t)
    with capture_attention(model.unet, {n: "ca" for n in g.ca_layers}) as store, torch.no_grad():
        model.unet(g.reference_latents[t], torch.tensor([t]), encoder_hidden_states=reference.text_embeddings)
    expected = store.mean("ca").reshape(1, 8, 4, 77)  # (F, h'w', 77) of the 8 frames, grid 2x2
    assert ca.shape == (1, 8, 4, 77)
    torch.testing.assert_close(ca, expected, atol=1e-5, rtol=1e-4)


def test_appearance_cross_attention_is_its_conditional_half(model, reference):
    g = make_guidance({"type": "motionclone", "inversion_steps": None})
    g.setup(model.unet, model.scheduler_config, 5, reference)
    z = torch.randn(2, 4, 8, 8, 8, generator=torch.Generator().manual_seed(4))
    g.initial_latents(z)
    cond = torch.cat([model.encode_prompt([p]) for p in PROMPTS]).detach()
    neg = torch.cat([model.encode_prompt([""])] * 2).detach()
    t = g.timesteps[-1]
    _, ca = g._appearance_keys(model.unet, 0, t, {"cond": cond, "neg": neg, "guided": True,
                                                  "guidance_scale": 7.0}, cross=True)
    with capture_attention(model.unet, {n: "ca" for n in g.ca_layers}) as store, torch.no_grad():
        model.unet(z, torch.tensor([t] * 2), encoder_hidden_states=cond)
    torch.testing.assert_close(ca, store.mean("ca").reshape(2, 8, 4, 77), atol=1e-5, rtol=1e-4)


def test_with_words_the_gradient_reaches_the_latent_and_no_weight(model, reference):
    flags = [p.requires_grad for p in model.unet.parameters()]
    z = torch.randn(2, 4, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    cond = torch.cat([model.encode_prompt([p]) for p in PROMPTS]).detach()
    ctx = {"cond": cond, "neg": None, "guided": False, "guidance_scale": 1.0}
    grads, losses = {}, {}
    for words in ("with", "without"):
        g = make_guidance({"type": "motionclone", "inversion_steps": None, "temporal_weights": {"up_blocks.1": 0.0}})
        g.setup(model.unet, model.scheduler_config, 5, reference)
        g.prepare_samples(model.tokenizer, PROMPTS, WORDS if words == "with" else None)
        g.start_batch([0, 1])
        g.initial_latents(z)
        grads[words] = g.score(model.unet, z, 0, g.timesteps[-1], ctx)
        losses[words] = g.last_loss
        assert g.maps_used[-1]["masked_rows"] == ([0] if words == "with" else [])
    grad = grads["with"]
    assert grad.shape == z.shape and grad[0].abs().sum() > 0 and torch.isfinite(grad).all()
    assert all(p.grad is None for p in model.unet.parameters())
    assert [p.requires_grad for p in model.unet.parameters()] == flags
    assert all(not m.training for m in model.unet.modules())
    # the words change the semantic loss of their row (the motion term is off here) ...
    assert not torch.allclose(losses["with"][0], losses["without"][0])
    assert not torch.allclose(grad[0], grads["without"][0])
    # ... and not that of the row without them (float rounding of the materialised maps aside)
    torch.testing.assert_close(losses["with"][1], losses["without"][1], rtol=1e-4, atol=0)
    torch.testing.assert_close(grad[1], grads["without"][1], rtol=1e-3, atol=1e-6)


def test_without_words_sampling_is_the_global_form_bit_for_bit(model, reference):
    plain = sample(model, reference, make_guidance({"type": "motionclone", "inversion_steps": None}))
    g = make_guidance({"type": "motionclone", "inversion_steps": None})
    assert torch.equal(sample(model, reference, g, [None, {"caption_object": "", "prompt_object": None}]),
                       plain)
    assert not any(m["masked_rows"] for m in g.maps_used)
    assert [g.sample_record(i)["semantic_masks"] for i in range(2)] == [False, False]
    # words with the semantic guidance off: nothing to mask, the same result
    off = {"type": "motionclone", "inversion_steps": None, "semantic_weights": {}}
    g = make_guidance(off)
    assert torch.equal(sample(model, reference, g, WORDS[:1], rows=1),
                       sample(model, reference, make_guidance(off), rows=1))
    assert g.sample_record(0)["semantic_masks"] is False


def test_words_change_their_sample_and_are_recorded(model, reference):
    plain = sample(model, reference, make_guidance({"type": "motionclone", "inversion_steps": None}), batch_size=2)
    g = make_guidance({"type": "motionclone", "inversion_steps": None})
    masked = sample(model, reference, g, WORDS, batch_size=2)
    assert not torch.allclose(masked[0], plain[0])
    torch.testing.assert_close(masked[1], plain[1], rtol=1e-3, atol=1e-4)  # the row without words
    assert [m["masked_rows"] for m in g.maps_used] == [[0]] * 3
    assert g.sample_record(0) == {"semantic_masks": True, "object_tokens": list(g.objects[0])}
    assert g.sample_record(1) == {"semantic_masks": False, "object_tokens": None}
    m = g.last_masks
    assert m["grid"] == (2, 2) and m["example_fg"].shape == (1, 8, 4)
    assert torch.equal(m["app_bg"], 1 - m["app_fg"])


def test_bad_words_are_errors_before_sampling(model, reference):
    g = make_guidance({"type": "motionclone", "inversion_steps": None})
    with pytest.raises(ValueError, match=r"'wolf'.*not in the prompt 'A bear walking"):
        sample(model, reference, g, [{"caption_object": "wolf", "prompt_object": "fox"}, None])
    with pytest.raises(ValueError, match="needs both caption_object and prompt_object"):
        sample(model, reference, g, [{"caption_object": "bear"}, None])
    no_caption = Reference(reference.latents, reference.text_embeddings, reference.inversion_embeddings)
    with pytest.raises(ValueError, match="reference caption"):
        sample(model, no_caption, g, WORDS)
    with pytest.raises(ValueError, match="1 guidance inputs for 2 prompts"):
        sample(model, reference, g, WORDS[:1])
    assert g.maps_used == []  # nothing was sampled

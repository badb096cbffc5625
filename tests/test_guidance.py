"""Training-free guidance (DMT, MotionClone) on the shared sampler, on the tiny model."""

from __future__ import annotations


import pytest
import torch

from motionmatcher.customization.attention import capture_attention
from motionmatcher.customization.guidance import Reference, guided_forward, guided_window
from motionmatcher.methods.registry import make_guidance
from motionmatcher.methods.dmt import DMTGuidance, dmt_loss, low_frequency_init
from motionmatcher.methods.motionclone import MotionCloneGuidance, sparse_mask
from motionmatcher.customization.sampler import SamplingConfig, sample_videos
from workflow_helpers import with_perturbed_temporal_convs

SIZE = dict(n_frames=8, height=64, width=64)  # latents (1, 4, 8, 8, 8)


@pytest.fixture(scope="module")
def model(base):
    """The tiny model with its zero-initialised temporal conv outputs perturbed (otherwise every
    ``temp_convs`` is the identity and DMT's temporal-conv feature is its input)."""
    return with_perturbed_temporal_convs(base)


@pytest.fixture(scope="module")
def reference(model):
    z0 = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return Reference(z0, model.encode_prompt(["a bear walking on rocks"]), model.encode_prompt([""]))


def sample(model, reference, guidance=None, rows=1, **kw):
    cfg = SamplingConfig(**{**dict(num_steps=5, guidance_scale=7.0, noise_prior=0.0), **kw})
    out = sample_videos(model, ["a fox walking", "a cat"][:rows], [0, 1][:rows], cfg=cfg,
                        progress=False, guidance=guidance, reference=reference, **SIZE)
    return torch.cat([o["latents"] for o in out])


def test_guided_window_is_dmts_rule():
    assert list(guided_window(50, 1.0, 0.6)) == list(range(20))
    assert list(guided_window(5, 1.0, 0.6)) == [0, 1]
    assert list(guided_window(10, 0.8, 0.0)) == list(range(2, 10))


@pytest.mark.parametrize("spec", [
    {"type": "dmt", "inversion_steps": None, "weight": 0.0, "restart_sampling": False, "downsample_factor": 1,
     "optimization_steps": 2},
    {"type": "motionclone", "inversion_steps": None, "weight": 0.0},
])
def test_zero_weight_reproduces_base_sampling_bit_for_bit(model, reference, spec):
    plain = sample(model, reference, rows=2)
    g = make_guidance(spec)
    guided = sample(model, reference, g, rows=2)
    assert torch.equal(plain, guided)
    # ... and the guidance did run (a zero weight is not a skipped hook)
    if isinstance(g, DMTGuidance):
        assert len(g.losses) == 2 * 2 and all(v == 0.0 for _, _, v in g.losses)
    else:
        assert [m["step"] for m in g.maps_used] == [0, 1, 2]
    # a non-zero weight changes the result
    assert not torch.equal(plain, sample(model, reference, make_guidance({**spec, "weight": 1.0})))


def test_dmt_loss_decreases_over_its_optimisation_steps(model, reference):
    g = make_guidance({"type": "dmt", "inversion_steps": None, "optimization_steps": 6, "lr": [0.05, 0.02]})
    g.setup(model.unet, model.scheduler_config, 5, reference)
    z = g.initial_latents(torch.randn(2, 4, 8, 8, 8, generator=torch.Generator().manual_seed(3)))
    cond = torch.cat([model.encode_prompt(["a fox"]), model.encode_prompt(["a cat"])]).detach()
    for step, t in enumerate(sorted(g.timesteps, reverse=True)):
        z_new = g.before_step(model.unet, z, step, t, {"cond": cond})
        assert (z_new is z) == (step not in g.guided)  # steps outside the window are untouched
    assert [t for t, _, _ in g.losses] == [g.timesteps[-1]] * 6 + [g.timesteps[-2]] * 6
    for t in {t for t, _, _ in g.losses}:
        curve = [v for s, _, v in g.losses if s == t]
        assert curve[-1] < curve[0], curve


def test_dmt_loss_math():
    ref = torch.randn(5, 7)
    assert torch.allclose(dmt_loss(ref[None], ref), torch.tensor([0.2]), atol=1e-6)  # 1 − (F−1)/F
    # invariant to an offset and a scale of the descriptor (differences + cosine)
    assert torch.allclose(dmt_loss(3 * ref[None] + 1.0, ref), torch.tensor([0.2]), atol=1e-5)
    assert dmt_loss(torch.randn(1, 5, 7), ref) > 0.5


def test_dmt_initial_noise_keeps_the_references_low_frequencies():
    noise = torch.randn(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    zT = torch.randn(1, 4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(low_frequency_init(noise, zT, 1), noise)
    out = low_frequency_init(noise, zT, 4)
    assert out.shape == noise.shape and not torch.allclose(out, noise)
    # with z_T = the noise itself nothing changes: low(ε) + ε − low(ε)
    torch.testing.assert_close(low_frequency_init(noise[:1], noise[:1], 4), noise[:1])
    # the rows differ only by their own high frequencies: z_T's part is shared
    zT2 = torch.randn(1, 4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    out2 = low_frequency_init(noise, zT2, 4)
    torch.testing.assert_close(out[0] - out[1], out2[0] - out2[1])
    assert not torch.allclose(out[0], out2[0])


@pytest.mark.parametrize("kind", ["dmt", "motionclone"])
def test_guidance_gradient_is_the_losss_gradient_and_reaches_no_weight(model, reference, kind):
    """The gradient the guidance uses is ∇_z L: its component along a direction v matches the
    central difference (L(z + hv) − L(z − hv)) / 2h of the loss it reports."""
    spec = {"type": kind, "inversion_steps": None}
    if kind == "motionclone":
        spec["semantic_weights"] = {}
    g = make_guidance(spec)
    g.setup(model.unet, model.scheduler_config, 5, reference)
    z = torch.randn(2, 4, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    cond = torch.cat([model.encode_prompt(["a fox"])] * 2).detach()
    t = g.timesteps[-1]
    flags = [p.requires_grad for p in model.unet.parameters()]
    ctx = {"cond": cond, "neg": None, "guided": False, "guidance_scale": 1.0}

    def loss(x):
        if kind == "dmt":
            with torch.no_grad():
                return float(g.loss(model.unet, x, t, cond))
        g.score(model.unet, x, 0, t, ctx)
        return float(g.last_loss.sum())

    if kind == "dmt":
        x = z.clone().requires_grad_(True)
        with guided_forward(model.unet):
            g.loss(model.unet, x, t, cond).backward()
        grad = x.grad
    else:
        g.initial_latents(z)
        grad = g.score(model.unet, z, 0, t, ctx)
    assert grad is not None and grad.shape == z.shape
    v = grad / grad.norm()
    h = 1e-2
    slope = (loss(z + h * v) - loss(z - h * v)) / (2 * h)
    assert slope == pytest.approx(float(grad.norm()), rel=0.05)
    assert all(p.grad is None for p in model.unet.parameters())
    assert [p.requires_grad for p in model.unet.parameters()] == flags  # restored
    assert all(not m.training for m in model.unet.modules())  # nothing left in training mode


def test_motionclone_warm_up_ramp_scales_the_score(model, reference):
    """ρ_k = (k + 1)/K_w on the first K_w guided steps (official warm-up): with K_w = 2 of 5
    steps the score at step 0 is half the unramped one, at step 1 the whole."""
    z = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(5))
    cond = model.encode_prompt(["a fox"]).detach()
    ctx = {"cond": cond, "neg": None, "guided": False, "guidance_scale": 1.0}
    scores = {}
    for frac in (0.0, 0.4):
        g = make_guidance({"type": "motionclone", "inversion_steps": None, "semantic_weights": {},
                           "warm_up_fraction": frac})
        g.setup(model.unet, model.scheduler_config, 5, reference)
        g.initial_latents(z)
        t = sorted(g.timesteps, reverse=True)
        scores[frac] = [g.score(model.unet, z, k, t[k], ctx) for k in (0, 1)]
    assert g.n_warm == 2
    torch.testing.assert_close(scores[0.4][0], 0.5 * scores[0.0][0], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(scores[0.4][1], scores[0.0][1], rtol=1e-5, atol=1e-9)
    assert scores[0.0][0].abs().max() > 0


@pytest.mark.parametrize("k", [1, 3, 8])
def test_sparse_mask_keeps_exactly_k_per_query(k):
    ref = torch.rand(2, 6, 4, 8, 8, generator=torch.Generator().manual_seed(k))
    mask = sparse_mask(ref, k)
    assert (mask.sum(-1) == k).all()
    # the kept entries are the largest ones of their row
    kept_min = ref.masked_fill(~mask, float("inf")).amin(-1)
    dropped_max = ref.masked_fill(mask, float("-inf")).amax(-1)
    assert (kept_min > dropped_max).all()
    with pytest.raises(ValueError, match="rank_k"):
        sparse_mask(ref, 9)


def test_motionclone_maps_come_from_the_configured_layers_and_timestep(model, reference):
    g = make_guidance({"type": "motionclone", "inversion_steps": None, "temporal_weights": {"up_blocks.2": 1.0},
                       "semantic_weights": {}, "reference_timestep": 500})
    sample(model, reference, g, num_steps=5)
    t_ref = min(g.timesteps, key=lambda s: abs(s - 500))
    assert [m["reference_t"] for m in g.maps_used] == [t_ref] * 3
    assert [m["t"] for m in g.maps_used] == sorted(g.timesteps, reverse=True)[:3]
    layers = g.maps_used[0]["layers"]
    assert layers and all(n.startswith("up_blocks.2.temp_attentions.") for n in layers)
    assert {n.rsplit(".", 1)[1] for n in layers} == {"attn1", "attn2"}
    # the reference maps are the per-head temporal attention of the inverted z_t at t_ref
    with capture_attention(model.unet, {n: n for n in layers}, keep_heads=True) as store, \
            torch.no_grad():
        model.unet(g.reference_latents[t_ref], torch.tensor([t_ref]),
                   encoder_hidden_states=reference.text_embeddings)
    for n in layers:
        expected = store.maps[n][0]
        assert torch.allclose(g.reference_maps(model.unet, t_ref)[n].flatten(0, 1), expected, atol=1e-5)


def test_motionclone_official_reference_is_the_current_step(model, reference):
    g = make_guidance({"type": "motionclone", "inversion_steps": None})
    sample(model, reference, g, num_steps=5)
    assert all(m["reference_t"] == m["t"] for m in g.maps_used)
    assert {n.split(".")[0] + "." + n.split(".")[1] for n in g.maps_used[0]["layers"]} == \
        {"up_blocks.1", "up_blocks.2"}


def test_dmt_features_come_from_the_configured_modules_and_timesteps(model, reference):
    feats = ["up_blocks.2.resnets.0.conv2"]
    g = DMTGuidance(features=feats, inversion_steps=None, optimization_steps=1, restart_sampling=False)
    g.setup(model.unet, model.scheduler_config, 5, reference)
    assert g.last_block == "up_blocks.2"
    assert sorted(g.reference_latents) == sorted(g.timesteps)
    t = g.timesteps[-1]
    ran = []
    hook = model.unet.up_blocks[3].register_forward_hook(lambda *a: ran.append(1))
    try:
        desc = g.reference_descriptors(model.unet, t)
    finally:
        hook.remove()
    assert list(desc) == feats and not ran  # the UNet stopped after up_blocks.2
    conv = model.unet.get_submodule(feats[0])
    assert desc[feats[0]].shape == (8, conv.out_channels)
    with pytest.raises(ValueError, match="not modules"):
        DMTGuidance(features=["up_blocks.1.nope"]).setup(model.unet, model.scheduler_config, 5, reference)


def test_restart_sampling_is_seeded_per_row(model, reference):
    spec = {"type": "dmt", "inversion_steps": None, "optimization_steps": 1}
    a = sample(model, reference, make_guidance(spec), num_steps=3)
    b = sample(model, reference, make_guidance(spec), num_steps=3)
    assert torch.equal(a, b)


def test_config_entries_build_their_guidance():
    import yaml

    from motionmatcher.methods import MethodError, method_config
    from workflow_helpers import REPO

    for name in ("config.yaml", "paper.yaml"):
        cfg = yaml.safe_load((REPO / "config" / name).read_text())
        if name == "paper.yaml":
            assert {"dmt", "motionclone"} <= set(cfg["run_methods"])
        for method, cls in (("dmt", DMTGuidance), ("motionclone", MotionCloneGuidance)):
            mc = method_config(cfg, method)
            assert not mc["trains"] and isinstance(make_guidance(mc["guidance"]), cls)
    cfg["methods"]["bad"] = {"guidance": {"type": "dtm"}}
    with pytest.raises(MethodError, match="guidance.type must be one of dmt, motionclone"):
        method_config(cfg, "bad")
    assert method_config(cfg, "base")["guidance"] is None

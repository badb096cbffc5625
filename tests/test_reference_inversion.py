"""The training-free methods' reference inversion as the official code does it (a fine DDIM
inversion with the caption, read at the sampling timesteps), MotionClone's cool-up and the
official per-video settings (config/paper_video_overrides.yaml), on the tiny model."""

from __future__ import annotations

import pytest
import torch
import yaml

from motionmatcher.customization.guidance import Reference
from motionmatcher.methods.registry import make_guidance
from motionmatcher.customization.inversion import ddim_inversion, make_ddim_scheduler
from motionmatcher.methods.dmt import low_frequency_init
from motionmatcher.customization.sampler import SamplingConfig, sample_videos
from workflow_helpers import REPO, with_perturbed_temporal_convs

SIZE = dict(n_frames=8, height=64, width=64)  # latents (1, 4, 8, 8, 8)
FINE, STEPS = 20, 5  # fine inversion t = 1, 51, …, 951 ⊇ sampling t = 1, 201, …, 801 (leading)


@pytest.fixture(scope="module")
def model(base):
    return with_perturbed_temporal_convs(base)


@pytest.fixture(scope="module")
def reference(model):
    z0 = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return Reference(z0, model.encode_prompt(["a bear walking on rocks"]), model.encode_prompt([""]))


@pytest.fixture(scope="module")
def fine(model, reference):
    """The independent fine inversion with the caption: timestep -> z_t (whole trajectory)."""
    out = ddim_inversion(model.unet, model.scheduler_config, reference.latents, reference.text_embeddings,
                         num_steps=FINE, progress=False, return_trajectory=True)
    return {int(t): out["trajectory"][k + 1] for k, t in enumerate(out["timesteps"].tolist())}


def sample(model, reference, guidance, num_steps=STEPS):
    cfg = SamplingConfig(num_steps=num_steps, guidance_scale=7.0, noise_prior=0.0)
    out = sample_videos(model, ["a fox walking"], [0], cfg=cfg, progress=False, guidance=guidance,
                        reference=reference, **SIZE)
    return out[0]["latents"]


@pytest.mark.parametrize("kind", ["dmt", "motionclone"])
def test_guided_steps_read_the_fine_inversion_at_their_timestep(model, reference, fine, kind):
    spec = {"type": kind, "inversion_steps": FINE}
    if kind == "dmt":
        spec.update(optimization_steps=1, restart_sampling=False)
    g = make_guidance(spec)
    used = []  # (t, latents) of every reference-branch forward
    if kind == "dmt":
        inner = g._descriptors

        def spy(unet, z, t, emb):
            if emb is g.reference.text_embeddings:
                used.append((int(t), z.detach().clone()))
            return inner(unet, z, t, emb)
        g._descriptors = spy
    else:
        inner = g._maps

        def spy(unet, z, t, emb, **kw):
            if emb is g.reference.text_embeddings:
                used.append((int(t), z.detach().clone()))
            return inner(unet, z, t, emb, **kw)
        g._maps = spy
    sample(model, reference, g)
    sched = make_ddim_scheduler(model.scheduler_config)
    sched.set_timesteps(STEPS)
    n_guided = 2 if kind == "dmt" else 3  # DMT: first 40 %; MotionClone: first 60 % of 5 steps
    assert [t for t, _ in used] == sched.timesteps.tolist()[:n_guided]
    for t, z in used:
        torch.testing.assert_close(z.float(), fine[t], rtol=0, atol=0)
    # the test can fail: the coarse inversion (at the 5 sampling steps) differs at those timesteps
    coarse = ddim_inversion(model.unet, model.scheduler_config, reference.latents, reference.text_embeddings,
                            num_steps=STEPS, progress=False, keep_timesteps=[t for t, _ in used])["kept"]
    assert all((coarse[t] - fine[t]).abs().max() > 1e-3 for t, _ in used)


def test_inversion_prompt_is_the_caption(model, reference, fine):
    g = make_guidance({"type": "motionclone", "inversion_steps": FINE})
    g.setup(model.unet, model.scheduler_config, STEPS, reference)
    for t in g.timesteps:
        assert torch.equal(g.reference_latents[t], fine[t])
    g = make_guidance({"type": "motionclone", "inversion_steps": FINE, "inversion_prompt": "inversion"})
    g.setup(model.unet, model.scheduler_config, STEPS, reference)
    assert not torch.allclose(g.reference_latents[801], fine[801])


def test_dmt_initial_latent_is_the_official_prepare_latents(model, reference, fine):
    """run.py ``prepare_latents``: eps from the noisiest inversion latent, z_0 re-noised to the
    first sampling timestep (add_noise), then the low-frequency replacement."""
    g = make_guidance({"type": "dmt", "inversion_steps": FINE})
    g.setup(model.unet, model.scheduler_config, STEPS, reference)
    a = make_ddim_scheduler(model.scheduler_config).alphas_cumprod.double()
    z0, z_n = reference.latents.double(), fine[951].double()
    eps = (z_n - a[951].sqrt() * z0) / (1 - a[951]).sqrt()
    expected = a[801].sqrt() * z0 + (1 - a[801]).sqrt() * eps
    noise = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(g.reference_init().double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g.initial_latents(noise), low_frequency_init(noise, expected.float(), 4),
                               rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected.float(), fine[801], atol=1e-3)  # not the inversion's z_801


def test_official_step_counts_on_zeroscopes_schedule(model, reference):
    """999 fine steps visit every sampling timestep of DMT's 50, MotionClone's 200 and 500 steps
    (Zeroscope's leading schedule, steps_offset 1); 1000 would reach t = 1000 (no such timestep)."""
    sched = make_ddim_scheduler(model.scheduler_config)
    sched.set_timesteps(999)
    fine = set(sched.timesteps.tolist())
    assert fine == set(range(1, 1000))
    for n in (50, 200, 500):
        sched.set_timesteps(n)
        assert set(sched.timesteps.tolist()) <= fine, n
    with pytest.raises(ValueError, match="does not visit timesteps"):
        ddim_inversion(model.unet, model.scheduler_config, reference.latents, reference.text_embeddings,
                       num_steps=7, progress=False, keep_timesteps=[801])
    with pytest.raises(ValueError, match="reaches timestep 1000"):
        ddim_inversion(model.unet, model.scheduler_config, reference.latents, reference.text_embeddings,
                       num_steps=1000, progress=False)
    for name in ("config.yaml", "paper.yaml"):
        methods = yaml.safe_load((REPO / "config" / name).read_text())["methods"]
        for m in ("dmt", "motionclone"):
            g = make_guidance(methods[m]["guidance"])
            assert (g.inversion_steps, g.inversion_prompt) == (999, "caption"), (name, m)


def test_motionclone_cool_up_is_strictly_after_guidance_step_minus_cool_up(model, reference):
    """Official ``if step_index > guidance_step - cool_up_step: loss_motion = 0``: with 10 guided
    steps and cool-up 3 the motion term is off at steps 8 and 9 only."""
    g = make_guidance({"type": "motionclone", "inversion_steps": None, "guidance_fraction": 1.0,
                       "warm_up_fraction": 0.0, "cool_up_fraction": 0.3, "semantic_weights": {}})
    g.setup(model.unet, model.scheduler_config, 10, reference)
    assert (g.n_guided, g.n_cool) == (10, 3)
    z = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    g.initial_latents(z)
    cond = model.encode_prompt(["a fox"]).detach()
    ctx = {"cond": cond, "neg": None, "guided": False, "guidance_scale": 1.0}
    zero = [step for step, t in enumerate(sorted(g.timesteps, reverse=True))
            if g.score(model.unet, z, step, t, ctx).abs().max() == 0]
    assert zero == [8, 9]


def test_official_motionclone_per_video_settings():
    """config/paper_video_overrides.yaml carries MotionClone's per-video configs
    (configs/inference_config/<video>.yaml at 33132fb); street's semantic mean is over the 6
    layers of up_blocks.1 only."""
    from motionmatcher.methods.config import _merge, method_config

    cfg = _merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                 yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    cfg["video_overrides"] = str(REPO / "config" / "paper_video_overrides.yaml")

    def built(video):
        m = method_config(cfg, "motionclone", video)
        return m["sample"]["num_steps"], make_guidance(m["guidance"])

    n, walk = built("walk")
    assert round(n * walk.fractions[2]) == 10 and walk.mask_threshold_example == 0.2
    assert walk.semantic_weights == {"up_blocks.1": 400.0, "up_blocks.2": 200.0}
    n, wolf = built("wolf")
    assert round(n * wolf.fractions[2]) == 60
    assert wolf.semantic_weights == {"up_blocks.1": 200.0, "up_blocks.2": 100.0}
    _, street = built("street")
    assert street.semantic_weights == {"up_blocks.1": 500.0}
    for video in ("astronaut", "fox"):
        n, g = built(video)
        assert (n, round(n * g.fractions[0]), round(n * g.fractions[1])) == (500, 300, 10)
    n, default = built("bear")
    assert (n, default.fractions, default.semantic_weights) == (
        200, (0.6, 0.05, 0.0), {"up_blocks.1": 500.0, "up_blocks.2": 0.0})
    assert method_config(cfg, "dmt", "bear")["sample"]["prompt_prefix"] == "Amazing quality, masterpiece, "


def test_street_semantic_mean_has_six_layers(model, reference):
    g = make_guidance({"type": "motionclone", "inversion_steps": None,
                       "semantic_weights": {"up_blocks.1": 500.0, "up_blocks.2": None}})
    g.setup(model.unet, model.scheduler_config, 5, reference)
    assert list(g.sem_layers) == ["up_blocks.1"]

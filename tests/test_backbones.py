"""The backbone interface (motionmatcher.backbones): loading and detection, frame counts, text
encoding, the three schedules' targets and one-step updates, flow inversion, LoRA targets on the
tiny and the real architectures, method refusal, and the Zeroscope path bit-identical."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from motionmatcher.backbones import (BackboneError, backbone_of, get_backbone, latent_frames_of, load_model,
                                     unpack_text, write_tiny)
from motionmatcher.backbones.base import DiTDenoiser
from motionmatcher.backbones.flow import FlowMatchSchedule
from motionmatcher.customization.diffusion import denoise_step, noise_target
from motionmatcher.methods import method_config
from workflow_helpers import REPO


@pytest.fixture(scope="module")
def dits(tmp_path_factory):
    root = tmp_path_factory.mktemp("dits")
    return {name: load_model(write_tiny(name, root / name, seed=0)) for name in ("wan-tiny", "cogvideox-tiny")}


def _perturb_zero_layers(model, seed=0):
    """Fresh DiTs have zero-initialised output projections (adaLN modulation, proj_out in some
    configs): make every weight random enough for the numerical tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.unet.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


# -- loading --------------------------------------------------------------------------------

def test_the_loader_picks_the_backbone_from_the_directory(dits, tmp_path):
    assert type(dits["wan-tiny"].unet.transformer).__name__ == "WanTransformer3DModel"
    assert type(dits["cogvideox-tiny"].unet.transformer).__name__ == "CogVideoXTransformer3DModel"
    assert dits["wan-tiny"].backbone.name == "wan" and dits["cogvideox-tiny"].backbone.name == "cogvideox"
    assert backbone_of(REPO / "models" / "toy_t2v").name == "unet3d"
    # the identity the caches check: name + hash of the configs
    assert dits["wan-tiny"].identity.startswith("wan-tiny-")
    # no model_index.json: transformer/config.json's _class_name decides
    d = tmp_path / "m"
    (d / "transformer").mkdir(parents=True)
    (d / "transformer" / "config.json").write_text(json.dumps({"_class_name": "CogVideoXTransformer3DModel"}))
    assert backbone_of(d).name == "cogvideox"


def test_an_unsupported_denoiser_class_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps(
        {"_class_name": "HunyuanVideoPipeline", "transformer": ["diffusers", "HunyuanVideoTransformer3DModel"]}))
    with pytest.raises(BackboneError, match="HunyuanVideoTransformer3DModel.*not supported.*WanTransformer3DModel"):
        backbone_of(tmp_path)


def test_valid_frame_counts_and_latent_frames(dits):
    wan = get_backbone("wan")
    assert [wan.latent_frames(n) for n in (1, 9, 49, 81)] == [1, 3, 13, 21]
    assert get_backbone("unet3d").latent_frames(8) == 8
    with pytest.raises(BackboneError, match=r"video.n_frames = 48: the cogvideox VAE encodes 4k\+1 .* use 45 or 49"):
        get_backbone("cogvideox").check_frames(48)
    assert latent_frames_of(dits["wan-tiny"].path, 17) == 5
    # the real VAEs: 9 frames -> 3 latent frames
    z = torch.zeros(1, 4, 3, 4, 4)
    for m in dits.values():
        assert m.latent_frames(9) == 3
        assert m.vae.decode(z).sample.shape[2] == 9



def test_wan_vae_without_temporal_compression_still_needs_4k_plus_1_frames(dits):
    """AutoencoderKLWan encodes frame 0, then chunks of 4 frames, whatever its temporal
    compression: with none (the toy DiT's VAE), 8 frames would silently encode only 5."""
    from types import SimpleNamespace

    from diffusers import AutoencoderKLWan

    wan = get_backbone("wan")
    flat = SimpleNamespace(temperal_downsample=[False, False], scale_factor_temporal=1)
    assert wan.temporal_compression(flat) == 1
    assert [wan.latent_frames(n, flat) for n in (1, 5, 9)] == [1, 5, 9]
    with pytest.raises(BackboneError, match=r"video.n_frames = 8: the wan VAE encodes .*use 5 or 9"):
        wan.check_frames(8, vae_config=flat)
    # what the check guards against, on a real VAE of that shape
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1,
                           temperal_downsample=[False]).eval()
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 8, 16, 16)).latent_dist.mode()
    assert z.shape[2] == 5

# -- text -----------------------------------------------------------------------------------

def test_text_encoding_as_each_official_pipeline(dits):
    prompt = "a bear walks"
    for name, masked in (("wan-tiny", True), ("cogvideox-tiny", False)):
        m = dits[name]
        packed = m.encode_prompt([prompt])
        states, mask = unpack_text(packed)
        n = len(prompt.split()) + len(prompt.replace(" ", "")) + 1  # ▁ per word, a token per char, </s>
        assert packed.shape == (1, 32, 33) and int(mask.sum()) == n and mask[0, :n].all()
        ids = m.tokenizer([prompt], padding="max_length", max_length=32, return_tensors="pt")
        assert ids.input_ids[0, n - 1] == 1 and (ids.input_ids[0, n:] == 0).all()  # </s>, then <pad>
        if masked:  # Wan: encoder with the mask, states zeroed past the prompt
            ref = m.text_encoder(ids.input_ids, attention_mask=ids.attention_mask).last_hidden_state
            ref = ref * ids.attention_mask[..., None]
            assert (states[0, n:] == 0).all()
        else:  # CogVideoX: no mask, nothing zeroed
            ref = m.text_encoder(ids.input_ids).last_hidden_state
            assert states[0, n:].abs().sum() > 0
        torch.testing.assert_close(states, ref, rtol=0, atol=0)


# -- schedules ------------------------------------------------------------------------------

def test_flow_matching_schedule_by_hand():
    s = FlowMatchSchedule(1000)
    z0, eps = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    t = torch.tensor([600, 250])
    zt = s.add_noise(z0, eps, t)
    torch.testing.assert_close(zt[0], 0.4 * z0[0] + 0.6 * eps[0])
    torch.testing.assert_close(zt[1], 0.75 * z0[1] + 0.25 * eps[1])
    v = noise_target(s, z0, eps, t)
    torch.testing.assert_close(v, eps - z0)
    # the true velocity's Euler step lands exactly on the path at t' (a straight line)
    torch.testing.assert_close(denoise_step(s, zt, v, t, t - 100), s.add_noise(z0, eps, t - 100))


def test_v_prediction_step_equals_cogvideox_ddim_scheduler(dits):
    sched = dits["cogvideox-tiny"].ddim_scheduler()
    assert type(sched).__name__ == "CogVideoXDDIMScheduler" and sched.config.prediction_type == "v_prediction"
    assert float(sched.alphas_cumprod[999]) == pytest.approx(0.0, abs=1e-6)  # zero terminal SNR
    sched.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    z, v = torch.randn(1, 4, 3, 4, 4, generator=g), torch.randn(1, 4, 3, 4, 4, generator=g)
    for t in (999, 519, 19):
        ref = sched.step(v, t, z).prev_sample
        ours = denoise_step(sched, z, v, torch.tensor([t]), torch.tensor([t - 20]))
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_v_loss_equals_the_diffusers_cogvideox_lora_loss(dits):
    """L = ‖v̂ − v‖² is train_cogvideox_lora.py's mean(‖x̂_0 − z_0‖² / (1 − ᾱ_t))."""
    from motionmatcher.methods.ddpm_lora import noise_prediction_loss

    m = dits["cogvideox-tiny"]
    _perturb_zero_layers(m)
    sched = m.ddim_scheduler()
    g = torch.Generator().manual_seed(1)
    z0, eps = torch.randn(1, 4, 3, 8, 8, generator=g), torch.randn(1, 4, 3, 8, 8, generator=g)
    t = torch.tensor([700])
    text = m.encode_prompt(["a bear"])
    ours = noise_prediction_loss(m.unet, sched, z0, eps, t, text)["loss"]
    # the example, on the transformer's own layout (B, F, C, H, W)
    x = sched.add_noise(z0, eps, t).permute(0, 2, 1, 3, 4)
    out = m.unet.transformer(hidden_states=x, encoder_hidden_states=unpack_text(text)[0], timestep=t,
                             return_dict=False)[0]
    x0_pred = sched.get_velocity(out, x, t)
    weights = 1 / (1 - sched.alphas_cumprod[t])
    ref = torch.mean((weights * (x0_pred - z0.permute(0, 2, 1, 3, 4)) ** 2).reshape(1, -1), dim=1).mean()
    torch.testing.assert_close(ours, ref.float(), rtol=1e-5, atol=0)


class _TimeOnlyVelocity(torch.nn.Module):
    """v(z, t) = c(t): flow inversion and Euler sampling are exact inverses for it."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.config = type("C", (), {"in_channels": 4})()

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=True):
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)[0]
        out = torch.sin(t / 97.0) * torch.ones_like(sample) + torch.cos(t / 31.0) * torch.linspace(
            -1, 1, sample.numel()).reshape(sample.shape)
        return type("O", (), {"sample": out * self.w})()


def test_flow_inversion_then_euler_sampling_reconstructs():
    from motionmatcher.customization.inversion import ddim_inversion
    from motionmatcher.customization.sampler import SamplingConfig, sample_latents

    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
    net = _TimeOnlyVelocity()
    z0 = torch.randn(1, 4, 3, 2, 2)
    text = torch.zeros(1, 5, 9)
    inv = ddim_inversion(net, config, z0, text, 7, progress=False)
    assert inv["timesteps"][0] < inv["timesteps"][-1]  # ascending
    back = sample_latents(net, config, text, None, inv["latents"], SamplingConfig(num_steps=7, guidance_scale=1.0),
                          has_adapter=False)
    torch.testing.assert_close(back, z0, rtol=0, atol=1e-5)


def test_wan_sampling_gates_the_lora_at_sigma_one_half(dits):
    """t ≥ 500 on Wan means σ = t/1000 ≥ 0.5: the timestep the sampler passes is 1000 σ."""
    from motionmatcher.customization.inversion import make_ddim_scheduler
    from motionmatcher.customization.lora import add_lora, lora_config
    from motionmatcher.customization.sampler import SamplingConfig, sample_latents

    m = dits["wan-tiny"]
    unet = DiTDenoiser(m.unet.transformer, m.backbone, 4)
    import copy

    unet = copy.deepcopy(unet)
    add_lora(unet, lora_config(rank=2, dropout=0.0, targets=m.backbone.lora_targets("motionmatcher")))
    seen = []
    text = m.encode_prompt(["a bear"])
    sample_latents(unet, m.scheduler_config, text, None, torch.randn(1, 4, 3, 8, 8),
                   SamplingConfig(num_steps=6, guidance_scale=1.0, lora_min_timestep=500), has_adapter=True,
                   on_step=lambda t, on: seen.append((t, on)))
    sched = make_ddim_scheduler(m.scheduler_config)
    sched.set_timesteps(6)
    sigmas = sched.sigmas[:-1].tolist()
    assert [t for t, _ in seen] == [int(round(1000 * s)) for s in sigmas] or \
        [t for t, _ in seen] == [int(1000 * s) for s in sigmas]
    assert [on for _, on in seen] == [s * 1000 >= 500 for s in sigmas]
    assert any(on for _, on in seen) and not all(on for _, on in seen)
    with pytest.raises(ValueError, match="eta"):
        sample_latents(unet, m.scheduler_config, text, None, torch.randn(1, 4, 3, 8, 8),
                       SamplingConfig(num_steps=2, guidance_scale=1.0, eta=0.5), has_adapter=False,
                       generator=[torch.Generator().manual_seed(0)])


# -- the denoiser -----------------------------------------------------------------------------

def test_the_denoiser_converts_layouts_and_strips_the_mask(dits):
    g = torch.Generator().manual_seed(2)
    for name in dits:
        m = dits[name]
        _perturb_zero_layers(m)
        z = torch.randn(2, 4, 3, 8, 8, generator=g)
        text = m.encode_prompt(["a bear", "a dog runs"])
        t = torch.tensor([300, 800])
        ours = m.unet(z, t, encoder_hidden_states=text).sample
        states = unpack_text(text)[0]
        if name == "wan-tiny":
            ref = m.unet.transformer(z, t, states, return_dict=False)[0]
        else:
            ref = m.unet.transformer(hidden_states=z.permute(0, 2, 1, 3, 4), encoder_hidden_states=states,
                                     timestep=t, return_dict=False)[0].permute(0, 2, 1, 3, 4)
        assert torch.equal(ours, ref)


def test_training_on_a_dit_moves_only_the_lora(dits, tmp_path):
    import copy

    from motionmatcher.customization.training import TrainConfig, train

    for name in dits:
        m = copy.copy(dits[name])
        m.unet = copy.deepcopy(dits[name].unet)
        base = {k: v.clone() for k, v in m.unet.state_dict().items()}
        z = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        cfg = TrainConfig(loss="motion_matching", steps=2, min_timestep=500, checkpoint_every=100, lr=1e-2,
                          lora={"rank": 2, "dropout": 0.0, "targets": "motionmatcher"})
        spec, frame = train(m, z, "a bear walks", cfg, seed=0, checkpoint_dir=tmp_path / name, progress=False)
        assert frame["loss"].notna().all() and (frame["ca"] > 0).all() and (frame["tsa"] > 0).all()
        after = {k.replace(".base_layer.", "."): v for k, v in m.unet.state_dict().items()}
        assert all(torch.equal(after[k], v) for k, v in base.items())  # the base weights as loaded
        lora_b = [v for k, v in after.items() if ".lora_B." in k]
        assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: trained


# -- LoRA targets ---------------------------------------------------------------------------

def _matched(denoiser, regex):
    return [n for n, _ in denoiser.named_modules() if re.fullmatch(regex, n)]


def _real(name):
    from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

    from motionmatcher.backbones.cogvideox import COGVIDEOX_2B
    from motionmatcher.backbones.wan import WAN_1_3B

    with torch.device("meta"):
        if name == "wan":
            return WanTransformer3DModel(**WAN_1_3B)
        return CogVideoXTransformer3DModel(**COGVIDEOX_2B)


@pytest.mark.parametrize("name, params_b, official, motionmatcher", [
    # 30 blocks x (attn1 + attn2) x 4 projections; 30 x (attn1's 4 + ffn's 2)
    ("wan", 1.42, 240, 180),
    # 30 blocks x joint attn1's 4; 30 x (4 + ff's 2)
    ("cogvideox", 1.69, 120, 180),
])
def test_lora_targets_on_the_real_architectures(name, params_b, official, motionmatcher):
    backbone = get_backbone(name)
    transformer = _real(name)
    assert sum(p.numel() for p in transformer.parameters()) / 1e9 == pytest.approx(params_b, abs=0.01)
    den = DiTDenoiser(transformer, backbone, 8)
    off = _matched(den, backbone.lora_targets("official"))
    mm = _matched(den, backbone.lora_targets("motionmatcher"))
    assert len(off) == official and len(mm) == motionmatcher
    assert all(isinstance(den.get_submodule(n), torch.nn.Linear) for n in off + mm)
    if name == "wan":
        assert any(".attn2." in n for n in off) and not any(".attn2." in n for n in mm)
        assert sum(".ffn.net." in n for n in mm) == 60
    else:
        assert sum(".ff.net." in n for n in mm) == 60
    with pytest.raises(BackboneError, match="UNet modules"):
        backbone.lora_targets("temporal_attn_ff")


def test_lora_targets_match_on_the_tiny_models(dits):
    for m in dits.values():
        for targets in ("official", "motionmatcher"):
            regex = m.backbone.lora_targets(targets)
            # per block: Wan official attn1 + attn2 (4 each); CogVideoX attn1's 4; motionmatcher 4 + 2 FF
            assert len(_matched(m.unet, regex)) == m.unet.transformer.config.num_layers * (
                {"official": 8 if m.backbone.name == "wan" else 4, "motionmatcher": 6}[targets])


# -- methods --------------------------------------------------------------------------------

def test_unet_methods_are_refused_on_the_dits_and_the_rest_run():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for backbone in ("wan", "cogvideox"):
        b = get_backbone(backbone)
        for method in ("motiondirector", "vmc", "dmt", "motionclone"):
            mc = method_config(config, method)
            with pytest.raises(BackboneError, match=rf"method {method!r} .*not available on the {backbone} backbone"):
                b.check_method(method, (mc["train"] or {}).get("loss"), (mc["guidance"] or {}).get("type"))
        for method in ("base", "motionmatcher", "motionmatcher_ca", "motionmatcher_tsa", "ddpm_lora"):
            mc = method_config(config, method)
            b.check_method(method, (mc["train"] or {}).get("loss"), (mc["guidance"] or {}).get("type"))
    for method in config["methods"]:
        mc = method_config(config, method)
        get_backbone("unet3d").check_method(method, (mc["train"] or {}).get("loss"),
                                            (mc["guidance"] or {}).get("type"))


# -- Zeroscope bit-identical ----------------------------------------------------------------

def test_zeroscope_path_is_bit_identical(tmp_path):
    """Two MotionMatcher steps, a DDIM inversion and a guided DDIM sample on the tiny UNet, as
    computed by the same steps on main without the backbone interface (commit 9081c6d; before it,
    af5e1b6, with peft's default LoRA init, gave the same equality). A deliberate change of the
    UNet path updates these numbers; a backbone change must not."""
    from motionmatcher.customization.inversion import ddim_inversion
    from motionmatcher.backbones.models import load_t2v_model, write_tiny_model
    from motionmatcher.customization.sampler import SamplingConfig, sample_latents
    from motionmatcher.customization.training import TrainConfig, train

    torch.set_num_threads(1)
    m = load_t2v_model(write_tiny_model(tmp_path / "tiny"))
    z = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    cfg = TrainConfig(loss="motion_matching", steps=2, min_timestep=500, checkpoint_every=100,
                      loss_kwargs={"spatial_scale_factor": 1, "temporal_scale_factor": 1},
                      lora={"rank": 4, "dropout": 0.0, "targets": "motionmatcher"})
    _, frame = train(m, z, "a bear walks", cfg, seed=0, checkpoint_dir=tmp_path / "ck", progress=False)
    text = m.encode_prompt(["a bear walks"])
    inv = ddim_inversion(m.unet, m.scheduler_config, z, text, 3, progress=False)["latents"]
    out = sample_latents(m.unet, m.scheduler_config, text, m.encode_prompt([""]), inv,
                         SamplingConfig(num_steps=3, guidance_scale=7.0), has_adapter=True)
    old = {"losses": [float.fromhex("0x1.6817380000000p-18"), float.fromhex("0x1.ec40b00000000p-17")],
           "inv": float.fromhex("-0x1.16ee15fa20000p+6"), "sample": float.fromhex("-0x1.6b0e1f4694000p+7")}
    assert list(frame["loss"]) == pytest.approx(old["losses"], rel=1e-6)
    assert float(inv.double().sum()) == pytest.approx(old["inv"], rel=1e-6)
    assert float(out.double().sum()) == pytest.approx(old["sample"], rel=1e-6)


def test_the_unet_one_step_update_is_exactly_ddim_step():
    from diffusers import DDIMScheduler

    from motionmatcher.customization.diffusion import alphas_cumprod, ddim_step
    from motionmatcher.backbones.models import ZEROSCOPE_SCHEDULER

    s = DDIMScheduler(**ZEROSCOPE_SCHEDULER)
    z, e = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4)
    t, tp = torch.tensor([700, 501]), torch.tensor([699, 500])
    assert torch.equal(denoise_step(s, z, e, t, tp), ddim_step(z, e, t, tp, alphas_cumprod(s, z.device)))
    assert noise_target(s, z, e, t) is e


def test_gradient_checkpointing_on_a_dit_gives_the_same_training(dits, tmp_path):
    """(The memory levels switch it on when a job is retried after running out of memory.)"""
    import copy

    from motionmatcher.customization.training import TrainConfig, train

    m = dits["wan-tiny"]
    z = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    logs = []
    for gc in (False, True):
        mm = copy.copy(m)
        mm.unet = copy.deepcopy(m.unet)
        cfg = TrainConfig(loss="motion_matching", steps=2, min_timestep=500, checkpoint_every=100, lr=1e-2,
                          gradient_checkpointing=gc, lora={"rank": 2, "dropout": 0.0, "targets": "motionmatcher"})
        patched = []
        _, frame = train(mm, z, "a bear walks", cfg, seed=0, checkpoint_dir=tmp_path / str(gc), progress=False,
                         on_step=lambda step, out: patched.append("forward" in mm.unet.transformer.blocks[0].__dict__))
        assert patched == [gc, gc]  # each block's forward checkpointed while training
        logs.append(frame["loss"].tolist())
        from motionmatcher.customization.checkpointing import is_gradient_checkpointing_enabled

        assert not is_gradient_checkpointing_enabled(mm.unet)  # switched off after training
    assert logs[0] == pytest.approx(logs[1], rel=1e-5)


def test_tiny_dits_are_seeded_and_rewritten_only_when_changed(tmp_path):
    from motionmatcher.backbones.models import model_identity

    a = write_tiny("cogvideox-tiny", tmp_path / "a", seed=0)
    b = write_tiny("cogvideox-tiny", tmp_path / "b", seed=0)
    c = write_tiny("cogvideox-tiny", tmp_path / "c", seed=1)
    wa = (a / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert wa == (b / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert wa != (c / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    mtime = (a / "transformer" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    write_tiny("cogvideox-tiny", a, seed=0)  # present with the same stamp: untouched
    assert (a / "transformer" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == mtime
    assert model_identity(a).startswith("a-")


@pytest.mark.parametrize("name", ["wan-tiny", "cogvideox-tiny"])
def test_motion_matching_loss_on_a_dit_by_hand(dits, name):
    """The loss re-derived from the schedule's formulas and dit_motion_features called directly
    on the bare transformer (native layout, unpacked text, the blocks at the published relative
    depth: 4-block tiny models -> Wan ⌊14·4/30⌋ = 1, CogVideoX ⌊15·4/30⌋ = ⌊17·4/30⌋ = 2)."""
    import torch.nn.functional as F

    from motionmatcher.backbones.dit_features import dit_motion_features
    from motionmatcher.methods.motionmatcher import motion_matching_loss

    m = dits[name]
    _perturb_zero_layers(m)
    sched = m.ddim_scheduler()
    g = torch.Generator().manual_seed(5)
    z0, eps = torch.randn(1, 4, 3, 8, 8, generator=g), torch.randn(1, 4, 3, 8, 8, generator=g)
    t, tp = torch.tensor([640]), torch.tensor([639])
    text = m.encode_prompt(["a bear walks"])
    states, mask = unpack_text(text)
    out = motion_matching_loss(m.unet, sched, z0, eps, t, text, ca_weight=3.0, tsa_weight=5.0)
    with torch.no_grad():
        if name == "wan-tiny":
            zt = 0.36 * z0 + 0.64 * eps
            pred = m.unet.transformer(zt, t, states, return_dict=False)[0]
            z_hat, z_star = zt - 0.001 * pred, zt - 0.001 * (eps - z0)
            arch, native, blocks = "wan", (lambda x: x), [1]
        else:
            a, ap = sched.alphas_cumprod[640].float(), sched.alphas_cumprod[639].float()
            zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
            pred = m.unet.transformer(hidden_states=zt.permute(0, 2, 1, 3, 4), encoder_hidden_states=states,
                                      timestep=t, return_dict=False)[0].permute(0, 2, 1, 3, 4)

            def step(v):
                x0, e = a.sqrt() * zt - (1 - a).sqrt() * v, a.sqrt() * v + (1 - a).sqrt() * zt
                return ap.sqrt() * x0 + (1 - ap).sqrt() * e

            v_true = a.sqrt() * eps - (1 - a).sqrt() * z0
            z_hat, z_star = step(pred), step(v_true)
            arch, native, blocks = "cogvideox", (lambda x: x.permute(0, 2, 1, 3, 4)), [2]
        feats = [dit_motion_features(m.unet.transformer, arch, native(z), tp, states, ca_blocks=blocks,
                                     tsa_blocks=blocks, text_mask=mask) for z in (z_hat, z_star)]
    ca, tsa = F.mse_loss(feats[0][0], feats[1][0]), F.mse_loss(feats[0][1], feats[1][1])
    torch.testing.assert_close(out["ca"], ca, rtol=1e-4, atol=0)
    torch.testing.assert_close(out["tsa"], tsa, rtol=1e-4, atol=0)
    torch.testing.assert_close(out["loss"].detach(), 3.0 * ca + 5.0 * tsa, rtol=1e-4, atol=0)
    # the ablations: one term only, the other not computed
    ca_only = motion_matching_loss(m.unet, sched, z0, eps, t, text, ca_weight=3.0, tsa_weight=0.0)
    assert torch.isnan(ca_only["tsa"]) and torch.allclose(ca_only["loss"].detach(), 3.0 * ca, rtol=1e-4)


def test_config_backbone_sampling_is_each_official_pipelines_default():
    """WanPipeline.__call__: 50 steps, guidance 5.0; CogVideoXPipeline.__call__: 50, 6.0."""
    import inspect

    from diffusers import CogVideoXPipeline, WanPipeline

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for name, pipe in (("wan", WanPipeline), ("cogvideox", CogVideoXPipeline)):
        params = inspect.signature(pipe.__call__).parameters
        official = {"num_steps": params["num_inference_steps"].default,
                    "guidance_scale": params["guidance_scale"].default}
        assert config["backbone_sampling"][name] == official == get_backbone(name).sampling_defaults


def test_cuda_on_a_machine_without_one_is_named_before_any_model_loads(monkeypatch):
    """`device: cuda` (config/paper.yaml) on a CPU machine: before, the first job failed with
    torch's own error at the first tensor moved; now resolve_device names the config key and
    the fix. `auto` still falls back to the CPU, and `cpu` is untouched."""
    import torch

    from motionmatcher.backbones.models import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError) as err:
        resolve_device("cuda")
    assert "config device: cuda" in str(err.value) and "--config device=cpu" in str(err.value)
    with pytest.raises(RuntimeError, match="config device: cuda:1"):
        resolve_device("cuda:1")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda") == torch.device("cuda")

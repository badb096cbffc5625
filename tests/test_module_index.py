"""customization.module_index: the training loop's per-step helpers take their modules from an
index built once, with the same result as walking the tree (on the committed toy model, whose
temporal convolutions and dropout are trained structure, not zero-initialised layers)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from motionmatcher.customization import attention, lora, module_index, training
from motionmatcher.customization.diffusion import base_dropout_disabled
from motionmatcher.customization.training import TrainConfig, train

TOY = Path(__file__).resolve().parents[1] / "models" / "toy_t2v"


@pytest.fixture()
def toy():
    from motionmatcher.backbones import load_model

    return load_model(TOY)


def _latents(seed=0):
    return torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(seed))


def _cfg(loss):
    mm = loss == "motion_matching"
    return TrainConfig(loss=loss, steps=3, lr=5e-3, min_timestep=500 if mm else 0, checkpoint_every=10**6,
                       lora={"rank": 4, "dropout": 0.1, "targets": "motionmatcher"},
                       loss_kwargs=dict(spatial_scale_factor=1, temporal_scale_factor=1) if mm else {})


def _record_captures(monkeypatch) -> list[bool]:
    """Record, for every processor swap of ``capture_attention``, whether it went through the index."""
    calls: list[bool] = []
    orig = attention._set_processors
    monkeypatch.setattr(attention, "_set_processors",
                        lambda mdl, idx, p: (calls.append(idx is not None), orig(mdl, idx, p)))
    return calls


@pytest.mark.parametrize("loss", ["motion_matching", "noise_prediction"])
def test_training_is_bit_identical_with_the_index(loss, tmp_path, monkeypatch):
    runs = []
    for use_index in (True, False):
        from motionmatcher.backbones import load_model

        model = load_model(TOY)
        if not use_index:
            monkeypatch.setattr(training, "fixed_structure", lambda m: contextlib.nullcontext())
        calls = _record_captures(monkeypatch)
        _, log = train(model, _latents(), "a red square moving right", _cfg(loss), seed=3,
                       checkpoint_dir=tmp_path / str(use_index), progress=False)
        weights = {n: p.detach().clone() for n, p in model.unet.named_parameters() if "lora_" in n}
        runs.append((weights, log["loss"].tolist(), calls))
        monkeypatch.undo()
    (w_idx, l_idx, c_idx), (w_walk, l_walk, c_walk) = runs
    assert l_idx == l_walk
    assert w_idx.keys() == w_walk.keys() and len(w_idx) > 0
    for n in w_idx:
        assert torch.equal(w_idx[n], w_walk[n]), n
    if loss == "motion_matching":  # the maps were captured through the index, and only with it
        assert c_idx and all(c_idx) and c_walk and not any(c_walk)


def test_capture_with_the_index_reads_the_same_maps_and_restores_the_processors(toy):
    unet = toy.unet
    before = unet.attn_processors
    layers = {n[: -len(".processor")]: "k" for n in before if "attn2" in n}
    z = _latents(1)
    text = toy.encode_prompt(["a blue circle"])
    t = torch.tensor([600])
    with attention.capture_attention(unet, layers) as walked:
        unet(z, t, text)
    with module_index.fixed_structure(unet) as index:
        assert [n for n, _ in index.attention] == [k[: -len(".processor")] for k in before]
        with attention.capture_attention(unet, layers) as indexed:
            unet(z, t, text)
        assert module_index.index_of(unet) is index
    assert module_index.index_of(unet) is None
    assert len(walked.maps["k"]) == len(layers) > 0
    for a, b in zip(walked.maps["k"], indexed.maps["k"]):
        assert torch.equal(a, b)
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_lists_equal_the_walks_after_lora_injection(toy):
    unet = toy.unet
    lora.add_lora(unet, lora.lora_config(rank=4, dropout=0.1))
    walked = lora.tuner_layers(unet)

    def dropouts():
        return {n: m.p for n, m in unet.named_modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)}

    before = dropouts()
    assert any(p > 0 for n, p in before.items() if ".lora_dropout." not in f".{n}.")  # trained UNet: 0.1
    with module_index.fixed_structure(unet) as index:
        assert lora.tuner_layers(unet) == walked and len(walked) > 0
        assert index.parameters == list(unet.parameters())
        with module_index.fixed_structure(unet) as inner:  # nested: the same index
            assert inner is index
        assert module_index.index_of(unet) is index
        with base_dropout_disabled(unet):  # the base model's dropout off through the index
            inside = dropouts()
    assert inside == {n: (p if ".lora_dropout." in f".{n}." else 0.0) for n, p in before.items()}
    assert dropouts() == before


@pytest.mark.parametrize("kind", ["motionclone", "dmt"])
def test_guided_sampling_is_bit_identical_with_the_index(kind, monkeypatch):
    """The sampler lists the attention layers once per batch when a guidance captures maps at
    every step; the samples are the same as with the walks, and the maps went through the index
    (MotionClone: every capture; DMT reads features by forward hooks, no capture)."""
    from motionmatcher.backbones import load_model
    from motionmatcher.backbones.latents import encode_video
    from motionmatcher.customization import sampler
    from motionmatcher.customization.guidance import Reference
    from motionmatcher.customization.sampler import SamplingConfig, sample_videos
    from motionmatcher.methods.dmt import DMTGuidance
    from motionmatcher.methods.motionclone import MotionCloneGuidance
    from motionmatcher.toy import efficacy

    model = load_model(TOY)
    frames, _, caption, prompt = efficacy.reference_clip(1)
    with torch.no_grad():
        ref = Reference(encode_video(model.vae, frames), model.encode_prompt([caption]),
                        model.encode_prompt([""]), caption=caption)
    cfg = SamplingConfig(num_steps=4, guidance_scale=7.5, noise_prior=0.0)
    runs = []
    for use_index in (True, False):
        if not use_index:
            monkeypatch.setattr(sampler, "fixed_structure", lambda m: contextlib.nullcontext())
        calls = _record_captures(monkeypatch)
        guidance = (MotionCloneGuidance(weight=1.0, semantic_weights={}, inversion_steps=None)
                    if kind == "motionclone" else
                    DMTGuidance(lr=(0.02, 0.01), optimization_steps=1, restart_sampling=False,
                                inversion_steps=None))
        out = sample_videos(model, [prompt], [0], n_frames=frames.shape[0], height=frames.shape[1],
                            width=frames.shape[1], cfg=cfg, progress=False, guidance=guidance, reference=ref)
        runs.append((out[0]["latents"], calls))
        monkeypatch.undo()
    (z_idx, c_idx), (z_walk, c_walk) = runs
    assert torch.equal(z_idx, z_walk)
    assert module_index.index_of(model.unet) is None  # closed after sampling
    if kind == "motionclone":
        assert c_idx and all(c_idx) and c_walk and not any(c_walk)

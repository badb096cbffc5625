"""Baselines and ablations as methods of one training loop (tiny model, CPU).

Every method of config/config.yaml trains through motionmatcher.customization.training.train for a couple of
steps and changes exactly the parameters it declares; the MotionDirector and VMC losses on
hand-made tensors; the one-frame bypass runs no temporal layer; MotionDirector samples with its
temporal adapter only; VMC's full fine-tune saves only the changed tensors and resumes.
"""

from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import lora_module_names
from motionmatcher.customization import lora as lora_lib
from motionmatcher.methods.motiondirector import (
    appearance_debiased_mse,
    motiondirector_loss,
    temporal_layer_names,
    temporal_layers_bypassed,
)
from motionmatcher.methods.registry import LOSSES
from motionmatcher.methods.vmc import frame_residual, motion_distillation_residual_loss
from motionmatcher.methods import MethodError, method_config
from motionmatcher.methods.config import _merge
from motionmatcher.customization.training import TrainConfig, TrainingError, attach_trainable, train
from motionmatcher.customization.trained_weights import load_trained, save_trained, trained_parts

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
TRAINED = [m for m in CONFIG["methods"] if method_config(CONFIG, m)["trains"]]

TEMPORAL = re.compile(r"(^|\.)(temp_attentions\.\d+|transformer_in)\.")
SPATIAL_TRANSFORMER = re.compile(r"(^|\.)attentions\.\d+\.")  # Transformer2DModel (not temp_attentions)
VMC_QKV = re.compile(r".*temp_attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.to_[qkv]\.weight")


def small(method: str, **over) -> TrainConfig:
    """The method's config from config.yaml at test size (rank 4, 2 steps)."""
    d = copy.deepcopy(method_config(CONFIG, method)["train"])
    d.update(steps=2, checkpoint_every=100, lora={**d["lora"], "rank": 4})
    for spec in (d.get("trainable") or {}).values():
        if spec.get("type", "lora") == "lora":
            spec["rank"] = 4
    d.update(over)
    return TrainConfig.from_dict(d)


@pytest.fixture(scope="module")
def base_model(tiny_model_dir):
    from motionmatcher.backbones.models import load_t2v_model

    return load_t2v_model(tiny_model_dir)


@pytest.fixture()
def model(base_model):
    m = copy.copy(base_model)
    m.unet = copy.deepcopy(base_model.unet)
    return m


@pytest.fixture(scope="module")
def latents():
    return torch.randn(1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(0))


def _base_name(name: str) -> str:
    return name.replace(".base_layer.", ".")


# ---- the methods as configuration ------------------------------------------------------------


def test_config_declares_every_method():
    assert {"base", "motionmatcher", "motionmatcher_ca", "motionmatcher_tsa", "ddpm_lora", "motiondirector",
            "vmc"} <= set(CONFIG["methods"])
    assert set(CONFIG["run_methods"]) <= set(CONFIG["methods"])
    ca, tsa = method_config(CONFIG, "motionmatcher_ca"), method_config(CONFIG, "motionmatcher_tsa")
    assert ca["train"]["loss_kwargs"]["tsa_weight"] == 0 and ca["train"]["loss_kwargs"]["ca_weight"] > 0
    assert tsa["train"]["loss_kwargs"]["ca_weight"] == 0 and tsa["train"]["loss_kwargs"]["tsa_weight"] > 0
    assert ca["train"]["min_timestep"] == 500
    assert ca["sample"] == method_config(CONFIG, "motionmatcher")["sample"]
    ddpm = method_config(CONFIG, "ddpm_lora")
    assert ddpm["train"]["loss"] == "noise_prediction" and ddpm["train"]["min_timestep"] == 0
    assert ddpm["train"]["lora"] == method_config(CONFIG, "motionmatcher")["train"]["lora"]
    md = method_config(CONFIG, "motiondirector")
    assert md["sample"]["load_parts"] == ["temporal"] and md["sample"]["noise_prior"] == 0.5
    assert md["train"]["lr"] == 5e-4
    vmc = method_config(CONFIG, "vmc")
    assert vmc["train"]["grad_clip"] == 1.0 and vmc["train"]["lr"] == 1e-4
    assert vmc["sample"]["noise_prior"] == 1.0
    assert not method_config(CONFIG, "base")["trains"]
    for m in CONFIG["methods"]:
        cfg = method_config(CONFIG, m)
        assert set(cfg["resources"]) >= {"mem_mb", "runtime"}
        if cfg["trains"]:
            assert cfg["train"]["loss"] in LOSSES


def test_user_variant_without_code_and_bad_entries():
    cfg = copy.deepcopy(CONFIG)
    cfg["methods"]["mm_k5"] = {"extends": "motionmatcher_tsa",
                               "train": {"loss_kwargs": {"num_denoise_steps": 5}, "steps": 7},
                               "sample": {"noise_prior": 0.1}}
    v = method_config(cfg, "mm_k5")
    assert v["train"]["loss_kwargs"] == {**method_config(cfg, "motionmatcher_tsa")["train"]["loss_kwargs"],
                                         "num_denoise_steps": 5}
    assert v["train"]["steps"] == 7 and v["sample"]["noise_prior"] == 0.1
    cfg["methods"]["loop_a"] = {"extends": "loop_b"}
    cfg["methods"]["loop_b"] = {"extends": "loop_a"}
    with pytest.raises(MethodError, match="cycle"):
        method_config(cfg, "loop_a")
    cfg["methods"]["bad_parts"] = {"extends": "motiondirector", "sample": {"load_parts": ["temporall"]}}
    with pytest.raises(MethodError, match="temporall"):
        method_config(cfg, "bad_parts")
    with pytest.raises(KeyError, match="nope"):  # common.smk turns KeyErrors into WorkflowErrors
        method_config(cfg, "nope")


def test_config_validates_against_the_schema():
    from snakemake.utils import validate

    validate(copy.deepcopy(CONFIG), str(REPO / "config" / "schemas" / "config.schema.yaml"))
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    validate(paper, str(REPO / "config" / "schemas" / "config.schema.yaml"))
    for m in paper["run_methods"]:
        method_config(paper, m)


# ---- every method through the one loop ---------------------------------------------------------


def _expected_trainable(method: str, name: str) -> bool:
    """Which parameters ``method`` must train (by name, after attach_trainable)."""
    if method == "motiondirector":
        if ".spatial." in name:
            return "lora_" in name and bool(SPATIAL_TRANSFORMER.search(name)) and not TEMPORAL.search(name)
        if ".temporal." in name:
            return "lora_" in name and bool(TEMPORAL.search(name))
        return False
    if method == "vmc":
        return bool(VMC_QKV.fullmatch(name)) and not name.startswith("transformer_in")
    return "lora_" in name and ".motion." in name


@pytest.mark.parametrize("method", TRAINED)
def test_method_trains_exactly_its_parameters(method, model, latents, tmp_path):
    before = {n: p.detach().clone() for n, p in model.unet.named_parameters()}
    spec, log = train(model, latents, "a ball rolls", small(method), seed=1, checkpoint_dir=tmp_path,
                      progress=False, label=method)
    assert list(log["step"]) == [1, 2] and log["loss"].map(math.isfinite).all()
    after = dict(model.unet.named_parameters())
    trainable = {n for n, p in after.items() if p.requires_grad}  # flags as the loop left them
    expected = {n for n in after if _expected_trainable(method, n)}
    assert trainable == expected and expected
    changed = set()
    for n, p in after.items():
        old = before.get(n, before.get(_base_name(n)))
        if old is None:  # an injected LoRA weight
            assert n in expected, n
            continue
        if not torch.equal(old, p.detach()):
            changed.add(n)
    assert changed <= expected, f"{method} changed frozen parameters: {sorted(changed - expected)[:3]}"
    if method == "vmc":
        assert changed == expected  # every temporal q/k/v moved, nothing else
        assert not lora_lib.tuner_layers(model.unet)
    else:
        assert any("lora_B" in n for n in after if n in expected and after[n].detach().abs().sum() > 0)


def test_motiondirector_has_both_adapters_active(model):
    named, spec = attach_trainable(model.unet, small("motiondirector"))
    assert set(spec.parts) == {"spatial", "temporal"}
    for layer in lora_lib.tuner_layers(model.unet):
        # peft activates only the last injected adapter on *every* layer unless told otherwise
        assert set(layer.active_adapters) == set(layer.lora_A.keys())
    x = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500])
    with torch.no_grad():
        ref = model.unet(x, t, encoder_hidden_states=emb).sample
        for n, p in named.items():
            if ".spatial." in n and "lora_B" in n:
                p.fill_(0.05)
        out = model.unet(x, t, encoder_hidden_states=emb).sample
    assert not torch.allclose(ref, out)  # the spatial adapter is in the forward


def test_motiondirector_with_gradient_checkpointing_matches(base_model, latents, tmp_path):
    results = []
    for gc in (False, True):
        m = copy.copy(base_model)
        m.unet = copy.deepcopy(base_model.unet)
        cfg = small("motiondirector", gradient_checkpointing=gc,
                    loss_kwargs={**small("motiondirector").loss_kwargs, "spatial_skip_prob": 0.0})
        _, log = train(m, latents, "x", cfg, seed=2, checkpoint_dir=tmp_path / str(gc), progress=False)
        results.append((log, {n: p.detach().clone() for n, p in m.unet.named_parameters() if "lora_" in n}))
    (log_a, wa), (log_b, wb) = results
    assert torch.allclose(torch.tensor(log_a["loss"].values), torch.tensor(log_b["loss"].values), atol=1e-5)
    for n in wa:
        assert torch.allclose(wa[n], wb[n], atol=1e-6), n


def test_part_with_its_own_lr_gets_its_own_param_group(model, latents, tmp_path):
    cfg = small("motiondirector")
    cfg.trainable["temporal"]["lr"] = 1e-3
    named, spec = attach_trainable(model.unet, cfg)
    from motionmatcher.customization.training import _param_groups

    groups = _param_groups(named, spec, cfg.lr)
    assert [g.get("lr") for g in groups] == [cfg.lr, 1e-3]
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_bad_trainable_declarations(model):
    with pytest.raises(TrainingError, match="no module matches"):
        attach_trainable(model.unet, small("vmc", trainable={"x": {"type": "full", "targets": "nothing"}}))
    with pytest.raises(TrainingError, match="module names"):  # peft would confuse it with a module
        attach_trainable(model.unet, small("vmc", trainable={"attn1": {"targets": "temporal_attn_ff"}}))


# ---- the losses on hand-made tensors -----------------------------------------------------------


def test_appearance_debiased_term_known_values():
    pred = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1, 1)
    target = torch.zeros_like(pred)
    # √2·[1, 2, 3] − 1 -> squares (√2−1)², (2√2−1)², (3√2−1)²: mean (31 − 12√2) / 3
    got = appearance_debiased_mse(pred, target, anchor=0, beta=1.0)
    assert got.item() == pytest.approx((31 - 12 * math.sqrt(2)) / 3, rel=1e-6)
    # anchor 2: √2·[1, 2, 3] − 3
    got = appearance_debiased_mse(pred, target, anchor=2, beta=1.0)
    expected = sum((math.sqrt(2) * v - 3) ** 2 for v in (1, 2, 3)) / 3
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # an appearance offset c shared by every frame (pred = target + c) is damped from c to
    # (√(β²+1) − β)·c: by (√2 − 1)² in MSE for β = 1; β = 0 is the plain MSE
    t = torch.randn(1, 4, 5, 3, 3, generator=torch.Generator().manual_seed(0))
    c = torch.randn(1, 4, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    plain = torch.nn.functional.mse_loss(t + c, t).item()
    assert appearance_debiased_mse(t + c, t, 1, beta=0.0).item() == pytest.approx(plain, rel=1e-5)
    damped = (math.sqrt(2) - 1) ** 2 * plain
    assert appearance_debiased_mse(t + c, t, 1, beta=1.0).item() == pytest.approx(damped, rel=1e-5)


def test_vmc_loss_known_values():
    # three pixels, three frames; residuals R = |x[1:] − x[:-1]| along frames:
    #   pixel 0: pred R [1, 0], target R [0, 1]  -> cos 0
    #   pixel 1: pred R [1, 2], target R [2, 4]  -> cos 1
    #   pixel 2: pred R [1, 1] (a decreasing ramp: |−1|), target R [1, 1] -> cos 1 (|.| ignores the sign)
    pred = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 3.0], [2.0, 1.0, 0.0]]).T.reshape(1, 1, 3, 1, 3)
    target = torch.tensor([[0.0, 0.0, 1.0], [5.0, 7.0, 11.0], [0.0, 1.0, 2.0]]).T.reshape(1, 1, 3, 1, 3)
    assert frame_residual(pred).shape == (1, 1, 2, 1, 3)
    assert frame_residual(pred)[0, 0, :, 0, 2].tolist() == [1.0, 1.0]
    assert motion_distillation_residual_loss(pred, target).item() == pytest.approx(1 - 2 / 3, abs=1e-6)
    assert motion_distillation_residual_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    # invariant to a per-pixel offset and scale of the prediction (appearance), not to its motion
    assert motion_distillation_residual_loss(3 * target + 7, target).item() == pytest.approx(0.0, abs=1e-6)


# ---- the one-frame spatial path bypasses every temporal layer -----------------------------------


def _count_calls(unet, names):
    counts = {"temporal": 0, "spatial": 0}

    def counter(kind):
        def hook(*_):
            counts[kind] += 1
        return hook

    handles = []
    for name in names:
        for sub in unet.get_submodule(name).modules():  # the layer and everything inside it
            handles.append(sub.register_forward_hook(counter("temporal")))
    for name, m in unet.named_modules():
        if SPATIAL_TRANSFORMER.search(name + ".") and name.endswith("attn1"):
            handles.append(m.register_forward_hook(counter("spatial")))
    return counts, handles


def test_temporal_bypass_runs_no_temporal_layer(model):
    unet = model.unet
    names = temporal_layer_names(unet)
    assert "transformer_in" in names
    assert any(".temp_convs." in n for n in names) and any(".temp_attentions." in n for n in names)
    layers = [unet.get_submodule(n) for n in names]
    counts, handles = _count_calls(unet, names)
    x = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with temporal_layers_bypassed(unet):
            out = unet(x, torch.tensor([300]), encoder_hidden_states=emb).sample
        assert counts["temporal"] == 0 and counts["spatial"] > 0
        assert out.shape == x.shape and torch.isfinite(out).all()
        stock = unet(x, torch.tensor([300]), encoder_hidden_states=emb).sample
    assert counts["temporal"] > 0  # stock diffusers does run them for one frame ...
    assert not torch.allclose(out, stock)  # ... and they are not the identity there
    assert [unet.get_submodule(n) for n in names] == layers  # put back
    for h in handles:
        h.remove()


def test_motiondirector_spatial_path_has_no_temporal_layer(model, latents):
    unet = model.unet
    attach_trainable(unet, small("motiondirector"))
    counts, handles = _count_calls(unet, temporal_layer_names(unet))
    scheduler = model.ddim_scheduler()
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(3))
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(4))
    per_path = {}
    for skip in (1.0, 0.0):  # temporal path only; then spatial + temporal paths
        counts.update(temporal=0, spatial=0)
        out = motiondirector_loss(unet, scheduler, latents, noise, torch.tensor([400]), text,
                                  spatial_skip_prob=skip, generator=torch.Generator().manual_seed(0))
        per_path[skip] = dict(counts)
        assert out["spatial_skipped"].item() == skip and torch.isfinite(out["loss"])
        out["loss"].backward()
    for h in handles:
        h.remove()
    # the spatial path adds spatial-transformer calls and not a single temporal one
    assert per_path[0.0]["temporal"] == per_path[1.0]["temporal"] > 0
    assert per_path[0.0]["spatial"] == 2 * per_path[1.0]["spatial"]
    # nothing left switched off: every LoRA layer has its adapter active again
    for layer in lora_lib.tuner_layers(unet):
        assert not layer.disable_adapters and set(layer.active_adapters) == set(layer.lora_A.keys())


# ---- saving and loading what a method trained ---------------------------------------------------


def test_motiondirector_inference_loads_only_the_temporal_adapter(model, base_model, latents, tmp_path):
    spec, _ = train(model, latents, "x", small("motiondirector", steps=1), seed=0,
                    checkpoint_dir=tmp_path / "ck", progress=False)
    out = save_trained(model.unet, tmp_path / "adapter", spec)
    assert trained_parts(out) == {"spatial": "lora", "temporal": "lora"}
    trained = {n: p.detach().clone() for n, p in model.unet.named_parameters() if ".temporal." in n}

    fresh = copy.deepcopy(base_model.unet)
    parts = method_config(CONFIG, "motiondirector")["sample"]["load_parts"]
    loaded = load_trained(fresh, out, parts)
    assert loaded == {"lora": ["temporal"], "full": []}
    assert lora_lib.adapter_names(fresh) == ["temporal"]
    names = lora_module_names(fresh)
    assert names and all(TEMPORAL.search(n + ".") for n in names)
    got = dict(fresh.named_parameters())
    assert trained.keys() <= got.keys()
    for n, v in trained.items():
        assert torch.equal(got[n], v), n
    assert not any(p.requires_grad for p in fresh.parameters())

    both = copy.deepcopy(base_model.unet)
    assert load_trained(both, out)["lora"] == ["spatial", "temporal"]
    for layer in lora_lib.tuner_layers(both):
        assert set(layer.active_adapters) == set(layer.lora_A.keys())


def test_vmc_saves_changed_tensors_only_and_loads_onto_the_base(model, base_model, latents, tmp_path):
    from safetensors import safe_open

    spec, _ = train(model, latents, "x", small("vmc"), seed=0, checkpoint_dir=tmp_path / "ck", progress=False)
    out = save_trained(model.unet, tmp_path / "adapter", spec)
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    qkv = {n for n, _ in model.unet.named_parameters() if VMC_QKV.fullmatch(n)}
    assert {k.split("/", 1)[1] for k in keys} == qkv and all(k.startswith("temporal_qkv/") for k in keys)
    fresh = copy.deepcopy(base_model.unet)
    assert load_trained(fresh, out) == {"lora": [], "full": ["temporal_qkv"]}
    got, want = dict(fresh.named_parameters()), dict(model.unet.named_parameters())
    base = dict(base_model.unet.named_parameters())
    for n in got:
        assert torch.equal(got[n], want[n] if n in qkv else base[n]), n
    with pytest.raises(ValueError, match="no part"):
        load_trained(copy.deepcopy(base_model.unet), out, ["temporal"])


def test_full_finetune_resumes_to_the_same_weights(base_model, latents, tmp_path):
    cfg = small("vmc", steps=4, checkpoint_every=2)

    def run(ckdir, on_step=None):
        m = copy.copy(base_model)
        m.unet = copy.deepcopy(base_model.unet)
        train(m, latents, "x", cfg, seed=5, checkpoint_dir=ckdir, progress=False, on_step=on_step)
        return {n: p.detach().clone() for n, p in m.unet.named_parameters() if VMC_QKV.fullmatch(n)}

    class Crash(RuntimeError):
        pass

    def crash(step, out):
        if step == 3:
            raise Crash

    ref = run(tmp_path / "a")
    with pytest.raises(Crash):
        run(tmp_path / "b", crash)
    assert (tmp_path / "b" / "step-000002" / "state.json").is_file()
    got = run(tmp_path / "b")
    for n in ref:
        assert torch.equal(ref[n], got[n]), n


def test_single_lora_methods_keep_the_plain_peft_format(model, base_model, latents, tmp_path):
    spec, _ = train(model, latents, "x", small("ddpm_lora", steps=1), seed=0, checkpoint_dir=tmp_path / "ck",
                    progress=False)
    out = save_trained(model.unet, tmp_path / "adapter", spec)
    assert trained_parts(out) == {"motion": "lora"}
    fresh = copy.deepcopy(base_model.unet)
    lora_lib.load_adapter(fresh, out)  # plain peft loader, as before
    assert load_trained(copy.deepcopy(base_model.unet), out) == {"lora": ["motion"], "full": []}


def test_motiondirector_loss_names_missing_adapters(model, latents, tmp_path):
    with pytest.raises(ValueError, match="no LoRA adapter"):
        train(model, latents, "x", small("motionmatcher", loss="motiondirector", loss_kwargs={}, min_timestep=0),
              seed=0, checkpoint_dir=tmp_path, progress=False)


def _md_setup(model, latents):
    unet = model.unet
    named, _ = attach_trainable(unet, small("motiondirector"))
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():  # non-zero B: the spatial LoRA changes the temporal path's output
        for n, p in named.items():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    unet.train()
    for m in unet.modules():  # base and LoRA dropout off: the two computations must agree exactly
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(3))
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(4))
    spatial = {n: p for n, p in named.items() if ".spatial." in n}
    temporal = {n: p for n, p in named.items() if ".temporal." in n}
    return unet, noise, text, spatial, temporal


def _md_grads(unet, scheduler, latents, noise, text, params):
    for p in params.values():
        p.grad = None
    out = motiondirector_loss(unet, scheduler, latents, noise, torch.tensor([400]), text,
                              spatial_skip_prob=0.0, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    return out, {n: None if p.grad is None else p.grad.clone() for n, p in params.items()}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_motiondirector_spatial_lora_is_stepped_from_the_spatial_loss_only(model, latents, checkpointing):
    """Official loop: backward(L_s) -> spatial step; backward(L_t) -> temporal step. The spatial
    LoRA's gradient is ∇L_s alone, the temporal LoRA's ∇L_t alone."""
    from motionmatcher.customization.checkpointing import enable_gradient_checkpointing

    unet, noise, text, spatial, temporal = _md_setup(model, latents)
    scheduler = model.ddim_scheduler()
    if checkpointing:
        enable_gradient_checkpointing(unet)
    out, grads = _md_grads(unet, scheduler, latents, noise, text, {**spatial, **temporal})

    # L_s alone, by hand: the same frame, temporal layers bypassed, temporal LoRA off
    g = torch.Generator().manual_seed(0)
    torch.rand((), generator=g)
    frame = int(torch.randint(0, latents.shape[2], (1,), generator=g))
    for p in spatial.values():
        p.grad = None
    t = torch.tensor([400])
    noisy = scheduler.add_noise(latents, noise, t)
    with lora_lib.adapters_disabled(unet, ["temporal"]), temporal_layers_bypassed(unet):
        pred = unet(noisy[:, :, frame:frame + 1], t, encoder_hidden_states=text).sample
    l_s = torch.nn.functional.mse_loss(pred, noise[:, :, frame:frame + 1])
    torch.testing.assert_close(l_s.detach(), out["spatial"], rtol=1e-6, atol=0)
    l_s.backward()
    for n, p in spatial.items():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-5, atol=1e-10, msg=n)
    # the temporal path does run through the spatial LoRA (it changes ε̂), yet adds nothing to it
    assert any(grads[n] is not None and grads[n].abs().sum() > 0 for n in temporal)
    assert all(p.requires_grad for p in {**spatial, **temporal}.values())


def test_vmc_samples_once_per_prompt():
    """Noise prior 1, η = 0: every seed would start from the same inverted latents and draw the
    same video; VMC samples once per prompt (as its official inference), more seeds are refused."""
    from motionmatcher.customization.sampler import initial_latents

    z_inv = torch.randn(1, 4, 2, 4, 4)
    a, b = (initial_latents(z_inv.shape, torch.Generator().manual_seed(s), z_inv, 1.0) for s in (0, 1))
    assert torch.equal(a, b)
    for path in ("config.yaml", "paper.yaml"):
        cfg = yaml.safe_load((REPO / "config" / path).read_text())
        assert len(method_config(cfg, "vmc")["sample"]["seeds"]) == 1
        bad = copy.deepcopy(cfg)
        bad["methods"]["vmc"]["sample"]["seeds"] = [0, 1, 2]
        with pytest.raises(MethodError, match="vmc.*same video"):
            method_config(bad, "vmc")
        bad["methods"]["vmc"]["sample"]["eta"] = 0.5
        assert method_config(bad, "vmc")["sample"]["seeds"] == [0, 1, 2]


# ---- per-video overrides ------------------------------------------------------------------------


def _with_overrides(tmp_path, text: str) -> dict:
    cfg = copy.deepcopy(CONFIG)
    f = tmp_path / "over.yaml"
    f.write_text(text)
    cfg["video_overrides"] = str(f)
    return cfg


def test_video_overrides_apply_per_video_and_along_extends(tmp_path):
    cfg = _with_overrides(tmp_path, """
car_roundabout:
  motionmatcher:
    train: {steps: 7, loss_kwargs: {ca_weight: 8000.0, tsa_weight: 800.0}}
    sample: {noise_prior: 0.2}
""")
    mm = method_config(cfg, "motionmatcher", "car_roundabout")
    assert mm["train"]["steps"] == 7 and mm["sample"]["noise_prior"] == 0.2
    assert mm["train"]["loss_kwargs"]["ca_weight"] == 8000.0 and mm["train"]["loss_kwargs"]["tsa_weight"] == 800.0
    assert mm["train"]["min_timestep"] == 500  # untouched keys kept
    ca = method_config(cfg, "motionmatcher_ca", "car_roundabout")  # the ablation keeps its own 0
    assert ca["train"]["loss_kwargs"]["ca_weight"] == 8000.0 and ca["train"]["loss_kwargs"]["tsa_weight"] == 0.0
    assert method_config(cfg, "motionmatcher", "bear") == method_config(CONFIG, "motionmatcher")
    assert method_config(cfg, "ddpm_lora", "car_roundabout") == method_config(CONFIG, "ddpm_lora")


@pytest.mark.parametrize("text, message", [
    ("bear:\n  nosuch: {train: {steps: 2}}\n", r"over\.yaml: video 'bear': method 'nosuch' is not defined"),
    ("bear:\n  motionmatcher: {train: {stepz: 2}}\n", r"over\.yaml: video 'bear': method 'motionmatcher': unknown train key 'stepz'"),
    ("bear:\n  motionmatcher: {sample: {noise_priors: 0.2}}\n", r"video 'bear': method 'motionmatcher': unknown sample key 'noise_priors'"),
    ("bear:\n  motionmatcher: {resources: {mem_mb: 2}}\n", r"video 'bear': method 'motionmatcher': unknown key 'resources'"),
    ("bear:\n  base: {train: {steps: 2}}\n", r"video 'bear': method 'base' trains nothing"),
    ("bear: [1, 2]\n", r"video 'bear': must map method names"),
    ("bear: {motionmatcher: {train: [", r"over\.yaml: not valid YAML"),
])
def test_video_overrides_errors_name_file_video_and_key(tmp_path, text, message):
    cfg = _with_overrides(tmp_path, text)
    with pytest.raises(MethodError, match=message):
        method_config(cfg, "motionmatcher", "bear")


def test_video_overrides_missing_file(tmp_path):
    cfg = copy.deepcopy(CONFIG)
    cfg["video_overrides"] = str(tmp_path / "absent.yaml")
    with pytest.raises(MethodError, match=r"absent\.yaml: no such file"):
        method_config(cfg, "motionmatcher", "bear")


def test_paper_ships_the_official_per_video_settings(monkeypatch):
    """config/paper_video_overrides.yaml: bear 200 steps + noise prior 0.2, car_roundabout CA 8000
    / TSA 800 (the official configs at 08d83e5); every other official video uses the defaults."""
    monkeypatch.chdir(REPO)
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert paper["video_overrides"] == "config/paper_video_overrides.yaml"
    bear = method_config(paper, "motionmatcher", "bear")
    assert bear["train"]["steps"] == 200 and bear["sample"]["noise_prior"] == 0.2
    car = method_config(paper, "motionmatcher", "car_roundabout")["train"]["loss_kwargs"]
    assert (car["ca_weight"], car["tsa_weight"]) == (8000.0, 800.0)
    for video in ("bus", "car_turn", "cat", "dog", "eiffel", "gold_fish"):
        mm = method_config(paper, "motionmatcher", video)
        assert mm["train"]["steps"] == 400 and mm["sample"]["noise_prior"] == 0.3
        assert (mm["train"]["loss_kwargs"]["ca_weight"], mm["train"]["loss_kwargs"]["tsa_weight"]) == (2000.0, 2000.0)
        assert mm["train"]["min_timestep"] == 500 and mm["train"]["lr"] == 5e-4


# ---- layout: one module per method ---------------------------------------------------------------


def test_every_method_hook_lives_in_the_module_named_after_its_method():
    """Each configured method's loss / guidance is defined in motionmatcher/methods/<module>.py,
    the module named after the method (an ablation or variant: after the method it extends)."""
    from motionmatcher.methods import GUIDANCES

    expected = {"motionmatcher": "motionmatcher", "motionmatcher_ca": "motionmatcher",
                "motionmatcher_tsa": "motionmatcher", "ddpm_lora": "ddpm_lora", "ddpm_lora_t500": "ddpm_lora",
                "motiondirector": "motiondirector", "vmc": "vmc", "dmt": "dmt", "motionclone": "motionclone"}
    for name, module in expected.items():
        cfg = method_config(CONFIG, name)
        hook = LOSSES[cfg["train"]["loss"]] if cfg["trains"] else GUIDANCES[cfg["guidance"]["type"]]
        assert hook.__module__ == f"motionmatcher.methods.{module}", (name, hook.__module__)
    assert not method_config(CONFIG, "base")["trains"] and method_config(CONFIG, "base")["guidance"] is None


def test_methods_package_imports_without_torch():
    """rules/common.smk imports motionmatcher.methods when the Snakefile is parsed: the method
    configuration must not pull in torch and every method (the registries load on first use)."""
    import os
    import subprocess
    import sys

    code = ("import sys; import motionmatcher.methods as m; m.method_entry; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


def test_sample_job_resources_per_method(tmp_path):
    """The guided (training-free) methods sample for many times longer than plain sampling: a
    method's `sample_resources` (over the top-level `sample_resources`, over the defaults) are
    what its `sample` jobs request."""
    import re

    from motionmatcher.methods.config import DEFAULT_SAMPLE_RESOURCES

    cfg = copy.deepcopy(CONFIG)
    assert method_config(cfg, "base")["sample_resources"] == DEFAULT_SAMPLE_RESOURCES
    cfg["sample_resources"] = {"runtime": 200}
    cfg["methods"]["dmt"]["sample_resources"] = {"mem_mb": 5000}
    assert method_config(cfg, "dmt")["sample_resources"] == {"mem_mb": 5000, "runtime": 200}
    assert method_config(cfg, "base")["sample_resources"] == {**DEFAULT_SAMPLE_RESOURCES, "runtime": 200}
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    paper = _merge(CONFIG, paper)
    base_rt = method_config(paper, "base")["sample_resources"]["runtime"]
    for m in ("dmt", "motionclone"):
        assert method_config(paper, m)["sample_resources"]["runtime"] > base_rt, m

    # the rule requests them (dry run on the tiny model)
    from motionmatcher.files.video import write_mp4
    from motionmatcher.toy.ball_clips import render_clip

    write_mp4(render_clip("left_to_right", n_frames=20, size=(64, 48)), tmp_path / "a.mp4", fps=8)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video_id,video_path,caption,prompt\na,{tmp_path / 'a.mp4'},A ball.,A dog.\n")
    extra = tmp_path / "extra.yaml"
    extra.write_text("sample_resources: {runtime: 77}\nmethods:\n  dmt:\n    sample_resources: {runtime: 333, mem_mb: 4321}\n")
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "1",
         "--directory", str(tmp_path), "--configfile", str(REPO / "config" / "config.yaml"), str(extra),
         "--config", f"manifest={manifest}", "model=tiny", "run_methods=[base,dmt]", "--until", "sample"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    jobs = {}
    for block in res.stdout.split("\nrule sample:")[1:]:
        method = re.search(r"method=(\w+)", block).group(1)
        jobs[method] = re.search(r"resources: (.*)", block).group(1)
    assert re.search(r"\bmem_mb=4321\b", jobs["dmt"]) and re.search(r"\bruntime=333\b", jobs["dmt"]), jobs
    assert re.search(r"\bruntime=77\b", jobs["base"]), jobs

"""LoRA injection on the UNet3D (motionmatcher.customization.lora): targets, zero init, save/load, switching."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

from motionmatcher.customization.lora import (
    add_lora,
    load_adapter,
    lora_config,
    lora_disabled,
    save_adapter,
    set_lora_enabled,
    set_lora_scale,
)
from helpers import lora_enabled, lora_module_names


@pytest.fixture()
def unet(base):
    return copy.deepcopy(base.unet)


def _inputs(seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 4, 8, 8, generator=g)
    emb = torch.randn(batch, 77, 32, generator=g)
    return x, torch.full((batch,), 500), emb


def _out(unet, x, t, emb):
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=emb).sample


def _perturb(unet, seed=1, std=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def _expected_targets(unet) -> set[str]:
    """Every nn.Linear inside every spatial/temporal transformer (transformer_in included)."""
    out = set()
    for name, mod in unet.named_modules():
        if isinstance(mod, (Transformer2DModel, TransformerTemporalModel)):
            for sub, m in mod.named_modules():
                if isinstance(m, torch.nn.Linear):
                    out.add(f"{name}.{sub}")
    return out


def test_lora_targets_every_transformer_linear_and_nothing_else(unet):
    expected = _expected_targets(unet)
    assert any(n.startswith("transformer_in.") for n in expected)
    params = add_lora(unet, lora_config(rank=4, dropout=0.0, targets="all_transformer_linears"))
    got = set(lora_module_names(unet))
    assert got == expected
    for bad in ("resnets", "temp_convs", "time_embedding", "conv_in", "conv_out", "downsamplers",
                "upsamplers"):
        assert not any(bad in n for n in got), bad
    # only the adapter's own weights are trainable, two (A, B) per adapted layer
    trainable = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert len(params) == len(trainable) == 2 * len(expected)
    assert all(".motion." in n and ("lora_A" in n or "lora_B" in n) for n in trainable)


def _official_motionmatcher_targets(unet) -> set[str]:
    """The official code's rule (``utils/lora.py``, ``_find_modules_v2``), restated: per
    ancestor class, every ``nn.Linear`` below it whose relative name contains ``attn1`` or
    ``ff`` (``Transformer2DModel``) or ``attn1``, ``attn2`` or ``ff``
    (``TransformerTemporalModel``)."""
    keys = {Transformer2DModel: ("attn1", "ff"), TransformerTemporalModel: ("attn1", "attn2", "ff")}
    out = set()
    for name, mod in unet.named_modules():
        for cls, words in keys.items():
            if isinstance(mod, cls):
                out |= {f"{name}.{sub}" for sub, m in mod.named_modules()
                        if isinstance(m, torch.nn.Linear) and any(w in sub for w in words)}
    return out


def test_default_targets_are_the_official_motionmatcher_set_on_zeroscope():
    from diffusers import UNet3DConditionModel

    from motionmatcher.backbones.models import ZEROSCOPE_UNET
    from motionmatcher.customization.training import TrainConfig

    with torch.device("meta"):  # the architecture only: no memory, no init time
        unet = UNet3DConditionModel(**ZEROSCOPE_UNET)
    expected = _official_motionmatcher_targets(unet)
    assert any(".attentions." in n and ".attn2." in n for n, _ in unet.named_modules())
    assert not any(".attentions." in n and ".attn2." in n for n in expected)
    assert not any("proj_in" in n or "proj_out" in n for n in expected)
    assert any(n.startswith("transformer_in.") and ".attn2." in n for n in expected)
    assert TrainConfig().lora["targets"] == "motionmatcher"
    add_lora(unet, lora_config(rank=4, **{k: v for k, v in TrainConfig().lora.items() if k != "rank"}))
    assert set(lora_module_names(unet)) == expected


def test_lora_zero_init_leaves_output_unchanged(unet):
    x, t, emb = _inputs()
    unet.eval()
    before = _out(unet, x, t, emb)
    add_lora(unet, lora_config(rank=4, dropout=0.1))
    for n, p in unet.named_parameters():
        if "lora_B" in n:
            assert torch.count_nonzero(p) == 0, n
    after = _out(unet, x, t, emb)
    assert torch.equal(before, after)


def test_switching_and_scale(unet):
    x, t, emb = _inputs()
    unet.eval()
    base_out = _out(unet, x, t, emb)
    add_lora(unet, lora_config(rank=4, dropout=0.0))
    _perturb(unet)
    on = _out(unet, x, t, emb)
    assert (on - base_out).abs().max() > 1e-4
    with lora_disabled(unet):
        assert not lora_enabled(unet)
        torch.testing.assert_close(_out(unet, x, t, emb), base_out, rtol=0, atol=1e-6)
    assert lora_enabled(unet)
    torch.testing.assert_close(_out(unet, x, t, emb), on, rtol=0, atol=0)
    set_lora_scale(unet, 0.0)
    torch.testing.assert_close(_out(unet, x, t, emb), base_out, rtol=0, atol=1e-6)
    set_lora_scale(unet, 1.0)
    torch.testing.assert_close(_out(unet, x, t, emb), on, rtol=0, atol=0)
    set_lora_enabled(unet, False)
    torch.testing.assert_close(_out(unet, x, t, emb), base_out, rtol=0, atol=1e-6)


def test_save_load_round_trip_with_plain_peft(unet, base, tmp_path):
    x, t, emb = _inputs(seed=3)
    cfg = lora_config(rank=4, dropout=0.1)
    add_lora(unet, cfg)
    _perturb(unet, seed=5)
    unet.eval()
    trained = _out(unet, x, t, emb)
    out_dir = save_adapter(unet, tmp_path / "adapter", cfg)
    assert (out_dir / "adapter_config.json").is_file()
    assert (out_dir / "adapter_model.safetensors").is_file()

    fresh = copy.deepcopy(base.unet).eval()
    base_out = _out(fresh, x, t, emb)
    assert (trained - base_out).abs().max() > 1e-4  # the adapter does something
    load_adapter(fresh, out_dir)
    assert set(lora_module_names(fresh)) == set(lora_module_names(unet))
    assert not any(p.requires_grad for p in fresh.parameters())
    torch.testing.assert_close(_out(fresh, x, t, emb), trained, rtol=0, atol=1e-6)

    # and with nothing but peft's own API
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    plain = copy.deepcopy(base.unet).eval()
    plain_cfg = LoraConfig.from_pretrained(str(out_dir))
    inject_adapter_in_model(plain_cfg, plain, adapter_name="motion")
    set_peft_model_state_dict(plain, load_file(out_dir / "adapter_model.safetensors"), adapter_name="motion")
    plain.eval()
    torch.testing.assert_close(_out(plain, x, t, emb), trained, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rank", [4, 16])
def test_lora_down_is_normal_with_std_one_over_rank_whatever_the_width(unet, rank):
    """Official (MotionMatcher / MotionDirector utils/lora.py): ``nn.init.normal_(lora_down.weight,
    std=1 / r)``, ``lora_up`` zero. peft's default (Kaiming-uniform, std 1/√(3·d_in)) depends on
    the layer width."""
    torch.manual_seed(0)
    add_lora(unet, lora_config(rank=rank, dropout=0.0, targets="all_transformer_linears"))
    by_width: dict[int, list[torch.Tensor]] = {}
    for m in unet.modules():
        if hasattr(m, "lora_A") and "motion" in m.lora_A:
            w = m.lora_A["motion"].weight.detach()
            by_width.setdefault(w.shape[1], []).append(w.flatten())
            assert m.lora_B["motion"].weight.abs().max() == 0
    assert len(by_width) >= 2  # several input widths
    for width, ws in by_width.items():
        w = torch.cat(ws)
        n = w.numel()
        # the sample std of n normal draws is within 5 standard errors (std/√(2n)) of 1/r
        assert abs(w.std().item() - 1 / rank) < 5 * (1 / rank) / (2 * n) ** 0.5, (width, n, w.std())
        assert abs(w.mean().item()) < 5 * (1 / rank) / n ** 0.5
        # normal, not uniform: the kurtosis of a normal is 3 (a uniform's is 1.8)
        kurt = (((w - w.mean()) / w.std()) ** 4).mean().item()
        assert abs(kurt - 3.0) < 12 * (24 / n) ** 0.5 + 0.1, (width, kurt)


def test_lora_dropout_is_on_the_up_projections_output(unet):
    """Official ``dropout(lora_up(lora_down(x))) * scale``: in training mode every output
    element of the LoRA branch is either 0 or 1/(1−p) times its dropout-free value (peft's
    input dropout, ``B A dropout(x)``, mixes kept inputs and gives neither)."""
    add_lora(unet, lora_config(rank=4, dropout=0.5, targets="motionmatcher"))
    layer = next(m for m in unet.modules() if hasattr(m, "lora_B") and "motion" in m.lora_B)
    torch.manual_seed(1)
    with torch.no_grad():
        layer.lora_B["motion"].weight.normal_()
    x = torch.randn(6, layer.in_features)
    base = layer.base_layer
    with torch.no_grad():
        layer.eval()
        full = layer(x) - base(x)
        layer.train()
        torch.manual_seed(2)
        dropped = layer(x) - base(x)
    assert full.abs().min() > 1e-6
    zero = dropped.abs() < 1e-6
    torch.testing.assert_close(dropped[~zero], 2.0 * full[~zero], rtol=1e-4, atol=1e-5)
    assert 0.3 < zero.float().mean() < 0.7  # p = 0.5 of the outputs dropped
    # state dict keys are peft's own (the dropout has no weights)
    assert all(".lora_dropout." not in k for k, _ in unet.named_parameters())

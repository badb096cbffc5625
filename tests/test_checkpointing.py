"""Gradient checkpointing of the UNet3D (motionmatcher.customization.checkpointing)."""

from __future__ import annotations

import copy

import pytest
import torch

from motionmatcher.customization.checkpointing import (
    checkpointed_module_names,
    disable_gradient_checkpointing,
    enable_gradient_checkpointing,
    is_gradient_checkpointing_enabled,
)
from motionmatcher.customization.lora import add_lora, lora_config
from helpers import lora_enabled
from motionmatcher.methods.registry import LOSSES


@pytest.fixture()
def lora_unet(base):
    unet = copy.deepcopy(base.unet)
    params = add_lora(unet, lora_config(rank=4, dropout=0.2))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    unet.train()
    return unet, params


def _batch():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 4, 8, 8, generator=g)
    noise = torch.randn(latents.shape, generator=g)
    emb = torch.randn(1, 77, 32, generator=g)
    return latents, noise, torch.tensor([600]), emb


def _step(unet, params, sched, loss_name, seed=123):
    for p in params:
        p.grad = None
    torch.manual_seed(seed)  # same dropout masks in both runs
    out = LOSSES[loss_name](unet, sched, *_batch())
    out["loss"].backward()
    return out["loss"].detach(), [p.grad.detach().clone() for p in params]


def _count_calls(module):
    calls = []
    return calls, module.register_forward_pre_hook(lambda *a: calls.append(1))


@pytest.mark.parametrize("loss_name", ["motion_matching", "noise_prediction"])
def test_checkpointing_gives_identical_loss_and_gradients(lora_unet, base, loss_name):
    unet, params = lora_unet
    sched = base.ddim_scheduler()  # the scheduler training uses
    loss_ref, grads_ref = _step(unet, params, sched, loss_name)
    # dropout is really active: another seed gives another loss
    loss_other, _ = _step(unet, params, sched, loss_name, seed=7)
    assert loss_other != loss_ref

    enable_gradient_checkpointing(unet)
    assert is_gradient_checkpointing_enabled(unet)
    # a linear inside a checkpointed transformer: run again during backward (recomputation)
    probe = unet.get_submodule("down_blocks.2.temp_attentions.0.proj_in")
    calls, h = _count_calls(probe)
    try:
        loss_ck, grads_ck = _step(unet, params, sched, loss_name)
    finally:
        h.remove()
    n_forward = 3 if loss_name == "motion_matching" else 1  # eps-hat, z-hat, z* forwards
    n_recompute = 2 if loss_name == "motion_matching" else 1  # z* ran under no_grad
    assert len(calls) == n_forward + n_recompute
    assert torch.equal(loss_ck, loss_ref)
    for a, b in zip(grads_ref, grads_ck):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-12)
    assert lora_enabled(unet) and unet.training


def test_not_applied_in_eval_or_no_grad(lora_unet):
    unet, _ = lora_unet
    enable_gradient_checkpointing(unet)
    x, _, t, emb = _batch()
    probe = unet.get_submodule("down_blocks.0.attentions.0.proj_in")
    calls, h = _count_calls(probe)
    try:
        unet.eval()
        unet(x, t, encoder_hidden_states=emb).sample.sum().backward()
        assert len(calls) == 1
        unet.train()
        with torch.no_grad():
            unet(x, t, encoder_hidden_states=emb)
        assert len(calls) == 2
        unet(x, t, encoder_hidden_states=emb).sample.sum().backward()
        assert len(calls) == 4  # forward + recomputation
    finally:
        h.remove()


def test_enable_disable_round_trip(lora_unet):
    unet, _ = lora_unet
    from diffusers.models.resnet import ResnetBlock2D, TemporalConvLayer
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    names = checkpointed_module_names(unet)
    kinds = (ResnetBlock2D, TemporalConvLayer, Transformer2DModel, TransformerTemporalModel)
    assert set(names) == {n for n, m in unet.named_modules() if isinstance(m, kinds)}
    assert "transformer_in" in names and "mid_block.temp_convs.1" in names
    keys = list(unet.state_dict())
    enable_gradient_checkpointing(unet)
    enable_gradient_checkpointing(unet)  # idempotent
    assert all("forward" in unet.get_submodule(n).__dict__ for n in names)
    assert list(unet.state_dict()) == keys
    copied = copy.deepcopy(unet)  # the patched forward is bound to the copy, not the original
    m = copied.get_submodule("down_blocks.0.resnets.0")
    assert m.forward.__self__ is m
    disable_gradient_checkpointing(unet)
    assert not is_gradient_checkpointing_enabled(unet)
    assert not any("forward" in unet.get_submodule(n).__dict__ for n in names)

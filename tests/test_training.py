"""The training loop: resume equivalence, NaN handling, what it trains."""

from __future__ import annotations

import pytest
import torch

from motionmatcher.lora import lora_module_names
from motionmatcher.training import TrainConfig, TrainingError, train


def small_cfg(**kw) -> TrainConfig:
    base = dict(
        loss="motion_matching",
        loss_kwargs={"spatial_scale_factor": 4, "temporal_scale_factor": 4},
        min_timestep=500,
        steps=6,
        checkpoint_every=2,
        lr=1e-3,
        lora={"rank": 4, "dropout": 0.1, "targets": "all_transformer_linears"},
    )
    base.update(kw)
    return TrainConfig(**base)


def lora_state(unet) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in unet.named_parameters() if "lora_" in n}


@pytest.fixture()
def latents():
    return torch.randn(1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(0))


class Crash(RuntimeError):
    pass


def test_interrupted_and_resumed_run_ends_with_the_same_adapter(tiny_model_dir, latents, tmp_path):
    from motionmatcher.models import load_t2v_model

    cfg = small_cfg()
    ref_model = load_t2v_model(tiny_model_dir)
    _, ref_log = train(ref_model, latents, "a ball rolls", cfg, seed=3, checkpoint_dir=tmp_path / "a", progress=False)
    expected = lora_state(ref_model.unet)

    def crash_at_5(step, out):
        if step == 5:
            raise Crash("killed")

    m1 = load_t2v_model(tiny_model_dir)
    with pytest.raises(Crash):
        train(m1, latents, "a ball rolls", cfg, seed=3, checkpoint_dir=tmp_path / "b", progress=False, on_step=crash_at_5)
    assert (tmp_path / "b" / "step-000004" / "state.json").is_file()

    m2 = load_t2v_model(tiny_model_dir)
    _, log = train(m2, latents, "a ball rolls", cfg, seed=3, checkpoint_dir=tmp_path / "b", progress=False)
    got = lora_state(m2.unet)
    assert list(log["step"]) == list(range(1, 7))
    assert torch.allclose(torch.tensor(log["loss"].values), torch.tensor(ref_log["loss"].values), rtol=0, atol=0)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    # Something was actually learnt (the adapter moved away from its zero init).
    assert any(v.abs().sum() > 0 for k, v in got.items() if "lora_B" in k)


def test_checkpoint_from_another_config_is_ignored(tiny_model_dir, latents, tmp_path):
    from motionmatcher.models import load_t2v_model

    def crash_at_3(step, out):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        train(load_t2v_model(tiny_model_dir), latents, "x", small_cfg(steps=4), seed=0,
              checkpoint_dir=tmp_path, progress=False, on_step=crash_at_3)
    _, log = train(load_t2v_model(tiny_model_dir), latents, "x", small_cfg(steps=4, lr=2e-3), seed=0,
                   checkpoint_dir=tmp_path, progress=False)
    assert list(log["step"]) == [1, 2, 3, 4]


def test_non_finite_loss_names_video_and_step(tiny_model, tmp_path):
    bad = torch.full((1, 4, 4, 16, 16), float("nan"))
    with pytest.raises(TrainingError, match=r"video v1.*at step 1"):
        train(tiny_model, bad, "x", small_cfg(steps=2), seed=0, checkpoint_dir=tmp_path,
              progress=False, label="video v1, method motionmatcher")


def test_only_lora_weights_change(tiny_model, latents, tmp_path):
    before = {n: p.detach().clone() for n, p in tiny_model.unet.named_parameters()}
    train(tiny_model, latents, "x", small_cfg(steps=2, loss="noise_prediction", loss_kwargs={}, min_timestep=0),
          seed=0, checkpoint_dir=tmp_path, progress=False)
    after = dict(tiny_model.unet.named_parameters())
    for n, p in before.items():
        key = n.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        q = after.get(n, after.get(key))
        assert q is not None, n
        assert torch.equal(p, q.detach()), f"base parameter {n} changed"
    assert len(lora_module_names(tiny_model.unet)) > 0


def test_bad_timestep_range(tiny_model, latents, tmp_path):
    with pytest.raises(TrainingError, match="timestep range"):
        train(tiny_model, latents, "x", small_cfg(min_timestep=1000), seed=0, checkpoint_dir=tmp_path, progress=False)

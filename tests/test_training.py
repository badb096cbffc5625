"""The training loop: resume equivalence, NaN handling, what it trains."""

from __future__ import annotations

import pytest
import torch

from helpers import lora_module_names
from motionmatcher.customization.training import TrainConfig, TrainingError, train


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
    from motionmatcher.backbones.models import load_t2v_model

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
    from motionmatcher.backbones.models import load_t2v_model

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


@pytest.fixture(scope="module")
def uninterrupted_adapter(tiny_model_dir, tmp_path_factory):
    from motionmatcher.backbones.models import load_t2v_model

    m = load_t2v_model(tiny_model_dir)
    lat = torch.randn(1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    train(m, lat, "a ball rolls", small_cfg(), seed=3, checkpoint_dir=tmp_path_factory.mktemp("ref"), progress=False)
    return lora_state(m.unet)


def _crashed_run(tiny_model_dir, latents, ckdir, crash_step, **kw):
    from motionmatcher.backbones.models import load_t2v_model

    def crash(step, out):
        if step == crash_step:
            raise Crash("killed")

    with pytest.raises(Crash):
        train(load_t2v_model(tiny_model_dir), latents, "a ball rolls", small_cfg(**kw), seed=3,
              checkpoint_dir=ckdir, progress=False, on_step=crash)


def _zero_tensor_data(path):
    """Overwrite the tensor bytes of a safetensors file with zeros (same size, valid header)."""
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    raw[8 + n:] = bytes(len(raw) - 8 - n)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("fault", ["truncated_tensors", "zeroed_tensors", "truncated_state"])
def test_damaged_last_checkpoint_falls_back_to_the_previous_one(tiny_model_dir, latents, tmp_path, fault, caplog,
                                                                uninterrupted_adapter):
    """Fault injection: the newest resume checkpoint is damaged. The run warns naming it,
    resumes from the one before and still ends with the uninterrupted run's adapter."""
    from motionmatcher.backbones.models import load_t2v_model

    _crashed_run(tiny_model_dir, latents, tmp_path / "b", 5)
    last = tmp_path / "b" / "step-000004"
    assert (tmp_path / "b" / "step-000002").is_dir(), "the previous checkpoint is kept"
    if fault == "truncated_tensors":
        f = last / "trainable.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    elif fault == "zeroed_tensors":
        _zero_tensor_data(last / "trainable.safetensors")
    else:
        f = last / "state.json"
        f.write_text(f.read_text()[:50])
    m = load_t2v_model(tiny_model_dir)
    record = {}
    with caplog.at_level("WARNING"):
        _, log = train(m, latents, "a ball rolls", small_cfg(), seed=3, checkpoint_dir=tmp_path / "b",
                       progress=False, record=record)
    assert str(last) in caplog.text
    assert record["resumed_from"] == str(tmp_path / "b" / "step-000002")
    assert record["resumed_at_step"] == 2
    assert [s["path"] for s in record["skipped_checkpoints"]] == [str(last)]
    assert list(log["step"]) == list(range(1, 7))
    expected, got = uninterrupted_adapter, lora_state(m.unet)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k


def test_no_good_checkpoint_starts_over(tiny_model_dir, latents, tmp_path, caplog):
    from motionmatcher.backbones.models import load_t2v_model

    _crashed_run(tiny_model_dir, latents, tmp_path, 5)
    for d in tmp_path.glob("step-*"):
        _zero_tensor_data(d / "optimizer.safetensors")
    record = {}
    with caplog.at_level("WARNING"):
        _, log = train(load_t2v_model(tiny_model_dir), latents, "a ball rolls", small_cfg(), seed=3,
                       checkpoint_dir=tmp_path, progress=False, record=record)
    assert "step-000004" in caplog.text and "step-000002" in caplog.text
    assert "starts over" in caplog.text
    assert record["resumed_from"] is None and len(record["skipped_checkpoints"]) == 2
    assert list(log["step"]) == list(range(1, 7))


def test_resume_keeps_the_fp16_loss_scale(tiny_model_dir, latents, tmp_path, monkeypatch):
    """fp16 training scales the loss with a GradScaler whose scale grows and backs off during
    the run; a resumed run must continue with the scale it had, not restart at 2^16 (a run that
    had backed off after overflows would overflow again at every resume). The CPU has no fp16
    autocast: the loop is made to treat it as fp16 (the scaler is device-agnostic), and the
    scaler's growth interval is 1 so that its scale changes at every step."""
    import motionmatcher.customization.training as training
    from motionmatcher.backbones.models import load_t2v_model

    monkeypatch.setattr(training, "_autocast_dtype", lambda device, dtype: dtype if dtype == torch.float16 else None)
    monkeypatch.setattr(training, "_autocast", lambda device, dtype: __import__("contextlib").nullcontext())
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **kw: real(*a, **{**kw, "growth_interval": 1}))
    cfg = small_cfg()

    def run(ckdir, on_step=None):
        m = load_t2v_model(tiny_model_dir)
        return train(m, latents, "a ball rolls", cfg, seed=3, checkpoint_dir=ckdir, dtype=torch.float16,
                     progress=False, on_step=on_step)[1]

    ref = run(tmp_path / "a")
    assert list(ref["loss_scale"]) == [2.0 ** (16 + k) for k in range(1, 7)]

    def crash_at_5(step, out):
        if step == 5:
            raise Crash("killed")

    with pytest.raises(Crash):
        run(tmp_path / "b", crash_at_5)
    got = run(tmp_path / "b")
    assert list(got["loss_scale"]) == list(ref["loss_scale"])

"""The training loop draws t ~ U[min_timestep, max_timestep) (MotionDirector / MotionMatcher
train the motion LoRA on the high-noise timesteps only)."""

from __future__ import annotations

import pytest
import torch

from motionmatcher.methods.registry import LOSSES
from motionmatcher.customization.training import TrainConfig, train


@pytest.mark.parametrize("lo, hi", [(500, None), (200, 700), (997, None)])
def test_timesteps_are_uniform_on_the_configured_range(tiny_model, tmp_path, monkeypatch, lo, hi):
    seen = []

    def recording_loss(unet, scheduler, z0, noise, timesteps, text):
        seen.append(timesteps.tolist())
        # any differentiable function of the trained weights: the loop must be able to step
        return {"loss": sum((p.float() ** 2).sum() for p in unet.parameters() if p.requires_grad) * 1e-6}

    monkeypatch.setitem(LOSSES, "recording", recording_loss)
    cfg = TrainConfig(loss="recording", min_timestep=lo, max_timestep=hi, steps=50, batch_size=6,
                      checkpoint_every=10_000, lora={"rank": 1, "dropout": 0.0, "targets": "all_transformer_linears"})
    z = torch.zeros(1, 4, 2, 8, 8)
    _, log = train(tiny_model, z, "a ball", cfg, seed=0, checkpoint_dir=tmp_path, progress=False)
    t = torch.tensor(seen)
    top = hi if hi is not None else 1000  # the scheduler's num_train_timesteps
    assert t.shape == (50, 6)
    assert int(t.min()) >= lo and int(t.max()) < top
    # the whole range is drawn: 300 draws of a uniform on (top − lo) values reach both ends
    assert int(t.min()) < lo + 15 and int(t.max()) >= top - 15
    assert abs(float(t.float().mean()) - (lo + top - 1) / 2) < 0.1 * (top - lo)
    assert log["timestep"].tolist() == t[:, 0].tolist()
    if top - lo <= 5:  # a short range: every timestep of it, the last one (T − 1) included
        assert sorted(set(t.flatten().tolist())) == list(range(lo, top))

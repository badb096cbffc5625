"""Tests for motionmatcher.metrics.tracking (LK tracker on synthetic videos)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from motionmatcher.metrics import MetricUnavailable
from motionmatcher.metrics.tracking import (
    LucasKanadeTracker,
    TrackerUnavailable,
    grid_queries,
    make_tracker,
)


def _smooth_texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture (blurred noise stretched to 0..255)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height, width, 3)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), 2.0)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return (noise * 255).round().astype(np.uint8)


def _panning_video(shift: tuple[float, float], n_frames: int, size: int = 96, pad: int = 48) -> np.ndarray:
    """Frames of a larger texture translated by ``t * shift`` px (bilinear), cropped to ``size``.

    Content at pixel ``p`` of frame 0 is at ``p + t * shift`` in frame ``t``; the
    texture extends beyond the crop, so points leave the frame for real.
    """
    big = _smooth_texture(size + 2 * pad, size + 2 * pad)
    frames = []
    for t in range(n_frames):
        m = np.float32([[1, 0, shift[0] * t], [0, 1, shift[1] * t]])
        warped = cv2.warpAffine(big, m, (big.shape[1], big.shape[0]), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
        frames.append(warped[pad:pad + size, pad:pad + size])
    return np.ascontiguousarray(np.stack(frames))


def test_grid_queries_cell_centres():
    q = grid_queries(64, 32, grid_size=8)
    assert q.shape == (64, 2) and q.dtype == np.float32
    xs = (np.arange(8) + 0.5) * 4 - 0.5
    ys = (np.arange(8) + 0.5) * 8 - 0.5
    # row-major: y outer, x inner
    np.testing.assert_allclose(q[:8, 0], xs)
    np.testing.assert_allclose(q[:8, 1], ys[0])
    np.testing.assert_allclose(q[::8, 1], ys)
    assert q[:, 0].min() > 0 and q[:, 0].max() < 31
    assert q[:, 1].min() > 0 and q[:, 1].max() < 63
    # centred: symmetric about the image centre
    np.testing.assert_allclose(q.mean(axis=0), [(32 - 1) / 2, (64 - 1) / 2], atol=1e-5)


def test_lk_recovers_subpixel_translation():
    shift = (0.37, -0.62)
    n_frames = 8
    frames = _panning_video(shift, n_frames)
    tracks, visible = LucasKanadeTracker().track(frames, grid_size=10)
    assert tracks.shape == (100, n_frames, 2) and tracks.dtype == np.float32
    assert visible.shape == (100, n_frames) and visible.dtype == bool

    q = grid_queries(96, 96, 10)
    expected = q[:, None, :] + np.arange(n_frames)[None, :, None] * np.asarray(shift)[None, None, :]
    err = np.linalg.norm(tracks - expected, axis=-1)
    assert visible.mean() > 0.9, "almost all points stay inside the frame and must stay tracked"
    assert np.median(err[visible]) < 0.1
    assert np.percentile(err[visible], 90) < 0.3
    np.testing.assert_allclose(tracks[:, 0], q)  # frame 0 holds the queries


def test_lk_marks_points_leaving_the_frame_invisible():
    size, n_frames, dx = 96, 12, 3.0
    frames = _panning_video((dx, 0.0), n_frames, size=size)
    tracks, visible = LucasKanadeTracker().track(frames, grid_size=10)
    assert np.isfinite(tracks).all()

    q = grid_queries(size, size, 10)
    x_true = q[:, None, 0] + dx * np.arange(n_frames)[None, :]
    outside = x_true > size - 1
    assert outside.any()
    # every point whose true position is outside the frame is invisible ...
    assert not visible[outside].any()
    # ... and stays invisible once lost, with its last position frozen
    for i in range(len(q)):
        lost = np.flatnonzero(~visible[i])
        if lost.size:
            t0 = lost[0]
            assert not visible[i, t0:].any()
            np.testing.assert_array_equal(tracks[i, t0:], np.broadcast_to(tracks[i, t0 - 1], tracks[i, t0:].shape))
    # points that stay well inside remain visible and accurate
    inside = (x_true.max(axis=1) < size - 15) & (q[:, 0] > 10) & (q[:, 1] > 10) & (q[:, 1] < size - 10)
    assert inside.sum() >= 30
    assert visible[inside].all()
    err = np.abs(tracks[inside, :, 0] - x_true[inside])
    assert np.median(err) < 0.1


def test_forward_backward_check_drops_unreliable_points():
    # the right half of the scene is replaced by unrelated content: LK often still
    # "converges" there (status 1) but tracking back does not return to the start
    size = 96
    a, b = _smooth_texture(size, size, 0), _smooth_texture(size, size, 1)
    changed = a.copy()
    changed[:, size // 2:] = b[:, size // 2:]
    frames = np.stack([a, changed, changed])
    q = grid_queries(size, size, 10)
    right, left = q[:, 0] > size // 2 + 10, q[:, 0] < size // 2 - 10

    _, visible = LucasKanadeTracker().track(frames, grid_size=10)
    assert visible[left].all()
    assert visible[right, 1].mean() < 0.25  # measured 0.1 (0.475 without the check)
    _, visible_no_fb = LucasKanadeTracker(fb_threshold=1e9).track(frames, grid_size=10)
    assert visible_no_fb[right, 1].sum() > visible[right, 1].sum()


def test_lk_is_deterministic():
    frames = _panning_video((1.3, 0.4), 5, size=64)
    a = LucasKanadeTracker().track(frames, grid_size=6)
    b = LucasKanadeTracker().track(frames, grid_size=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_lk_rejects_bad_frames():
    with pytest.raises(ValueError):
        LucasKanadeTracker().track(np.zeros((4, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        LucasKanadeTracker().track(np.zeros((4, 32, 32), dtype=np.uint8))


def test_make_tracker():
    tracker = make_tracker("lk")
    assert isinstance(tracker, LucasKanadeTracker) and tracker.name == "lk"
    with pytest.raises(ValueError):
        make_tracker("raft")


def test_cotracker_unavailable_is_explained(tmp_path):
    assert issubclass(TrackerUnavailable, MetricUnavailable)
    with pytest.raises(TrackerUnavailable, match="missing.pth"):
        make_tracker("cotracker", checkpoint=str(tmp_path / "missing.pth"))
    with pytest.raises(TrackerUnavailable, match="cotracker_checkpoint"):
        make_tracker("cotracker", checkpoint=None)


# ---- CoTracker checkpoints: version detection and errors, on small fake state dicts --------------


def _fake_state(kind: str) -> dict:
    import torch

    if kind == "v3_offline":
        return {"fnet.conv1.weight": torch.zeros(2, 3), "corr_mlp.fc1.weight": torch.zeros(4, 4),
                "time_emb": torch.zeros(1, 60, 1110)}
    if kind == "v3_online":
        return {"corr_mlp.fc1.weight": torch.zeros(4, 4), "time_emb": torch.zeros(1, 16, 1110)}
    if kind == "v2":
        return {"fnet.conv1.weight": torch.zeros(2, 3), "track_feat_updater.0.weight": torch.zeros(4, 4),
                "vis_predictor.0.weight": torch.zeros(1, 4), "time_emb": torch.zeros(1, 8, 456)}
    return {"encoder.weight": torch.zeros(2, 2)}


def test_cotracker_checkpoint_kind_from_state_dict_keys(tmp_path):
    import torch

    from motionmatcher.metrics.tracking import cotracker_checkpoint_kind, load_cotracker_state_dict

    assert cotracker_checkpoint_kind(_fake_state("v3_offline")) == ("3_offline", 60)
    assert cotracker_checkpoint_kind(_fake_state("v2")) == ("2", 8)
    with pytest.raises(TrackerUnavailable, match="online CoTracker3"):
        cotracker_checkpoint_kind(_fake_state("v3_online"), "scaled_online.pth")
    with pytest.raises(TrackerUnavailable, match=r"other\.pth.*not a CoTracker3 offline or CoTracker2"):
        cotracker_checkpoint_kind(_fake_state("other"), "other.pth")
    # files: a {"model": ...} wrapper is unwrapped; loading never unpickles objects
    torch.save({"model": _fake_state("v2")}, tmp_path / "cotracker2.pth")
    assert cotracker_checkpoint_kind(load_cotracker_state_dict(tmp_path / "cotracker2.pth")) == ("2", 8)
    torch.save({"net": TrackerUnavailable("a pickled object")}, tmp_path / "pickled.pth")
    with pytest.raises(TrackerUnavailable, match=r"pickled\.pth.*weights_only=True"):
        load_cotracker_state_dict(tmp_path / "pickled.pth")


def test_cotracker_errors_name_the_file_and_auto_records_its_choice(tmp_path, caplog, monkeypatch):
    import logging
    import sys

    import torch

    torch.save(_fake_state("other"), tmp_path / "weird.pth")
    with pytest.raises(TrackerUnavailable, match="weird.pth"):
        make_tracker("cotracker", checkpoint=str(tmp_path / "weird.pth"))
    torch.save(_fake_state("v2"), tmp_path / "cotracker2.pth")
    with pytest.raises(TrackerUnavailable, match="cotracker_version is '3_offline'"):
        make_tracker("cotracker", checkpoint=str(tmp_path / "cotracker2.pth"), version="3_offline")
    # a v2 checkpoint under `auto` without the package: logged fallback to LK, recorded as "lk"
    monkeypatch.setitem(sys.modules, "cotracker", None)  # not importable
    monkeypatch.setitem(sys.modules, "cotracker.predictor", None)
    with caplog.at_level(logging.INFO, logger="motionmatcher.metrics.tracking"):
        tracker = make_tracker("auto", checkpoint=str(tmp_path / "cotracker2.pth"))
    assert tracker.name == "lk" and tracker.weights_sha256 == "none"
    assert "CoTracker is not installed" in caplog.text and "using Lucas-Kanade" in caplog.text
    with pytest.raises(TrackerUnavailable, match="git\+https://github.com/facebookresearch/co-tracker"):
        make_tracker("cotracker", checkpoint=str(tmp_path / "cotracker2.pth"))


def test_cotracker_runs_from_a_random_checkpoint(tmp_path):
    """Only where co-tracker is installed: a random CoTracker3 offline model saved as a state
    dict is detected, loaded and tracks a grid; the row names the tracker and the weights."""
    pytest.importorskip("cotracker")
    import torch
    from cotracker.models.build_cotracker import build_cotracker

    torch.manual_seed(0)
    torch.save(build_cotracker(checkpoint=None, offline=True, window_len=60).state_dict(),
               tmp_path / "scaled_offline.pth")
    tracker = make_tracker("auto", checkpoint=str(tmp_path / "scaled_offline.pth"))
    assert tracker.name == "cotracker3_offline" and len(tracker.weights_sha256) == 16
    tracks, visible = tracker.track(_panning_video((1.0, 0.5), 4, size=64, pad=16), grid_size=3)
    assert tracks.shape == (9, 4, 2) and visible.shape == (9, 4) and np.isfinite(tracks).all()

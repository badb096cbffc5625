"""``CoTrackerTracker.track`` end to end without the ``cotracker`` package.

A stand-in ``cotracker.predictor`` module is built here with the official predictor's interface
and pre/post-processing (facebookresearch/co-tracker, ``cotracker/predictor.py``,
``CoTrackerPredictor._compute_sparse_tracks``):

* input ``video`` float ``(B, T, 3, H, W)`` with values in [0, 255] (the model normalises with
  ``2 * (video / 255) - 1``);
* bilinear resize (``align_corners=True``) to the model resolution ``interp_shape`` (h, w);
* ``grid_size`` > 0: queries ``(B, N, 3)`` laid out ``(t, x, y)``, t = ``grid_query_frame`` = 0,
  at ``get_points_on_a_grid(grid_size, interp_shape)`` (margin w/64, row-major);
* the model returns tracks ``(B, T, N, 2)`` (x, y) in model pixels and visibility
  probabilities ``(B, T, N)``; visible = p > 0.9; each query point is put back at its own frame;
  tracks scaled back by ((W − 1)/(w − 1), (H − 1)/(h − 1)).

Its core "model" tracks for real, in the simplest way: every query moves with the brightness
centroid of the (normalised, resized) video. A bright blob translating at a known velocity then
gives tracks known in closed form, so the wrapper's conventions — value range, layout,
(x, y) order, the (T, N) → (N, T) transpose, visibility as bool — are all checked by value.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from motionmatcher.metrics.tracking import make_tracker

RESOLUTION = (24, 32)  # the stand-in's model_resolution (h, w); CoTracker's own is (384, 512)


def official_grid(size: int, extent) -> torch.Tensor:
    """``get_points_on_a_grid``: (1, size², 2) (x, y), margin extent[1]/64, row-major."""
    h, w = extent
    margin = w / 64
    ys = torch.linspace(margin, h - margin, size)
    xs = torch.linspace(margin, w - margin, size)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(1, -1, 2)


class CentroidModel(torch.nn.Module):
    """Stand-in for CoTrackerThreeOffline: ``forward(video, queries, iters)`` → (tracks, vis, …)."""

    model_resolution = RESOLUTION

    def __init__(self):
        super().__init__()
        self.loaded: list[str] = []

    def load_state_dict(self, state, strict=True):
        self.loaded = sorted(state)

    def forward(self, video, queries, iters=6):
        b, t, c, h, w = video.shape
        assert video.dtype == torch.float32 and c == 3 and (h, w) == RESOLUTION, video.shape
        assert video.min() >= 0 and 1.0 < video.max() <= 255.0, "the model expects [0, 255]"
        assert queries.shape[-1] == 3 and (queries[..., 0] == 0).all()  # (t, x, y), from frame 0
        x = 2 * (video / 255.0) - 1.0
        weight = (x.mean(2) + 1) / 2  # (B, T, h, w) brightness in [0, 1]
        ys = torch.arange(h, dtype=torch.float32).view(h, 1)
        xs = torch.arange(w, dtype=torch.float32).view(1, w)
        mass = weight.sum((-2, -1))
        centroid = torch.stack([(weight * xs).sum((-2, -1)) / mass,
                                (weight * ys).sum((-2, -1)) / mass], dim=-1)  # (B, T, 2)
        shift = centroid - centroid[:, :1]
        tracks = queries[:, None, :, 1:] + shift[:, :, None, :]  # (B, T, N, 2)
        vis = torch.full(tracks.shape[:3], 0.95)
        vis[:, -1, 0] = 0.5  # one point reported lost in the last frame
        return tracks, vis, None


class StandInPredictor(torch.nn.Module):
    """The official ``CoTrackerPredictor`` interface, ``forward`` and ``_compute_sparse_tracks``
    (grid and query paths, support grid; no segmentation mask, no backward tracking) around
    :class:`CentroidModel`."""

    instances: list["StandInPredictor"] = []
    support_grid_size = 6

    def __init__(self, checkpoint="./checkpoints/scaled_offline.pth", offline=True, v2=False,
                 window_len=60):
        super().__init__()
        self.args = dict(checkpoint=checkpoint, offline=offline, v2=v2, window_len=window_len)
        self.model = CentroidModel()
        self.interp_shape = self.model.model_resolution
        StandInPredictor.instances.append(self)

    @torch.no_grad()
    def forward(self, video, queries=None, segm_mask=None, grid_size=0, grid_query_frame=0,
                backward_tracking=False):
        assert not (queries is None and grid_size == 0), "dense tracking is not used"
        return self._compute_sparse_tracks(video, queries, segm_mask, grid_size,
                                           add_support_grid=(grid_size == 0 or segm_mask is not None),
                                           grid_query_frame=grid_query_frame,
                                           backward_tracking=backward_tracking)

    def _compute_sparse_tracks(self, video, queries, segm_mask=None, grid_size=0,
                               add_support_grid=False, grid_query_frame=0, backward_tracking=False):
        assert segm_mask is None and not backward_tracking
        B, T, C, H, W = video.shape
        video = F.interpolate(video.reshape(B * T, C, H, W), tuple(self.interp_shape),
                              mode="bilinear", align_corners=True)
        video = video.reshape(B, T, 3, *self.interp_shape)
        if queries is not None:
            assert queries.shape[-1] == 3
            queries = queries.clone()
            queries[:, :, 1:] *= queries.new_tensor([(self.interp_shape[1] - 1) / (W - 1),
                                                     (self.interp_shape[0] - 1) / (H - 1)])
        else:
            grid = official_grid(grid_size, self.interp_shape)
            queries = torch.cat([torch.ones_like(grid[:, :, :1]) * grid_query_frame, grid],
                                dim=2).repeat(B, 1, 1)
        if add_support_grid:
            grid = official_grid(self.support_grid_size, self.interp_shape)
            grid = torch.cat([torch.zeros_like(grid[:, :, :1]), grid], dim=2).repeat(B, 1, 1)
            queries = torch.cat([queries, grid], dim=1)
        tracks, vis, *_ = self.model.forward(video=video, queries=queries, iters=6)
        if add_support_grid:
            tracks = tracks[:, :, : -self.support_grid_size ** 2]
            vis = vis[:, :, : -self.support_grid_size ** 2]
        vis = vis > 0.9
        for i in range(len(queries)):
            qt = queries[i, : tracks.size(2), 0].to(torch.int64)
            ar = torch.arange(len(qt))
            tracks[i, qt, ar] = queries[i, : tracks.size(2), 1:]
            vis[i, qt, ar] = True
        tracks *= tracks.new_tensor([(W - 1) / (self.interp_shape[1] - 1),
                                     (H - 1) / (self.interp_shape[0] - 1)])
        return tracks, vis


@pytest.fixture()
def stand_in(monkeypatch):
    StandInPredictor.instances = []
    pkg = types.ModuleType("cotracker")
    mod = types.ModuleType("cotracker.predictor")
    mod.CoTrackerPredictor = StandInPredictor
    pkg.predictor = mod
    monkeypatch.setitem(sys.modules, "cotracker", pkg)
    monkeypatch.setitem(sys.modules, "cotracker.predictor", mod)
    return StandInPredictor


def blob_video(velocity, n_frames=5, height=48, width=64, sigma=5.0) -> np.ndarray:
    """A bright Gaussian blob (yellow: R, G only) on black, centred at (20, 18) + t·velocity."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for t in range(n_frames):
        cx, cy = 20 + velocity[0] * t, 18 + velocity[1] * t
        g = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))
        frames.append(np.stack([g, g, np.zeros_like(g)], axis=-1) * 250)
    return np.round(np.stack(frames)).astype(np.uint8)


def test_cotracker_track_follows_the_official_predictor_conventions(stand_in, tmp_path):
    from test_metrics_tracking import _fake_state

    torch.save(_fake_state("v3_offline"), tmp_path / "scaled_offline.pth")
    tracker = make_tracker("cotracker", checkpoint=str(tmp_path / "scaled_offline.pth"))
    (pred,) = stand_in.instances
    assert pred.args == dict(checkpoint=None, offline=True, v2=False, window_len=60)
    assert pred.model.loaded == sorted(_fake_state("v3_offline"))
    assert tracker.name == "cotracker3_offline"

    velocity = (2.0, 1.0)  # px per frame, x ≠ y so that a swapped axis shows
    H, W, T, g = 48, 64, 5, 3
    tracks, visible = tracker.track(blob_video(velocity, T, H, W), grid_size=g)
    assert tracks.shape == (g * g, T, 2) and tracks.dtype == np.float32
    assert visible.shape == (g * g, T) and visible.dtype == bool
    # the official grid on the model resolution, mapped back to frame pixels; then t·velocity
    h, w = RESOLUTION
    start = official_grid(g, RESOLUTION)[0].numpy() * np.array([(W - 1) / (w - 1), (H - 1) / (h - 1)])
    expected = start[:, None, :] + np.arange(T)[None, :, None] * np.array(velocity)[None, None, :]
    np.testing.assert_allclose(tracks[:, 0], start, atol=1e-4)  # queries sit on frame 0
    np.testing.assert_allclose(tracks, expected, atol=0.3)
    # visibility: point 0 lost (p = 0.5 ≤ 0.9) in the last frame only
    assert not visible[0, -1] and visible.sum() == g * g * T - 1


@pytest.mark.parametrize("support_grid", [False, True])
def test_cotracker_track_points_follows_the_official_query_layout(stand_in, tmp_path, support_grid):
    """``track_points``: (x, y) pixel queries on frame 0 go in as (t = 0, x, y) and come back
    where the content moved, with or without CoTracker's 6x6 support grid."""
    from test_metrics_tracking import _fake_state

    torch.save(_fake_state("v3_offline"), tmp_path / "scaled_offline.pth")
    tracker = make_tracker("cotracker", checkpoint=str(tmp_path / "scaled_offline.pth"))
    velocity, T = (-1.5, 2.0), 4
    queries = np.array([[10.0, 12.0], [30.5, 20.0], [50.0, 40.0]], dtype=np.float32)
    tracks, visible = tracker.track_points(blob_video(velocity, T), queries, support_grid=support_grid)
    assert tracks.shape == (3, T, 2) and visible.shape == (3, T) and visible.dtype == bool
    expected = queries[:, None, :] + np.arange(T)[None, :, None] * np.array(velocity)[None, None, :]
    np.testing.assert_allclose(tracks[:, 0], queries, atol=1e-4)
    np.testing.assert_allclose(tracks, expected, atol=0.3)
    assert not visible[0, -1] and visible.sum() == 3 * T - 1

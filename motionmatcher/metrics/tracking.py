"""Point tracking for the motion metrics.

Conventions (shared by every tracker here and by :mod:`motionmatcher.metrics.motion`):

* ``tracks``: float32 array ``(N, T, 2)`` of ``(x, y)`` positions in pixels of
  the frames that were tracked, with pixel centres at integer coordinates
  (OpenCV convention: the image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``).
* ``visible``: bool array ``(N, T)``. Once a point is lost it stays invisible
  and its position is frozen at the last reliable estimate, so ``tracks`` is
  always finite.
* Queries are a regular ``grid_size x grid_size`` grid on frame 0
  (:func:`grid_queries`), ordered row-major (y outer, x inner).

Trackers
--------
``LucasKanadeTracker`` (``name = "lk"``)
    Weight-free, deterministic, CPU only: OpenCV pyramidal Lucas-Kanade with a
    forward-backward consistency check. This is the default.
``CoTrackerTracker`` (``name = "cotracker"``)
    The tracker used by the official MotionMatcher / DMT evaluation scripts.
    Optional: needs the ``cotracker`` package and a local checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from . import MetricUnavailable

logger = logging.getLogger(__name__)

__all__ = [
    "TrackerUnavailable",
    "Tracker",
    "grid_queries",
    "LucasKanadeTracker",
    "CoTrackerTracker",
    "make_tracker",
]


class TrackerUnavailable(MetricUnavailable):
    """The requested tracker cannot be used (package or checkpoint missing)."""


class Tracker(Protocol):
    """Interface shared by all trackers."""

    name: str

    def track(self, frames: np.ndarray, grid_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """Track a ``grid_size**2`` grid from frame 0; return ``(tracks, visible)``."""
        ...


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.shape[0] < 1:
        raise ValueError("frames must contain at least one frame")
    return frames


def grid_queries(height: int, width: int, grid_size: int = 50) -> np.ndarray:
    """Regular ``grid_size x grid_size`` grid of query points at the cell centres.

    The frame is split into ``grid_size`` equal cells along each axis and the
    centre of each cell is returned, in pixel-centre coordinates::

        x_i = (i + 0.5) * W / g - 0.5,   y_j = (j + 0.5) * H / g - 0.5,   i, j = 0..g-1

    Returns a float32 array ``(g*g, 2)`` of ``(x, y)``, row-major (``y`` outer).
    """
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    if height < 1 or width < 1:
        raise ValueError(f"invalid frame size {height}x{width}")
    xs = (np.arange(grid_size, dtype=np.float64) + 0.5) * (width / grid_size) - 0.5
    ys = (np.arange(grid_size, dtype=np.float64) + 0.5) * (height / grid_size) - 0.5
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=-1).astype(np.float32)


class LucasKanadeTracker:
    """Pyramidal Lucas-Kanade point tracker with a forward-backward check.

    For every pair of consecutive frames ``(t, t+1)`` the currently visible
    points ``p_t`` are tracked forward to ``p_{t+1}`` with
    ``cv2.calcOpticalFlowPyrLK`` (grayscale, ``max_level`` pyramid levels,
    ``win_size`` window, sub-pixel termination criteria), then ``p_{t+1}`` is
    tracked back to frame ``t`` giving ``p'_t``. A point is lost at ``t+1`` if

    * either LK call reports failure (``status == 0``), or
    * the forward-backward error ``||p'_t - p_t||_2 > fb_threshold`` (px), or
    * ``p_{t+1}`` falls outside the frame ``[0, W-1] x [0, H-1]``.

    Lost points stay invisible for the rest of the video and keep their last
    visible position. Tracks are chained frame to frame from the grid on frame
    0, so the result is fully deterministic.
    """

    name = "lk"

    def __init__(
        self,
        win_size: int = 21,
        max_level: int = 3,
        fb_threshold: float = 1.0,
        max_iterations: int = 30,
        epsilon: float = 0.01,
    ) -> None:
        self.win_size = int(win_size)
        self.max_level = int(max_level)
        self.fb_threshold = float(fb_threshold)
        self._lk_params = dict(
            winSize=(self.win_size, self.win_size),
            maxLevel=self.max_level,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, int(max_iterations), float(epsilon)),
        )

    def track(self, frames: np.ndarray, grid_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """Track a regular grid (:func:`grid_queries`) from frame 0.

        Args:
            frames: uint8 RGB video ``(T, H, W, 3)``.
            grid_size: points per axis; ``N = grid_size**2``.

        Returns:
            ``(tracks, visible)``: float32 ``(N, T, 2)`` and bool ``(N, T)``.
        """
        frames = _check_frames(frames)
        _, height, width, _ = frames.shape
        return self.track_points(frames, grid_queries(height, width, grid_size))

    def track_points(self, frames: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Track arbitrary ``(N, 2)`` ``(x, y)`` query points given on frame 0."""
        frames = _check_frames(frames)
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, 2)
        n_frames, height, width, _ = frames.shape
        n_points = queries.shape[0]

        tracks = np.empty((n_points, n_frames, 2), dtype=np.float32)
        visible = np.zeros((n_points, n_frames), dtype=bool)
        tracks[:, 0] = queries
        visible[:, 0] = _inside(queries, height, width)

        prev_gray = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
        for t in range(1, n_frames):
            gray = cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY)
            tracks[:, t] = tracks[:, t - 1]
            alive = np.flatnonzero(visible[:, t - 1])
            if alive.size:
                p0 = np.ascontiguousarray(tracks[alive, t - 1].reshape(-1, 1, 2))
                p1, st_fwd, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, p0, None, **self._lk_params)
                p0_back, st_bwd, _ = cv2.calcOpticalFlowPyrLK(gray, prev_gray, p1, None, **self._lk_params)
                p1 = p1.reshape(-1, 2)
                fb_error = np.linalg.norm(p0_back.reshape(-1, 2) - p0.reshape(-1, 2), axis=1)
                ok = (
                    (st_fwd.ravel() == 1)
                    & (st_bwd.ravel() == 1)
                    & np.isfinite(p1).all(axis=1)
                    & (fb_error <= self.fb_threshold)
                    & _inside(p1, height, width)
                )
                tracks[alive[ok], t] = p1[ok]
                visible[alive[ok], t] = True
            prev_gray = gray

        n_lost = int(n_points - visible[:, -1].sum())
        logger.debug("LK tracked %d points over %d frames; %d lost by the last frame", n_points, n_frames, n_lost)
        return tracks, visible


def _inside(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Whether ``(x, y)`` points lie inside ``[0, W-1] x [0, H-1]``."""
    x, y = points[:, 0], points[:, 1]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


class CoTrackerTracker:
    """CoTracker grid tracking (the tracker of the official evaluation scripts).

    Optional dependency, not on PyPI. Install it with::

        pip install git+https://github.com/facebookresearch/co-tracker

    and download a checkpoint (e.g. ``cotracker2.pth`` / ``scaled_offline.pth``
    from the CoTracker release page) to a local path passed as
    ``checkpoint_path`` (config: ``metrics.tracker.checkpoint``). The model is
    built with ``cotracker.predictor.CoTrackerPredictor(checkpoint=...)`` and
    run as ``model(video, grid_size=grid_size)`` on a float ``(1, T, 3, H, W)``
    video in ``[0, 255]``.

    Raises:
        TrackerUnavailable: the package is not importable, or the checkpoint
            is not given / not a file.
    """

    name = "cotracker"

    def __init__(self, checkpoint_path: str | Path | None, device: str = "cpu") -> None:
        try:
            from cotracker.predictor import CoTrackerPredictor
        except ImportError as exc:
            raise TrackerUnavailable(
                "CoTracker is not installed (the 'cotracker' package is not on PyPI). Install it with "
                "`pip install git+https://github.com/facebookresearch/co-tracker` and set "
                "metrics.tracker.checkpoint to a downloaded CoTracker checkpoint, "
                "or use the weight-free tracker 'lk'."
            ) from exc
        if checkpoint_path is None or not Path(checkpoint_path).is_file():
            raise TrackerUnavailable(
                f"CoTracker checkpoint not found: {checkpoint_path!r}. Download a checkpoint from "
                "https://github.com/facebookresearch/co-tracker (e.g. cotracker2.pth) and set "
                "metrics.tracker.checkpoint to its local path, or use the weight-free tracker 'lk'."
            )
        import torch

        self._torch = torch
        self.device = device
        self.checkpoint_path = str(checkpoint_path)
        self.model = CoTrackerPredictor(checkpoint=self.checkpoint_path).to(device).eval()

    def track(self, frames: np.ndarray, grid_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """Track CoTracker's own ``grid_size x grid_size`` grid from frame 0.

        Note that CoTracker places its grid with a margin, so the queries differ
        slightly from :func:`grid_queries`; both videos of a comparison must be
        tracked with the same tracker.
        """
        frames = _check_frames(frames)
        torch = self._torch
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float().to(self.device)
        with torch.inference_mode():
            tracks, visible = self.model(video, grid_size=int(grid_size))
        tracks_np = tracks[0].permute(1, 0, 2).float().cpu().numpy().astype(np.float32)  # (N, T, 2)
        visible_np = visible[0].permute(1, 0).cpu().numpy()
        if visible_np.dtype != bool:
            visible_np = visible_np > 0.5
        return tracks_np, visible_np


def make_tracker(name: str, checkpoint: str | None = None, device: str = "cpu") -> Tracker:
    """Build a tracker by name: ``"lk"`` (default, weight-free), ``"cotracker"``, or ``"auto"``
    (CoTracker when a checkpoint is given and the package imports, else LK).

    ``checkpoint`` and ``device`` are only used by CoTracker.
    """
    key = name.strip().lower()
    if key == "auto":
        if checkpoint:
            try:
                return CoTrackerTracker(checkpoint, device=device)
            except TrackerUnavailable as e:
                logger.warning("tracker auto: CoTracker unavailable (%s); using Lucas-Kanade", e)
        return LucasKanadeTracker()
    if key in ("lk", "lucas-kanade", "lucas_kanade"):
        return LucasKanadeTracker()
    if key in ("cotracker", "co-tracker"):
        return CoTrackerTracker(checkpoint, device=device)
    raise ValueError(f"unknown tracker {name!r}; expected 'lk', 'cotracker' or 'auto'")

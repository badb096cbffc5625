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
``CoTrackerTracker`` (``name = "cotracker3_offline"`` or ``"cotracker2"``)
    The tracker used by the official MotionMatcher / DMT evaluation scripts (v2) and by
    MTBench (v3). Optional: needs the ``cotracker`` package and a local checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .unavailable import MetricUnavailable

logger = logging.getLogger(__name__)

__all__ = [
    "TrackerUnavailable",
    "Tracker",
    "grid_queries",
    "LucasKanadeTracker",
    "CoTrackerTracker",
    "make_tracker",
    "cotracker_checkpoint_kind",
    "load_cotracker_state_dict",
    "COTRACKER_VERSIONS",
]


class TrackerUnavailable(MetricUnavailable):
    """The requested tracker cannot be used (package or checkpoint missing)."""


class Tracker(Protocol):
    """Interface shared by all trackers."""

    name: str

    def track(self, frames: np.ndarray, grid_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """Track a ``grid_size**2`` grid from frame 0; return ``(tracks, visible)``."""
        ...

    def track_points(self, frames: np.ndarray, queries: np.ndarray,
                     support_grid: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Track ``(N, 2)`` pixel queries from frame 0 (MTBench's masked grid; ``support_grid``:
        CoTracker's 6x6 support points tracked alongside, as for a masked grid)."""
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
    weights_sha256 = "none"  # weight-free

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

    def track_points(self, frames: np.ndarray, queries: np.ndarray,
                     support_grid: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Track arbitrary ``(N, 2)`` ``(x, y)`` query points given on frame 0.

        ``support_grid`` is accepted for the interface of :meth:`CoTrackerTracker.track_points`
        and changes nothing: LK tracks every point on its own.
        """
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


#: CoTracker checkpoints the offline grid tracker can run, by kind (see :func:`cotracker_checkpoint_kind`)
COTRACKER_VERSIONS = ("3_offline", "2")
COTRACKER_INSTALL = "pip install git+https://github.com/facebookresearch/co-tracker"


def load_cotracker_state_dict(path: str | Path) -> dict:
    """The tensors of a CoTracker ``.pth`` checkpoint, loaded safely (``weights_only=True``;
    a ``{"model": state_dict}`` wrapper is unwrapped).

    Raises:
        TrackerUnavailable: the file is missing or does not hold a plain state dict.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise TrackerUnavailable(
            f"CoTracker checkpoint not found: {str(path)!r} (metrics.cotracker_checkpoint). Download "
            "scaled_offline.pth (CoTracker3, https://huggingface.co/facebook/cotracker3) or cotracker2.pth "
            "(https://huggingface.co/facebook/cotracker) and set metrics.cotracker_checkpoint to its local "
            "path, or use the weight-free tracker 'lk'."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a weights-only pickle, truncated file, ...
        raise TrackerUnavailable(
            f"{str(path)!r} (metrics.cotracker_checkpoint) cannot be read as a CoTracker state dict with "
            f"torch.load(weights_only=True): {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise TrackerUnavailable(f"{str(path)!r} (metrics.cotracker_checkpoint) does not hold a state dict of tensors")
    return state


def cotracker_checkpoint_kind(state_dict: dict, path: str | Path = "<state dict>") -> tuple[str, int]:
    """``(version, window_len)`` of a CoTracker state dict, from its keys and buffer shapes.

    * CoTracker3 (``CoTrackerThreeOffline`` / ``...Online``) has the correlation MLP
      ``corr_mlp.*``; its ``time_emb`` buffer ``(1, window_len, 1110)`` tells the offline model
      (window 60, ``scaled_offline.pth``) from the online one (window 16, ``scaled_online.pth``).
    * CoTracker2 has ``track_feat_updater.*`` / ``vis_predictor.*`` and window 8
      (``cotracker2.pth``) or 16 (``cotracker2v1.pth``).

    Raises:
        TrackerUnavailable: naming ``path``, for the online CoTracker3 model (this wrapper runs
            the offline predictor over the whole clip) and for anything else.
    """
    keys = set(state_dict)
    emb = state_dict.get("time_emb")
    window = int(emb.shape[1]) if emb is not None and len(emb.shape) == 3 else None
    if any(k.startswith("corr_mlp.") for k in keys) and window is not None:
        if window == 16:
            raise TrackerUnavailable(
                f"{str(path)!r} is the online CoTracker3 checkpoint (time window 16); the metrics use the offline "
                "predictor: download scaled_offline.pth (https://huggingface.co/facebook/cotracker3) instead"
            )
        return "3_offline", window
    if any(k.startswith("track_feat_updater.") for k in keys) and window is not None:
        return "2", window
    sample = ", ".join(sorted(keys)[:5])
    raise TrackerUnavailable(
        f"{str(path)!r} (metrics.cotracker_checkpoint) is not a CoTracker3 offline or CoTracker2 checkpoint: "
        f"no corr_mlp.* (v3) or track_feat_updater.* (v2) keys with a time_emb buffer "
        f"({len(keys)} keys, e.g. {sample})"
    )


class CoTrackerTracker:
    """CoTracker grid tracking (the tracker of the official evaluation scripts).

    Optional dependency, not on PyPI. Install it from its repository::

        pip install git+https://github.com/facebookresearch/co-tracker

    and download a checkpoint to a local path set as ``metrics.cotracker_checkpoint``:
    CoTracker3 offline ``scaled_offline.pth`` (the current recommendation,
    https://huggingface.co/facebook/cotracker3) or CoTracker2 ``cotracker2.pth`` (the one the
    MotionMatcher / DMT scripts used, https://huggingface.co/facebook/cotracker). The version
    is read from the state dict (:func:`cotracker_checkpoint_kind`) unless ``version`` is
    given (``metrics.cotracker_version``), and must then agree with it. The state dict is
    loaded with ``torch.load(weights_only=True)`` (never unpickled) into
    ``cotracker.predictor.CoTrackerPredictor(checkpoint=None, v2=..., window_len=...)``, run
    as ``model(video, grid_size=grid_size)`` on a float ``(1, T, 3, H, W)`` video in
    ``[0, 255]``. ``name`` is ``cotracker3_offline`` or ``cotracker2``; ``weights_sha256`` the
    checkpoint's short SHA-256.

    Raises:
        TrackerUnavailable: the checkpoint is not given / not a file / not a supported
            CoTracker state dict (the message names the file), the version disagrees with
            ``version``, or the package is not importable.
    """

    def __init__(self, checkpoint_path: str | Path | None, device: str = "cpu", version: str = "auto") -> None:
        from .provenance import file_sha256

        if checkpoint_path is None or str(checkpoint_path).strip() == "":
            raise TrackerUnavailable(
                "tracker cotracker needs metrics.cotracker_checkpoint: download scaled_offline.pth "
                "(https://huggingface.co/facebook/cotracker3) and set it to the local path, or use the "
                "weight-free tracker 'lk'."
            )
        if version not in ("auto", *COTRACKER_VERSIONS):
            raise ValueError(f"metrics.cotracker_version must be auto or one of {COTRACKER_VERSIONS}, got {version!r}")
        state = load_cotracker_state_dict(checkpoint_path)
        found, window = cotracker_checkpoint_kind(state, checkpoint_path)
        if version != "auto" and version != found:
            raise TrackerUnavailable(
                f"{str(checkpoint_path)!r} is a CoTracker{found.replace('_', ' ')} checkpoint but "
                f"metrics.cotracker_version is {version!r}"
            )
        try:
            from cotracker.predictor import CoTrackerPredictor
        except ImportError as exc:
            raise TrackerUnavailable(
                "CoTracker is not installed (the 'cotracker' package is not on PyPI). Install it with "
                f"`{COTRACKER_INSTALL}`, or use the weight-free tracker 'lk'."
            ) from exc
        import torch

        predictor = CoTrackerPredictor(checkpoint=None, offline=True, v2=found == "2", window_len=window)
        try:
            predictor.model.load_state_dict(state)
        except RuntimeError as exc:
            raise TrackerUnavailable(
                f"{str(checkpoint_path)!r} does not fit the installed CoTracker{found} model: {exc}"
            ) from exc
        self._torch = torch
        self.device = device
        self.version = found
        self.window_len = window
        self.name = "cotracker3_offline" if found == "3_offline" else "cotracker2"
        self.checkpoint_path = str(checkpoint_path)
        self.weights_sha256 = file_sha256(checkpoint_path)
        self.model = predictor.to(device).eval()
        logger.info("CoTracker%s (window %d) from %s (sha256 %s) on %s", found, window, checkpoint_path,
                    self.weights_sha256, device)

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

    def track_points(self, frames: np.ndarray, queries: np.ndarray,
                     support_grid: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Track ``(N, 2)`` ``(x, y)`` pixel queries given on frame 0 (MTBench's masked grid,
        :func:`motionmatcher.metrics.mtbench.track_mtbench`).

        ``support_grid=True`` tracks them jointly with CoTracker's 6x6 support grid (dropped from
        the output), as the predictor does for a ``segm_mask`` grid; ``False`` without it, as for
        a plain ``grid_size`` grid. Returns ``(tracks (N, T, 2), visible (N, T))``.
        """
        frames = _check_frames(frames)
        torch = self._torch
        q = np.asarray(queries, dtype=np.float32).reshape(-1, 2)
        q = torch.from_numpy(np.concatenate([np.zeros((len(q), 1), np.float32), q], axis=1))[None]
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float().to(self.device)
        with torch.inference_mode():
            tracks, visible = _cotracker_track_points(self.model, video, q.to(self.device),
                                                      bool(support_grid))
        tracks_np = tracks[0].permute(1, 0, 2).float().cpu().numpy().astype(np.float32)  # (N, T, 2)
        visible_np = visible[0].permute(1, 0).cpu().numpy()
        if visible_np.dtype != bool:
            visible_np = visible_np > 0.5
        return tracks_np, visible_np


def _cotracker_track_points(predictor, video, queries, support_grid: bool):
    """``(tracks (1, T, N, 2), visible (1, T, N))`` of ``(1, N, 3)`` ``(t, x, y)`` queries.

    ``predictor(video, queries=...)`` always adds CoTracker's support grid (``grid_size == 0``);
    without it the predictor's own sparse-track step is called, as its ``grid_size`` path does
    when no ``segm_mask`` is given.
    """
    if support_grid:
        return predictor(video, queries=queries)
    return predictor._compute_sparse_tracks(video, queries, add_support_grid=False)


def make_tracker(name: str, checkpoint: str | None = None, device: str = "cpu", version: str = "auto") -> Tracker:
    """Build a tracker by name: ``"lk"`` (default, weight-free), ``"cotracker"``, or ``"auto"``
    (CoTracker when a checkpoint is given and both the checkpoint and the package work, else
    LK; the choice and the reason are logged, and the tracker's ``name`` goes into every row).

    ``checkpoint``, ``device`` and ``version`` (``auto`` | ``3_offline`` | ``2``) are only used
    by CoTracker.
    """
    key = name.strip().lower()
    if key == "auto":
        if checkpoint:
            try:
                tracker = CoTrackerTracker(checkpoint, device=device, version=version)
            except TrackerUnavailable as e:
                logger.warning("tracker auto: CoTracker unavailable (%s); using Lucas-Kanade (tracker 'lk')", e)
            else:
                logger.info("tracker auto: using %s from %s", tracker.name, checkpoint)
                return tracker
        else:
            logger.info("tracker auto: no metrics.cotracker_checkpoint; using Lucas-Kanade (tracker 'lk')")
        return LucasKanadeTracker()
    if key in ("lk", "lucas-kanade", "lucas_kanade"):
        return LucasKanadeTracker()
    if key in ("cotracker", "co-tracker"):
        return CoTrackerTracker(checkpoint, device=device, version=version)
    raise ValueError(f"unknown tracker {name!r}; expected 'lk', 'cotracker' or 'auto'")

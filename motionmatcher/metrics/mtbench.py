"""MTBench (DeT, Shi et al., ICCV 2025), in one module: its motion-fidelity score as its
``evaluation.py`` computes it, and importing an MTBench folder as a manifest of this pipeline
(with what its evaluation tracks for each video).

The score
---------

What is tracked (``evaluation.py: motion_fidelity / get_tracklets``): both the reference and the
generated video are tracked with CoTracker3 offline, ``model(video, grid_size=50,
segm_mask=box)``, where ``box`` is the bounding box of the reference's first-frame mask
(``masks/<video>/00000.png``; rows ``[r_min, r_max)``, columns ``[c_min, c_max)``: the last row
and column of the mask are outside, as in the official slicing). CoTracker places a
``50 x 50`` grid in its model resolution ``(384, 512)`` with a margin ``m = 512 / 64``
(:func:`grid_points`), keeps the points where the box (nearest-resized to ``384 x 512``) is set,
and tracks them jointly with its ``6 x 6`` support grid (dropped from the output). Without a mask
file the whole grid is tracked and no support grid is added. Visibility is ignored: every point
is used at every frame, tracked through occlusion.

Tracks are in **normalised** coordinates ``(x / W, y / H)``. A track ``p(0..T-1)`` becomes the
sequence of unit vectors of its initial position and its displacements::

    u(0) = p(0) / ||p(0)||,   u(t) = v(t) / ||v(t)||,  v(t) = p(t) - p(t-1),  t = 1..T-1

and the cosine similarity of a generated track ``g`` and a reference track ``s`` is
``cos(g, s) = 1/T sum_t <u_g(t), u_s(t)>``. The score of a generated video is::

    F_cos(S, G) = 1/|G| sum_{g in G} max_{s in S} cos(g, s)

A zero vector (a point that does not move between two frames) is ``0 / 0 = NaN`` in the official
code and makes the whole score NaN; so it does here (:func:`count_zero_steps` says why).

With the optional "Fréchet" term (MTBench's ``--add_frechet_score``), ``K`` tracks are drawn at
random, and with ``d(g, s)`` the mean Euclidean distance over all ``T x T`` pairs of their points
(what MTBench calls the Fréchet distance; it is not the discrete Fréchet distance) and
``sim = 1 / (1 + d)``::

    F = 0.5 * F_cos(S, G) + 0.5 * 1/K sum_{g in G_K} max_{s in S_K} sim(g, s)

Departures: the ``K`` tracks are drawn with a seeded generator (MTBench: the global torch RNG),
with the same indices for both sets when they have the same number of tracks (as MTBench,
which assumes it) and independently otherwise. When the frame counts differ, the longer set is
subsampled at ``linspace(0, T_long - 1, T_short)`` truncated to integers, as in MTBench.
Computed in float64 (MTBench: float32). See ``docs/metrics_mtbench.md``.

The folder (importer)
---------------------

MTBench's layout, one folder per reference video ``<split>/<video>/``::

    videos/<video>.mp4              the reference clip (or the path in videos.txt)
    masks/<video>/00000.png         first-frame mask: its box is where the evaluation tracks
    trajectories/<video>.pth        DeT's training targets (not used by its evaluation)
    prompts.txt                     the caption of the reference video (first line)
    eval_prompts.txt                target prompts, one per line

The benchmark comes in three splits, ``MTBench_{easy,medium,hard}/<video>/``; the official
``evaluation.py`` treats every child of its ``--benchmark_root`` as a video folder, so one root
is one split. :func:`import_mtbench` takes either one split or a folder holding the splits (a
child named ``easy``, ``medium`` or ``hard``, alone or after ``_`` / ``-``), and writes one
manifest row per (video, eval prompt): ``video_id`` = the folder name, ``caption`` = the first
line of ``prompts.txt``, ``prompt`` = an eval prompt (whitespace stripped, empty lines skipped),
``difficulty`` = the split (empty when a lone split's name does not say it).
:func:`mtbench_setup` gives the ``mtbench_fidelity`` metric what to track for a video
(``metrics.mtbench``; ``docs/metrics_mtbench.md``).

CLI: ``python -m motionmatcher.metrics.mtbench MTBENCH_ROOT manifest.csv``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["mtbench_motion_fidelity", "load_mtbench_trajectories", "normalise_tracks", "align_frames",
           "mtbench_variant", "count_zero_steps", "read_first_frame_mask", "box_mask", "crop_mask",
           "grid_points", "pixel_queries", "track_mtbench", "MTBenchSetup", "check_mtbench_config",
           "COTRACKER_RESOLUTION", "SUPPORT_GRID_SIZE", "MTBENCH_REFERENCES", "reference_tracks_label"]

#: CoTracker3's model resolution ``(H, W)`` (``CoTrackerThreeOffline.model_resolution``): the grid lives there
COTRACKER_RESOLUTION = (384, 512)
#: ``CoTrackerPredictor.support_grid_size``: tracked with a masked grid, dropped from the output
SUPPORT_GRID_SIZE = 6
#: ``clip``: the reference clip as the sample sees it (same frames, same crop);
#: ``mtbench``: the original full clip, as MTBench's evaluation.py
MTBENCH_REFERENCES = ("clip", "mtbench")


def normalise_tracks(tracks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel tracks ``(N, T, 2)`` -> ``(x / W, y / H)`` (MTBench's coordinates)."""
    t = np.asarray(tracks, dtype=np.float64)
    return t / np.array([float(width), float(height)])


def load_mtbench_trajectories(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """DeT's stored trajectories (``trajectories/<video>.pth``): its **training targets**, not
    the evaluation reference (``evaluation.py`` never opens them; it re-tracks the video).
    ``generate_trajectories.py`` writes them: 100 random points inside the first-frame mask,
    tracked with the *online* CoTracker3 and queried at frame 0, as a tensor ``(T, N, 3)`` of
    ``(x / W, y / H, visibility)``. Read with ``torch.load(weights_only=True)``. Returns
    ``(tracks (N, T, 2), visible (N, T))``.

    Raises:
        ValueError: naming the file, when it does not hold such a tensor.
    """
    import torch

    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot be read with torch.load(weights_only=True): {exc}") from exc
    if isinstance(data, torch.Tensor) and data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if not isinstance(data, torch.Tensor) or data.ndim != 3 or data.shape[-1] != 3 or data.shape[0] < 2:
        shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"{path}: expected a (T, N, 3) tensor of (x/W, y/H, visibility), got {shape}")
    arr = data.double().numpy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: trajectories contain non-finite values")
    return np.transpose(arr[..., :2], (1, 0, 2)), np.transpose(arr[..., 2] > 0.5, (1, 0))


# ---- what is tracked: the box of the first-frame mask and CoTracker's grid -------------------


def read_first_frame_mask(path: str | Path) -> np.ndarray:
    """A first-frame mask PNG as a bool ``(H, W)`` array: set where the pixel is not 0 (the
    official code takes the box of ``nonzero()`` of the grey values / 255).

    Raises:
        ValueError: naming the file, when it is not a single-channel image or has no set pixel.
    """
    from PIL import Image

    path = Path(path)
    try:
        arr = np.array(Image.open(path))
    except Exception as exc:
        raise ValueError(f"{path}: cannot be read as an image: {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel mask (H, W) as MTBench's "
                         f"masks/<video>/00000.png, got shape {arr.shape} (the official code unpacks "
                         "`height, width = mask.shape`)")
    if not arr.any():
        raise ValueError(f"{path}: the mask is empty (no pixel set); MTBench takes the box of its set pixels")
    return arr != 0


def box_mask(mask: np.ndarray) -> np.ndarray:
    """float32 ``(H, W)``: 1 inside the bounding box of ``mask``'s set pixels, as the official
    ``box_mask[minx:maxx, miny:maxy] = 1``: rows ``r_min .. r_max - 1``, columns
    ``c_min .. c_max - 1`` (the last set row and column are outside)."""
    mask = np.asarray(mask)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("box_mask: the mask has no set pixel")
    out = np.zeros(mask.shape, dtype=np.float32)
    out[rows.min():rows.max(), cols.min():cols.max()] = 1.0
    return out


def crop_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A mask of the original frame in the geometry of
    :func:`motionmatcher.files.video.resize_center_crop` (scale to cover ``width x height``, centre
    crop), nearest-neighbour: where the object is in the clip the sample sees."""
    import cv2

    mask = np.asarray(mask).astype(np.uint8)
    h, w = mask.shape
    scale = max(width / w, height / h)
    new_w, new_h = max(width, int(round(w * scale))), max(height, int(round(h * scale)))
    x0, y0 = (new_w - width) // 2, (new_h - height) // 2
    scaled = (mask if (new_w, new_h) == (w, h)
              else cv2.resize(mask, (new_w, new_h), interpolation=cv2.INTER_NEAREST))
    return scaled[y0:y0 + height, x0:x0 + width] != 0


def grid_points(grid_size: int = 50, box: np.ndarray | None = None,
                resolution: tuple[int, int] = COTRACKER_RESOLUTION) -> np.ndarray:
    """CoTracker's query grid in its model resolution ``(H_m, W_m)`` (``get_points_on_a_grid``):
    with the margin ``m = W_m / 64``::

        x_j = m + (W_m - 2m) j / (g - 1),   y_i = m + (H_m - 2m) i / (g - 1)

    row-major (``y`` outer), float32 (``torch.linspace``). With ``box`` (any size), the points
    where ``box`` nearest-resized to ``(H_m, W_m)`` is set at ``(round(y), round(x))`` are kept
    (``CoTrackerPredictor._compute_sparse_tracks``). Returns ``(N, 2)`` ``(x, y)``.
    """
    import torch
    import torch.nn.functional as F

    g = int(grid_size)
    if g < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    h_m, w_m = resolution
    if g == 1:
        pts = torch.tensor([[w_m / 2, h_m / 2]], dtype=torch.float32)
    else:
        margin = w_m / 64
        ys = torch.linspace(margin, h_m - margin, g)
        xs = torch.linspace(margin, w_m - margin, g)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pts = torch.stack([gx, gy], dim=-1).reshape(-1, 2)
    if box is not None:
        b = torch.from_numpy(np.asarray(box, dtype=np.float32))[None, None]
        b = F.interpolate(b, (h_m, w_m), mode="nearest")[0, 0]
        keep = b[pts[:, 1].round().long(), pts[:, 0].round().long()].bool()
        pts = pts[keep]
    return pts.numpy()


def pixel_queries(points: np.ndarray, height: int, width: int,
                  resolution: tuple[int, int] = COTRACKER_RESOLUTION) -> np.ndarray:
    """Grid points of the model resolution -> pixel ``(x, y)`` of an ``H x W`` video, as
    CoTracker maps its tracks back: ``x (W - 1) / (W_m - 1)``, ``y (H - 1) / (H_m - 1)``."""
    h_m, w_m = resolution
    scale = np.array([(width - 1) / (w_m - 1), (height - 1) / (h_m - 1)], dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) * scale).astype(np.float32)


@dataclass(frozen=True)
class MTBenchSetup:
    """What ``mtbench_fidelity`` tracks for one reference video.

    Attributes:
        reference: ``clip`` or ``mtbench`` (:data:`MTBENCH_REFERENCES`).
        points: ``(N, 2)`` grid points in CoTracker's model resolution (:func:`grid_points`).
        support_grid: whether CoTracker tracks them with its 6x6 support grid (with a mask).
        grid_size: points per side of the grid before the box is applied.
        mask_path: the first-frame mask the box comes from, or ``None`` (whole grid).
        frames: the original full clip for ``reference == "mtbench"``, else ``None`` (the
            preprocessed reference clip is tracked).
    """

    reference: str
    points: np.ndarray
    support_grid: bool
    grid_size: int
    mask_path: str | None = None
    frames: np.ndarray | None = None


def reference_tracks_label(setup: MTBenchSetup, tracker_name: str) -> str:
    """The ``mtbench_reference_tracks`` definition column, e.g.
    ``mtbench clip, cotracker3_offline, 50x50 grid in the first-frame box (1234 points) + 6x6 support``."""
    where = "original full clip" if setup.reference == "mtbench" else "clip as sampled"
    grid = f"{setup.grid_size}x{setup.grid_size} grid"
    grid += (f" in the first-frame box ({len(setup.points)} points)" if setup.mask_path
             else " on the whole frame (no mask)")
    if setup.support_grid:
        grid += f" + {SUPPORT_GRID_SIZE}x{SUPPORT_GRID_SIZE} support"
    return f"{where}, {tracker_name}, {grid}"


def track_mtbench(tracker, frames: np.ndarray, setup: MTBenchSetup) -> np.ndarray:
    """Normalised ``(N, T, 2)`` tracks of ``setup.points`` on ``frames`` (uint8 ``(T, H, W, 3)``),
    from frame 0, with ``tracker.track_points(frames, queries, support_grid=...)``; visibility
    is not used (MTBench: every point at every frame)."""
    _, height, width, _ = frames.shape
    queries = pixel_queries(setup.points, height, width)
    tracks, _ = tracker.track_points(frames, queries, support_grid=setup.support_grid)
    return normalise_tracks(tracks, height, width)


def check_mtbench_config(metrics_cfg: Mapping[str, Any]) -> None:
    """Fail before any job runs on an ``metrics.mtbench`` config that cannot give MTBench's
    number: ``reference: mtbench`` needs ``tracker: cotracker`` with a CoTracker3 offline
    checkpoint (not ``lk``, not ``auto``, which may fall back to it) and ``root`` (the masks).

    Raises:
        ValueError: naming the key to change.
    """
    mt = dict(metrics_cfg.get("mtbench") or {})
    if not mt.get("enabled"):
        return
    reference = str(mt.get("reference", "clip"))
    if reference not in MTBENCH_REFERENCES:
        raise ValueError(f"metrics.mtbench.reference must be one of {MTBENCH_REFERENCES}, got {reference!r}")
    root = mt.get("root")
    if root and not Path(str(root)).expanduser().is_dir():
        raise ValueError(f"metrics.mtbench.root {str(root)!r} is not a directory")
    if reference != "mtbench":
        return
    if not root:
        raise ValueError("metrics.mtbench.reference: mtbench needs metrics.mtbench.root (the MTBench folder "
                         "with masks/<video>/00000.png): MTBench tracks the box of the first-frame mask")
    tracker = str(metrics_cfg.get("tracker", "lk")).strip().lower()
    if tracker not in ("cotracker", "co-tracker"):
        raise ValueError("metrics.mtbench.reference: mtbench needs metrics.tracker: cotracker (CoTracker3 "
                         f"offline, MTBench's tracker), got {tracker!r}; use reference: clip for other trackers")
    if str(metrics_cfg.get("cotracker_version", "auto")) == "2":
        raise ValueError("metrics.mtbench.reference: mtbench needs CoTracker3 offline; "
                         "metrics.cotracker_version is 2")
    from .tracking import TrackerUnavailable, cotracker_checkpoint_kind, load_cotracker_state_dict

    checkpoint = metrics_cfg.get("cotracker_checkpoint")
    if not checkpoint:
        raise ValueError("metrics.mtbench.reference: mtbench needs metrics.cotracker_checkpoint "
                         "(scaled_offline.pth, https://huggingface.co/facebook/cotracker3)")
    try:
        kind, _ = cotracker_checkpoint_kind(load_cotracker_state_dict(checkpoint), checkpoint)
    except TrackerUnavailable as exc:
        raise ValueError(f"metrics.mtbench.reference: mtbench: {exc}") from exc
    if kind != "3_offline":
        raise ValueError(f"metrics.mtbench.reference: mtbench needs CoTracker3 offline; {checkpoint!r} is "
                         f"CoTracker{kind}")


# ---- the score ------------------------------------------------------------------------------


def align_frames(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the set with more frames to the other's count (MTBench's integer linspace)."""
    ta, tb = a.shape[1], b.shape[1]
    if ta > tb:
        a = a[:, np.linspace(0, ta - 1, tb).astype(np.int32)]
    elif tb > ta:
        b = b[:, np.linspace(0, tb - 1, ta).astype(np.int32)]
    return a, b


def _vectors(tracks: np.ndarray) -> np.ndarray:
    return np.concatenate([tracks[:, :1], np.diff(tracks, axis=1)], axis=1)


def _unit_sequence(tracks: np.ndarray) -> np.ndarray:
    seq = _vectors(tracks)
    with np.errstate(invalid="ignore", divide="ignore"):
        return seq / np.linalg.norm(seq, axis=-1, keepdims=True)  # 0 / 0 = NaN, as torch in MTBench


def count_zero_steps(tracks: np.ndarray) -> int:
    """Zero vectors (initial position at the origin, or no motion between two frames) of
    ``(N, T, 2)`` tracks: each makes MTBench's score NaN."""
    return int((np.linalg.norm(_vectors(np.asarray(tracks, dtype=np.float64)), axis=-1) == 0).sum())


def _mean_point_distance(g: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``(K, L)``: mean over all ``T x T`` point pairs of ``||g_k(t) - s_l(t')||``."""
    diff = g[:, None, :, None, :] - s[None, :, None, :, :]  # (K, L, T, T, 2)
    return np.linalg.norm(diff, axis=-1).mean(axis=(2, 3))


def mtbench_variant(frechet: bool, frechet_samples: int = 50, reference: str | None = None) -> str:
    """The name recorded with the score: ``cosine`` or ``cosine+frechet<K>``, prefixed by the
    reference (``clip:cosine``, ``mtbench:cosine+frechet50``) when given."""
    score = f"cosine+frechet{int(frechet_samples)}" if frechet else "cosine"
    return score if reference is None else f"{reference}:{score}"


def mtbench_motion_fidelity(
    reference: np.ndarray,
    generated: np.ndarray,
    frechet: bool = False,
    frechet_samples: int = 50,
    seed: int = 0,
) -> float:
    """MTBench motion fidelity (higher is better, at most 1) of normalised tracks; NaN when a
    track has a zero vector (as the official code).

    Args:
        reference: ``(N, T_s, 2)`` reference tracks in normalised coordinates.
        generated: ``(M, T_g, 2)`` generated-video tracks in normalised coordinates.
        frechet: add MTBench's "Fréchet" term on ``frechet_samples`` random tracks.
        seed: seed of the track draw of the Fréchet term.
    """
    ref = np.asarray(reference, dtype=np.float64)
    gen = np.asarray(generated, dtype=np.float64)
    for name, arr in (("reference", ref), ("generated", gen)):
        if arr.ndim != 3 or arr.shape[-1] != 2 or arr.shape[0] == 0 or arr.shape[1] < 2:
            raise ValueError(f"{name} tracks must be (N, T >= 2, 2), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} tracks contain non-finite positions")
    gen, ref = align_frames(gen, ref)
    ug, us = _unit_sequence(gen), _unit_sequence(ref)
    n_t = ug.shape[1]
    cos = ug.reshape(len(ug), -1) @ us.reshape(len(us), -1).T / n_t  # (M, N)
    score = cos.max(axis=1).mean()  # np.max propagates NaN, as torch.max
    if not frechet:
        return float(score)
    rng = np.random.default_rng(seed)
    k = int(frechet_samples)
    ids_g = rng.integers(0, len(gen), size=k)
    ids_s = ids_g if len(gen) == len(ref) else rng.integers(0, len(ref), size=k)
    sim = 1.0 / (1.0 + _mean_point_distance(gen[ids_g], ref[ids_s]))
    return float(0.5 * score + 0.5 * sim.max(axis=1).mean())


# ---- the MTBench folder: importer and what its evaluation tracks ----------------------------

__all__ += ["MTBenchError", "import_mtbench", "mtbench_rows", "stored_trajectories", "split_difficulty",
           "video_folder", "first_frame_mask", "mtbench_setup", "DIFFICULTIES"]

_VIDEO_SUFFIXES = (".mp4", ".gif", ".avi", ".mov", ".webm")
#: MTBench's splits, in order
DIFFICULTIES = ("easy", "medium", "hard")
_SPLIT = re.compile(r"(?:^|.*[_-])(easy|medium|hard)$", re.IGNORECASE)


class MTBenchError(ValueError):
    """The folder is not in MTBench's layout (the message names the file)."""


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _video_file(folder: Path) -> Path:
    listed = folder / "videos.txt"
    if listed.is_file():
        names = _lines(listed)
        if names:
            path = folder / names[0]
            if not path.is_file():
                raise MTBenchError(f"{listed}: lists {names[0]!r}, which does not exist")
            return path
    own = folder / "videos" / f"{folder.name}.mp4"
    if own.is_file():
        return own
    found = sorted(p for p in (folder / "videos").glob("*") if p.suffix.lower() in _VIDEO_SUFFIXES)
    if len(found) != 1:
        raise MTBenchError(f"{folder / 'videos'}: expected {folder.name}.mp4 or exactly one video, found "
                           f"{[p.name for p in found]}")
    return found[0]


def split_difficulty(name: str) -> str | None:
    """``easy`` / ``medium`` / ``hard`` when a folder name is one (``MTBench_hard``, ``hard``),
    else ``None``."""
    m = _SPLIT.fullmatch(name)
    return m.group(1).lower() if m else None


def _is_video_folder(folder: Path) -> bool:
    return (folder / "videos").is_dir() or (folder / "videos.txt").is_file()


def _children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _splits(root: Path) -> list[tuple[str | None, Path]]:
    """``[(difficulty, split folder)]``: the root's split children, or the root itself as one split."""
    children = _children(root)
    splits = [(split_difficulty(c.name), c) for c in children
              if not _is_video_folder(c) and split_difficulty(c.name)
              and any(map(_is_video_folder, _children(c)))]
    if not splits:
        return [(split_difficulty(root.name), root)]
    loose = [c.name for c in children if _is_video_folder(c)]
    if loose:
        names = ", ".join(p.name for _, p in splits)
        raise MTBenchError(f"MTBench root {str(root)!r} holds both splits ({names}) and video folders "
                           f"({', '.join(loose[:5])}); give one split or the folder of the splits")
    order = {d: i for i, d in enumerate(DIFFICULTIES)}
    return sorted(splits, key=lambda s: (order[s[0]], s[1].name))


def _split_rows(split: Path, difficulty: str | None) -> list[dict]:
    rows = []
    for folder in _children(split):
        if not _is_video_folder(folder):
            log.info("MTBench: %s has no videos/, skipped", folder)
            continue
        if not re.fullmatch(r"[A-Za-z0-9_-]+", folder.name):
            raise MTBenchError(f"{folder}: the folder name is the video_id and may only contain letters, "
                               "digits, '_' and '-'")
        for name in ("prompts.txt", "eval_prompts.txt"):
            if not (folder / name).is_file():
                raise MTBenchError(f"{folder / name}: missing (MTBench layout)")
        captions = _lines(folder / "prompts.txt")
        prompts = _lines(folder / "eval_prompts.txt")
        if not captions:
            raise MTBenchError(f"{folder / 'prompts.txt'}: empty; its first line is the caption")
        if not prompts:
            raise MTBenchError(f"{folder / 'eval_prompts.txt'}: no eval prompt")
        video = _video_file(folder)
        rows += [{"video_id": folder.name, "video_path": str(video), "caption": captions[0], "prompt": p,
                  "difficulty": difficulty or ""} for p in prompts]
    return rows


def mtbench_rows(root: str | Path) -> list[dict]:
    """Manifest rows (``video_id, video_path, caption, prompt, difficulty``) of every video folder
    of ``root``: one split, or a folder of splits (``easy``/``medium``/``hard``, e.g.
    ``MTBench_easy``)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MTBenchError(f"MTBench root {str(root)!r} is not a directory")
    rows, seen = [], {}
    for difficulty, split in _splits(root):
        for r in _split_rows(split, difficulty):
            first = seen.setdefault(r["video_id"], split)
            if first != split:
                raise MTBenchError(f"video_id {r['video_id']!r} is in two splits: "
                                   f"{first / r['video_id']} and {split / r['video_id']}")
            rows.append(r)
    if not rows:
        raise MTBenchError(f"MTBench root {str(root)!r} holds no video folder (<video>/videos/<video>.mp4, "
                           "or easy/medium/hard splits of them)")
    return rows


def import_mtbench(root: str | Path, manifest: str | Path) -> list[dict]:
    """Write the manifest CSV of an MTBench folder; returns its rows."""
    rows = mtbench_rows(root)
    manifest = Path(manifest)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["video_id", "video_path", "caption", "prompt", "difficulty"])
        writer.writeheader()
        writer.writerows(rows)
    log.info("MTBench: %d rows of %d videos -> %s", len(rows), len({r["video_id"] for r in rows}), manifest)
    return rows


def video_folder(root: str | Path | None, video_id: str) -> Path | None:
    """The folder of ``video_id`` under an MTBench root (one split, or the folder of the splits),
    or ``None`` when ``root`` is not set or has no such folder."""
    if root is None or str(root).strip() == "":
        return None
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    for _, split in _splits(root):
        if (split / video_id).is_dir():
            return split / video_id
    return None


def stored_trajectories(root: str | Path | None, video_id: str) -> Path | None:
    """DeT's training targets ``<folder>/trajectories/<video_id>.pth`` (or the path in
    ``trajectories.txt``) if they exist, else ``None``. Not the evaluation reference: MTBench's
    ``evaluation.py`` re-tracks the video (:func:`mtbench_setup`)."""
    folder = video_folder(root, video_id)
    if folder is None:
        return None
    listed = folder / "trajectories.txt"
    if listed.is_file() and _lines(listed):
        path = folder / _lines(listed)[0]
    else:
        path = folder / "trajectories" / f"{video_id}.pth"
    return path if path.is_file() else None


def first_frame_mask(root: str | Path | None, video_id: str) -> Path | None:
    """``<folder>/masks/<video_id>/00000.png`` (the path ``evaluation.py`` opens) if it exists."""
    folder = video_folder(root, video_id)
    path = None if folder is None else folder / "masks" / video_id / "00000.png"
    return path if path is not None and path.is_file() else None


def mtbench_setup(cfg: Mapping[str, Any], video_id: str, video_path: str | Path,
                  size: tuple[int, int], start_frame: int = 0) -> MTBenchSetup:
    """What ``mtbench_fidelity`` tracks for one video, from the ``metrics.mtbench`` config.

    * the box of ``masks/<video>/00000.png`` under ``cfg["root"]`` (:func:`first_frame_mask`),
      for ``reference: clip`` cropped like the frames (:func:`~motionmatcher.metrics.mtbench.crop_mask`
      to ``size = (height, width)``); no mask file: the whole grid, no support grid (the
      official code's ``else`` branch), logged;
    * for ``reference: mtbench`` the original clip ``video_path``, every frame at its own size.

    Raises:
        MTBenchError: ``reference: mtbench`` without the video's mask (naming the path looked for).
    """
    reference = str(cfg.get("reference", "clip"))
    if reference not in MTBENCH_REFERENCES:
        raise MTBenchError(f"metrics.mtbench.reference must be one of {MTBENCH_REFERENCES}, "
                           f"got {reference!r}")
    grid = int(cfg.get("grid_size", 50))
    mask_path = first_frame_mask(cfg.get("root"), video_id)
    if mask_path is None:
        if reference == "mtbench":
            raise MTBenchError(f"metrics.mtbench.reference: mtbench: no first-frame mask of {video_id!r} "
                               f"(masks/{video_id}/00000.png) under metrics.mtbench.root {cfg.get('root')!r}")
        log.warning("MTBench: no first-frame mask of %s under metrics.mtbench.root %r: the whole %dx%d grid "
                    "is tracked (as evaluation.py without a mask file)", video_id, cfg.get("root"), grid, grid)
        return MTBenchSetup(reference, grid_points(grid), False, grid)
    mask = read_first_frame_mask(mask_path)
    frames = None
    if reference == "clip":
        if int(start_frame) != 0:
            log.warning("MTBench: %s starts at frame %d but MTBench's masks are of frame 0 (masks/ is "
                        "indexed by the source dataset's frames): the box is of frame 0", video_id, start_frame)
        mask = crop_mask(mask, width=int(size[1]), height=int(size[0]))
        if not mask.any():
            raise MTBenchError(f"{mask_path}: the mask lies outside the centre crop to {size[1]}x{size[0]}")
    else:
        from motionmatcher.files.video import read_mp4

        frames = read_mp4(video_path)
        if frames.shape[1:3] != mask.shape:
            log.warning("MTBench: %s is %dx%d, its mask %s is %dx%d (the box is placed in CoTracker's "
                        "resolution, as evaluation.py does)", video_path, frames.shape[2], frames.shape[1], mask_path,
                        mask.shape[1], mask.shape[0])
    points = grid_points(grid, box_mask(mask))
    if len(points) == 0:
        raise MTBenchError(f"{mask_path}: no point of the {grid}x{grid} grid falls inside the mask's box")
    log.info("MTBench %s: %d of %dx%d grid points in the box of %s (%s reference)", video_id, len(points),
             grid, grid, mask_path, reference)
    return MTBenchSetup(reference, points, True, grid, str(mask_path), frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m motionmatcher.metrics.mtbench",
                                     description="Import an MTBench folder as a manifest of this pipeline.")
    parser.add_argument("root", help="MTBench folder: one split (one sub-folder per video) or the folder "
                                     "of the easy/medium/hard splits")
    parser.add_argument("manifest", help="manifest CSV to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = import_mtbench(args.root, args.manifest)
    print(f"{len(rows)} rows -> {args.manifest}; set metrics.mtbench.enabled: true and metrics.mtbench.root: "
          f"{Path(args.root).resolve()} (the first-frame masks; docs/metrics_mtbench.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``metrics`` stage as functions: score a method's samples of one reference video.

The workflow scripts (``workflow_scripts/metrics.py`` / ``reference_metrics.py``) are thin
wrappers around :func:`load_scorers`, :func:`evaluate_samples` and
:func:`evaluate_reference`; the tests call these directly with a random-init CLIP.

Per sample (one row of a ``samples.parquet`` table):

* ``clip_t``: CLIP-T of the sample's frames against its *target* prompt;
* ``frame_consistency``: mean CLIP cosine of consecutive frames;
* ``image_reward``: mean ImageReward over frames, or null if no ImageReward is configured;
* ``motion_discrepancy``: :func:`~motionmatcher.metrics.motion_discrepancy` of the reference
  tracks vs the sample tracks (lower is better);
* ``motion_fidelity``: :func:`~motionmatcher.metrics.motion_fidelity` with source = reference,
  generated = sample (higher is better).

Both videos are tracked by the same tracker at the same resolution (the configured
``video.width x video.height``; checked, never resized here) and the reference is tracked once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from motionmatcher.metrics import make_tracker, motion_discrepancy, motion_fidelity
from motionmatcher.metrics.groundtruth import GT_COLUMNS, score_sample
from motionmatcher.runtime import config_hash

log = logging.getLogger(__name__)

__all__ = [
    "SAMPLE_ID_COLUMNS",
    "METRIC_COLUMNS",
    "load_scorers",
    "load_sample_frames",
    "evaluate_samples",
    "evaluate_reference",
    "metrics_config_hash",
]

#: the columns of a samples table that identify a sample (copied into the metrics table)
SAMPLE_ID_COLUMNS = (
    "video_id", "method", "prompt_id", "prompt", "manifest_row", "seed",
    "video_path", "frames_path", "model_identity",
)
#: the per-sample metric columns, in table order
METRIC_COLUMNS = ("clip_t", "frame_consistency", "image_reward", "motion_discrepancy", "motion_fidelity")


def load_scorers(metrics_cfg: Mapping[str, Any], device: str = "cpu", need_tracker: bool = True):
    """Build ``(clip_scorer, image_reward_or_None, tracker_or_None)`` from the ``metrics:`` config.

    CLIP comes first on purpose: without CLIP weights the job fails right here, before any
    tracking, with :class:`~motionmatcher.metrics.MetricUnavailable`'s message (it names
    ``metrics.clip.checkpoint`` and how to fill the Hugging Face cache). A configured but
    missing ImageReward / CoTracker file fails the same way; an unconfigured ImageReward
    gives ``None`` (null column).
    """
    from motionmatcher.metrics import ClipScorer, load_image_reward  # lazy: imports open_clip

    clip = dict(metrics_cfg.get("clip") or {})
    scorer = ClipScorer(
        model_name=clip.get("model", "ViT-B-32"),
        pretrained=clip.get("pretrained", "openai"),
        checkpoint=clip.get("checkpoint"),
        device=str(device),
        random_init_seed=clip.get("random_init_seed"),
        batch_size=int(clip.get("batch_size", 32)),
    )
    ir = dict(metrics_cfg.get("image_reward") or {})
    image_reward = load_image_reward(ir.get("checkpoint"), ir.get("med_config"), device=str(device))
    tracker = None
    if need_tracker:
        tracker = make_tracker(
            metrics_cfg.get("tracker", "lk"), metrics_cfg.get("cotracker_checkpoint"), device=str(device)
        )
    return scorer, image_reward, tracker


def load_sample_frames(row: Mapping[str, Any]) -> np.ndarray:
    """uint8 ``(F, H, W, 3)`` frames of a sample, from its ``frames_path`` safetensors."""
    from motionmatcher.runtime import load_tensors

    return load_tensors(row["frames_path"])["frames"].numpy()


def _check_video(frames: np.ndarray, what: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 (F, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    return frames


def _clip_fields(scorer) -> dict:
    return {
        "clip_model": str(getattr(scorer, "model_name", type(scorer).__name__)),
        "clip_weights": str(getattr(scorer, "weights", "unknown")),
    }


def evaluate_samples(
    samples: pd.DataFrame,
    reference_frames: np.ndarray,
    scorer,
    tracker,
    grid_size: int,
    image_reward=None,
    load_frames: Callable[[Mapping[str, Any]], np.ndarray] = load_sample_frames,
    expected_size: tuple[int, int] | None = None,
    ground_truth: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Score every sample of one (method, reference video); one output row per input row.

    Args:
        samples: rows of a samples table (at least :data:`SAMPLE_ID_COLUMNS`).
        reference_frames: uint8 ``(F, H, W, 3)`` preprocessed reference clip.
        scorer: a :class:`~motionmatcher.metrics.ClipScorer` (``.score(frames, prompt)``).
        tracker: a tracker (``.track(frames, grid_size)``, ``.name``), used for both videos.
        grid_size: points per side of the tracked grid.
        image_reward: an ImageReward scorer or ``None`` (-> null ``image_reward``).
        load_frames: ``row -> frames``; default reads ``row["frames_path"]``.
        expected_size: ``(height, width)`` every video must have (the configured size).
        ground_truth: the reference's toy-world ground truth
            (:func:`~motionmatcher.metrics.groundtruth.load_ground_truth`) or ``None`` (-> null
            :data:`~motionmatcher.metrics.groundtruth.GT_COLUMNS`).

    Returns:
        :data:`SAMPLE_ID_COLUMNS` + :data:`METRIC_COLUMNS` + ``tracker, grid_size, clip_model,
        clip_weights, n_frames, height, width, metrics_seconds``.

    Raises:
        ValueError: a sample's frame count or resolution differs from the reference's (or
            from ``expected_size``): the motion metrics are only comparable at one resolution.
    """
    ref = _check_video(reference_frames, "reference")
    n_frames, height, width = ref.shape[:3]
    if expected_size is not None and (height, width) != tuple(expected_size):
        raise ValueError(
            f"reference frames are {height}x{width} (HxW), the configured video size is "
            f"{expected_size[0]}x{expected_size[1]}; re-run preprocess"
        )
    missing = [c for c in SAMPLE_ID_COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"samples table lacks columns {missing}")

    t0 = time.perf_counter()
    ref_tracks, _ = tracker.track(ref, int(grid_size))
    log.info("reference %dx%dx%d tracked with %s (grid %d) in %.2f s",
             n_frames, height, width, tracker.name, grid_size, time.perf_counter() - t0)

    records = []
    for row in samples.to_dict("records"):
        t0 = time.perf_counter()
        label = f"{row['method']}/{row['video_id']} {row['prompt_id']} seed {row['seed']}"
        frames = _check_video(load_frames(row), label)
        if frames.shape != ref.shape:
            raise ValueError(
                f"{label}: sample frames {frames.shape} differ from the reference's {ref.shape} "
                "(F, H, W, 3); both must be tracked at the same resolution and length"
            )
        clip = scorer.score(frames, row["prompt"])
        ir = float(image_reward.score(frames, row["prompt"])) if image_reward is not None else None
        tracks, _ = tracker.track(frames, int(grid_size))
        rec = {k: row[k] for k in SAMPLE_ID_COLUMNS}
        rec.update(
            clip_t=float(clip["clip_t"]),
            frame_consistency=float(clip["frame_consistency"]),
            image_reward=ir,
            motion_discrepancy=motion_discrepancy(ref_tracks, tracks, height, width),
            motion_fidelity=motion_fidelity(ref_tracks, tracks),
            tracker=str(tracker.name),
            grid_size=int(grid_size),
            **_clip_fields(scorer),
            n_frames=int(n_frames),
            height=int(height),
            width=int(width),
            metrics_seconds=time.perf_counter() - t0,
        )
        rec.update(score_sample(frames, row["prompt"], ground_truth) if ground_truth is not None
                   else dict.fromkeys(GT_COLUMNS, None))
        log.info("%s: CLIP-T %.4f, FC %.4f, IR %s, MD %.5f, MF %.4f", label, rec["clip_t"],
                 rec["frame_consistency"], "-" if ir is None else f"{ir:.4f}",
                 rec["motion_discrepancy"], rec["motion_fidelity"])
        records.append(rec)
    frame = pd.DataFrame.from_records(records, columns=[
        *SAMPLE_ID_COLUMNS, *METRIC_COLUMNS, "tracker", "grid_size", "clip_model", "clip_weights",
        "n_frames", "height", "width", "metrics_seconds", *GT_COLUMNS,
    ])
    frame["image_reward"] = frame["image_reward"].astype("float64")
    frame[list(GT_COLUMNS)] = frame[list(GT_COLUMNS)].astype("float64")  # all-None -> NaN (null in parquet)
    return frame


def evaluate_reference(frames: np.ndarray, caption: str, scorer, image_reward=None) -> dict:
    """CLIP-T of a reference clip against its caption, its frame consistency and (optional)
    ImageReward: the scale of the numbers a sample can be compared with."""
    frames = _check_video(frames, "reference")
    clip = scorer.score(frames, caption)
    return {
        "clip_t": float(clip["clip_t"]),
        "frame_consistency": float(clip["frame_consistency"]),
        "image_reward": float(image_reward.score(frames, caption)) if image_reward is not None else None,
        **_clip_fields(scorer),
        "n_frames": int(frames.shape[0]),
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
    }


def metrics_config_hash(
    method_cfg: Mapping | None, metrics_cfg: Mapping, video_cfg: Mapping, seed: int | None
) -> str:
    """Provenance hash of one metrics row: method config + metrics config + video config + seed."""
    return config_hash({
        "method": method_cfg,
        "metrics": metrics_cfg,
        "video": video_cfg,
        "seed": None if seed is None else int(seed),
    })

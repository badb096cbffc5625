"""The ``metrics`` stage as functions: score a method's samples of one reference video.

The workflow script (``workflow_scripts/metrics.py``, rules ``metrics`` and ``metrics_check``) is a thin
wrapper around :func:`load_scorers`, :func:`evaluate_samples` and
:func:`evaluate_reference`; the tests call these directly with a random-init CLIP.

Per sample (one row of a ``samples.parquet`` table):

* ``clip_t``: CLIP-T of the sample's frames against its *target* prompt;
* ``frame_consistency``: mean CLIP cosine of consecutive frames;
* ``image_reward``: mean ImageReward over frames, or null if no ImageReward is configured;
* ``motion_discrepancy``: :func:`~motionmatcher.metrics.motion_discrepancy` of the reference
  tracks vs the sample tracks (lower is better), variant ``metrics.discrepancy``
  (``official`` script or ``paper`` formula = 2x official);
* ``motion_fidelity``: :func:`~motionmatcher.metrics.motion_fidelity` with source = reference,
  generated = sample (higher is better), variant ``metrics.fidelity`` (DMT's ``official``
  script with its identity term, or ``no_identity``);
* ``mtbench_fidelity``: MTBench's motion fidelity
  (:func:`~motionmatcher.metrics.mtbench.mtbench_motion_fidelity`) of the sample's tracks vs the
  reference's, both tracked on MTBench's grid in the box of the first-frame mask
  (:class:`~motionmatcher.metrics.mtbench.MTBenchSetup`); the reference is the clip as the sample
  sees it (``metrics.mtbench.reference: clip``) or the original full clip (``mtbench``, as
  MTBench). Null unless ``metrics.mtbench.enabled``; NaN, with a warning, where MTBench's own
  formula gives NaN (a point that does not move between two frames).

Every row records the definitions (``discrepancy_variant``, ``fidelity_variant``, ``tracker``,
``grid_size``) and short SHA-256 fingerprints of the weights (``clip_weights_sha256``,
``tracker_weights_sha256``, ``image_reward_weights_sha256``), so that tables of two runs made
with different definitions cannot be mixed up silently.

Both videos are tracked by the same tracker at the same resolution (the configured
``video.width x video.height``; checked, never resized here) and the reference is tracked once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from motionmatcher.metrics import make_tracker, motion_discrepancy, motion_fidelity
from motionmatcher.metrics.mtbench import (
    MTBenchSetup,
    count_zero_steps,
    grid_points,
    mtbench_motion_fidelity,
    mtbench_variant,
    reference_tracks_label,
    track_mtbench,
)
from motionmatcher.metrics.provenance import module_sha256
from motionmatcher.metrics.groundtruth import GT_COLUMNS, score_sample
from motionmatcher.jobs.provenance import config_hash

log = logging.getLogger(__name__)

__all__ = [
    "SAMPLE_ID_COLUMNS",
    "METRIC_COLUMNS",
    "load_scorers",
    "load_frames_file",
    "load_sample_frames",
    "evaluate_samples",
    "evaluate_reference",
    "metrics_config_hash",
    "metric_variants",
    "metrics_gpus",
    "DEFINITION_COLUMNS",
]


def metrics_gpus(config: Mapping[str, Any], rule: str) -> int:
    """GPUs the ``metrics`` / ``metrics_check`` rule requests (its ``resources: gpu``).

    A rule needs a GPU when it runs a network on ``config["device"]`` and that device is not
    the CPU: ``metrics`` runs CLIP (every frame of every sample and of the reference clip)
    and, when configured, ImageReward (BLIP ViT-L), and tracks with CoTracker when
    ``tracker`` is ``cotracker`` or ``auto`` with a checkpoint. The weight-free LK tracker runs
    on the CPU and needs no GPU, but CLIP still does (``metrics_check`` loads them all on
    the same device), so with ``device: cuda`` (or ``auto``,
    which picks CUDA where there is one) both rules ask for one GPU, like the other GPU rules;
    with ``device: cpu`` none. Without the request the Slurm profile places the job on a CPU
    node (where ``device: cuda`` fails) and the local profile lets it use ``cuda:0`` without
    taking a slot (:mod:`motionmatcher.jobs.gpu_slots`).
    """
    if rule not in ("metrics", "metrics_check"):
        raise ValueError(f"metrics_gpus: unknown rule {rule!r}")
    # CLIP runs in both rules whatever the tracker: the device alone decides
    return 0 if str(config.get("device", "auto")) == "cpu" else 1


def metric_variants(metrics_cfg: Mapping[str, Any]) -> dict[str, str]:
    """``{"discrepancy": ..., "fidelity": ...}`` from the ``metrics:`` config (defaults: the
    paper's discrepancy formula, fidelity without DMT's identity term)."""
    return {"discrepancy": str(metrics_cfg.get("discrepancy", "paper")),
            "fidelity": str(metrics_cfg.get("fidelity", "no_identity"))}

#: the columns of a samples table that identify a sample (copied into the metrics table)
SAMPLE_ID_COLUMNS = (
    "video_id", "method", "prompt_id", "prompt", "manifest_row", "seed",
    "video_path", "frames_path", "model_identity",
)
#: the per-sample metric columns, in table order
METRIC_COLUMNS = ("clip_t", "frame_consistency", "image_reward", "motion_discrepancy", "motion_fidelity",
                  "mtbench_fidelity")
#: the columns that name each metric's definition and weights (constant within one run)
DEFINITION_COLUMNS = (
    "discrepancy_variant", "fidelity_variant", "tracker", "grid_size", "tracker_weights_sha256",
    "clip_model", "clip_weights", "clip_weights_sha256", "image_reward_weights_sha256",
    "mtbench_variant", "mtbench_reference_tracks",
)


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
    image_reward = load_image_reward(ir.get("checkpoint"), ir.get("med_config"), device=str(device),
                                     tokenizer=ir.get("tokenizer"))
    tracker = None
    if need_tracker:
        tracker = make_tracker(
            metrics_cfg.get("tracker", "lk"), metrics_cfg.get("cotracker_checkpoint"), device=str(device),
            version=str(metrics_cfg.get("cotracker_version", "auto")),
        )
    return scorer, image_reward, tracker


def load_frames_file(path: str | os.PathLike) -> np.ndarray:
    """uint8 ``(F, H, W, 3)`` frames of a cached frames file (a sample's or a reference's),
    verified (content hash, shape) by :func:`motionmatcher.files.tensor_files.read_checked`: a damaged
    file raises ``CorruptFileError`` naming it and its rebuild command instead of being scored."""
    from motionmatcher.files.tensor_files import read_checked

    return read_checked(path, shapes={"frames": [None, None, None, 3]})[0]["frames"].numpy()


def load_sample_frames(row: Mapping[str, Any]) -> np.ndarray:
    """uint8 ``(F, H, W, 3)`` frames of a sample, from its ``frames_path`` safetensors."""
    return load_frames_file(row["frames_path"])


def _check_video(frames: np.ndarray, what: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 (F, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    return frames


def clip_fields(scorer) -> dict:
    digest = getattr(scorer, "_weights_sha256", None)
    if digest is None:
        model = getattr(scorer, "model", None)
        digest = module_sha256(model) if hasattr(model, "state_dict") else "unknown"
        try:
            scorer._weights_sha256 = digest  # hash the weights once per scorer
        except AttributeError:
            pass
    return {
        "clip_model": str(getattr(scorer, "model_name", type(scorer).__name__)),
        "clip_weights": str(getattr(scorer, "weights", "unknown")),
        "clip_weights_sha256": digest,
    }


def image_reward_sha256(image_reward) -> str | None:
    return None if image_reward is None else str(getattr(image_reward, "weights_sha256", "unknown"))


def _checked_reference(reference_frames: np.ndarray, expected_size: tuple[int, int] | None) -> np.ndarray:
    ref = _check_video(reference_frames, "reference")
    height, width = ref.shape[1:3]
    if expected_size is not None and (height, width) != tuple(expected_size):
        raise ValueError(
            f"reference frames are {height}x{width} (HxW), the configured video size is "
            f"{expected_size[0]}x{expected_size[1]}; re-run preprocess"
        )
    return ref


def _checked_sample(frames: np.ndarray, label: str, reference_shape: tuple) -> np.ndarray:
    frames = _check_video(frames, label)
    if frames.shape != reference_shape:
        raise ValueError(
            f"{label}: sample frames {frames.shape} differ from the reference's {reference_shape} "
            "(F, H, W, 3); both must be tracked at the same resolution and length"
        )
    return frames


def _mtbench_options(mtbench: Mapping[str, Any] | None, setup: MTBenchSetup | None,
                     tracker) -> tuple[MTBenchSetup | None, dict]:
    """From the ``metrics.mtbench`` config: the MTBench setup to track with (None: MTBench off,
    null ``mtbench_fidelity``) and the score's options ``{frechet, frechet_samples, seed}``.
    Without a ``setup``, ``reference: clip`` on the whole ``grid_size`` grid."""
    mt = dict(mtbench or {})
    enabled = bool(mt.get("enabled", False))
    kw = {"frechet": bool(mt.get("frechet", False)), "frechet_samples": int(mt.get("frechet_samples", 50)),
          "seed": int(mt.get("seed", 0))}
    if not enabled:
        return None, kw
    if setup is None:
        if str(mt.get("reference", "clip")) != "clip":
            raise ValueError("metrics.mtbench.reference: mtbench needs the video's MTBench setup (original "
                             "clip and first-frame mask; motionmatcher.metrics.mtbench.mtbench_setup)")
        g = int(mt.get("grid_size", 50))
        setup = MTBenchSetup("clip", grid_points(g), False, g)
    if setup.reference == "mtbench" and tracker.name != "cotracker3_offline":
        raise ValueError("metrics.mtbench.reference: mtbench needs CoTracker3 offline (MTBench's tracker); "
                         f"the tracker is {tracker.name!r}")
    return setup, kw


def _definition_columns(variants: Mapping[str, str], tracker, grid_size: int, scorer, image_reward,
                        mt_setup: MTBenchSetup | None, mt_kw: dict) -> dict:
    """The :data:`DEFINITION_COLUMNS` of every row of one run."""
    mt_on = mt_setup is not None
    return {
        "discrepancy_variant": variants["discrepancy"],
        "fidelity_variant": variants["fidelity"],
        "tracker": str(tracker.name),
        "grid_size": int(grid_size),
        "tracker_weights_sha256": str(getattr(tracker, "weights_sha256", "none")),
        **clip_fields(scorer),
        "image_reward_weights_sha256": image_reward_sha256(image_reward),
        "mtbench_variant": (None if not mt_on else
                            mtbench_variant(mt_kw["frechet"], mt_kw["frechet_samples"], mt_setup.reference)),
        "mtbench_reference_tracks": (None if not mt_on else
                                     reference_tracks_label(mt_setup, str(tracker.name))),
    }


@dataclass
class _SampleScoring:
    """What every sample of one reference video is scored with and against: the scorers, the
    metric definitions and the reference's tracks (tracked once, :meth:`track_reference`)."""

    reference: np.ndarray
    scorer: Any
    tracker: Any
    grid_size: int
    image_reward: Any
    variants: Mapping[str, str]
    mt_setup: MTBenchSetup | None  # None: MTBench off
    mt_kw: dict
    ground_truth: Mapping[str, Any] | None
    definition: dict
    reference_tracks: np.ndarray | None = None
    mt_reference: np.ndarray | None = None

    def track_reference(self) -> None:
        """The reference's tracks on the ``grid_size`` grid and, with MTBench on, on MTBench's
        (of the original clip for ``reference: mtbench``)."""
        ref, tracker, setup = self.reference, self.tracker, self.mt_setup
        t0 = time.perf_counter()
        self.reference_tracks, _ = tracker.track(ref, int(self.grid_size))
        if setup is not None:
            mt_frames = setup.frames if setup.frames is not None else ref
            self.mt_reference = track_mtbench(tracker, mt_frames, setup)
            log.info("MTBench reference: %s", self.definition["mtbench_reference_tracks"])
        n_frames, height, width = ref.shape[:3]
        log.info("reference %dx%dx%d tracked with %s (grid %d) in %.2f s",
                 n_frames, height, width, tracker.name, self.grid_size, time.perf_counter() - t0)

    def score(self, row: Mapping[str, Any], frames: np.ndarray, label: str, t0: float) -> dict:
        """One output row: the sample's ids, metrics and definitions (``metrics_seconds`` since
        ``t0``, before the ground-truth columns)."""
        n_frames, height, width = self.reference.shape[:3]
        clip = self.scorer.score(frames, row["prompt"])
        ir = float(self.image_reward.score(frames, row["prompt"])) if self.image_reward is not None else None
        tracks, _ = self.tracker.track(frames, int(self.grid_size))
        rec = {k: row[k] for k in SAMPLE_ID_COLUMNS}
        rec.update(
            clip_t=float(clip["clip_t"]),
            frame_consistency=float(clip["frame_consistency"]),
            image_reward=ir,
            motion_discrepancy=motion_discrepancy(self.reference_tracks, tracks, height, width,
                                                  variant=self.variants["discrepancy"]),
            motion_fidelity=motion_fidelity(self.reference_tracks, tracks, variant=self.variants["fidelity"]),
            mtbench_fidelity=(None if self.mt_setup is None else
                              _mtbench_score(self.mt_reference, frames, self.tracker, self.mt_setup,
                                             self.mt_kw, label)),
            **self.definition,
            n_frames=int(n_frames),
            height=int(height),
            width=int(width),
            metrics_seconds=time.perf_counter() - t0,
        )
        rec.update(score_sample(frames, row["prompt"], self.ground_truth) if self.ground_truth is not None
                   else dict.fromkeys(GT_COLUMNS, None))
        log.info("%s: CLIP-T %.4f, FC %.4f, IR %s, MD %.5f, MF %.4f", label, rec["clip_t"],
                 rec["frame_consistency"], "-" if ir is None else f"{ir:.4f}",
                 rec["motion_discrepancy"], rec["motion_fidelity"])
        return rec


def _metrics_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=[
        *SAMPLE_ID_COLUMNS, *METRIC_COLUMNS, *DEFINITION_COLUMNS,
        "n_frames", "height", "width", "metrics_seconds", *GT_COLUMNS,
    ])
    for col in ("image_reward", "mtbench_fidelity", *GT_COLUMNS):
        frame[col] = frame[col].astype("float64")  # all-None -> NaN (null in parquet)
    return frame


def evaluate_samples(
    samples: pd.DataFrame,
    reference_frames: np.ndarray,
    scorer,
    tracker,
    grid_size: int,
    image_reward=None,
    load_frames: Callable[[Mapping[str, Any]], np.ndarray] = load_sample_frames,
    expected_size: tuple[int, int] | None = None,
    variants: Mapping[str, str] | None = None,
    mtbench: Mapping[str, Any] | None = None,
    mtbench_setup: MTBenchSetup | None = None,
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
        variants: ``{"discrepancy": "paper"|"official", "fidelity": "no_identity"|"official"}``
            (:func:`metric_variants`; default: paper / no_identity).
        mtbench: the ``metrics.mtbench`` config (``enabled``, ``reference``, ``grid_size``,
            ``frechet``, ``frechet_samples``, ``seed``); ``None`` or not enabled -> null
            ``mtbench_fidelity``.
        mtbench_setup: what MTBench tracks for this video
            (:func:`motionmatcher.metrics.mtbench.mtbench_setup`: the box of the first-frame mask, and for
            ``reference: mtbench`` the original clip); ``None`` -> ``reference: clip`` on the
            whole ``grid_size`` grid (MTBench without a mask file).
        ground_truth: the reference's toy-world ground truth
            (:func:`~motionmatcher.metrics.groundtruth.load_ground_truth`) or ``None`` (-> null
            :data:`~motionmatcher.metrics.groundtruth.GT_COLUMNS`).

    Returns:
        :data:`SAMPLE_ID_COLUMNS` + :data:`METRIC_COLUMNS` + :data:`DEFINITION_COLUMNS` +
        ``n_frames, height, width, metrics_seconds``.

    Raises:
        ValueError: a sample's frame count or resolution differs from the reference's (or
            from ``expected_size``): the motion metrics are only comparable at one resolution.
    """
    ref = _checked_reference(reference_frames, expected_size)
    missing = [c for c in SAMPLE_ID_COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"samples table lacks columns {missing}")
    variants = metric_variants(variants or {})
    mt_setup, mt_kw = _mtbench_options(mtbench, mtbench_setup, tracker)
    scoring = _SampleScoring(
        ref, scorer, tracker, grid_size, image_reward, variants, mt_setup, mt_kw, ground_truth,
        definition=_definition_columns(variants, tracker, grid_size, scorer, image_reward, mt_setup, mt_kw),
    )
    scoring.track_reference()

    records = []
    for row in samples.to_dict("records"):
        t0 = time.perf_counter()
        label = f"{row['method']}/{row['video_id']} {row['prompt_id']} seed {row['seed']}"
        frames = _checked_sample(load_frames(row), label, ref.shape)
        records.append(scoring.score(row, frames, label, t0))
    return _metrics_frame(records)


def _mtbench_score(reference: np.ndarray, frames: np.ndarray, tracker, setup: MTBenchSetup, kw: dict,
                   label: str) -> float:
    generated = track_mtbench(tracker, frames, setup)
    score = mtbench_motion_fidelity(reference, generated, **kw)
    if np.isnan(score):
        log.warning("%s: mtbench_fidelity is NaN, as MTBench's formula gives for a zero vector (a point "
                    "that does not move between two frames): %d in the reference's tracks, %d in the "
                    "sample's (%s)", label, count_zero_steps(reference), count_zero_steps(generated),
                    tracker.name)
    return score


def evaluate_reference(frames: np.ndarray, caption: str, scorer, image_reward=None) -> dict:
    """CLIP-T of a reference clip against its caption, its frame consistency and (optional)
    ImageReward: the scale of the numbers a sample can be compared with."""
    frames = _check_video(frames, "reference")
    clip = scorer.score(frames, caption)
    return {
        "clip_t": float(clip["clip_t"]),
        "frame_consistency": float(clip["frame_consistency"]),
        "image_reward": float(image_reward.score(frames, caption)) if image_reward is not None else None,
        **clip_fields(scorer),
        "image_reward_weights_sha256": image_reward_sha256(image_reward),
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

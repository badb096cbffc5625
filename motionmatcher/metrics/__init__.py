"""Evaluation metrics for MotionMatcher (the pipeline's ``metrics`` stage): how a sample is scored
against its reference and its prompt -- trackers, motion and text/image scores, the benchmarks'
own definitions (MTBench, the toy world's ground truth) and the stage that runs them all
(:mod:`.evaluate`). A new metric, tracker or scorer belongs here; how scores are summarised into
tables belongs in :mod:`motionmatcher.results`.

Sub-modules
-----------
``tracking``
    Point trackers producing ``(N, T, 2)`` tracks + ``(N, T)`` visibility:
    a weight-free pyramidal Lucas-Kanade tracker (default) and an optional
    CoTracker wrapper (v3 offline or v2 checkpoints).
``motion``
    Motion discrepancy (MotionMatcher paper / official script) and motion
    fidelity (DMT, with or without its identity term) between two sets of tracks.
``mtbench``
    Everything of MTBench (DeT) in one place: its motion-fidelity score as its evaluation.py
    computes it (the box-masked grid), and importing an MTBench folder as a manifest.
``groundtruth``
    The toy world's ground-truth trajectory metrics (:mod:`motionmatcher.toy`).
``evaluate``
    The ``metrics`` stage as functions: every metric of one method's samples of one video.
``unavailable``
    :class:`MetricUnavailable`, the error of a metric that cannot be computed here.
``provenance``
    Short SHA-256 fingerprints of the weights behind each metric.
``clip_score``
    CLIP-T (text alignment) and frame consistency with an ``open_clip`` model.
``image_reward``
    Optional ImageReward scorer on transformers' BLIP modules (official checkpoint).

The CLIP / ImageReward symbols import torch and open_clip, so they are loaded
lazily on first attribute access; ``from motionmatcher.metrics import
motion_discrepancy`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from .motion import motion_discrepancy, motion_fidelity
from .tracking import (
    CoTrackerTracker,
    LucasKanadeTracker,
    TrackerUnavailable,
    grid_queries,
    make_tracker,
)
from .unavailable import MetricUnavailable

_LAZY = {
    "ClipScorer": "clip_score",
    "clip_t_from_embeddings": "clip_score",
    "frame_consistency_from_embeddings": "clip_score",
    "ImageRewardScorer": "image_reward",
    "load_image_reward": "image_reward",
}

__all__ = [
    "MetricUnavailable",
    "TrackerUnavailable",
    "grid_queries",
    "LucasKanadeTracker",
    "CoTrackerTracker",
    "make_tracker",
    "motion_discrepancy",
    "motion_fidelity",
    *_LAZY,
]


def __getattr__(name: str) -> Any:  # PEP 562 lazy attributes
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

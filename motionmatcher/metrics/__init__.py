"""Evaluation metrics for MotionMatcher (the pipeline's ``metrics`` stage).

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
    MTBench's motion-fidelity score (DeT) as its evaluation.py computes it: the box-masked grid.
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


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed because a model, package or weight file is missing.

    The message always says what is missing and how to provide it. Callers that
    treat the metric as optional catch this and write a null column.
    """


from .motion import motion_discrepancy, motion_fidelity  # noqa: E402
from .tracking import (  # noqa: E402
    CoTrackerTracker,
    LucasKanadeTracker,
    TrackerUnavailable,
    grid_queries,
    make_tracker,
)

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

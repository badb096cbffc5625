"""Ground-truth metrics for clips of the toy world (:mod:`motionmatcher.toy.world`).

A reference clip of the toy world carries its ground truth in a sidecar JSON next to the
video (``<video>.gt.json``, written by :mod:`motionmatcher.toy.benchmark_data`): the primary
object's colour, shape and per-frame centroid. A sample is measured with the colour-
segmentation detector (:mod:`motionmatcher.toy.detector`); the target colour and shape are
read from the sample's prompt (the world's colour and shape words).

Per sample:

* ``trajectory_error``: mean over frames of || c_s(f) - c_r(f) ||_2 / S, the distance between
  the sample's object centroid c_s and the reference's ground-truth centroid c_r, normalised
  by the frame size S (0 = same path; ~0.3-0.4 for unrelated paths). The sample's object is
  the target colour's mask, or the dominant object colour when the target colour is absent;
  a frame without any object counts with the frame centre.
* ``appearance_leakage``: area of the reference's colour / (area of the reference's colour +
  area of the target colour), over the clip (0 = none of the reference's colour; null when
  the target colour is the reference's).
* ``text_alignment``: 1 if the dominant object colour is the target colour, else 0.
* ``shape_alignment``: 1 if the shape read from the target colour's mask is the target shape.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from motionmatcher.toy import detector
from motionmatcher.toy.world import COLOURS, SHAPES

GT_COLUMNS = ("trajectory_error", "appearance_leakage", "text_alignment", "shape_alignment")
SIDECAR_SUFFIX = ".gt.json"


def sidecar_path(video_path: str | os.PathLike) -> Path:
    p = Path(video_path)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def load_ground_truth(video_path: str | os.PathLike, n_frames: int, size: tuple[int, int]) -> dict | None:
    """The reference's ground truth from its sidecar, or None when the video has none.

    Raises ValueError when the sidecar does not match what the pipeline reads (frame count or
    size differ: the ground truth would not describe the preprocessed frames).
    """
    path = sidecar_path(video_path)
    if not path.exists():
        return None
    gt = json.loads(path.read_text())
    cen = np.asarray(gt["centroid"], dtype=np.float64)
    h, w = size
    if len(cen) != n_frames or gt["frame_size"] != w or w != h:
        raise ValueError(
            f"{path}: ground truth of {len(cen)} frames at {gt['frame_size']} px, but the pipeline "
            f"reads {n_frames} frames at {w}x{h}; set video.n_frames/width/height (frame_step 1) "
            "to the clip's")
    prim = gt["spec"]["objects"][0]
    return dict(colour=prim["colour"], shape=prim["shape"], centroid=cen, size=int(w), path=str(path))


def parse_target(prompt: str) -> tuple[str, str | None]:
    """The first colour and shape word of a prompt (shape None if the prompt names none)."""
    words = re.findall(r"[a-z]+", prompt.lower())
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    if colour is None:
        raise ValueError(f"prompt {prompt!r} names no colour of the toy world ({', '.join(COLOURS)})")
    return colour, shape


def score_sample(frames: np.ndarray, prompt: str, gt: dict) -> dict:
    """The :data:`GT_COLUMNS` of one sample against the reference's ground truth."""
    frames = np.asarray(frames)
    size = gt["size"]
    if frames.shape[1:3] != (size, size) or len(frames) != len(gt["centroid"]):
        raise ValueError(f"sample frames {frames.shape} do not match the ground truth "
                         f"({len(gt['centroid'])} frames at {size} px)")
    colour, shape = parse_target(prompt)
    labels = detector.segment(frames)
    areas = detector.colour_areas(frames, labels)
    dom = detector.dominant_colour(frames)
    obj = colour if areas[colour] >= 3.0 else dom
    if obj is None:
        cen = np.full((len(frames), 2), size / 2.0)
    else:
        cen = detector.detect_colour(frames, obj, labels).centroid
        cen = np.where(np.isnan(cen), size / 2.0, cen)
    err = float(np.linalg.norm(cen - gt["centroid"], axis=1).mean() / size)
    ref_area, own = areas[gt["colour"]], areas[colour]
    leak = float(ref_area / (ref_area + own)) if ref_area + own > 0 else 0.0
    got_shape = detector.shape_of(detector.detect_colour(frames, colour, labels).mask)
    return dict(
        trajectory_error=err,
        appearance_leakage=leak if gt["colour"] != colour else float("nan"),
        text_alignment=float(dom == colour),
        shape_alignment=float(got_shape == shape) if shape is not None else float("nan"),
    )

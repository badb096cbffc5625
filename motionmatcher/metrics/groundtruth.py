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

Unprompted appearance (references with ``ClipSpec.appearance``, :func:`.world.add_appearance`;
NaN for a reference without it):

* ``background_leakage``: how much of the reference's background grating (period P, wave-vector
  angle theta) the sample's background carries. Per frame f, over the background pixels B_f
  (the detector labels them no object colour), with I the mean of R, G, B and p the pixel
  centre, a_f = | mean_{p in B_f} (I(p) - mean_{B_f} I) exp(-i k.p) |, k = 2 pi / P (cos theta,
  sin theta); A = mean_f a_f. Then (A_sample - A_flat) / (A_reference - A_flat), clipped to
  [0, 1], where A_reference is the rendered reference's and A_flat the same clip rendered
  without the grating (its gradient and objects): a copy of the reference's grating scores 1,
  a flat background 0, a grating of another period or axis about 0.
* ``distractor_leakage``: mean area per frame of the reference's (unnamed) distractor colour in
  the sample / the same in the rendered reference, clipped to [0, 1] (NaN also when the prompt
  names that colour).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from motionmatcher.toy import detector
from motionmatcher.toy import world
from motionmatcher.toy.world import COLOURS, SHAPES

GT_COLUMNS = ("trajectory_error", "appearance_leakage", "text_alignment", "shape_alignment",
              "background_leakage", "distractor_leakage")
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
    out = dict(colour=prim["colour"], shape=prim["shape"], centroid=cen, size=int(w), path=str(path))
    if gt["spec"].get("appearance") is not None:
        try:
            out.update(unprompted_calibration(world.ClipSpec.from_dict(gt["spec"])))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: spec.appearance cannot be rendered: {e!r}") from None
    return out


def grating_amplitude(frames: np.ndarray, period: float, angle: float,
                      labels: np.ndarray | None = None) -> float:
    """A = mean over frames of | mean_{p in B_f} (I(p) - mean I) exp(-i k.p) | (module docstring):
    the amplitude of the background's component at wave vector k = 2 pi / period (cos angle,
    sin angle), B_f the pixels the detector labels no object colour (a frame with fewer than 2
    of them counts 0)."""
    frames = np.asarray(frames, dtype=np.float64)
    labels = detector.segment(frames) if labels is None else labels
    F, H, W, _ = frames.shape
    x, y = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    a = np.deg2rad(angle)
    wave = np.exp(-1j * 2 * np.pi * (x * np.cos(a) + y * np.sin(a)) / period)
    amps = []
    for f in range(F):
        b = labels[f] == -1
        if b.sum() < 2:
            amps.append(0.0)
            continue
        i = frames[f].mean(-1)[b]
        amps.append(float(np.abs(((i - i.mean()) * wave[b]).mean())))
    return float(np.mean(amps))


def unprompted_calibration(spec: "world.ClipSpec") -> dict:
    """What :func:`score_sample` needs of a reference with unprompted appearance, from its
    rendered frames: ``pattern`` (period, angle, ``a_reference``, ``a_flat``: the grating
    amplitude of the reference and of the reference rendered without its grating) and
    ``distractor`` (colour, ``area``: its colour's mean area per frame in the reference)."""
    import dataclasses

    out: dict = dict(pattern=None, distractor=None)
    frames, _ = world.render_clip(spec)
    pat, dis = spec.pattern, spec.distractor
    if pat is not None:
        flat, _ = world.render_clip(dataclasses.replace(
            spec, appearance=dict(spec.appearance, background_pattern=None)))
        out["pattern"] = dict(period=pat["period"], angle=pat["angle"],
                              a_reference=grating_amplitude(frames, pat["period"], pat["angle"]),
                              a_flat=grating_amplitude(flat, pat["period"], pat["angle"]))
        if not out["pattern"]["a_reference"] > out["pattern"]["a_flat"]:
            raise ValueError(f"the background grating ({pat}) is not visible in the rendered clip")
    if dis is not None:
        out["distractor"] = dict(colour=dis.colour, area=detector.colour_areas(frames)[dis.colour])
        if out["distractor"]["area"] <= 0:
            raise ValueError(f"the distractor ({dis.colour} {dis.shape}) is not visible in the rendered clip")
    return out


def parse_target(prompt: str) -> tuple[str, str | None]:
    """The first colour and shape word of a prompt (shape None if the prompt names none)."""
    words = re.findall(r"[a-z]+", prompt.lower())
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    if colour is None:
        raise ValueError(f"prompt {prompt!r} names no colour of the toy world ({', '.join(COLOURS)})")
    return colour, shape


def sample_centroid(frames: np.ndarray, colour: str, labels: np.ndarray, areas: dict,
                    dominant: str | None) -> np.ndarray:
    """The sample's object centroid per frame, ``(F, 2)``: the target colour's mask, or the
    dominant object colour's when the target colour covers < 3 px; the frame centre where none."""
    size = frames.shape[1]
    obj = colour if areas[colour] >= 3.0 else dominant
    if obj is None:
        return np.full((len(frames), 2), size / 2.0)
    cen = detector.detect_colour(frames, obj, labels).centroid
    return np.where(np.isnan(cen), size / 2.0, cen)


def path_error(centroid: np.ndarray, path: np.ndarray, size: int) -> float:
    """mean_f || c_s(f) - c_r(f) ||_2 / S: the trajectory error of a centroid track to a path."""
    return float(np.linalg.norm(np.asarray(centroid) - np.asarray(path), axis=1).mean() / size)


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
    cen = sample_centroid(frames, colour, labels, areas, dom)
    err = path_error(cen, gt["centroid"], size)
    ref_area, own = areas[gt["colour"]], areas[colour]
    leak = float(ref_area / (ref_area + own)) if ref_area + own > 0 else 0.0
    got_shape = detector.shape_of(detector.detect_colour(frames, colour, labels).mask)
    nan = float("nan")
    bg_leak = dis_leak = nan
    pat, dis = gt.get("pattern"), gt.get("distractor")
    if pat is not None:
        a = grating_amplitude(frames, pat["period"], pat["angle"], labels)
        bg_leak = float(np.clip((a - pat["a_flat"]) / (pat["a_reference"] - pat["a_flat"]), 0.0, 1.0))
    if dis is not None and dis["colour"] != colour:
        dis_leak = float(np.clip(areas[dis["colour"]] / dis["area"], 0.0, 1.0))
    return dict(
        trajectory_error=err,
        appearance_leakage=leak if gt["colour"] != colour else nan,
        text_alignment=float(dom == colour),
        shape_alignment=float(got_shape == shape) if shape is not None else nan,
        background_leakage=bg_leak,
        distractor_leakage=dis_leak,
    )

"""Ground-truth detector for clips of the toy world: colour segmentation.

Each pixel is assigned to the nearest colour (Euclidean RGB) among the world's object colours
(:data:`.world.COLOURS`) and background colours (:data:`.world.BACKGROUNDS`); a pixel counts
for an object colour only if it is also within ``max_dist`` of it. Per colour and frame this
gives a mask, its area and its centroid (x, y in pixels). The clip's *object colour* is the
object colour with the largest mean area (at least ``min_area`` pixels per frame on average),
and its *shape* is read from the mask's fill ratio (area / bounding-box area: circle ~ pi/4,
square ~ 1, upright triangle ~ 1/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import BACKGROUNDS, COLOURS

_NAMES = list(COLOURS) + [f"bg:{b}" for b in BACKGROUNDS]
_PALETTE = np.array(list(COLOURS.values()) + list(BACKGROUNDS.values()), dtype=np.float32)
_N_OBJ = len(COLOURS)


@dataclass
class Detection:
    """Detection of one colour in a clip."""

    colour: str
    mask: np.ndarray  # (F, H, W) bool
    area: np.ndarray  # (F,) pixels
    centroid: np.ndarray  # (F, 2) x, y pixels; nan where the colour is absent

    @property
    def mean_area(self) -> float:
        return float(self.area.mean())


def segment(frames: np.ndarray, max_dist: float = 90.0) -> np.ndarray:
    """Per-pixel label (F, H, W): index into :data:`COLOURS` for object colours, -1 otherwise."""
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got {x.shape}")
    d = np.linalg.norm(x[..., None, :] - _PALETTE, axis=-1)  # F H W P
    lab = d.argmin(-1)
    near = np.take_along_axis(d, lab[..., None], -1)[..., 0] <= max_dist
    return np.where((lab < _N_OBJ) & near, lab, -1)


def detect_colour(frames: np.ndarray, colour: str, labels: np.ndarray | None = None) -> Detection:
    """Mask, area and centroid of ``colour`` in every frame."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; known: {', '.join(COLOURS)}")
    labels = segment(frames) if labels is None else labels
    mask = labels == list(COLOURS).index(colour)
    area = mask.reshape(mask.shape[0], -1).sum(1)
    F, H, W = mask.shape
    ys, xs = np.arange(H) + 0.5, np.arange(W) + 0.5
    cen = np.full((F, 2), np.nan)
    for f in range(F):
        if area[f] > 0:
            cen[f] = ((mask[f].sum(0) * xs).sum() / area[f], (mask[f].sum(1) * ys).sum() / area[f])
    return Detection(colour=colour, mask=mask, area=area, centroid=cen)


def colour_areas(frames: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """Mean area per frame (pixels) of every object colour."""
    labels = segment(frames) if labels is None else labels
    return {c: float((labels == i).sum() / labels.shape[0]) for i, c in enumerate(COLOURS)}


def dominant_colour(frames: np.ndarray, min_area: float = 3.0) -> str | None:
    """The object colour covering most pixels (mean per frame), None if none reaches ``min_area``."""
    areas = colour_areas(frames)
    best = max(areas, key=areas.get)
    return best if areas[best] >= min_area else None


def shape_of(mask: np.ndarray, min_area: int = 6) -> str | None:
    """Shape from the median per-frame fill ratio of a mask (F, H, W); None if too small."""
    ratios = []
    for m in mask:
        ys, xs = np.nonzero(m)
        if len(xs) < min_area:
            continue
        box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
        ratios.append(len(xs) / box)
    if not ratios:
        return None
    r = float(np.median(ratios))
    return "triangle" if r < 0.66 else ("circle" if r < 0.86 else "square")


def displacement(centroid: np.ndarray) -> float:
    """Mean distance (pixels) of the centroid from its clip mean: how much the object moves."""
    c = centroid[~np.isnan(centroid).any(1)]
    return float(np.linalg.norm(c - c.mean(0), axis=1).mean()) if len(c) > 1 else 0.0

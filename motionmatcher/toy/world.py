"""A procedural world of short clips with exact per-frame ground truth.

A clip shows one or two flat-coloured objects (:data:`SHAPES` x :data:`COLOURS`) on one of
:data:`BACKGROUNDS`, moving along a trajectory family (:data:`TRAJECTORIES`: straight lines in
eight directions, circles both ways, zigzag, bounce, approach and recede) with randomised
parameters. The caption always names the appearance (colour, shape, background) and names
the motion only in a part of the clips (``motion_word_prob``), so a model trained on the
world learns appearance from text and motion mostly from the data: motion is what a
customization has to supply.

Ground truth per frame, for the *primary* object (the one named first in the caption):
its mask (pixel coverage >= 0.5) and centroid (coverage-weighted, in pixels, x right, y
down). Rendering is analytic with 4x4 supersampling, so sub-pixel motion changes pixels.

Train/held-out split: :data:`HELDOUT_APPEARANCES` (colour, shape, background) triples never
occur as the primary object in training clips (``split="train"``); ``split="heldout"`` draws
only from them. Prompts for the quality gate and the benchmark come from the held-out split.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

#: Object colours (RGB, 0-255); the detector classifies pixels against these.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 235),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
}
#: Background colours (flat, with a faint vertical gradient).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 20),
    "gray": (115, 115, 115),
    "brown": (100, 65, 35),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: Line directions (screen coordinates: y down), with the caption's words.
DIRECTIONS: dict[str, float] = {
    "right": 0.0, "down-right": 45.0, "down": 90.0, "down-left": 135.0,
    "left": 180.0, "up-left": 225.0, "up": 270.0, "up-right": 315.0,
}
TRAJECTORIES: tuple[str, ...] = (
    "line", "circle_cw", "circle_ccw", "zigzag", "bounce", "approach", "recede")
HELDOUT_APPEARANCES: frozenset[tuple[str, str, str]] = frozenset({
    ("red", "triangle", "gray"), ("green", "circle", "black"), ("blue", "square", "brown"),
    ("yellow", "circle", "gray"), ("white", "triangle", "brown"), ("red", "square", "black"),
    ("green", "triangle", "brown"), ("blue", "circle", "gray"),
})

_SUPERSAMPLE = 4


@dataclass
class ObjectSpec:
    """One object: its appearance and its trajectory (normalised units, frame = [0, 1]^2)."""

    colour: str
    shape: str
    trajectory: str
    size: float  # radius as a fraction of the frame size
    params: dict = field(default_factory=dict)

    def state(self, t: float) -> tuple[float, float, float]:
        """(cx, cy, radius) at clip time t in [0, 1], normalised units."""
        p, r = self.params, self.size
        if self.trajectory == "line":
            a = math.radians(p["angle"])
            s = (t - 0.5) * p["length"]
            return p["cx"] + s * math.cos(a), p["cy"] + s * math.sin(a), r
        if self.trajectory in ("circle_cw", "circle_ccw"):
            sign = 1.0 if self.trajectory == "circle_cw" else -1.0  # y down: +angle is clockwise
            a = p["phase"] + sign * p["sweep"] * t
            return p["cx"] + p["radius"] * math.cos(a), p["cy"] + p["radius"] * math.sin(a), r
        if self.trajectory == "zigzag":
            x = p["cx"] + p["dir"] * (t - 0.5) * p["length"]
            tri = 1.0 - 4.0 * abs(((t * p["periods"]) % 1.0) - 0.5)  # triangle wave in [-1, 1]
            return x, p["cy"] + p["amplitude"] * tri, r
        if self.trajectory == "bounce":
            x = p["cx"] + p["dir"] * (t - 0.5) * p["length"]
            y = p["floor"] - p["height"] * abs(math.sin(math.pi * p["bounces"] * t))
            return x, y, r
        if self.trajectory in ("approach", "recede"):
            g = t if self.trajectory == "approach" else 1.0 - t
            return p["cx"], p["cy"], r * (1.0 + (p["scale"] - 1.0) * g)
        raise ValueError(f"unknown trajectory {self.trajectory!r}")

    def motion_phrase(self) -> str:
        tr, p = self.trajectory, self.params
        if tr == "line":
            return f"moving {p['direction']}"
        if tr == "circle_cw":
            return "moving in a clockwise circle"
        if tr == "circle_ccw":
            return "moving in a counterclockwise circle"
        if tr == "zigzag":
            return f"zigzagging to the {'right' if p['dir'] > 0 else 'left'}"
        if tr == "bounce":
            return "bouncing"
        return "coming closer" if tr == "approach" else "moving away"


@dataclass
class ClipSpec:
    """A clip: background, objects (primary first) and whether the caption names the motion."""

    background: str
    objects: list[ObjectSpec]
    motion_words: bool
    n_frames: int = 8
    size: int = 32

    @property
    def primary(self) -> ObjectSpec:
        return self.objects[0]

    def caption(self) -> str:
        """Appearance always; the primary's motion only when ``motion_words``."""
        parts = []
        for i, o in enumerate(self.objects):
            d = f"a {o.colour} {o.shape}"
            if i == 0 and self.motion_words:
                d += " " + o.motion_phrase()
            parts.append(d)
        return " and ".join(parts) + f" on a {self.background} background"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ClipSpec":
        d = dict(d)
        d["objects"] = [ObjectSpec(**o) for o in d["objects"]]
        return cls(**d)


def sample_object(rng: np.random.Generator, colour: str, shape: str, trajectory: str | None = None) -> ObjectSpec:
    """An object with a random trajectory of the given (or a random) family, kept in frame."""
    tr = trajectory or str(rng.choice(TRAJECTORIES))
    size = float(rng.uniform(0.10, 0.14))
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    if tr == "line":
        direction = str(rng.choice(list(DIRECTIONS)))
        params = dict(direction=direction, angle=DIRECTIONS[direction] + u(-8, 8),
                      length=u(0.40, 0.55), cx=u(0.45, 0.55), cy=u(0.45, 0.55))
    elif tr in ("circle_cw", "circle_ccw"):
        params = dict(cx=u(0.45, 0.55), cy=u(0.45, 0.55), radius=u(0.20, 0.26),
                      phase=u(0, 2 * math.pi), sweep=u(1.5 * math.pi, 2 * math.pi))
    elif tr == "zigzag":
        params = dict(dir=float(rng.choice([-1.0, 1.0])), length=u(0.45, 0.55), cx=u(0.45, 0.55),
                      cy=u(0.4, 0.6), amplitude=u(0.12, 0.18), periods=float(rng.choice([1.0, 1.5])))
    elif tr == "bounce":
        params = dict(dir=float(rng.choice([-1.0, 1.0])), length=u(0.3, 0.45), cx=u(0.45, 0.55),
                      floor=u(0.72, 0.80), height=u(0.40, 0.50), bounces=float(rng.choice([1.0, 2.0])))
    elif tr in ("approach", "recede"):
        size = float(rng.uniform(0.08, 0.10))
        params = dict(cx=u(0.4, 0.6), cy=u(0.4, 0.6), scale=u(2.0, 2.6))
    else:
        raise ValueError(f"unknown trajectory {tr!r}; known: {', '.join(TRAJECTORIES)}")
    return ObjectSpec(colour=colour, shape=shape, trajectory=tr, size=size, params=params)


def sample_clip(rng: np.random.Generator, *, split: str = "train", n_frames: int = 8, size: int = 32,
                two_object_prob: float = 0.25, motion_word_prob: float = 0.4,
                appearance: tuple[str, str, str] | None = None, trajectory: str | None = None) -> ClipSpec:
    """A random clip of the ``train`` or ``heldout`` split (see :data:`HELDOUT_APPEARANCES`)."""
    if appearance is None:
        if split == "heldout":
            pool = sorted(HELDOUT_APPEARANCES)
        elif split == "train":
            pool = [(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS
                    if (c, s, b) not in HELDOUT_APPEARANCES]
        else:
            raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
        appearance = pool[int(rng.integers(len(pool)))]
    colour, shape, background = appearance
    objects = [sample_object(rng, colour, shape, trajectory)]
    if rng.random() < two_object_prob:
        c2 = str(rng.choice([c for c in COLOURS if c != colour]))
        objects.append(sample_object(rng, c2, str(rng.choice(SHAPES))))
    return ClipSpec(background=background, objects=objects,
                    motion_words=bool(rng.random() < motion_word_prob), n_frames=n_frames, size=size)


def _coverage(shape: str, cx: float, cy: float, r: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Supersampled inside-test of a shape centred at (cx, cy) with 'radius' r, box-filtered."""
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif shape == "square":
        h = r * 0.886  # same area as the circle
        inside = (np.abs(dx) <= h) & (np.abs(dy) <= h)
    elif shape == "triangle":  # upright equilateral, centroid at (cx, cy)
        s = r * 1.35
        inside = (dy <= s * 0.5) & (np.sqrt(3.0) * dx - dy <= s) & (-np.sqrt(3.0) * dx - dy <= s)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    ss = _SUPERSAMPLE
    n = inside.shape[0] // ss
    return inside.reshape(n, ss, n, ss).mean(axis=(1, 3))


def render_clip(spec: ClipSpec) -> tuple[np.ndarray, dict]:
    """Frames (F, H, W, 3) uint8 and ground truth of the primary object.

    Ground truth: ``mask`` (F, H, W) bool, ``centroid`` (F, 2) float pixels (x, y), ``area``
    (F,) pixels, plus the spec (``spec``) and caption.
    """
    n, F = spec.size, spec.n_frames
    ss = _SUPERSAMPLE
    sub = (np.arange(n * ss) + 0.5) / (n * ss)  # normalised sub-pixel centres
    xs, ys = np.meshgrid(sub, sub)
    bg = np.array(BACKGROUNDS[spec.background], dtype=np.float32)
    grad = np.linspace(-10.0, 10.0, n, dtype=np.float32)[:, None, None]
    frames = np.empty((F, n, n, 3), dtype=np.uint8)
    masks = np.empty((F, n, n), dtype=bool)
    centroids = np.empty((F, 2), dtype=np.float64)
    pix = np.arange(n) + 0.5
    for f in range(F):
        t = f / max(F - 1, 1)
        img = np.broadcast_to(bg + grad, (n, n, 3)).copy()
        cov_primary = None
        for o in reversed(spec.objects):  # primary drawn last: on top
            cx, cy, r = o.state(t)
            cov = _coverage(o.shape, cx, cy, r, xs, ys)[..., None]
            img = img * (1.0 - cov) + np.array(COLOURS[o.colour], np.float32) * cov
            cov_primary = cov[..., 0]
        frames[f] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        masks[f] = cov_primary >= 0.5
        w = cov_primary.sum()
        centroids[f] = ((cov_primary.sum(0) * pix).sum() / w, (cov_primary.sum(1) * pix).sum() / w) if w > 0 else (np.nan, np.nan)
    gt = dict(mask=masks, centroid=centroids, area=masks.reshape(F, -1).sum(1),
              caption=spec.caption(), spec=spec.to_dict())
    return frames, gt


def gt_json(gt: dict) -> dict:
    """The JSON-serialisable part of the ground truth (centroids, areas, spec, caption; no masks)."""
    return dict(caption=gt["caption"], spec=gt["spec"], frame_size=int(gt["mask"].shape[-1]),
                centroid=[[float(x), float(y)] for x, y in gt["centroid"]],
                area=[int(a) for a in gt["area"]])

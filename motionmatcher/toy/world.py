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

Unprompted appearance (``ClipSpec.appearance``, off by default; :func:`add_appearance`): a
reference can carry appearance that its caption does not name and a customization can memorise:
a static sine grating on the background (``background_pattern``: period in pixels, angle of
its wave vector, phase, amplitude) and/or a second, unnamed *distractor* object with its own
trajectory (``distractor``), drawn under the primary. With ``appearance`` None (every training
clip of the pretrained toy model) rendering is the world's original code path, bit for bit.

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
#: The unprompted-appearance settings of :func:`add_appearance`.
APPEARANCE_KINDS: tuple[str, ...] = ("background_pattern", "distractor")
#: Grating periods (pixels at 32 px: 3-4 latent pixels of the toy VAE) and wave-vector angles
#: (degrees; 0: the intensity varies along x, i.e. vertical stripes; y down).
PATTERN_PERIODS: tuple[float, ...] = (12.0, 16.0)
PATTERN_ANGLES: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0)
PATTERN_AMPLITUDE = 32.0  # grey levels: a background pixel stays nearest its background colour


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
        """The caption's words for the motion (every word of it is in :data:`MOTION_WORDS`)."""
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


#: Every word :meth:`ObjectSpec.motion_phrase` writes (directions split at their hyphen).
MOTION_WORDS: tuple[str, ...] = ("moving", "in", "a", "clockwise", "counterclockwise", "circle", "zigzagging",
                                 "to", "the", "bouncing", "coming", "closer", "away", "right", "left", "up",
                                 "down", "-")


def caption_words() -> list[str]:
    """The world's caption vocabulary, sorted: every word (and the hyphen) :meth:`ClipSpec.caption`
    can write, as a whitespace/punctuation pre-tokenizer splits it (``tests/test_toy_pretrain.py``
    checks it against sampled captions)."""
    words = {"a", "and", "on", "background", *COLOURS, *SHAPES, *BACKGROUNDS, *MOTION_WORDS}
    return sorted(words)


@dataclass
class ClipSpec:
    """A clip: background, objects (primary first) and whether the caption names the motion."""

    background: str
    objects: list[ObjectSpec]
    motion_words: bool
    n_frames: int = 8
    size: int = 32
    #: Unprompted appearance (None: the plain world). Plain JSON: ``{"background_pattern":
    #: {"kind": "grating", "period", "angle", "phase", "amplitude"} | None, "distractor":
    #: <ObjectSpec fields> | None}``; the caption names neither.
    appearance: dict | None = None

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
        d = asdict(self)
        if d["appearance"] is None:  # the plain world's specs (and sidecars) as before
            del d["appearance"]
        return d

    @property
    def pattern(self) -> dict | None:
        return (self.appearance or {}).get("background_pattern")

    @property
    def distractor(self) -> ObjectSpec | None:
        d = (self.appearance or {}).get("distractor")
        return ObjectSpec(**d) if d is not None else None

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


def add_appearance(spec: ClipSpec, rng: np.random.Generator,
                   kinds: tuple[str, ...] = APPEARANCE_KINDS) -> ClipSpec:
    """``spec`` with unprompted appearance of ``kinds`` drawn from ``rng`` (caption unchanged).

    ``background_pattern``: a static sine grating, period from :data:`PATTERN_PERIODS`, angle
    from :data:`PATTERN_ANGLES`, random phase, amplitude :data:`PATTERN_AMPLITUDE`.
    ``distractor``: an object of another colour than every named object, a random shape and a
    random trajectory family, drawn under the named objects."""
    unknown = [k for k in kinds if k not in APPEARANCE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"appearance kinds {list(kinds)}: choose from {', '.join(APPEARANCE_KINDS)}")
    app: dict = dict(background_pattern=None, distractor=None)
    if "background_pattern" in kinds:
        app["background_pattern"] = dict(
            kind="grating", period=float(rng.choice(PATTERN_PERIODS)), angle=float(rng.choice(PATTERN_ANGLES)),
            phase=float(rng.uniform(0, 2 * math.pi)), amplitude=PATTERN_AMPLITUDE)
    if "distractor" in kinds:
        named = {o.colour for o in spec.objects}
        colour = str(rng.choice([c for c in COLOURS if c not in named]))
        shape = str(rng.choice(SHAPES))
        # kept clear of the named objects: the candidate (of up to 64) whose smallest gap,
        # over frames, between its and their bounding circles is largest; the first clear one
        best, best_gap = None, -math.inf
        for _ in range(64):
            cand = sample_object(rng, colour, shape)
            gap = _min_gap(cand, spec.objects, spec.n_frames)
            if gap > best_gap:
                best, best_gap = cand, gap
            if gap > 0.02:
                break
        app["distractor"] = asdict(best)
    return ClipSpec(background=spec.background, objects=list(spec.objects), motion_words=spec.motion_words,
                    n_frames=spec.n_frames, size=spec.size, appearance=app)


def _min_gap(obj: ObjectSpec, others: list[ObjectSpec], n_frames: int) -> float:
    """Smallest distance over frames between the bounding circles (1.6 r: a triangle's corner
    reaches 1.56 r) of ``obj`` and of each of ``others``, normalised units."""
    gap = math.inf
    for f in range(n_frames):
        t = f / max(n_frames - 1, 1)
        x, y, r = obj.state(t)
        for o in others:
            ox, oy, orr = o.state(t)
            gap = min(gap, math.hypot(x - ox, y - oy) - 1.6 * (r + orr))
    return gap


def grating(pattern: dict, size: int) -> np.ndarray:
    """The background grating (H, W) in grey levels at pixel centres (x + 0.5, y + 0.5):
    ``amplitude * cos(2 pi (x cos(angle) + y sin(angle)) / period + phase)``."""
    if pattern.get("kind") != "grating":
        raise ValueError(f"unknown background pattern {pattern.get('kind')!r}; known: grating")
    pix = np.arange(size, dtype=np.float64) + 0.5
    x, y = np.meshgrid(pix, pix)
    a = math.radians(pattern["angle"])
    return pattern["amplitude"] * np.cos(2 * math.pi * (x * math.cos(a) + y * math.sin(a)) / pattern["period"]
                                         + pattern["phase"])


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
    (F,) pixels, plus the spec (``spec``) and caption. With a distractor also
    ``distractor_centroid`` / ``distractor_area`` (its own coverage, occlusion ignored).
    """
    n, F = spec.size, spec.n_frames
    ss = _SUPERSAMPLE
    sub = (np.arange(n * ss) + 0.5) / (n * ss)  # normalised sub-pixel centres
    xs, ys = np.meshgrid(sub, sub)
    bg = np.array(BACKGROUNDS[spec.background], dtype=np.float32)
    grad = np.linspace(-10.0, 10.0, n, dtype=np.float32)[:, None, None]
    base = bg + grad
    if spec.pattern is not None:  # only then: the plain world's arithmetic stays as it was
        base = base + grating(spec.pattern, n).astype(np.float32)[..., None]
    drawn = list(reversed(spec.objects))  # primary drawn last: on top
    distractor = spec.distractor
    if distractor is not None:
        drawn.insert(0, distractor)  # under every named object
    frames = np.empty((F, n, n, 3), dtype=np.uint8)
    masks = np.empty((F, n, n), dtype=bool)
    centroids = np.empty((F, 2), dtype=np.float64)
    d_cen, d_area = np.empty((F, 2), dtype=np.float64), np.empty(F, dtype=np.int64)
    pix = np.arange(n) + 0.5
    for f in range(F):
        t = f / max(F - 1, 1)
        img = np.broadcast_to(base, (n, n, 3)).copy()
        cov_primary = None
        for o in drawn:
            cx, cy, r = o.state(t)
            cov = _coverage(o.shape, cx, cy, r, xs, ys)[..., None]
            img = img * (1.0 - cov) + np.array(COLOURS[o.colour], np.float32) * cov
            cov_primary = cov[..., 0]
            if o is distractor:
                c = cov[..., 0]
                d_area[f] = int((c >= 0.5).sum())
                d_cen[f] = ((c.sum(0) * pix).sum() / c.sum(), (c.sum(1) * pix).sum() / c.sum()) \
                    if c.sum() > 0 else (np.nan, np.nan)
        frames[f] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        masks[f] = cov_primary >= 0.5
        w = cov_primary.sum()
        centroids[f] = ((cov_primary.sum(0) * pix).sum() / w, (cov_primary.sum(1) * pix).sum() / w) if w > 0 else (np.nan, np.nan)
    gt = dict(mask=masks, centroid=centroids, area=masks.reshape(F, -1).sum(1),
              caption=spec.caption(), spec=spec.to_dict())
    if distractor is not None:
        gt.update(distractor_centroid=d_cen, distractor_area=d_area)
    return frames, gt


def gt_json(gt: dict) -> dict:
    """The JSON-serialisable part of the ground truth (centroids, areas, spec, caption; no masks).

    A clip with unprompted appearance adds ``appearance`` (the spec's: grating kind, period,
    angle, phase, amplitude; distractor colour, shape, trajectory) and the distractor's track
    (``distractor_centroid``, ``distractor_area``)."""
    out = dict(caption=gt["caption"], spec=gt["spec"], frame_size=int(gt["mask"].shape[-1]),
               centroid=[[float(x), float(y)] for x, y in gt["centroid"]],
               area=[int(a) for a in gt["area"]])
    if gt["spec"].get("appearance") is not None:
        out["appearance"] = gt["spec"]["appearance"]
    if "distractor_centroid" in gt:
        out["distractor_centroid"] = [[float(x), float(y)] for x, y in gt["distractor_centroid"]]
        out["distractor_area"] = [int(a) for a in gt["distractor_area"]]
    return out

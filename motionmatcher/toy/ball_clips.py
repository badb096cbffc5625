"""Procedural reference clips of a rolling ball, at any size and length: the fixtures of the tests
of the pipeline, the metrics and the video reader, and of ``benchmarks/image_reward_equality.py``
(``make demo`` uses the toy world's clips instead, :mod:`.clips`; formerly
``motionmatcher.toy.ball_clips``, a name that said otherwise).

Each clip shows a textured "meadow" background (a smooth colour gradient, a
few soft blobs and low-amplitude sinusoidal texture, all drawn from ``seed``)
and a red, striped ball.  Three motions are available (:data:`TRAJECTORIES`):

``left_to_right``
    the ball rolls horizontally from 20 % to 80 % of the frame width;
``circle``
    the ball travels once around a circle centred on the frame centre;
``zoom``
    the camera zooms in (x1 -> x2) about the frame centre: the whole scene,
    background included, is magnified; the ball sits slightly off-centre.

The scene is defined analytically in pixel coordinates and rendered at
4x4 supersampling (box-filtered), so sub-pixel motion changes the pixels and
a zoom re-samples the background rather than blowing up pixels.

CLI::

    python -m motionmatcher.toy.ball_clips OUT_DIR [--n-frames 24] [--width 160]
        [--height 128] [--fps 8] [--seed 0]

writes ``OUT_DIR/videos/<trajectory>.mp4`` and ``OUT_DIR/manifest.csv`` and
prints the manifest path.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files.atomic import atomic_write
from ..files.video import write_mp4

__all__ = ["TRAJECTORIES", "DEMO_PROMPTS", "render_clip", "write_demo_dataset", "main"]

logger = logging.getLogger(__name__)

#: Motions that :func:`render_clip` can draw.
TRAJECTORIES: tuple[str, ...] = ("left_to_right", "circle", "zoom")

#: Per trajectory: (caption of the reference clip, two target prompts).
DEMO_PROMPTS: dict[str, tuple[str, tuple[str, str]]] = {
    "left_to_right": (
        "A red ball rolls from left to right over a meadow.",
        ("A dog runs from left to right on a beach.",
         "A car drives from left to right along a road."),
    ),
    "circle": (
        "A red ball moves in a circle over a meadow.",
        ("A bird flies in a circle in the sky.",
         "A toy boat sails in a circle on a pond."),
    ),
    "zoom": (
        "The camera zooms in on a red ball lying in a meadow.",
        ("The camera zooms in on a lighthouse on a cliff.",
         "The camera zooms in on a cup of coffee on a wooden table."),
    ),
}

#: Bump when the rendering changes, so cached demo datasets are regenerated.
GENERATOR_VERSION = 1

_SUPERSAMPLE = 4
_BALL_COLOR = np.array([225.0, 35.0, 30.0], dtype=np.float32)
_STRIPE_COLOR = np.array([150.0, 10.0, 25.0], dtype=np.float32)
_STAMP_NAME = "demo_stamp.json"
_MANIFEST_COLUMNS = ("video_id", "video_path", "caption", "prompt")


# --------------------------------------------------------------------------- #
# scene
# --------------------------------------------------------------------------- #
class _Background:
    """Seeded, analytic background colour field ``f(x, y) -> RGB``.

    Coordinates are in output pixels; features scale with ``min(W, H)`` so the
    look does not depend on the resolution.  No colour is red-dominant
    (R <= max(G, B)), which keeps the ball easy to segment.
    """

    def __init__(self, width: int, height: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.scale = float(min(width, height))
        self.cx, self.cy = width / 2.0, height / 2.0
        # Vertical gradient: sky-ish at the top, meadow green at the bottom.
        self.top = np.array([120.0, 170.0, 215.0]) + rng.uniform(-20, 20, 3)
        self.bottom = np.array([60.0, 140.0, 55.0]) + rng.uniform(-20, 20, 3)
        self.horizon = rng.uniform(-0.15, 0.05)
        # Soft blobs (positions relative to the centre, in units of `scale`).
        n_blobs = 7
        self.blob_pos = rng.uniform(-0.8, 0.8, size=(n_blobs, 2))
        self.blob_sigma = rng.uniform(0.08, 0.22, size=n_blobs)
        colors = rng.uniform(30, 230, size=(n_blobs, 3))
        colors[:, 0] = np.minimum(colors[:, 0], colors[:, 1:].max(axis=1))
        self.blob_color = colors
        self.blob_alpha = rng.uniform(0.35, 0.7, size=n_blobs)
        # Sinusoidal texture: a few plane waves of moderate frequency.
        n_waves = 4
        angles = rng.uniform(0, np.pi, n_waves)
        freqs = rng.uniform(6.0, 14.0, n_waves)  # cycles per `scale`
        self.wave_k = np.stack([np.cos(angles), np.sin(angles)], axis=1) * (2 * np.pi * freqs)[:, None]
        self.wave_phase = rng.uniform(0, 2 * np.pi, n_waves)
        self.wave_amp = rng.uniform(5.0, 10.0, n_waves)
        self.wave_tint = np.array([0.8, 1.0, 0.7])

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Colours (float32, ``x.shape + (3,)``) at scene coordinates ``x, y``."""
        u = ((x - self.cx) / self.scale).astype(np.float32)
        v = ((y - self.cy) / self.scale).astype(np.float32)
        t = np.clip((v - self.horizon) * 1.6 + 0.5, 0.0, 1.0)[..., None]
        img = (1 - t) * self.top.astype(np.float32) + t * self.bottom.astype(np.float32)
        # Parameters as Python floats so that float32 arrays stay float32 (NEP 50).
        for (bx, by), sigma, color, alpha in zip(
            self.blob_pos.tolist(), self.blob_sigma.tolist(),
            self.blob_color.astype(np.float32), self.blob_alpha.tolist(),
        ):
            w = alpha * np.exp(((u - bx) ** 2 + (v - by) ** 2) * (-0.5 / sigma**2))
            w = w[..., None]
            img = img + w * (color - img)
        tex = np.zeros_like(u)
        for (kx, ky), phase, amp in zip(
            self.wave_k.tolist(), self.wave_phase.tolist(), self.wave_amp.tolist()
        ):
            tex += amp * np.sin(kx * u + ky * v + phase)
        img = img + tex[..., None] * self.wave_tint.astype(np.float32)
        img[..., 0] = np.minimum(img[..., 0], img[..., 1:].max(axis=-1))
        return img


def _ball_layer(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, radius: float, spin: float, aa: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ball colour and coverage at scene coordinates ``x, y``.

    The ball is shaded (darker towards the rim) with three stripes that rotate
    by ``spin`` radians.  ``aa`` is the edge width (scene units) over which the
    coverage goes 1 -> 0.
    """
    dx, dy = x - cx, y - cy
    d = np.sqrt(dx * dx + dy * dy)
    cover = np.clip((radius - d) / aa + 0.5, 0.0, 1.0).astype(np.float32)
    # stripes in ball-local coordinates, rotated by `spin`
    c, s = float(np.cos(spin)), float(np.sin(spin))
    along = (c * dx + s * dy) / radius
    stripe = (np.sin(along * 3.0 * np.pi) > 0.35).astype(np.float32)[..., None]
    color = (1 - stripe) * _BALL_COLOR + stripe * _STRIPE_COLOR
    shade = (1.0 - 0.3 * np.clip(d / radius, 0.0, 1.0) ** 2).astype(np.float32)[..., None]
    return color * shade, cover[..., None]


def _ball_state(trajectory: str, t: float, phase: float, width: int, height: int) -> tuple[float, float, float, float, float]:
    """Ball centre / radius / spin in scene units and camera zoom at time ``t``.

    ``t`` runs over ``[0, 1]`` across the clip; ``phase`` is the loop fraction
    used by ``circle`` (``i / n_frames`` so the loop closes seamlessly).
    Returns ``(cx, cy, radius, spin, zoom)``.
    """
    s = float(min(width, height))
    radius = 0.12 * s
    if trajectory == "left_to_right":
        cx = width * (0.2 + 0.6 * t)
        cy = height * 0.58
        spin = (cx - width * 0.2) / radius  # rolling
        return cx, cy, radius, spin, 1.0
    if trajectory == "circle":
        r_orbit = 0.28 * s
        ang = 2.0 * float(np.pi) * phase
        cx = width / 2.0 + r_orbit * float(np.cos(ang))
        cy = height / 2.0 + r_orbit * float(np.sin(ang))
        return cx, cy, radius, ang, 1.0
    if trajectory == "zoom":
        zoom = 2.0**t  # geometric: constant zoom speed
        return width / 2.0 + 0.08 * s, height / 2.0 + 0.05 * s, radius, 0.3, float(zoom)
    raise ValueError(f"unknown trajectory {trajectory!r}; expected one of {TRAJECTORIES}")


def render_clip(
    trajectory: str,
    n_frames: int = 16,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
) -> np.ndarray:
    """Render a procedural clip of the red ball moving along ``trajectory``.

    Args:
        trajectory: one of :data:`TRAJECTORIES`.
        n_frames: number of frames (>= 1).
        size: ``(width, height)`` in pixels.
        seed: background seed; the same arguments always give the same array.

    Returns:
        uint8 ``(n_frames, height, width, 3)`` RGB.
    """
    if trajectory not in TRAJECTORIES:
        raise ValueError(f"unknown trajectory {trajectory!r}; expected one of {TRAJECTORIES}")
    n_frames = int(n_frames)
    width, height = int(size[0]), int(size[1])
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if width < 2 or height < 2:
        raise ValueError(f"size must be at least 2x2, got {width}x{height}")

    ss = _SUPERSAMPLE
    # Sub-pixel sample positions (pixel-centre convention: pixel j covers [j, j+1)).
    xs = (np.arange(width * ss, dtype=np.float32) + 0.5) / ss
    ys = (np.arange(height * ss, dtype=np.float32) + 0.5) / ss
    px, py = np.meshgrid(xs, ys)
    background = _Background(width, height, seed)
    cxf, cyf = width / 2.0, height / 2.0
    static_bg = background(px, py) if trajectory != "zoom" else None

    out = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    for i in range(n_frames):
        t = i / (n_frames - 1) if n_frames > 1 else 0.0
        cx, cy, radius, spin, zoom = _ball_state(trajectory, t, i / n_frames, width, height)
        # camera: the scene point seen at pixel p is c + (p - c) / zoom
        if zoom == 1.0:
            sx, sy = px, py
        else:
            sx = cxf + (px - cxf) / zoom
            sy = cyf + (py - cyf) / zoom
        frame = (static_bg if static_bg is not None else background(sx, sy)).copy()
        # composite the ball only inside its (supersampled) bounding box
        bx, by, br = cxf + (cx - cxf) * zoom, cyf + (cy - cyf) * zoom, radius * zoom + 1.0
        x0, x1 = max(0, int((bx - br) * ss)), min(width * ss, int(np.ceil((bx + br) * ss)))
        y0, y1 = max(0, int((by - br) * ss)), min(height * ss, int(np.ceil((by + br) * ss)))
        if x0 < x1 and y0 < y1:
            win = (slice(y0, y1), slice(x0, x1))
            color, cover = _ball_layer(sx[win], sy[win], cx, cy, radius, spin, aa=1.0 / (ss * zoom))
            frame[win] = frame[win] + cover * (color - frame[win])
        # box filter down to the output resolution
        frame = frame.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
        out[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- #
# dataset
# --------------------------------------------------------------------------- #
def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest_text() -> str:
    """CSV text of the demo manifest (two prompts per video)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_MANIFEST_COLUMNS)
    for traj in TRAJECTORIES:
        caption, prompts = DEMO_PROMPTS[traj]
        for prompt in prompts:
            writer.writerow((traj, f"videos/{traj}.mp4", caption, prompt))
    return buf.getvalue()


def _stamp_is_current(out_dir: Path, params: dict) -> bool:
    """True if the stamp matches ``params`` and every file still has its recorded hash."""
    stamp_path = out_dir / _STAMP_NAME
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(stamp, dict) or stamp.get("params") != params:
        return False
    files = stamp.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for rel, digest in files.items():
        p = out_dir / rel
        if not p.is_file() or _sha256(p) != digest:
            return False
    return True


def write_demo_dataset(
    out_dir: str | os.PathLike,
    n_frames: int = 24,
    size: tuple[int, int] = (160, 128),
    fps: float = 8,
    seed: int = 0,
) -> Path:
    """Write the demo clips and their manifest; return the manifest path.

    Writes ``out_dir/videos/<trajectory>.mp4`` for every entry of
    :data:`TRAJECTORIES` and ``out_dir/manifest.csv`` with columns
    ``video_id,video_path,caption,prompt`` (``video_path`` relative to the
    manifest's folder, two rows = two target prompts per video).  A small JSON
    stamp (``demo_stamp.json``: parameters + SHA-256 of every file) makes the
    call idempotent: when it matches, nothing is rewritten and mtimes stay.
    """
    out = Path(out_dir)
    width, height = int(size[0]), int(size[1])
    params = {
        "generator_version": GENERATOR_VERSION,
        "n_frames": int(n_frames),
        "width": width,
        "height": height,
        "fps": float(fps),
        "seed": int(seed),
        "trajectories": list(TRAJECTORIES),
    }
    manifest = out / "manifest.csv"
    if _stamp_is_current(out, params):
        logger.info("demo dataset in %s is up to date", out)
        return manifest

    files: dict[str, str] = {}
    for traj in TRAJECTORIES:
        rel = f"videos/{traj}.mp4"
        frames = render_clip(traj, n_frames=n_frames, size=(width, height), seed=seed)
        write_mp4(frames, out / rel, fps=fps)
        files[rel] = _sha256(out / rel)
        logger.info("wrote %s", out / rel)

    text = _manifest_text()
    if not (manifest.is_file() and manifest.read_text() == text):
        atomic_write(manifest, ".csv", lambda tmp: Path(tmp).write_text(text))
    files["manifest.csv"] = _sha256(manifest)

    stamp = json.dumps({"params": params, "files": files}, indent=2, sort_keys=True) + "\n"
    atomic_write(out / _STAMP_NAME, ".json", lambda tmp: Path(tmp).write_text(stamp))
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the manifest path."""
    ap = argparse.ArgumentParser(
        prog="python -m motionmatcher.toy.ball_clips",
        description="Write procedural demo reference clips and a manifest.csv.",
    )
    ap.add_argument("out_dir", help="output folder (videos/ and manifest.csv go here)")
    ap.add_argument("--n-frames", type=int, default=24)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    manifest = write_demo_dataset(
        args.out_dir,
        n_frames=args.n_frames,
        size=(args.width, args.height),
        fps=args.fps,
        seed=args.seed,
    )
    print(manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

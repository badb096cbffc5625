"""Video I/O helpers: decoding (decord), resizing, H.264 writing and contact sheets.

All frame arrays in this module are ``uint8`` RGB with layout ``(F, H, W, 3)``.

* Decoding uses :mod:`decord` (``VideoReader`` on the CPU context).  decord is
  imported lazily so that the writing / resizing helpers work without it.
  decord 0.6.0 cannot convert frames of a few small widths (2, 4, 8, 16, 24,
  48, 72, ... px; dmlc/decord#336): for those the frames are decoded with the
  bundled ffmpeg instead (see :func:`_decode_with_ffmpeg`).
* Encoding uses the ffmpeg binary bundled with :mod:`imageio_ffmpeg` (libx264,
  ``yuv420p``, fixed CRF, single thread, bit-exact muxing), so the same frames
  give the same bytes on the same ffmpeg build.
* Every error about a file is a :class:`VideoError` whose message starts with
  the file path.
* Files are written atomically (:func:`motionmatcher.files.atomic.atomic_write`): to a
  temporary file in the destination folder that is :func:`os.replace`-d onto the final name only
  once complete.
"""

from __future__ import annotations

import logging
import os
import subprocess
from fractions import Fraction
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .atomic import atomic_write

__all__ = [
    "VideoError",
    "probe_video",
    "read_video_frames",
    "read_mp4",
    "resize_center_crop",
    "write_mp4",
    "contact_sheet",
    "save_png",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Constant-rate-factor used for all H.264 encodes (visually near-lossless).
DEFAULT_CRF = 18

# Flags that make the encode reproducible: no muxer/encoder version strings or
# timestamps in the container, no copied metadata, and a single encoder thread
# (x264's output depends on the thread count, which depends on the machine).
_DETERMINISTIC_FFMPEG_FLAGS = [
    "-threads", "1",
    "-fflags", "+bitexact",
    "-flags:v", "+bitexact",
    "-map_metadata", "-1",
]


class VideoError(ValueError):
    """A video file could not be read or written; the message names the file."""


# --------------------------------------------------------------------------- #
# decoding
# --------------------------------------------------------------------------- #
def _decord() -> Any:
    """Import decord lazily (it is only needed for decoding)."""
    try:
        import decord  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - environment problem
        raise ImportError("decoding videos needs the 'decord' package") from exc
    return decord


def _open_reader(path: PathLike) -> Any:
    """Open ``path`` with ``decord.VideoReader`` or raise :class:`VideoError`."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise VideoError(f"{p}: cannot decode video: no such file")
    if not os.path.isfile(p):
        raise VideoError(f"{p}: cannot decode video: not a regular file")
    if os.path.getsize(p) == 0:
        raise VideoError(f"{p}: cannot decode video: file is empty")
    decord = _decord()
    try:
        reader = decord.VideoReader(p, ctx=decord.cpu(0))
    except Exception as exc:  # decord raises DECORDError / RuntimeError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VideoError(f"{p}: cannot decode video: {reason}") from exc
    if len(reader) == 0:
        raise VideoError(f"{p}: video has no frames")
    return reader


def _is_decord_stride_bug(exc: BaseException) -> bool:
    """True for decord's "size must exactly match" copy failure.

    decord 0.6.0 (dmlc/decord#336, open) fails to convert frames of some small
    widths (2, 4, 6, 8, 12, 16, 24, 48, 72, ... pixels): it hands over a
    4-bytes-per-pixel buffer and its copy into the RGB array aborts with
    ``Check failed: from_size == to_size ... DECORDArrayCopyFromTo``.
    """
    msg = str(exc)
    return "DECORDArrayCopyFromTo" in msg or "size must exactly match" in msg


def _decode_with_ffmpeg(path: PathLike, indices: Sequence[int]) -> np.ndarray:
    """Decode ``indices`` by piping every frame through the bundled ffmpeg.

    Fallback for :func:`_is_decord_stride_bug`; frames are decoded in order
    (no seeking) up to the largest requested index.
    """
    import imageio_ffmpeg  # noqa: PLC0415

    p = os.fspath(path)
    wanted = set(int(i) for i in indices)
    last = max(wanted)
    found: dict[int, np.ndarray] = {}
    try:
        gen = imageio_ffmpeg.read_frames(p, pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
        try:
            meta = next(gen)
            width, height = meta["size"]
            for i, buf in enumerate(gen):
                if i in wanted:
                    found[i] = np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3)
                if i >= last:
                    break
        finally:
            gen.close()
    except Exception as exc:
        raise VideoError(f"{p}: cannot decode video: {exc}") from exc
    missing = sorted(wanted - set(found))
    if missing:
        raise VideoError(f"{p}: cannot decode video: ffmpeg returned no frame {missing[0]}")
    return np.stack([found[int(i)] for i in indices])


def _get_frames(reader: Any, indices: Sequence[int], path: PathLike) -> np.ndarray:
    """Decode ``indices`` from an open reader into a contiguous uint8 array."""
    indices = list(indices)
    try:
        batch = reader.get_batch(indices).asnumpy()
    except Exception as exc:
        if not _is_decord_stride_bug(exc):
            raise VideoError(f"{os.fspath(path)}: cannot decode video: {exc}") from exc
        logger.debug("%s: decord cannot convert this frame size, decoding with ffmpeg", path)
        batch = _decode_with_ffmpeg(path, indices)
    return np.ascontiguousarray(batch, dtype=np.uint8)


def _reader_info(reader: Any, first_frame: np.ndarray | None = None) -> dict[str, Any]:
    """Metadata dict (num_frames, fps, width, height) of an open reader."""
    if first_frame is None:
        first_frame = reader[0].asnumpy()
    height, width = int(first_frame.shape[0]), int(first_frame.shape[1])
    return {
        "num_frames": int(len(reader)),
        "fps": float(reader.get_avg_fps()),
        "width": width,
        "height": height,
    }


def probe_video(path: PathLike) -> dict[str, Any]:
    """Return ``{num_frames, fps, width, height}`` of the video at ``path``.

    The first frame is decoded, so a file whose stream cannot actually be
    decoded is rejected here too.

    Raises:
        VideoError: the file is missing, unreadable or has no frames.
    """
    reader = _open_reader(path)
    try:
        first = _get_frames(reader, [0], path)[0]
        return _reader_info(reader, first)
    finally:
        del reader


def read_video_frames(
    path: PathLike,
    n_frames: int,
    start_frame: int = 0,
    frame_step: int = 1,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode ``n_frames`` frames at indices ``start_frame + i * frame_step``.

    Returns:
        ``(frames, info)`` where ``frames`` is uint8 ``(n_frames, H, W, 3)`` RGB
        and ``info`` is ``{num_frames, fps, width, height, frame_indices}``.

    Raises:
        ValueError: non-positive ``n_frames`` / ``frame_step`` or negative
            ``start_frame``.
        VideoError: the file cannot be decoded or is too short for the request.
    """
    p = os.fspath(path)
    if int(n_frames) < 1:
        raise ValueError(f"{p}: n_frames must be >= 1, got {n_frames}")
    if int(frame_step) < 1:
        raise ValueError(f"{p}: frame_step must be >= 1, got {frame_step}")
    if int(start_frame) < 0:
        raise ValueError(f"{p}: start_frame must be >= 0, got {start_frame}")
    n_frames, start_frame, frame_step = int(n_frames), int(start_frame), int(frame_step)

    reader = _open_reader(p)
    try:
        total = int(len(reader))
        indices = [start_frame + i * frame_step for i in range(n_frames)]
        last = indices[-1]
        if last >= total:
            raise VideoError(
                f"{p}: video too short: it has {total} frames, but start_frame={start_frame}, "
                f"frame_step={frame_step}, n_frames={n_frames} needs frame index {last} "
                f"(at least {last + 1} frames)"
            )
        frames = _get_frames(reader, indices, p)
        info = _reader_info(reader, frames[0])
    finally:
        del reader
    info["frame_indices"] = indices
    logger.debug("read %d frames %s from %s", n_frames, indices, p)
    return frames, info


def read_mp4(path: PathLike) -> np.ndarray:
    """Decode every frame of ``path`` into a uint8 ``(F, H, W, 3)`` RGB array."""
    reader = _open_reader(path)
    try:
        return _get_frames(reader, range(len(reader)), path)
    finally:
        del reader


# --------------------------------------------------------------------------- #
# resizing
# --------------------------------------------------------------------------- #
def _check_frames(frames: np.ndarray, what: str = "frames") -> np.ndarray:
    """Validate a uint8 ``(F, H, W, 3)`` array and return it."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what} must have shape (F, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {frames.dtype}")
    return frames


def _resize_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize one ``(H, W, 3)`` uint8 frame; INTER_AREA to shrink, INTER_CUBIC to enlarge."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame.copy()
    shrinking = width * height < w * h
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(frame), (int(width), int(height)), interpolation=interp)


def resize_center_crop(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale frames to cover ``width x height`` keeping aspect, then center-crop.

    The scale is ``max(width / W, height / H)`` so the scaled frame covers the
    target; the excess along the other axis is cropped evenly from both sides.

    Args:
        frames: uint8 ``(F, H, W, 3)``.
        width, height: target size in pixels.

    Returns:
        uint8 ``(F, height, width, 3)``.
    """
    frames = _check_frames(frames)
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    n, h, w = frames.shape[:3]
    scale = max(width / w, height / h)
    new_w = max(width, int(round(w * scale)))
    new_h = max(height, int(round(h * scale)))
    x0 = (new_w - width) // 2
    y0 = (new_h - height) // 2
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        scaled = _resize_frame(frames[i], new_w, new_h)
        out[i] = scaled[y0 : y0 + height, x0 : x0 + width]
    return out


# --------------------------------------------------------------------------- #
# writing
# --------------------------------------------------------------------------- #
def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Pad H and W up to even numbers by replicating the last row / column."""
    pad_h = frames.shape[1] % 2
    pad_w = frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def write_mp4(frames: np.ndarray, path: PathLike, fps: float, crf: int = DEFAULT_CRF) -> None:
    """Encode frames to an H.264 (libx264, yuv420p) MP4 at ``path``.

    ``yuv420p`` needs an even width and height: an odd dimension is padded by
    one pixel by replicating the last row / column, so the file (and what
    :func:`read_mp4` returns) is then one pixel larger than ``frames``.

    The encode uses a fixed CRF, one encoder thread and bit-exact muxing without
    metadata, so identical frames give identical bytes with the same ffmpeg.
    The parent folder is created; the file is written to a temporary name and
    renamed at the end, so a failure never leaves a partial file at ``path``.

    Raises:
        ValueError: bad ``frames`` or ``fps``.
        VideoError: ffmpeg failed.
    """
    import imageio_ffmpeg  # noqa: PLC0415 - keep import cost off the decode path

    p = os.fspath(path)
    try:
        frames = _check_frames(frames, what=f"{p}: frames")
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if frames.shape[0] < 1:
        raise ValueError(f"{p}: cannot write a video with no frames")
    if not fps or float(fps) <= 0:
        raise ValueError(f"{p}: fps must be > 0, got {fps}")
    padded = _pad_to_even(frames)
    if padded is not frames:
        logger.debug("%s: padded %s -> %s for yuv420p", p, frames.shape[1:3], padded.shape[1:3])
    height, width = padded.shape[1:3]

    rate = Fraction(float(fps)).limit_denominator()
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y",
        "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}", "-pix_fmt", "rgb24",
        "-r", str(rate), "-i", "-", "-an",
        "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-v", "error",
        "-crf", str(int(crf)), "-f", "mp4", *_DETERMINISTIC_FFMPEG_FLAGS,
    ]

    def _encode(tmp: str) -> None:
        # ffmpeg's own exit status is checked (imageio_ffmpeg.write_frames ignores it, so a
        # full disk left a file without its trailer), then the file is decoded and its frames
        # counted: only a complete, readable video is renamed into place.
        try:
            proc = subprocess.run([*cmd, tmp], input=np.ascontiguousarray(padded).tobytes(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        except OSError as exc:
            raise VideoError(f"{p}: cannot run ffmpeg: {exc}") from exc
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()[-2000:]
            raise VideoError(f"{p}: ffmpeg failed with exit status {proc.returncode}: {err or '(no message)'}")
        try:
            written = read_mp4(tmp)
        except Exception as exc:  # decord/ffmpeg errors of a broken file
            raise VideoError(f"{p}: the encoded file does not decode: {exc}") from exc
        if written.shape[:3] != padded.shape[:3]:
            raise VideoError(f"{p}: the encoded file decodes to {written.shape[0]} frames of "
                             f"{written.shape[2]}x{written.shape[1]}, expected {len(padded)} of {width}x{height}")

    atomic_write(p, ".mp4", _encode)
    logger.debug("wrote %d frames %dx%d @ %s fps to %s", len(padded), width, height, fps, p)


# --------------------------------------------------------------------------- #
# contact sheets
# --------------------------------------------------------------------------- #
def _pick_indices(n_frames: int, n_cols: int) -> list[int]:
    """``n_cols`` frame indices evenly spaced over ``0 .. n_frames - 1``."""
    return [int(i) for i in np.linspace(0, n_frames - 1, n_cols).round()]


#: Colour of the path :func:`contact_sheet` draws (magenta: not a colour of the toy world).
TRACK_COLOUR = (255, 0, 255)


def _draw_track(tile: np.ndarray, track: np.ndarray, current: int, scale: float) -> np.ndarray:
    """``track`` (F, 2) pixel (x, y) points (pixel i spans [i, i + 1)) drawn on ``tile`` at
    ``scale``: a 1-px polyline through every point, a dot of radius 2 on point ``current``."""
    h, w = tile.shape[:2]
    pts = [(min(max(int(x * scale), 0), w - 1), min(max(int(y * scale), 0), h - 1)) if np.isfinite([x, y]).all()
           else None for x, y in track]  # nan: the object is absent in that frame
    image = Image.fromarray(tile)
    draw = ImageDraw.Draw(image)
    drawn = [q for q in pts if q is not None]
    if len(drawn) > 1:
        draw.line(drawn, fill=TRACK_COLOUR, width=1)
    if pts[current] is not None:
        x, y = pts[current]
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=TRACK_COLOUR)
    return np.asarray(image, dtype=np.uint8)


def contact_sheet(
    rows: Sequence[tuple[str, np.ndarray]],
    n_cols: int = 4,
    label_height: int = 14,
    min_frame_size: int = 96,
    track: np.ndarray | None = None,
) -> np.ndarray:
    """Build a labelled grid image: one row of ``n_cols`` frames per clip.

    Each row is a white label strip of ``label_height`` pixels with the label
    text (PIL default font) followed by ``n_cols`` frames of that clip picked at
    ``np.linspace(0, F - 1, n_cols).round()``.  Every frame is resized to the
    first clip's frame height, keeping its aspect ratio, then enlarged by the
    smallest whole factor that makes it at least ``min_frame_size`` px high,
    nearest-neighbour (the toy world's 32 px frames: 3x, pixels stay sharp); the
    sheet is at least as wide as its longest label; rows narrower than the widest
    are padded on the right with white.

    ``track``: an optional ``(F, 2)`` path of (x, y) pixel points in the rows'
    frames (every row then has F frames), e.g. the reference's ground-truth
    centroids: drawn over every frame as a :data:`TRACK_COLOUR` polyline with a
    dot on that frame's point. Without it nothing is drawn over the frames.

    Returns:
        uint8 ``(H, W, 3)`` image.
    """
    if not rows:
        raise ValueError("contact_sheet needs at least one row")
    if n_cols < 1:
        raise ValueError(f"n_cols must be >= 1, got {n_cols}")
    if track is not None:
        track = np.asarray(track, dtype=np.float64)
        if track.ndim != 2 or track.shape[1] != 2:
            raise ValueError(f"track must have shape (F, 2), got {track.shape}")
    target_h = factor = None
    strips: list[tuple[str, np.ndarray]] = []
    for label, frames in rows:
        frames = _check_frames(frames, what=f"frames of row {label!r}")
        if frames.shape[0] < 1:
            raise ValueError(f"row {label!r} has no frames")
        if track is not None and len(track) != frames.shape[0]:
            raise ValueError(f"row {label!r} has {frames.shape[0]} frames, the track {len(track)} points")
        if target_h is None:
            target_h = int(frames.shape[1])
            factor = max(1, -(-int(min_frame_size) // target_h))  # ceil
        picked = []
        for idx in _pick_indices(frames.shape[0], n_cols):
            f = frames[idx]
            new_w = max(1, int(round(f.shape[1] * target_h / f.shape[0])))
            f = np.repeat(np.repeat(_resize_frame(f, new_w, target_h), factor, axis=0), factor, axis=1)
            if track is not None:
                f = _draw_track(f, track, idx, factor * target_h / frames.shape[1])
            picked.append(f)
        strips.append((str(label), np.concatenate(picked, axis=1)))

    assert target_h is not None and factor is not None
    frame_h = target_h * factor
    font = ImageFont.load_default()
    label_w = max(int(np.ceil(font.getlength(label))) + 4 for label, _ in strips) if label_height > 0 else 0
    sheet_w = max(label_w, *(strip.shape[1] for _, strip in strips))
    row_h = label_height + frame_h
    sheet = np.full((row_h * len(strips), sheet_w, 3), 255, dtype=np.uint8)
    for r, (_, strip) in enumerate(strips):
        y = r * row_h + label_height
        sheet[y : y + frame_h, : strip.shape[1]] = strip

    if label_height > 0:
        image = Image.fromarray(sheet)
        draw = ImageDraw.Draw(image)
        for r, (label, _) in enumerate(strips):
            draw.text((2, r * row_h + 1), label, fill=(0, 0, 0), font=font)
        sheet = np.asarray(image, dtype=np.uint8).copy()
    return sheet


def save_png(image: np.ndarray, path: PathLike) -> None:
    """Save a uint8 ``(H, W, 3)`` (or ``(H, W)``) image as PNG, atomically."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"{os.fspath(path)}: image must be uint8 HxW or HxWx3, got "
                         f"{image.dtype} {image.shape}")

    def _save(tmp: str) -> None:
        Image.fromarray(image).save(tmp, format="PNG")

    atomic_write(path, ".png", _save)

"""Tests for motionmatcher.files.video: decoding, resizing, H.264 writing, contact sheets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from motionmatcher.files import video
from motionmatcher.files.video import (
    VideoError,
    contact_sheet,
    probe_video,
    read_mp4,
    read_video_frames,
    resize_center_crop,
    save_png,
    write_mp4,
)

N_FRAMES, WIDTH, HEIGHT, FPS = 20, 64, 48, 8


def smooth_clip(n: int = N_FRAMES, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Smooth gradients whose brightness grows with the frame index (identifiable frames)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        level = 20 + 10 * i  # distinct mean per frame
        r = level + 30 * x / width
        g = level + 30 * y / height
        b = np.full_like(x, 200 - 5 * i)
        frames[i] = np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)
    return frames


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return smooth_clip()


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory, clip: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("vid") / "clip.mp4"
    write_mp4(clip, path, fps=FPS)
    return path


def nearest_original(decoded: np.ndarray, original: np.ndarray) -> list[int]:
    """Index of the original frame closest (MAE) to each decoded frame."""
    d = decoded.astype(np.float32)[:, None]
    o = original.astype(np.float32)[None]
    return np.abs(d - o).mean(axis=(2, 3, 4)).argmin(axis=1).tolist()


# --------------------------------------------------------------------------- #
# probing / reading
# --------------------------------------------------------------------------- #
def test_probe_video(clip_path: Path) -> None:
    info = probe_video(clip_path)
    assert info == {"num_frames": N_FRAMES, "fps": pytest.approx(FPS), "width": WIDTH, "height": HEIGHT}
    assert isinstance(info["num_frames"], int) and isinstance(info["fps"], float)


def test_read_video_frames_all(clip_path: Path, clip: np.ndarray) -> None:
    frames, info = read_video_frames(clip_path, N_FRAMES)
    assert frames.shape == (N_FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert info["frame_indices"] == list(range(N_FRAMES))
    assert (info["num_frames"], info["width"], info["height"]) == (N_FRAMES, WIDTH, HEIGHT)
    assert info["fps"] == pytest.approx(FPS)
    assert nearest_original(frames, clip) == list(range(N_FRAMES))


def test_read_video_frames_start_and_step(clip_path: Path, clip: np.ndarray) -> None:
    frames, info = read_video_frames(clip_path, 5, start_frame=3, frame_step=3)
    expected = [3, 6, 9, 12, 15]
    assert info["frame_indices"] == expected
    assert frames.shape == (5, HEIGHT, WIDTH, 3)
    # the decoded frames are really the requested ones (seeking must be exact)
    assert nearest_original(frames, clip) == expected
    np.testing.assert_array_equal(frames, read_mp4(clip_path)[expected])


def test_read_video_frames_exact_fit(clip_path: Path) -> None:
    frames, info = read_video_frames(clip_path, 10, start_frame=1, frame_step=2)
    assert info["frame_indices"][-1] == N_FRAMES - 1
    assert len(frames) == 10


def test_read_video_frames_too_short(clip_path: Path) -> None:
    with pytest.raises(VideoError) as err:
        read_video_frames(clip_path, 10, start_frame=5, frame_step=2)
    msg = str(err.value)
    assert str(clip_path) in msg
    assert f"{N_FRAMES} frames" in msg
    for part in ("start_frame=5", "frame_step=2", "n_frames=10", "23"):
        assert part in msg, (part, msg)
    with pytest.raises(VideoError, match="21 frames"):
        read_video_frames(clip_path, N_FRAMES + 1)


def test_read_video_frames_bad_arguments(clip_path: Path) -> None:
    for kwargs in ({"n_frames": 0}, {"n_frames": 2, "frame_step": 0}, {"n_frames": 2, "start_frame": -1}):
        with pytest.raises(ValueError):
            read_video_frames(clip_path, **kwargs)


def test_missing_file_raises_video_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "missing.mp4"
    for fn in (probe_video, read_mp4, lambda p: read_video_frames(p, 4)):
        with pytest.raises(VideoError) as err:
            fn(missing)
        assert str(missing) in str(err.value)
        assert isinstance(err.value, ValueError)


def test_garbage_and_empty_files_raise_video_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (garbage, empty, tmp_path):
        for fn in (probe_video, read_mp4, lambda p: read_video_frames(p, 1)):
            with pytest.raises(VideoError) as err:
                fn(path)
            assert str(err.value).startswith(f"{path}:"), str(err.value)
            assert "cannot decode video" in str(err.value)


# --------------------------------------------------------------------------- #
# resize_center_crop
# --------------------------------------------------------------------------- #
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def banded_frame(width: int, height: int, horizontal: bool = True) -> np.ndarray:
    """One-frame clip of four equal bands green | red | blue | green.

    A correct center crop to a square keeps exactly the red | blue middle; a
    crop that is off-centre or squashes the aspect ratio shows green.
    """
    f = np.zeros((1, height, width, 3), dtype=np.uint8)
    n = width if horizontal else height
    q = n // 4
    for k, color in enumerate((GREEN, RED, BLUE, GREEN)):
        band = slice(k * q, (k + 1) * q if k < 3 else n)
        if horizontal:
            f[:, :, band] = color
        else:
            f[:, band] = color
    return f


def test_resize_center_crop_landscape_keeps_center() -> None:
    out = resize_center_crop(banded_frame(200, 100), 100, 100)
    assert out.shape == (1, 100, 100, 3) and out.dtype == np.uint8
    # scale 1: plain center crop of columns 50..150
    assert (out[0, :, :50] == RED).all()
    assert (out[0, :, 50:] == BLUE).all()


def test_resize_center_crop_portrait_shrink() -> None:
    out = resize_center_crop(banded_frame(100, 200, horizontal=False), 50, 50)
    assert out.shape == (1, 50, 50, 3)
    # scale 0.5 -> 50x100, center rows 25..75: top half red, bottom half blue
    assert np.abs(out[0, :24].astype(int) - RED).max() <= 2
    assert np.abs(out[0, 26:].astype(int) - BLUE).max() <= 2


def test_resize_center_crop_enlarge() -> None:
    out = resize_center_crop(banded_frame(40, 20), 64, 64)
    assert out.shape == (1, 64, 64, 3)
    # scale 3.2 -> 128x64, crop columns 32..96: red | blue, boundary in the middle
    red_cols = (out[0, 32, :, 0] > 128).sum()
    blue_cols = (out[0, 32, :, 2] > 128).sum()
    assert abs(int(red_cols) - 32) <= 1 and abs(int(blue_cols) - 32) <= 1
    assert np.abs(out[0, :, 2:28].astype(int) - RED).max() <= 3
    assert np.abs(out[0, :, 36:62].astype(int) - BLUE).max() <= 3


def test_resize_center_crop_shrink_uses_area_filter() -> None:
    checker = np.zeros((1, 64, 64, 3), dtype=np.uint8)
    checker[:, ::2, ::2] = 255
    checker[:, 1::2, 1::2] = 255
    out = resize_center_crop(checker, 32, 32)
    # area averaging gives uniform mid-grey; nearest-neighbour would give 0 / 255
    assert np.abs(out.astype(int) - 127.5).max() <= 1


def test_resize_center_crop_sizes_and_identity() -> None:
    frames = smooth_clip(3, 160, 128)
    for w, h in ((64, 48), (48, 64), (100, 100), (161, 129), (160, 128)):
        out = resize_center_crop(frames, w, h)
        assert out.shape == (3, h, w, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(resize_center_crop(frames, 160, 128), frames)
    with pytest.raises(ValueError):
        resize_center_crop(frames.astype(np.float32), 10, 10)


# --------------------------------------------------------------------------- #
# write_mp4 / read_mp4
# --------------------------------------------------------------------------- #
def test_round_trip(clip_path: Path, clip: np.ndarray) -> None:
    decoded = read_mp4(clip_path)
    assert decoded.shape == clip.shape and decoded.dtype == np.uint8
    mae = np.abs(decoded.astype(np.float32) - clip).mean()
    assert mae < 6, mae


def test_round_trip_textured_clip(tmp_path: Path) -> None:
    """Texture survives the encode (guards against a too-coarse CRF)."""
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    frames = np.stack([
        np.stack([128 + 60 * np.sin(0.7 * x + 0.3 * i) * np.cos(0.5 * y) + off for off in (0, 20, -20)], -1)
        for i in range(12)
    ]).clip(0, 255).astype(np.uint8)
    path = tmp_path / "tex.mp4"
    write_mp4(frames, path, fps=8)
    mae = np.abs(read_mp4(path).astype(np.float32) - frames).mean()
    assert mae < 3, mae


def test_write_mp4_odd_size_is_padded(tmp_path: Path) -> None:
    frames = smooth_clip(5, 33, 17)
    path = tmp_path / "odd.mp4"
    write_mp4(frames, path, fps=4)
    decoded = read_mp4(path)
    assert decoded.shape == (5, 18, 34, 3)
    assert np.abs(decoded[:, :17, :33].astype(np.float32) - frames).mean() < 6
    # padding replicates the last row / column
    assert np.abs(decoded[:, 17, :33].astype(np.float32) - frames[:, 16]).mean() < 8
    assert np.abs(decoded[:, :17, 33].astype(np.float32) - frames[:, :, 32]).mean() < 8


def test_write_mp4_is_deterministic_and_atomic(tmp_path: Path) -> None:
    frames = smooth_clip(8, 32, 32)
    a, b = tmp_path / "a" / "deep" / "x.mp4", tmp_path / "b.mp4"
    write_mp4(frames, a, fps=8)
    write_mp4(frames, b, fps=8)
    assert a.read_bytes() == b.read_bytes()
    # overwriting works and leaves no temporary files behind
    write_mp4(frames[::-1], b, fps=8)
    assert b.read_bytes() != a.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["a", "b.mp4"]
    assert os.listdir(a.parent) == ["x.mp4"]


def test_write_mp4_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keep.mp4"
    write_mp4(smooth_clip(4, 16, 16), path, fps=8)
    before = path.read_bytes()

    bin_dir = tmp_path.parent / f"{tmp_path.name}-bin"
    bin_dir.mkdir()
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", _broken_ffmpeg(bin_dir, 1))  # a crashed ffmpeg
    with pytest.raises((VideoError, OSError)):
        write_mp4(smooth_clip(4, 16, 16), path, fps=8)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.mp4"]


def test_write_mp4_rejects_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="bad.mp4"):
        write_mp4(np.zeros((2, 8, 8, 3), np.float32), path, fps=8)
    with pytest.raises(ValueError, match="bad.mp4"):
        write_mp4(np.zeros((2, 8, 8), np.uint8), path, fps=8)
    with pytest.raises(ValueError, match="bad.mp4"):
        write_mp4(np.zeros((2, 8, 8, 3), np.uint8), path, fps=0)
    assert not path.exists() and os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- #
# contact sheet
# --------------------------------------------------------------------------- #
def test_contact_sheet_layout(tmp_path: Path) -> None:
    a = np.stack([np.full((48, 64, 3), 10 * i, np.uint8) for i in range(10)])  # value = 10 * index
    b = np.full((3, 24, 24, 3), 200, np.uint8)  # smaller, square: resized to 48x48
    sheet = contact_sheet([("first", a), ("second", b)], n_cols=4, label_height=14, min_frame_size=48)
    assert sheet.dtype == np.uint8
    assert sheet.shape == (2 * (14 + 48), 4 * 64, 3)
    # evenly spaced frames 0, 3, 6, 9 in row 1
    picked = [int(sheet[14 + 24, 64 * c + 32, 0]) for c in range(4)]
    assert picked == [0, 30, 60, 90]
    # row 2: four 48-px-wide frames, white padding to the right
    assert (sheet[62 + 14 :, : 4 * 48] == 200).all()
    assert (sheet[62 + 14 :, 4 * 48 :] == 255).all()
    # labels were drawn (dark pixels in the label strips)
    assert (sheet[:14] < 128).any() and (sheet[62:76] < 128).any()

    out = tmp_path / "sheets" / "s.png"
    save_png(sheet, out)
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), sheet)
    assert os.listdir(out.parent) == ["s.png"]


def test_contact_sheet_enlarges_small_frames_nearest_neighbour() -> None:
    """32 px frames (the toy world's) are shown 3x (>= 96 px), each pixel a 3x3 block; a label
    longer than the frames widens the sheet rather than being cut off; nothing drawn over them."""
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    label = "p00 s0: a yellow triangle on a brown background, moving along a long and winding path"
    sheet = contact_sheet([(label, clip)], n_cols=4, label_height=14)
    assert sheet.shape[0] == 14 + 96
    for c, idx in enumerate([0, 2, 5, 7]):  # np.linspace(0, 7, 4).round()
        np.testing.assert_array_equal(sheet[14:, 96 * c : 96 * (c + 1)],
                                      np.repeat(np.repeat(clip[idx], 3, axis=0), 3, axis=1))
    dark_cols = np.nonzero((sheet[:14] < 128).any(axis=(0, 2)))[0]
    assert sheet.shape[1] > 4 * 96 and dark_cols.max() < sheet.shape[1] - 2  # the whole label fits
    assert (sheet[14:, 4 * 96 :] == 255).all()


def test_contact_sheet_draws_the_ground_truth_path(tmp_path: Path) -> None:
    """With a toy reference's sidecar, the sheet draws its centroid path over every frame (a dot
    on the frame's own centroid); the expected positions are the object's pixel centroids,
    computed here from the rendered frames; a video without a sidecar gets no path."""
    import json

    from motionmatcher.metrics.groundtruth import load_ground_truth
    from motionmatcher.toy import world

    spec = world.sample_clip(np.random.default_rng(3), appearance=("red", "circle", "black"),
                             trajectory="line", two_object_prob=0.0, motion_word_prob=1.0)
    frames, gt = world.render_clip(spec)
    (tmp_path / "ref.gt.json").write_text(json.dumps(world.gt_json(gt)))
    truth = load_ground_truth(tmp_path / "ref.mp4", len(frames), (32, 32))
    sample = np.zeros_like(frames)  # a black "sample": only the path is drawn on it
    sheet = contact_sheet([("reference", frames), ("sample", sample)], n_cols=4, label_height=14,
                          track=truth["centroid"])

    red = (frames[..., 0] > 128) & (frames[..., 1] < 100) & (frames[..., 2] < 100)
    ys, xs = np.mgrid[0:32, 0:32] + 0.5
    expected = np.stack([[(xs * m).sum() / m.sum(), (ys * m).sum() / m.sum()] for m in red])  # (x, y) px
    assert np.ptp(expected[:, 0]) + np.ptp(expected[:, 1]) > 8  # the object moves
    path = expected * 3  # in the sheet's 96 px frames
    magenta = (sheet == video.TRACK_COLOUR).all(axis=-1)
    for r in range(2):
        for c, idx in enumerate([0, 2, 5, 7]):
            tile = magenta[14 + 110 * r : 110 * (r + 1), 96 * c : 96 * (c + 1)]
            x, y = path[idx]
            assert tile[int(y), int(x)], (r, c)  # the dot on the frame's own centroid
            # every drawn pixel lies on the path (1 px line, dot radius 2, < 1 px of centroid rounding)
            py, px = np.nonzero(tile)
            pts = np.stack([px + 0.5, py + 0.5], axis=1)
            a, b = path[:-1][None], path[1:][None]
            t = np.clip(((pts[:, None] - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1), 0, 1)
            dist = np.linalg.norm(pts[:, None] - (a + t[..., None] * (b - a)), axis=-1).min(1)
            assert dist.max() < 3.5, (r, c)
            # and it runs along the whole path: each segment's midpoint is drawn
            for m in (path[:-1] + path[1:]) / 2:
                assert tile[int(m[1]) - 1 : int(m[1]) + 2, int(m[0]) - 1 : int(m[0]) + 2].any()

    assert load_ground_truth(tmp_path / "real.mp4", len(frames), (32, 32)) is None  # no sidecar
    plain = contact_sheet([("reference", frames), ("sample", sample)], n_cols=4, label_height=14, track=None)
    assert not (plain == video.TRACK_COLOUR).all(axis=-1).any()
    assert (plain[14 + 110 :, : 4 * 96] == 0).all()  # the black sample untouched


def test_contact_sheet_rejects_empty() -> None:
    with pytest.raises(ValueError):
        contact_sheet([])


def test_video_error_is_value_error() -> None:
    assert issubclass(video.VideoError, ValueError)


@pytest.mark.parametrize("width", [48, 72])
def test_widths_that_decord_cannot_convert(tmp_path: Path, width: int) -> None:
    """decord 0.6.0 fails on some widths (dmlc/decord#336); the ffmpeg fallback must work."""
    frames = smooth_clip(6, width, 32)
    path = tmp_path / f"w{width}.mp4"
    write_mp4(frames, path, fps=8)
    assert probe_video(path) == {"num_frames": 6, "fps": 8.0, "width": width, "height": 32}
    decoded = read_mp4(path)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(np.float32) - frames).mean() < 6
    sub, info = read_video_frames(path, 3, start_frame=1, frame_step=2)
    assert info["frame_indices"] == [1, 3, 5]
    np.testing.assert_array_equal(sub, decoded[[1, 3, 5]])
    assert nearest_original(sub, frames) == [1, 3, 5]


def test_written_files_get_normal_permissions(tmp_path: Path) -> None:
    """Atomic writes must not leave temp-file permissions (0600) on the result."""
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    mp4, png = tmp_path / "p.mp4", tmp_path / "p.png"
    write_mp4(smooth_clip(2, 16, 16), mp4, fps=8)
    save_png(np.zeros((4, 4, 3), np.uint8), png)
    for path in (mp4, png):
        assert path.stat().st_mode & 0o777 == expected, oct(path.stat().st_mode)


def _broken_ffmpeg(tmp_path: Path, status: int) -> str:
    """An ffmpeg that encodes, then loses the second half of the file (a full disk while
    writing the trailer) and exits with ``status``; decoding runs the real ffmpeg."""
    import imageio_ffmpeg

    real = imageio_ffmpeg.get_ffmpeg_exe()
    exe = tmp_path / "ffmpeg"
    exe.write_text(f"""#!/usr/bin/env bash
case " $* " in *" libx264 "*) ;; *) exec "{real}" "$@" ;; esac
"{real}" "$@"
out="${{@: -1}}"
truncate -s $(( $(stat -c %s "$out") / 2 )) "$out"
echo "av_interleaved_write_frame(): No space left on device" >&2
exit {status}
""")
    exe.chmod(0o755)
    return str(exe)


@pytest.mark.parametrize("status", [1, 0])
def test_write_mp4_refuses_a_truncated_file(tmp_path: Path, monkeypatch, status: int) -> None:
    """Fault injection: ffmpeg fails writing the trailer (exit 1), or truncates and claims
    success (exit 0). Nothing is renamed into place, no temporary is left, the error names the
    file."""
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", _broken_ffmpeg(tmp_path, status))
    out = tmp_path / "videos" / "x.mp4"
    with pytest.raises(VideoError) as err:
        write_mp4(smooth_clip(8, 32, 32), out, fps=8)
    assert str(out) in str(err.value)
    if status:
        assert "exit status 1" in str(err.value) and "No space left" in str(err.value)
    assert list((tmp_path / "videos").iterdir()) == []


def test_rule_log_receives_child_process_stderr(tmp_path: Path) -> None:
    """setup_script points file descriptor 2 at the rule's log, so what ffmpeg (or any child)
    prints on failure lands in the log, not on Snakemake's console."""
    import subprocess
    import sys

    log = tmp_path / "rule.log"
    code = f"""
import subprocess, sys, types
from motionmatcher.jobs.rule_script import setup_script
smk = types.SimpleNamespace(log=[{str(log)!r}], resources=types.SimpleNamespace(), threads=1,
                            rule="r", wildcards={{}})
setup_script(smk)
subprocess.run(["sh", "-c", "echo child-error-text >&2"])
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "child-error-text" in log.read_text()
    assert "child-error-text" not in res.stderr

"""Tests for motionmatcher.toy.ball_clips: procedural clips and the demo dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from motionmatcher.toy import ball_clips
from motionmatcher.toy.ball_clips import TRAJECTORIES, render_clip, write_demo_dataset
from motionmatcher.files.video import probe_video, read_mp4

SIZE = (96, 64)  # (width, height), non-square on purpose
N = 12


def ball_mask(frames: np.ndarray) -> np.ndarray:
    """Boolean (F, H, W) mask of the red ball (red clearly above green and blue)."""
    f = frames.astype(np.int16)
    return (f[..., 0] - np.maximum(f[..., 1], f[..., 2])) > 60


def centroids(frames: np.ndarray) -> np.ndarray:
    """(F, 2) array of the ball's (x, y) centroid per frame."""
    mask = ball_mask(frames)
    out = []
    for m in mask:
        ys, xs = np.nonzero(m)
        assert len(xs) > 0, "ball not visible"
        out.append((xs.mean() + 0.5, ys.mean() + 0.5))
    return np.array(out)


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    return {t: render_clip(t, n_frames=N, size=SIZE, seed=0) for t in TRAJECTORIES}


def test_trajectory_names() -> None:
    assert TRAJECTORIES == ("left_to_right", "circle", "zoom")
    with pytest.raises(ValueError, match="spiral"):
        render_clip("spiral")


def test_render_clip_shape_and_determinism(clips: dict[str, np.ndarray]) -> None:
    for traj, clip in clips.items():
        assert clip.shape == (N, SIZE[1], SIZE[0], 3) and clip.dtype == np.uint8
        np.testing.assert_array_equal(clip, render_clip(traj, n_frames=N, size=SIZE, seed=0))
    # the seed changes the background
    other = render_clip("left_to_right", n_frames=N, size=SIZE, seed=1)
    assert np.abs(other.astype(int) - clips["left_to_right"]).mean() > 5


def test_trajectories_differ(clips: dict[str, np.ndarray]) -> None:
    names = list(clips)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(clips[a].astype(int) - clips[b]).mean() > 1, (a, b)


def test_left_to_right_moves_right(clips: dict[str, np.ndarray]) -> None:
    c = centroids(clips["left_to_right"])
    dx = np.diff(c[:, 0])
    assert (dx > 0).all(), c[:, 0]
    assert c[-1, 0] - c[0, 0] > 0.5 * SIZE[0]
    assert np.ptp(c[:, 1]) < 1.0  # stays at the same height
    # the background away from the ball's path does not change
    top = clips["left_to_right"][:, :8]
    assert (top == top[0]).all()


def test_circle_keeps_distance_to_center(clips: dict[str, np.ndarray]) -> None:
    c = centroids(clips["circle"])
    center = np.array([SIZE[0] / 2, SIZE[1] / 2])
    dist = np.linalg.norm(c - center, axis=1)
    assert dist.min() > 0.2 * min(SIZE)
    assert dist.max() - dist.min() < 1.5, dist
    angles = np.unwrap(np.arctan2(c[:, 1] - center[1], c[:, 0] - center[0]))
    assert (np.diff(angles) > 0).all()  # goes around in one direction
    assert angles[-1] - angles[0] > 1.5 * np.pi  # most of a full loop


def test_zoom_grows_ball_and_scales_background(clips: dict[str, np.ndarray]) -> None:
    clip = clips["zoom"]
    area = ball_mask(clip).sum(axis=(1, 2))
    assert (np.diff(area) > 0).all(), area
    assert 3.0 < area[-1] / area[0] < 5.0  # zoom x2 -> area x4
    # the whole scene changes (camera zoom), not only the ball
    corner = clip[:, :8, :8].astype(int)
    assert np.abs(corner[-1] - corner[0]).mean() > 2
    # the zoom is about the frame centre: the off-centre ball moves outwards
    c = centroids(clip)
    center = np.array([SIZE[0] / 2, SIZE[1] / 2])
    d = np.linalg.norm(c - center, axis=1)
    assert d[-1] > 1.5 * d[0]


def test_sub_pixel_motion_is_visible() -> None:
    # 0.6 * 64 px over 191 steps = 0.2 px per frame: every frame must still differ
    clip = render_clip("left_to_right", n_frames=192, size=(64, 64))
    diffs = np.abs(np.diff(clip.astype(np.int16), axis=0)).sum(axis=(1, 2, 3))
    assert (diffs > 0).all()
    x = centroids(clip)[:, 0]
    assert (np.diff(x) > 0).mean() > 0.9  # centroid creeps right almost every frame


@pytest.mark.parametrize("trajectory", TRAJECTORIES)
def test_render_is_antialiased(trajectory: str) -> None:
    """A 64x48 render matches a 4x larger render box-filtered down.

    The scene is resolution independent, so this only holds if edges (ball
    rim, stripes) are anti-aliased: hard edges give errors of ~80 grey levels.
    """
    lo = render_clip(trajectory, n_frames=3, size=(64, 48)).astype(np.float32)
    hi = render_clip(trajectory, n_frames=3, size=(256, 192)).astype(np.float32)
    hi_down = hi.reshape(3, 48, 4, 64, 4, 3).mean(axis=(2, 4))
    err = np.abs(lo - hi_down)
    assert err.mean() < 1.0 and err.max() < 16, (err.mean(), err.max())


# --------------------------------------------------------------------------- #
# dataset
# --------------------------------------------------------------------------- #
DS_KW = {"n_frames": 8, "size": (80, 64), "fps": 8, "seed": 0}


def all_files(root: Path) -> dict[str, int]:
    """relative path -> mtime_ns for every file under root."""
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "data", **DS_KW)


def test_manifest_contents(dataset: Path) -> None:
    assert dataset.name == "manifest.csv" and dataset.is_file()
    df = pd.read_csv(dataset)
    assert list(df.columns) == ["video_id", "video_path", "caption", "prompt"]
    assert len(df) == 2 * len(TRAJECTORIES)
    assert sorted(df["video_id"].unique()) == sorted(TRAJECTORIES)
    for vid, group in df.groupby("video_id"):
        assert len(group) == 2
        assert group["prompt"].nunique() == 2  # two different target prompts
        assert group["caption"].nunique() == 1
        assert group["video_path"].iloc[0] == f"videos/{vid}.mp4"
    assert df.notna().all().all()
    for rel in df["video_path"].unique():
        path = dataset.parent / rel
        assert path.is_file()
        info = probe_video(path)
        assert (info["num_frames"], info["width"], info["height"]) == (8, 80, 64)
        assert info["fps"] == pytest.approx(8)


def test_video_preserves_motion(dataset: Path) -> None:
    decoded = read_mp4(dataset.parent / "videos" / "left_to_right.mp4")
    x = centroids(decoded)[:, 0]
    assert (np.diff(x) > 0).all(), x
    rendered = render_clip("left_to_right", n_frames=8, size=(80, 64), seed=0)
    assert np.abs(decoded.astype(np.float32) - rendered).mean() < 6


def test_write_demo_dataset_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "d"
    manifest = write_demo_dataset(out, **DS_KW)
    before = all_files(out)
    assert set(before) >= {"manifest.csv", *(f"videos/{t}.mp4" for t in TRAJECTORIES)}
    assert write_demo_dataset(out, **DS_KW) == manifest
    assert all_files(out) == before  # nothing rewritten

    # a missing file is regenerated (identical bytes: encoding is deterministic)
    video = out / "videos" / "circle.mp4"
    data = video.read_bytes()
    video.unlink()
    write_demo_dataset(out, **DS_KW)
    assert video.read_bytes() == data

    # different parameters rewrite the videos
    write_demo_dataset(out, **{**DS_KW, "seed": 3})
    assert video.read_bytes() != data
    assert probe_video(video)["num_frames"] == 8


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = ball_clips.main([str(out), "--n-frames", "4", "--width", "48", "--height", "32", "--fps", "4"])
    assert rc == 0
    printed = capsys.readouterr().out.strip()
    assert Path(printed) == out / "manifest.csv" and Path(printed).is_file()
    info = probe_video(out / "videos" / "zoom.mp4")
    assert (info["num_frames"], info["width"], info["height"]) == (4, 48, 32)
    assert info["fps"] == pytest.approx(4)
    assert os.path.isfile(out / "videos" / "left_to_right.mp4")

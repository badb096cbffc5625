"""MTBench (DeT, ICCV 2025): its motion-fidelity score as its ``evaluation.py`` computes it, and
the importer, on small synthetic folders in MTBench's layout.

The equality tests re-implement, from reading DeT's ``evaluation.py`` (``motion_fidelity``,
``get_tracklets``, ``get_cosine_similarity_score``) and CoTracker's ``CoTrackerPredictor`` /
``get_points_on_a_grid``, the official computation, and compare it with ours. CoTracker itself is
not installable here: a stand-in tracker (a motion field read from the frames) is the one thing
both sides share, behind the official predictor's call on one side and our tracker interface
(``track_points``) on the other.
"""

from __future__ import annotations

from pathlib import Path

import imageio
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from motionmatcher.toy.ball_clips import render_clip
from motionmatcher.metrics.evaluate import evaluate_samples
from motionmatcher.files.manifest import load_manifest
from motionmatcher.metrics.mtbench import (
    MTBenchError,
    MTBenchSetup,
    align_frames,
    box_mask,
    check_mtbench_config,
    count_zero_steps,
    crop_mask,
    first_frame_mask,
    grid_points,
    import_mtbench,
    load_mtbench_trajectories,
    main,
    mtbench_motion_fidelity,
    mtbench_setup,
    normalise_tracks,
    stored_trajectories,
    track_mtbench,
    video_folder,
)
from motionmatcher.results.summary_tables import difficulty_breakdown, difficulty_markdown
from motionmatcher.files.video import read_mp4, resize_center_crop, write_mp4

# ---- the score's formula: known answers ------------------------------------------------------


def _track(x0=0.5, y0=0.0, dx=0.1, n=3):
    t = np.arange(n, dtype=np.float64)
    return np.stack([x0 + dx * t, np.full(n, y0)], axis=-1)[None]  # (1, T, 2)


def test_known_answers_self_mirror_frechet_offset():
    a = _track()  # starts at (0.5, 0): u = (1,0), (1,0), (1,0)
    assert mtbench_motion_fidelity(a, a) == pytest.approx(1.0)
    mirror = a.copy()
    mirror[..., 0] = 1.0 - mirror[..., 0]  # (0.5, 0) moving left: (1,0), (-1,0), (-1,0)
    assert mtbench_motion_fidelity(a, mirror) == pytest.approx(-1 / 3)
    # Fréchet term of a track with itself: mean over the 3x3 point pairs of |x_i - x_j| = 0.8 / 9
    d = 0.8 / 9
    assert mtbench_motion_fidelity(a, a, frechet=True, frechet_samples=4) == pytest.approx(0.5 + 0.5 / (1 + d))
    # constant offset: displacements agree, the initial-position direction does not
    shifted = a + np.array([0.0, 0.5])  # starts at (0.5, 0.5): u(0) = (1, 1)/sqrt2
    assert mtbench_motion_fidelity(a, shifted) == pytest.approx((1 / np.sqrt(2) + 2) / 3)


def test_a_point_that_does_not_move_gives_nan_as_the_official_code():
    still = np.concatenate([_track(), _track()[:, [0, 0, 1]]])  # second track: no motion from frame 0 to 1
    assert count_zero_steps(still) == 1
    assert np.isnan(mtbench_motion_fidelity(still, _track()))  # in the reference: every row NaN
    assert np.isnan(mtbench_motion_fidelity(_track(), still))  # in the sample: its row NaN, the mean NaN
    assert mtbench_motion_fidelity(_track(), _track()) == pytest.approx(1.0)


def test_frames_are_aligned_like_mtbench():
    long, short = np.zeros((2, 5, 2)), np.zeros((3, 3, 2))
    long[:, :, 0] = np.arange(5)
    a, b = align_frames(long, short)
    assert a.shape == (2, 3, 2) and list(a[0, :, 0]) == [0, 2, 4] and b is short
    ids = np.linspace(0, 15, 8).astype(np.int32)  # 16 -> 8 frames: truncation, not rounding
    assert list(ids) == [0, 2, 4, 6, 8, 10, 12, 15]
    # 12 -> 8 frames (linspace 0, 1.57, 3.14, 4.71, ...): truncated, whichever set is longer
    long, short = np.zeros((1, 12, 2)), np.zeros((1, 8, 2))
    long[..., 0] = np.arange(12)
    for a, b in (align_frames(long, short), align_frames(short, long)[::-1]):
        assert list(a[0, :, 0]) == [0, 1, 3, 4, 6, 7, 9, 11] and b.shape == (1, 8, 2)


# ---- the official computation, re-implemented from reading -----------------------------------


def official_cosine(tracklets1: torch.Tensor, tracklets2: torch.Tensor) -> torch.Tensor:
    """``evaluation.py: get_cosine_similarity_score`` (gen = 1, original = 2), float32 torch."""
    n1, n2 = tracklets1.shape[1], tracklets2.shape[1]
    if n1 > n2:
        tracklets1 = tracklets1[:, torch.linspace(0, n1 - 1, n2).to(torch.int32)]
    elif n1 < n2:
        tracklets2 = tracklets2[:, torch.linspace(0, n2 - 1, n1).to(torch.int32)]
    t1 = torch.cat([tracklets1[:, :1], tracklets1[:, 1:] - tracklets1[:, :-1]], dim=1)
    t2 = torch.cat([tracklets2[:, :1], tracklets2[:, 1:] - tracklets2[:, :-1]], dim=1)
    t1 = t1 / t1.norm(dim=-1, keepdim=True)
    t2 = t2 / t2.norm(dim=-1, keepdim=True)
    return torch.einsum("ntc, mtc -> nmt", t1, t2).mean(dim=-1)


def official_points_on_a_grid(size: int, extent) -> torch.Tensor:
    """CoTracker's ``get_points_on_a_grid(size, extent)`` (centre = the middle of the extent)."""
    center = [extent[0] / 2, extent[1] / 2]
    margin = extent[1] / 64
    range_y = (margin - extent[0] / 2 + center[0], extent[0] / 2 + center[0] - margin)
    range_x = (margin - extent[1] / 2 + center[1], extent[1] / 2 + center[1] - margin)
    grid_y, grid_x = torch.meshgrid(torch.linspace(*range_y, size), torch.linspace(*range_x, size), indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(1, -1, 2)


def stand_in_motion(frames: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The stand-in for CoTracker: ``(N, T, 2)`` pixel tracks of ``(N, 2)`` pixel queries given
    on frame 0, from the frames' content: each point follows the red ball's displacement
    (weighted by a smooth function of where the point is) plus a point-dependent wobble."""
    f = np.asarray(frames, dtype=np.float64)
    n_t, h, w = f.shape[:3]
    red = (f[..., 0] > 150) & (f[..., 1] < 110) & (f[..., 2] < 110)
    ys, xs = np.mgrid[0:h, 0:w]
    area = np.maximum(red.sum(axis=(1, 2)), 1)
    centre = np.stack([(red * xs).sum(axis=(1, 2)) / area / w, (red * ys).sum(axis=(1, 2)) / area / h], -1)
    shift = (centre - centre[0]) * np.array([w, h])  # (T, 2) pixels
    qn = np.asarray(queries, dtype=np.float64) / np.array([w, h])
    weight = 1 + 0.5 * np.sin(6 * qn[:, 0]) * np.cos(4 * qn[:, 1])
    t = np.arange(n_t)[None]
    wobble = 0.02 * np.stack([np.sin(1.3 * t + 7 * qn[:, 1:2]), np.cos(0.7 * t + 5 * qn[:, 0:1])], -1) * [w, h]
    return queries[:, None, :] + weight[:, None, None] * shift[None] + wobble - wobble[:, :1]


class OfficialPredictorStandIn:
    """``CoTrackerPredictor(checkpoint=scaled_offline.pth)`` as ``evaluation.py`` calls it,
    ``model(video, grid_size=50, segm_mask=mask)``: the grid and mask steps of
    ``_compute_sparse_tracks`` re-implemented, the network replaced by :func:`stand_in_motion`."""

    interp_shape = (384, 512)

    def __call__(self, video, grid_size=0, segm_mask=None):
        _, _, _, height, width = video.shape
        grid_pts = official_points_on_a_grid(grid_size, self.interp_shape)
        if segm_mask is not None:
            segm_mask = F.interpolate(segm_mask, tuple(self.interp_shape), mode="nearest")
            point_mask = segm_mask[0, 0][(grid_pts[0, :, 1]).round().long(), (grid_pts[0, :, 0]).round().long()].bool()
            grid_pts = grid_pts[:, point_mask]
        # tracks are returned in the video's pixels: * (W - 1) / (W_m - 1), as the predictor does
        queries = grid_pts[0] * grid_pts.new_tensor([(width - 1) / (self.interp_shape[1] - 1),
                                                     (height - 1) / (self.interp_shape[0] - 1)])
        frames = video[0].permute(0, 2, 3, 1).numpy()
        tracks = torch.from_numpy(stand_in_motion(frames, queries.numpy().astype(np.float64))).float()
        return tracks.permute(1, 0, 2)[None], torch.ones(tracks.shape[:2]).T[None].bool()


def official_get_tracklets(model, video_path, mask=None):
    """``evaluation.py: get_tracklets`` (on the CPU; the video read as ``read_video_from_path``)."""
    video = np.stack([np.array(im) for im in imageio.get_reader(str(video_path))])
    video = torch.from_numpy(video).permute(0, 3, 1, 2)[None].float()
    _, _, _, height, width = video.shape
    pred_tracks_small, _ = model(video, grid_size=50, segm_mask=mask)
    b, t, n, c = pred_tracks_small.shape  # einops: "b t l c -> (b l) t c"
    pred_tracks_small = pred_tracks_small.permute(0, 2, 1, 3).reshape(b * n, t, c)
    pred_tracks_small[:, :, 0] = pred_tracks_small[:, :, 0] / width
    pred_tracks_small[:, :, 1] = pred_tracks_small[:, :, 1] / height
    return pred_tracks_small


def official_box_mask(path: Path):
    segm_mask = np.array(Image.open(path))
    segm_mask = torch.from_numpy(segm_mask).float() / 255
    box = torch.zeros_like(segm_mask)
    minx, maxx = segm_mask.nonzero()[:, 0].min(), segm_mask.nonzero()[:, 0].max()
    miny, maxy = segm_mask.nonzero()[:, 1].min(), segm_mask.nonzero()[:, 1].max()
    box[minx:maxx, miny:maxy] = 1
    return box[None, None]


def official_motion_fidelity(data_root: Path, gen_root: Path, model) -> tuple[float, list[float]]:
    """``evaluation.py: motion_fidelity`` (cosine only): the mean over every generated video, and
    the per-video scores in the order of the loop."""
    scores = []
    for data in sorted(Path(data_root).iterdir()):
        original_video_path = data / "videos" / f"{data.name}.mp4"
        mask_path = data / "masks" / data.name / "00000.png"
        box = official_box_mask(mask_path) if mask_path.is_file() else None
        original = None
        for eval_prompt in (data / "eval_prompts.txt").read_text().splitlines():
            eval_prompt = eval_prompt.rstrip(" ").replace(" ", "_")
            video_dir = gen_root / (eval_prompt[:-1] if eval_prompt.endswith(".") else eval_prompt)
            if video_dir.exists():
                if original is None:
                    original = official_get_tracklets(model, original_video_path, mask=box)
                for gen_video_path in sorted(video_dir.iterdir()):
                    if gen_video_path.is_file() and gen_video_path.suffix.endswith("mp4"):
                        gen = official_get_tracklets(model, gen_video_path, mask=box)
                        max_similarity, _ = official_cosine(gen, original).max(dim=1)
                        scores.append(float(max_similarity.mean()))
    return float(np.mean(scores)), scores


class StandInTracker:
    """Our tracker interface (``CoTrackerTracker``'s ``name`` and ``track_points``) around the
    same stand-in motion."""

    name = "cotracker3_offline"
    weights_sha256 = "stand-in"

    def __init__(self):
        self.calls = []

    def track(self, frames, grid_size=50):  # the other motion metrics' grid
        from motionmatcher.metrics import grid_queries

        tracks = stand_in_motion(frames, grid_queries(*frames.shape[1:3], grid_size).astype(np.float64))
        return tracks.astype(np.float32), np.ones(tracks.shape[:2], dtype=bool)

    def track_points(self, frames, queries, support_grid=False):
        self.calls.append((len(queries), bool(support_grid)))
        tracks = stand_in_motion(frames, np.asarray(queries, dtype=np.float64)).astype(np.float32)
        return tracks, np.ones(tracks.shape[:2], dtype=bool)


class NoClip:
    """CLIP is not under test here."""

    model_name = "none"
    weights = "none"

    def score(self, frames, prompt):
        return {"clip_t": 0.0, "frame_consistency": 0.0}


def _rows(video_id: str, videos: dict[str, np.ndarray]) -> tuple[pd.DataFrame, dict]:
    rows = [{"video_id": video_id, "method": "m", "prompt_id": f"p{i:02d}", "prompt": name, "manifest_row": i,
             "seed": 0, "video_path": f"{name}.mp4", "frames_path": name, "model_identity": "test"}
            for i, name in enumerate(videos)]
    return pd.DataFrame(rows), videos


# ---- a synthetic MTBench in the official layout ----------------------------------------------

ORIGINAL = (72, 48)  # (W, H) of the reference clips (MTBench: 720x480)
SAMPLE = (64, 48)  # (W, H) of the samples (the configured video size)
MASK_BOX = (10, 31, 15, 51)  # rows 10..30, columns 15..50 set


def _write_video_folder(split: Path, name: str, motion: str, prompts: list[str], n_frames: int = 12,
                        mask: bool = True) -> None:
    d = split / name
    (d / "videos").mkdir(parents=True)
    (d / "trajectories").mkdir()
    write_mp4(render_clip(motion, n_frames=n_frames, size=ORIGINAL), d / "videos" / f"{name}.mp4", fps=8)
    if mask:
        (d / "masks" / name).mkdir(parents=True)
        m = np.zeros(ORIGINAL[::-1], np.uint8)
        r0, r1, c0, c1 = MASK_BOX
        m[r0:r1, c0:c1] = 255
        m[r0, c0] = 37  # an anti-aliased edge pixel: set all the same
        Image.fromarray(m).save(d / "masks" / name / "00000.png")
    t = torch.rand(n_frames, 7, 3)  # DeT's training targets: (T, N, 3) = x/W, y/H, visibility
    t[..., 2] = 1.0
    torch.save(t, d / "trajectories" / f"{name}.pth")
    (d / "videos.txt").write_text(f"videos/{name}.mp4")
    (d / "trajectories.txt").write_text(f"trajectories/{name}.pth")
    (d / "prompts.txt").write_text(f"A source video of {name}.\n")
    (d / "eval_prompts.txt").write_text("".join(f"{p}\n" for p in prompts) + "\n")


@pytest.fixture(scope="module")
def mtbench_root(tmp_path_factory):
    """One split in the official layout (the official loop's ``--benchmark_root``) and the
    generated videos in ``evaluation.py``'s layout: ``<gen_root>/<prompt with _>/<n>.mp4``."""
    root = tmp_path_factory.mktemp("bench") / "MTBench_hard"
    _write_video_folder(root, "dance-twirl", "circle", ["An astronaut is dancing on mars.  ", "A robot is dancing."])
    _write_video_folder(root, "dog_agility", "left_to_right", ["A cat jumps over a fence."])
    gen = tmp_path_factory.mktemp("generated")
    for prompt, motions in (("An_astronaut_is_dancing_on_mars", ("circle", "zoom")),
                            ("A_robot_is_dancing", ("left_to_right",)),
                            ("A_cat_jumps_over_a_fence", ("left_to_right", "circle"))):
        (gen / prompt).mkdir()
        for i, motion in enumerate(motions):
            write_mp4(render_clip(motion, n_frames=8, size=SAMPLE, seed=i + 1), gen / prompt / f"{i}.mp4", fps=8)
    return root, gen


def test_box_and_grid_placement_known_answers():
    # CoTracker's 50x50 grid in 384x512: margin 8, x = 8 + 496 j / 49, y = 8 + 368 i / 49
    pts = grid_points(50)
    assert pts.shape == (2500, 2)
    np.testing.assert_allclose(pts[[0, 1, 50, 2499]], [[8, 8], [8 + 496 / 49, 8], [8, 8 + 368 / 49], [504, 376]],
                               rtol=0, atol=1e-4)
    # box of a mask with set rows 40..83 and columns 100..300 (inclusive): rows 40..82, columns
    # 100..299 -- the grid row i = 10 has round(y) = round(83.10) = 83 and is outside
    mask = np.zeros((384, 512), bool)
    mask[40:84, 100:301] = True
    box = box_mask(mask)
    assert box[40:83, 100:300].all() and box.sum() == 43 * 200
    y = 8 + 368 * np.arange(50) / 49
    x = 8 + 496 * np.arange(50) / 49
    rows = [i for i in range(50) if 40 <= round(y[i]) <= 82]
    cols = [j for j in range(50) if 100 <= round(x[j]) <= 299]
    assert rows == [5, 6, 7, 8, 9]  # y = 45.6 .. 75.6; 83.1 is out
    kept = grid_points(50, box)
    np.testing.assert_allclose(kept, [[x[j], y[i]] for i in rows for j in cols], rtol=0, atol=1e-4)
    # a point is inside when round(y), not floor(y), is: y_5 = 45.55 is kept by a box from row 46
    mask[40:46] = False
    assert grid_points(50, box_mask(mask))[:, 1].min() == pytest.approx(y[5], abs=1e-4)
    # at another size the box is nearest-resized to 384x512: a box of the left half keeps the left 25 columns
    half = np.zeros((48, 72), np.float32)
    half[:, :36] = 1
    assert grid_points(50, half).shape == (50 * 25, 2)
    assert grid_points(50, half)[:, 0].max() == pytest.approx(x[24], abs=1e-4)


def test_crop_mask_follows_the_frames_crop():
    # 72x48 -> 64x48: scale 1, 4 columns cut on each side
    mask = np.zeros((48, 72), bool)
    mask[10:31, 15:51] = True
    cropped = crop_mask(mask, width=64, height=48)
    assert cropped.shape == (48, 64) and cropped.sum() == mask.sum()
    assert np.array_equal(np.argwhere(cropped).min(0), [10, 11]) and np.array_equal(np.argwhere(cropped).max(0), [30, 46])
    # 720x480 -> 64x64: scale 64/480, 96x64, 16 columns cut on each side: the right half -> columns 32..63
    right = np.zeros((480, 720), bool)
    right[:, 360:] = True
    assert np.array_equal(crop_mask(right, 64, 64).any(0), np.arange(64) >= 32)
    frames = np.zeros((1, 480, 720, 3), np.uint8)
    frames[0, right] = 255
    assert np.array_equal(resize_center_crop(frames, 64, 64)[0, 0, :, 0] > 127, np.arange(64) >= 32)


def test_equals_the_official_evaluation_on_a_folder_in_its_layout(mtbench_root):
    """``reference: mtbench``: every generated video of the official layout scored by our
    pipeline equals ``evaluation.py``'s computation (re-implemented above) to 1e-5."""
    root, gen = mtbench_root
    official_mean, official_scores = official_motion_fidelity(root, gen, OfficialPredictorStandIn())
    assert len(official_scores) == 5

    tracker = StandInTracker()
    ours = []
    cfg = {"enabled": True, "reference": "mtbench", "root": str(root)}
    import_mtbench(root, gen / "manifest.csv")
    manifest = pd.read_csv(gen / "manifest.csv")
    for video_id, group in manifest.groupby("video_id", sort=True):
        video_path = group.iloc[0]["video_path"]
        setup = mtbench_setup(cfg, video_id, video_path, SAMPLE[::-1], 0)
        assert setup.support_grid and setup.frames.shape == (12, 48, 72, 3)
        videos = {}
        for prompt in group["prompt"]:
            folder = gen / prompt.rstrip(".").replace(" ", "_")
            for path in sorted(folder.glob("*.mp4")):
                videos[f"{folder.name}/{path.name}"] = read_mp4(path)
        samples, frames = _rows(video_id, videos)
        reference = resize_center_crop(setup.frames[:8], *SAMPLE)  # the preprocessed clip (shape check only)
        table = evaluate_samples(samples, reference, NoClip(), tracker, 16, load_frames=lambda r: frames[r["prompt"]],
                                 mtbench=cfg, mtbench_setup=setup)
        assert set(table["mtbench_variant"]) == {"mtbench:cosine"}
        assert "original full clip, cotracker3_offline, 50x50 grid in the first-frame box" in table.iloc[0][
            "mtbench_reference_tracks"]
        ours += list(table["mtbench_fidelity"])
    np.testing.assert_allclose(ours, official_scores, rtol=0, atol=1e-5)
    assert np.mean(ours) == pytest.approx(official_mean, abs=1e-5)
    assert len(set(np.round(ours, 3))) == 5  # five different numbers, none of them trivial
    # the box of the mask (rows 10..29, columns 15..49 of 72x48) in 384x512: the points kept
    assert tracker.calls[0] == (len(setup.points), True) and 0 < len(setup.points) < 2500
    r0, r1, c0, c1 = MASK_BOX
    x_px = setup.points[:, 0] * 71 / 511
    y_px = setup.points[:, 1] * 47 / 383
    assert x_px.min() >= c0 - 1 and x_px.max() <= c1 - 1 and y_px.min() >= r0 - 1 and y_px.max() <= r1 - 1


def test_a_clip_against_itself_and_its_mirror(mtbench_root):
    """``reference: clip``: the reference clip as the sample sees it; itself scores 1, its mirror
    the official computation's value on the same tracks."""
    root, _ = mtbench_root
    cfg = {"enabled": True, "reference": "clip", "root": str(root)}
    original = read_mp4(root / "dog_agility" / "videos" / "dog_agility.mp4")
    clip = resize_center_crop(original[:8], *SAMPLE)
    setup = mtbench_setup(cfg, "dog_agility", "unused.mp4", SAMPLE[::-1], 0)
    assert setup.frames is None and setup.support_grid
    # the box of the mask cropped like the frames: columns shifted by 4
    r0, r1, c0, c1 = MASK_BOX
    expected_box = np.zeros(SAMPLE[::-1], np.float32)
    expected_box[r0:r1 - 1, c0 - 4:c1 - 1 - 4] = 1
    np.testing.assert_array_equal(setup.points, grid_points(50, expected_box))

    mirror = np.ascontiguousarray(clip[:, :, ::-1])
    samples, frames = _rows("dog_agility", {"self": clip, "mirror": mirror})
    tracker = StandInTracker()
    table = evaluate_samples(samples, clip, NoClip(), tracker, 16, load_frames=lambda r: frames[r["prompt"]],
                             mtbench=cfg, mtbench_setup=setup)
    assert table.iloc[0]["mtbench_fidelity"] == pytest.approx(1.0, abs=1e-12)
    ref = torch.from_numpy(track_mtbench(tracker, clip, setup)).float()
    mir = torch.from_numpy(track_mtbench(tracker, mirror, setup)).float()
    official = float(official_cosine(mir, ref).max(dim=1)[0].mean())
    assert table.iloc[1]["mtbench_fidelity"] == pytest.approx(official, abs=1e-5)
    assert table.iloc[1]["mtbench_fidelity"] < 0.9
    assert set(table["mtbench_variant"]) == {"clip:cosine"}


def test_without_a_mask_the_whole_grid_without_support(mtbench_root, tmp_path):
    root, _ = mtbench_root
    _write_video_folder(tmp_path, "nomask", "zoom", ["A prompt."], mask=False)
    setup = mtbench_setup({"reference": "clip", "root": str(tmp_path)}, "nomask", "x.mp4", (48, 64))
    assert not setup.support_grid and setup.mask_path is None and len(setup.points) == 2500
    with pytest.raises(MTBenchError, match=r"masks/nomask/00000\.png"):
        mtbench_setup({"reference": "mtbench", "root": str(tmp_path)}, "nomask", "x.mp4", (48, 64))


def test_the_mtbench_variant_needs_cotracker3_offline(tmp_path, mtbench_root):
    root, _ = mtbench_root
    base = {"mtbench": {"enabled": True, "reference": "mtbench", "root": str(root)}}
    check_mtbench_config({"tracker": "lk", "mtbench": {"enabled": True, "reference": "clip"}})  # allowed
    check_mtbench_config({"tracker": "lk", "mtbench": {"enabled": False, "reference": "mtbench"}})
    for tracker in ("lk", "auto"):
        with pytest.raises(ValueError, match="metrics.tracker: cotracker"):
            check_mtbench_config({**base, "tracker": tracker})
    with pytest.raises(ValueError, match="cotracker_checkpoint"):
        check_mtbench_config({**base, "tracker": "cotracker"})
    with pytest.raises(ValueError, match="mtbench.root"):
        check_mtbench_config({"tracker": "cotracker", "mtbench": {"enabled": True, "reference": "mtbench"}})
    v2 = tmp_path / "cotracker2.pth"
    torch.save({"track_feat_updater.w": torch.zeros(1), "time_emb": torch.zeros(1, 8, 4)}, v2)
    with pytest.raises(ValueError, match="CoTracker3 offline.*CoTracker2"):
        check_mtbench_config({**base, "tracker": "cotracker", "cotracker_checkpoint": str(v2)})
    v3 = tmp_path / "scaled_offline.pth"
    torch.save({"corr_mlp.w": torch.zeros(1), "time_emb": torch.zeros(1, 60, 4)}, v3)
    check_mtbench_config({**base, "tracker": "cotracker", "cotracker_checkpoint": str(v3)})
    # and at run time, whatever the config said
    clip = render_clip("zoom", n_frames=4, size=SAMPLE)
    setup = MTBenchSetup("mtbench", grid_points(4), False, 4, None, clip)
    from motionmatcher.metrics import make_tracker

    samples, frames = _rows("v", {"a": clip})
    with pytest.raises(ValueError, match="CoTracker3 offline.*'lk'"):
        evaluate_samples(samples, clip, NoClip(), make_tracker("lk"), 4, load_frames=lambda r: frames[r["prompt"]],
                         mtbench={"enabled": True, "reference": "mtbench"}, mtbench_setup=setup)


def test_cotracker_track_points_calls_the_predictor_as_the_official_grid_path():
    """``CoTrackerTracker.track_points`` with a predictor stand-in: ``(t=0, x, y)`` queries,
    the support grid added by ``predictor(video, queries=...)`` or left out."""
    from motionmatcher.metrics.tracking import CoTrackerTracker

    calls = []

    class Predictor:
        def __call__(self, video, queries=None):
            calls.append(("with support", queries.clone()))
            return queries[:, None, :, 1:].repeat(1, video.shape[1], 1, 1), torch.ones(1, video.shape[1], 2).bool()

        def _compute_sparse_tracks(self, video, queries, add_support_grid=True):
            calls.append(("plain" if not add_support_grid else "?", queries.clone()))
            return queries[:, None, :, 1:].repeat(1, video.shape[1], 1, 1), torch.ones(1, video.shape[1], 2).bool()

    tracker = object.__new__(CoTrackerTracker)
    tracker._torch, tracker.device, tracker.model = torch, "cpu", Predictor()
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    q = np.array([[1.5, 2.0], [3.0, 4.5]], np.float32)
    tracks, visible = tracker.track_points(frames, q, support_grid=True)
    assert tracks.shape == (2, 3, 2) and visible.all() and np.allclose(tracks[:, 2], q)
    assert calls[0][0] == "with support" and calls[0][1].tolist() == [[[0, 1.5, 2.0], [0, 3.0, 4.5]]]
    tracker.track_points(frames, q, support_grid=False)
    assert calls[1][0] == "plain"


def test_mtbench_fidelity_with_lk_on_the_clip(tmp_path):
    """``reference: clip`` with LK: the same numbers as tracking and scoring directly (LK's frozen
    lost points are zero steps: NaN, as MTBench's formula)."""
    from motionmatcher.metrics import make_tracker

    tracker = make_tracker("lk")
    clip = render_clip("left_to_right", n_frames=6, size=(64, 64), seed=0)
    samples, frames = _rows("v", {"identity": clip, "reversed": clip[::-1].copy()})
    off = evaluate_samples(samples, clip, NoClip(), tracker, 6, load_frames=lambda r: frames[r["prompt"]])
    assert off["mtbench_fidelity"].isna().all() and off["mtbench_variant"].isna().all()
    table = evaluate_samples(samples, clip, NoClip(), tracker, 6, load_frames=lambda r: frames[r["prompt"]],
                             mtbench={"enabled": True, "grid_size": 8})
    setup = MTBenchSetup("clip", grid_points(8), False, 8)
    ref = track_mtbench(tracker, clip, setup)
    for i, video in enumerate((clip, clip[::-1].copy())):
        expected = mtbench_motion_fidelity(ref, track_mtbench(tracker, video, setup))
        np.testing.assert_equal(table.iloc[i]["mtbench_fidelity"], expected)
    assert set(table["mtbench_variant"]) == {"clip:cosine"}
    assert table.iloc[0]["mtbench_reference_tracks"] == "clip as sampled, lk, 8x8 grid on the whole frame (no mask)"


# ---- the importer ----------------------------------------------------------------------------


def test_importer_writes_a_manifest_the_pipeline_loads(mtbench_root, tmp_path):
    root, _ = mtbench_root
    rows = import_mtbench(root, tmp_path / "manifest.csv")
    assert [r["video_id"] for r in rows] == ["dance-twirl", "dance-twirl", "dog_agility"]
    assert rows[0]["prompt"] == "An astronaut is dancing on mars." and rows[1]["prompt"] == "A robot is dancing."
    assert rows[0]["caption"] == "A source video of dance-twirl."
    assert {r["difficulty"] for r in rows} == {"hard"}  # a lone split: its name says it
    df = load_manifest(tmp_path / "manifest.csv", n_frames=8)
    assert len(df) == 3 and set(df["video_id"]) == {"dance-twirl", "dog_agility"} and set(df["difficulty"]) == {"hard"}
    assert main([str(root), str(tmp_path / "cli.csv")]) == 0 and (tmp_path / "cli.csv").is_file()

    # DeT's training targets are still readable (not used by the metric)
    path = stored_trajectories(root, "dance-twirl")
    tracks, visible = load_mtbench_trajectories(path)
    assert tracks.shape == (7, 12, 2) and visible.all()
    expected = torch.load(path, weights_only=True)[..., :2].permute(1, 0, 2).double().numpy()
    np.testing.assert_allclose(tracks, expected)
    assert stored_trajectories(root, "missing") is None and stored_trajectories(None, "dance-twirl") is None


def test_importer_takes_the_folder_of_the_splits(tmp_path):
    bench = tmp_path / "MTBench"
    _write_video_folder(bench / "MTBench_easy", "bear", "circle", ["A bear."], n_frames=4)
    _write_video_folder(bench / "MTBench_hard", "skate", "zoom", ["A skater.", "A dog."], n_frames=4)
    _write_video_folder(bench / "medium", "cow", "left_to_right", ["A cow."], n_frames=4)
    (bench / "README.md").write_text("not a split")
    (bench / "medium" / "notes").mkdir()  # not a video folder: skipped
    rows = import_mtbench(bench, tmp_path / "m.csv")
    assert [(r["video_id"], r["difficulty"]) for r in rows] == [
        ("bear", "easy"), ("cow", "medium"), ("skate", "hard"), ("skate", "hard")]
    df = load_manifest(tmp_path / "m.csv", n_frames=4)
    assert dict(zip(df["video_id"], df["difficulty"])) == {"bear": "easy", "cow": "medium", "skate": "hard"}
    assert video_folder(bench, "cow") == bench / "medium" / "cow"
    assert first_frame_mask(bench, "skate") == bench / "MTBench_hard" / "skate" / "masks" / "skate" / "00000.png"
    # a lone split whose name does not say its difficulty: empty
    assert {r["difficulty"] for r in import_mtbench(bench / "medium", tmp_path / "one.csv")} == {"medium"}
    plain = tmp_path / "plain"
    _write_video_folder(plain, "cow", "zoom", ["A cow."], n_frames=4)
    assert [r["difficulty"] for r in import_mtbench(plain, tmp_path / "p.csv")] == [""]
    load_manifest(tmp_path / "p.csv", n_frames=4)
    # the same video in two splits, and splits next to video folders: errors naming them
    _write_video_folder(bench / "MTBench_hard", "bear", "zoom", ["A bear."], n_frames=4)
    with pytest.raises(MTBenchError, match=r"'bear' is in two splits.*MTBench_easy/bear.*MTBench_hard/bear"):
        import_mtbench(bench, tmp_path / "x.csv")
    _write_video_folder(plain / "hard", "deer", "zoom", ["A deer."], n_frames=4)
    with pytest.raises(MTBenchError, match=r"both splits \(hard\) and video folders \(cow\)"):
        import_mtbench(plain, tmp_path / "x.csv")


def test_manifest_difficulty_must_be_a_split_and_one_per_video(tmp_path):
    from motionmatcher.files.manifest import ManifestError

    (tmp_path / "m.csv").write_text("video_id,video_path,caption,prompt,difficulty\n"
                                    "a,a.mp4,A.,B.,hard\na,a.mp4,A.,C.,easy\nb,b.mp4,A.,B.,extreme\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(tmp_path / "m.csv", n_frames=4, check_videos=False)
    text = str(err.value)
    assert "column difficulty: video_id 'a'" in text and "row 3 (line 4), column difficulty" in text


def test_importer_and_loader_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad" / "clip1"
    (bad / "videos").mkdir(parents=True)
    write_mp4(render_clip("zoom", n_frames=4, size=(32, 32)), bad / "videos" / "clip1.mp4", fps=8)
    (bad / "prompts.txt").write_text("A clip.\n")
    with pytest.raises(MTBenchError, match=r"clip1/eval_prompts\.txt"):
        import_mtbench(tmp_path / "bad", tmp_path / "m.csv")
    torch.save({"tracks": torch.zeros(2)}, tmp_path / "weird.pth")
    with pytest.raises(ValueError, match=r"weird\.pth"):
        load_mtbench_trajectories(tmp_path / "weird.pth")
    torch.save(MTBenchError("a pickled object"), tmp_path / "pickled.pth")  # never unpickled
    with pytest.raises(ValueError, match=r"pickled\.pth.*weights_only"):
        load_mtbench_trajectories(tmp_path / "pickled.pth")


# ---- the summary by difficulty ---------------------------------------------------------------


def test_summary_breaks_mtbench_down_by_difficulty():
    samples = pd.DataFrame({
        "method": ["a"] * 5 + ["b"],
        "video_id": ["v1", "v1", "v2", "v3", "v4", "v1"],
        "mtbench_fidelity": [0.2, 0.4, 0.9, np.nan, 0.5, 0.1],
    })
    table = difficulty_breakdown(samples, {"v1": "hard", "v2": "easy", "v3": "easy", "v4": ""})
    a = table[table["method"] == "a"].set_index("difficulty")
    assert list(a.index) == ["easy", "hard", "all"]
    assert a.loc["hard", "mtbench_fidelity_mean"] == pytest.approx(0.3)
    assert a.loc["hard", "mtbench_fidelity_std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert a.loc["easy", "mtbench_fidelity_mean"] == pytest.approx(0.9) and a.loc["easy", "mtbench_fidelity_n"] == 1
    assert a.loc["easy", "n_samples"] == 2 and a.loc["easy", "n_videos"] == 2
    assert a.loc["all", "mtbench_fidelity_mean"] == pytest.approx(0.5) and a.loc["all", "n_videos"] == 3
    text = difficulty_markdown(samples, {"v1": "hard", "v2": "easy", "v3": "easy"})
    assert "| a | hard | 1 | 2 | 0.3000 \u00b1 0.1414 |" in text and "| b | hard | 1 | 1 | 0.1000 |" in text
    assert difficulty_markdown(samples, {}) == ""


def test_the_workflow_refuses_the_mtbench_variant_without_cotracker_before_any_job(mtbench_root, tmp_path):
    from workflow_helpers import run_snakemake, write_small_config

    root, _ = mtbench_root
    import_mtbench(root, tmp_path / "manifest.csv")
    lk = write_small_config(tmp_path / "lk.yaml", tmp_path / "manifest.csv", n_frames=4, results_dir=str(tmp_path / "results"),
                            run_methods=["motionmatcher"])
    cfg = yaml_load(lk)
    cfg["metrics"]["mtbench"] = {"enabled": True, "reference": "mtbench", "root": str(root)}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_dump(cfg))
    res = run_snakemake(tmp_path, bad, "-n", timeout=300)
    assert res.returncode != 0 and "metrics.tracker: cotracker" in res.stderr + res.stdout
    assert not (tmp_path / "results").exists()
    cfg["metrics"]["mtbench"]["reference"] = "clip"  # any tracker may track the clip as sampled
    good = tmp_path / "good.yaml"
    good.write_text(yaml_dump(cfg))
    res = run_snakemake(tmp_path, good, "-n", timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "rule metrics:" in res.stdout + res.stderr


def yaml_load(path):
    import yaml

    return yaml.safe_load(Path(path).read_text())


def yaml_dump(cfg):
    import yaml

    return yaml.safe_dump(cfg)

"""MTBench: its motion-fidelity score (known answers, the formula of its evaluation.py) and the
importer, on a small synthetic folder in MTBench's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from motionmatcher.demo_data import render_clip
from motionmatcher.manifest import load_manifest
from motionmatcher.metrics.mtbench import (
    align_frames,
    load_mtbench_trajectories,
    mtbench_motion_fidelity,
    normalise_tracks,
)
from motionmatcher.mtbench import MTBenchError, import_mtbench, main, stored_trajectories
from motionmatcher.video import write_mp4


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


def test_frames_are_aligned_like_mtbench():
    long, short = np.zeros((2, 5, 2)), np.zeros((3, 3, 2))
    long[:, :, 0] = np.arange(5)
    a, b = align_frames(long, short)
    assert a.shape == (2, 3, 2) and list(a[0, :, 0]) == [0, 2, 4] and b is short
    ids = np.linspace(0, 15, 8).astype(np.int32)  # 16 -> 8 frames: truncation, not rounding
    assert list(ids) == [0, 2, 4, 6, 8, 10, 12, 15]


def _mtbench_reference(gen, ref):
    """MTBench's get_cosine_similarity_score + max/mean, re-derived (same frame counts)."""
    def seq(t):
        s = np.concatenate([t[:, :1], np.diff(t, axis=1)], axis=1)
        return s / np.linalg.norm(s, axis=-1, keepdims=True)

    sim = np.einsum("ntc,mtc->nmt", seq(gen), seq(ref)).mean(-1)
    return sim.max(1).mean()


def test_matches_mtbench_formula_on_random_tracks():
    rng = np.random.default_rng(0)
    ref, gen = rng.uniform(0, 1, (40, 6, 2)), rng.uniform(0, 1, (30, 6, 2))
    assert mtbench_motion_fidelity(ref, gen) == pytest.approx(_mtbench_reference(gen, ref))
    assert normalise_tracks(np.array([[[32.0, 8.0]]]), height=16, width=64).tolist() == [[[0.5, 0.5]]]
    # the Fréchet draw is seeded: same seed, same score
    s1 = mtbench_motion_fidelity(ref, gen, frechet=True, seed=3)
    assert s1 == mtbench_motion_fidelity(ref, gen, frechet=True, seed=3) and s1 != pytest.approx(
        mtbench_motion_fidelity(ref, gen))


@pytest.fixture(scope="module")
def mtbench_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("MTBench")
    for name, motion in (("dance-twirl", "circle"), ("dog_agility", "left_to_right")):
        d = root / name
        (d / "videos").mkdir(parents=True)
        (d / "masks" / name).mkdir(parents=True)
        (d / "trajectories").mkdir()
        write_mp4(render_clip(motion, n_frames=12, size=(64, 48)), d / "videos" / f"{name}.mp4", fps=8)
        Image.fromarray(np.full((48, 64), 255, np.uint8)).save(d / "masks" / name / "00000.png")
        t = torch.rand(12, 7, 3)  # (T, N, 3) = x/W, y/H, visibility
        t[..., 2] = 1.0
        torch.save(t, d / "trajectories" / f"{name}.pth")
        (d / "videos.txt").write_text(f"videos/{name}.mp4")
        (d / "trajectories.txt").write_text(f"trajectories/{name}.pth")
        (d / "prompts.txt").write_text(f"A source video of {name}.\n")
        (d / "eval_prompts.txt").write_text(" An astronaut is dancing on mars.  \nA robot is dancing.\n\n")
    (root / "README.md").write_text("not a video folder")
    return root


def test_importer_writes_a_manifest_the_pipeline_loads(mtbench_root, tmp_path):
    rows = import_mtbench(mtbench_root, tmp_path / "manifest.csv")
    assert [r["video_id"] for r in rows] == ["dance-twirl", "dance-twirl", "dog_agility", "dog_agility"]
    assert rows[0]["prompt"] == "An astronaut is dancing on mars." and rows[1]["prompt"] == "A robot is dancing."
    assert rows[0]["caption"] == "A source video of dance-twirl."
    df = load_manifest(tmp_path / "manifest.csv", n_frames=8)
    assert len(df) == 4 and set(df["video_id"]) == {"dance-twirl", "dog_agility"}
    assert main([str(mtbench_root), str(tmp_path / "cli.csv")]) == 0 and (tmp_path / "cli.csv").is_file()

    path = stored_trajectories(mtbench_root, "dance-twirl")
    tracks, visible = load_mtbench_trajectories(path)
    assert tracks.shape == (7, 12, 2) and visible.all()
    expected = torch.load(path, weights_only=True)[..., :2].permute(1, 0, 2).double().numpy()
    np.testing.assert_allclose(tracks, expected)
    assert stored_trajectories(mtbench_root, "missing") is None and stored_trajectories(None, "dance-twirl") is None


def test_importer_and_loader_errors_name_the_file(mtbench_root, tmp_path):
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


def test_mtbench_fidelity_through_the_metrics_stage(mtbench_root, tmp_path):
    from test_metrics_stage import sample_rows

    from motionmatcher.evaluate import evaluate_samples
    from motionmatcher.metrics import ClipScorer, make_tracker

    scorer = ClipScorer("ViT-B-32", pretrained="openai", random_init_seed=0)
    tracker = make_tracker("lk")
    clip = render_clip("left_to_right", n_frames=6, size=(64, 64), seed=0)
    rows = sample_rows(tmp_path, {"identity": clip, "reversed": clip[::-1]})
    off = evaluate_samples(rows, clip, scorer, tracker, 6)
    assert off["mtbench_fidelity"].isna().all() and off["mtbench_variant"].isna().all()
    tracked = evaluate_samples(rows, clip, scorer, tracker, 6, mtbench={"enabled": True})
    ref = normalise_tracks(tracker.track(clip, 6)[0], 64, 64)
    assert tracked.iloc[0]["mtbench_fidelity"] == pytest.approx(mtbench_motion_fidelity(ref, ref))
    assert tracked.iloc[1]["mtbench_fidelity"] < tracked.iloc[0]["mtbench_fidelity"]
    assert set(tracked["mtbench_variant"]) == {"cosine"} and set(tracked["mtbench_reference_tracks"]) == {"lk"}
    stored, _ = load_mtbench_trajectories(stored_trajectories(mtbench_root, "dog_agility"))  # 12 frames
    out = evaluate_samples(rows, clip, scorer, tracker, 6, mtbench={"enabled": True, "frechet": True},
                           mtbench_reference=stored)
    sample = normalise_tracks(tracker.track(clip, 6)[0], 64, 64)
    assert out.iloc[0]["mtbench_fidelity"] == pytest.approx(mtbench_motion_fidelity(stored, sample, frechet=True))
    assert set(out["mtbench_variant"]) == {"cosine+frechet50"} and set(out["mtbench_reference_tracks"]) == {"stored"}

"""Ground-truth metrics of the toy world: trajectory error, appearance leakage, text alignment."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from motionmatcher.metrics import groundtruth as G
from motionmatcher.toy import clips, world


def _spec(traj, app, seed=0):
    return world.sample_clip(np.random.default_rng(seed), appearance=app, trajectory=traj, two_object_prob=0.0)


def _recolour(spec, colour, shape):
    o = dataclasses.replace(spec.primary, colour=colour, shape=shape)
    return dataclasses.replace(spec, objects=[o])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("toyclips")
    manifest = clips.write_clips(out, "demo")
    rows = pd.read_csv(manifest)
    video = out / rows.video_path[0]
    gt = G.load_ground_truth(video, 8, (32, 32))
    spec = world.ClipSpec.from_dict(json.loads(G.sidecar_path(video).read_text())["spec"])
    return spec, gt, rows


def test_sidecar_is_found_and_checked(reference, tmp_path):
    spec, gt, rows = reference
    assert gt["colour"] == spec.primary.colour and gt["centroid"].shape == (8, 2)
    assert G.load_ground_truth(tmp_path / "none.mp4", 8, (32, 32)) is None
    video = tmp_path / "v.mp4"
    G.sidecar_path(video).write_text(json.dumps(world.gt_json(world.render_clip(spec)[1])))
    with pytest.raises(ValueError, match="pipeline reads 16 frames at 64x64"):
        G.load_ground_truth(video, 16, (64, 64))
    # every target prompt changes colour and shape
    for caption, prompt in zip(rows.caption, rows.prompt):
        (c0, s0), (c, s) = G.parse_target(caption), G.parse_target(prompt)
        assert c != c0 and s != s0


def test_same_path_new_appearance_scores_well_other_path_badly(reference):
    spec, gt, _ = reference
    same, _ = world.render_clip(_recolour(spec, "blue", "square"))
    m = G.score_sample(same, "a blue square on a gray background", gt)
    assert m["trajectory_error"] < 0.03
    assert m["appearance_leakage"] < 0.05 and m["text_alignment"] == 1.0 and m["shape_alignment"] == 1.0
    other, _ = world.render_clip(_spec("circle_ccw", ("blue", "square", spec.background), seed=4))
    m2 = G.score_sample(other, "a blue square on a gray background", gt)
    assert m2["trajectory_error"] > 5 * m["trajectory_error"]


def test_leakage_and_misalignment_are_seen(reference):
    spec, gt, _ = reference
    copy, _ = world.render_clip(spec)  # the reference itself, prompted as something else
    m = G.score_sample(copy, "a blue square on a gray background", gt)
    assert m["appearance_leakage"] == 1.0 and m["text_alignment"] == 0.0
    assert m["trajectory_error"] < 0.03  # the drawn object (the reference's) is on the path
    blank = np.full((8, 32, 32, 3), 115, np.uint8)
    mb = G.score_sample(blank, "a blue square", gt)
    assert mb["text_alignment"] == 0.0 and mb["appearance_leakage"] == 0.0
    with pytest.raises(ValueError, match="names no colour"):
        G.score_sample(copy, "a dog", gt)


def test_evaluate_samples_fills_gt_columns(reference, tmp_path):
    from motionmatcher.metrics.evaluate import evaluate_samples
    from motionmatcher.files.table_schemas import METRICS

    spec, gt, _ = reference
    ref, _ = world.render_clip(spec)
    same, _ = world.render_clip(_recolour(spec, "blue", "square"))

    class Scorer:
        def score(self, frames, prompt):
            return {"clip_t": 0.0, "frame_consistency": 1.0}

    class Tracker:
        name = "fake"

        def track(self, frames, grid):
            return np.zeros((len(frames), 4, 2)), None

    row = dict(video_id="v", method="m", prompt_id="p0", prompt="a blue square", manifest_row=0,
               seed=0, video_path="x", frames_path="x", model_identity="toy")
    samples = pd.DataFrame([row])
    with_gt = evaluate_samples(samples, ref, Scorer(), Tracker(), 4, load_frames=lambda r: same,
                               ground_truth=gt)
    assert with_gt.trajectory_error.iloc[0] < 0.03 and with_gt.text_alignment.iloc[0] == 1.0
    without = evaluate_samples(samples, ref, Scorer(), Tracker(), 4, load_frames=lambda r: same)
    assert without[list(G.GT_COLUMNS)].isna().all().all()
    assert set(G.GT_COLUMNS) <= set(METRICS.names)


def test_trajectory_error_is_the_mean_centroid_distance_over_the_frame_size():
    """A hand-drawn 4x4 blue square at known positions on gray (centroid = its centre, x0 + 2 in
    the detector's pixel-area convention, pixel x spanning [x, x + 1]),
    against a hand-made ground truth: error = mean_f ‖c_f − g_f‖ / S."""
    from motionmatcher.toy.world import BACKGROUNDS, COLOURS

    size, n = 32, 8
    frames = np.empty((n, size, size, 3), np.uint8)
    frames[:] = BACKGROUNDS["gray"]
    corners = [(4 + 2 * f, 10 + f) for f in range(n)]  # (x0, y0) per frame
    for f, (x0, y0) in enumerate(corners):
        frames[f, y0:y0 + 4, x0:x0 + 4] = COLOURS["blue"]
    centres = np.array([(x0 + 2.0, y0 + 2.0) for x0, y0 in corners])
    offsets = np.array([(3.0, 4.0)] * 4 + [(0.0, 0.0)] * 4)  # 5 px off in the first half
    gt = dict(colour="red", shape="triangle", centroid=centres + offsets, size=size)
    m = G.score_sample(frames, "a blue square", gt)
    assert m["trajectory_error"] == pytest.approx((4 * 5.0 + 4 * 0.0) / n / size, abs=1e-6)
    assert m["text_alignment"] == 1.0 and m["appearance_leakage"] == 0.0

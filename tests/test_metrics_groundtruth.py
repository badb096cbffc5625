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


# --- unprompted appearance: background grating and distractor (issue #19 item 2) -------------

def _grating_frames(amplitude, period, angle, size=32, n=8, base=115.0):
    x, y = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    a = np.radians(angle)
    img = base + amplitude * np.cos(2 * np.pi * (x * np.cos(a) + y * np.sin(a)) / period + 0.7)
    return np.repeat(np.clip(np.rint(img), 0, 255).astype(np.uint8)[None, ..., None], 3, -1).repeat(n, 0)


def test_background_leakage_by_hand():
    """Reference: a grating of period 16 px along x (angle 0), amplitude 32 on flat gray, two
    whole periods across 32 px. By hand, |mean_p (I - mean I) e^{-i k x}| of a cos of amplitude
    a over whole periods is a / 2: A_reference = 16, A_flat = 0 (flat gray). A sample with the
    same grating scores (16 - 0) / (16 - 0) = 1, half its amplitude 0.5, flat gray 0; the same
    grating along y (wrong axis) or at period 8 (wrong frequency) 0 (whole periods: the sum of
    e^{-i k x} over them vanishes)."""
    gt = dict(colour="red", shape="square", centroid=np.full((8, 2), 16.0), size=32,
              pattern=dict(period=16.0, angle=0.0, a_reference=16.0, a_flat=0.0))
    score = lambda frames: G.score_sample(frames, "a blue circle on a gray background", gt)["background_leakage"]  # noqa: E731
    assert score(_grating_frames(32, 16, 0)) == pytest.approx(1.0, abs=0.01)
    assert score(_grating_frames(16, 16, 0)) == pytest.approx(0.5, abs=0.01)
    assert score(_grating_frames(0, 16, 0)) == 0.0
    assert score(_grating_frames(32, 16, 90)) == pytest.approx(0.0, abs=0.01)  # wrong axis
    assert score(_grating_frames(32, 8, 0)) == pytest.approx(0.0, abs=0.01)  # wrong frequency
    # a grating stronger than the reference's is clipped to 1; object pixels are left out:
    # a blue block over half the frame does not change a grating along x (whole periods in y)
    assert score(_grating_frames(48, 16, 0)) == 1.0
    half = _grating_frames(16, 16, 0)
    half[:, :16] = world.COLOURS["blue"]
    assert score(half) == pytest.approx(0.5, abs=0.01)
    # no grating in the reference: null
    gt_plain = {k: v for k, v in gt.items() if k != "pattern"}
    assert np.isnan(G.score_sample(half, "a blue circle", gt_plain)["background_leakage"])


def test_distractor_leakage_by_hand():
    """Reference distractor: yellow, 20 px per frame. A sample (a blue square, as prompted) with a
    4 x 5 yellow block in every frame scores 20 / 20 = 1, a 2 x 5 block 10 / 20 = 0.5, none 0; a prompt naming yellow: null."""
    gt = dict(colour="red", shape="square", centroid=np.full((8, 2), 16.0), size=32,
              distractor=dict(colour="yellow", area=20.0))
    frames = np.empty((8, 32, 32, 3), np.uint8)
    frames[:] = world.BACKGROUNDS["gray"]
    frames[:, 20:24, 4:8] = world.COLOURS["blue"]  # the prompted object: not part of the ratio
    full, half = frames.copy(), frames.copy()
    full[:, 3:7, 20:25] = world.COLOURS["yellow"]
    half[:, 3:5, 20:25] = world.COLOURS["yellow"]
    s = lambda f, p="a blue circle on a gray background": G.score_sample(f, p, gt)  # noqa: E731
    assert s(full)["distractor_leakage"] == 1.0 and s(half)["distractor_leakage"] == 0.5
    assert s(frames)["distractor_leakage"] == 0.0
    assert np.isnan(s(full, "a yellow circle")["distractor_leakage"])
    assert np.isnan(s(full)["background_leakage"])


def test_leak_prone_reference_through_the_sidecar(tmp_path):
    """A leak-prone clip of the appearance set: the sidecar records the grating and the
    distractor; the reference scores 1 on both against itself, its plain version (same motion,
    no unprompted appearance) 0, a recoloured copy keeping the grating ~1 on the background."""
    manifest = pd.read_csv(clips.write_clips(tmp_path, "appearance"))
    row = manifest[manifest.video_id.str.endswith("_leak")].iloc[0]
    video = tmp_path / row.video_path
    side = json.loads(G.sidecar_path(video).read_text())
    assert side["appearance"]["background_pattern"]["kind"] == "grating"
    assert len(side["distractor_centroid"]) == 8
    gt = G.load_ground_truth(video, 8, (32, 32))
    spec = world.ClipSpec.from_dict(side["spec"])
    assert gt["pattern"]["period"] == spec.pattern["period"] and gt["pattern"]["angle"] == spec.pattern["angle"]
    assert gt["pattern"]["a_reference"] > 5 * gt["pattern"]["a_flat"]
    assert gt["distractor"]["colour"] == spec.distractor.colour != G.parse_target(row.prompt)[0]
    ref, _ = world.render_clip(spec)
    m = G.score_sample(ref, row.prompt, gt)
    assert m["background_leakage"] == 1.0 and m["distractor_leakage"] == 1.0
    plain, _ = world.render_clip(dataclasses.replace(spec, appearance=None))
    m0 = G.score_sample(plain, row.prompt, gt)
    assert m0["background_leakage"] == 0.0 and m0["distractor_leakage"] == 0.0
    colour, shape = G.parse_target(row.prompt)
    o = dataclasses.replace(spec.primary, colour=colour, shape=shape)
    recoloured, _ = world.render_clip(dataclasses.replace(spec, objects=[o],
                                                          appearance=dict(spec.appearance, distractor=None)))
    m1 = G.score_sample(recoloured, row.prompt, gt)
    assert m1["background_leakage"] > 0.9 and m1["distractor_leakage"] == 0.0
    # a sidecar whose appearance cannot be rendered: an error naming the file, at load time
    bad = json.loads(G.sidecar_path(video).read_text())
    bad["spec"]["appearance"]["background_pattern"]["kind"] = "stripes"
    G.sidecar_path(tmp_path / "bad.mp4").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"bad\.gt\.json: spec\.appearance cannot be rendered.*stripes"):
        G.load_ground_truth(tmp_path / "bad.mp4", 8, (32, 32))
    # a plain reference: both columns null
    plain_gt = G.load_ground_truth(tmp_path / manifest.video_path[0], 8, (32, 32))
    assert "pattern" not in plain_gt
    mp = G.score_sample(ref, row.prompt, plain_gt)
    assert np.isnan(mp["background_leakage"]) and np.isnan(mp["distractor_leakage"])

"""The toy world's generator and its colour-segmentation detector."""

import json
import numpy as np
import pytest

from motionmatcher.toy import detector, world


def _clip(traj, appearance=("red", "circle", "gray"), seed=0, **kw):
    rng = np.random.default_rng(seed)
    spec = world.sample_clip(rng, appearance=appearance, trajectory=traj, two_object_prob=0.0, **kw)
    return spec, *world.render_clip(spec)


@pytest.mark.parametrize("traj", world.TRAJECTORIES)
def test_every_trajectory_renders_with_gt_inside_frame(traj):
    spec, frames, gt = _clip(traj)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    assert gt["mask"].shape == (8, 32, 32) and gt["centroid"].shape == (8, 2)
    assert (gt["area"] > 4).all()
    assert np.isfinite(gt["centroid"]).all()
    assert ((gt["centroid"] > 0) & (gt["centroid"] < 32)).all()
    if traj in ("approach", "recede"):
        grows = gt["area"][-1] > 2 * gt["area"][0]
        assert grows == (traj == "approach")
    else:
        assert detector.displacement(gt["centroid"]) > 2.0


def test_line_moves_in_its_direction_and_circle_turns_its_way():
    spec, _, gt = _clip("line", seed=3)
    d = gt["centroid"][-1] - gt["centroid"][0]
    a = np.radians(spec.primary.params["angle"])
    assert d @ np.array([np.cos(a), np.sin(a)]) > 0.9 * np.linalg.norm(d)
    for traj, sign in (("circle_cw", 1), ("circle_ccw", -1)):
        _, _, gt = _clip(traj, seed=1)
        v = gt["centroid"] - gt["centroid"].mean(0)
        cross = v[:-1, 0] * v[1:, 1] - v[:-1, 1] * v[1:, 0]  # y down: > 0 is clockwise on screen
        assert (np.sign(cross) == sign).all()


def test_captions_name_appearance_and_motion_only_sometimes():
    rng = np.random.default_rng(0)
    specs = [world.sample_clip(rng) for _ in range(400)]
    caps = [s.caption() for s in specs]
    assert all(f"a {s.primary.colour} {s.primary.shape}" in c and f"{s.background} background" in c
               for s, c in zip(specs, caps))
    with_motion = np.mean([s.motion_words for s in specs])
    assert 0.25 < with_motion < 0.55
    assert all(("moving" in c or "bouncing" in c or "zigzagging" in c or "coming" in c) == s.motion_words
               for s, c in zip(specs, caps) if len(s.objects) == 1)
    assert any(len(s.objects) == 2 for s in specs)
    assert not any((s.primary.colour, s.primary.shape, s.background) in world.HELDOUT_APPEARANCES
                   for s in specs)
    held = [world.sample_clip(rng, split="heldout") for _ in range(50)]
    assert all((s.primary.colour, s.primary.shape, s.background) in world.HELDOUT_APPEARANCES for s in held)


def test_spec_roundtrips_and_renders_identically():
    spec, frames, _ = _clip("zigzag")
    again, _ = world.render_clip(world.ClipSpec.from_dict(spec.to_dict()))
    np.testing.assert_array_equal(frames, again)


@pytest.mark.parametrize("appearance", sorted(world.HELDOUT_APPEARANCES))
def test_detector_recovers_colour_shape_and_centroid(appearance):
    _, frames, gt = _clip("line", appearance=appearance, seed=2)
    assert detector.dominant_colour(frames) == appearance[0]
    det = detector.detect_colour(frames, appearance[0])
    assert np.abs(det.centroid - gt["centroid"]).max() < 0.75
    assert (det.mask ^ gt["mask"]).sum() <= 0.25 * gt["mask"].sum()  # edge pixels
    assert detector.shape_of(det.mask) == appearance[1]


def test_detector_primary_over_a_second_object_and_absent_colour():
    rng = np.random.default_rng(5)
    spec = world.sample_clip(rng, appearance=("blue", "square", "black"), two_object_prob=1.0)
    frames, gt = world.render_clip(spec)
    second = spec.objects[1].colour
    assert detector.detect_colour(frames, second).mean_area > 4
    absent = next(c for c in world.COLOURS if c not in ("blue", second))
    det = detector.detect_colour(frames, absent)
    assert det.area.sum() == 0 and np.isnan(det.centroid).all()
    blank = np.full((8, 32, 32, 3), 115, np.uint8)
    assert detector.dominant_colour(blank) is None


def test_unet_learning_rate_tail():
    """Warm-up, constant, then a cosine to 0 over the last `decay` steps: the schedule before
    the tail does not depend on the run's length, so a run resumed from a checkpoint of a
    constant-rate run and trained on to `total` is the run trained to `total` in one go."""
    import math

    from motionmatcher.toy.pretrain import _lr_tail

    assert _lr_tail(0, 8000, 2e-3, warmup=50, decay=2000) == 2e-3 / 50
    assert _lr_tail(49, 8000, 2e-3, warmup=50, decay=2000) == 2e-3
    for step in (50, 1375, 5999):
        assert _lr_tail(step, 8000, 2e-3, warmup=50, decay=2000) == 2e-3 == _lr_tail(step, 10**6, 2e-3, 50, 0)
    assert math.isclose(_lr_tail(7000, 8000, 2e-3, warmup=50, decay=2000), 1e-3)
    assert _lr_tail(8000, 8000, 2e-3, warmup=50, decay=2000) == 0.0


# --- unprompted appearance (issue #19 item 2) -------------------------------------------------

def _digest_clips(specs_and_extra):
    import hashlib
    import json

    m = hashlib.sha256()
    for spec, extra in specs_and_extra:
        frames, gt = world.render_clip(spec)
        m.update(frames.tobytes())
        m.update(gt["mask"].tobytes())
        m.update(np.asarray(gt["centroid"]).tobytes())
        m.update(json.dumps(world.gt_json(gt), indent=1).encode())
        m.update(extra)
    return m.hexdigest()


def test_plain_world_is_bit_identical_to_the_code_the_toy_model_was_trained_on():
    """SHA-256 of frames, masks, centroids and sidecar JSON of 24 random training clips (every
    trajectory family, 10 with a second object) and of the demo and benchmark sets (with their
    target prompts), computed with the renderer before the appearance setting existed
    (commit 92c1f92): the plain world, which models/toy_t2v was pretrained on, is unchanged."""
    import json

    from motionmatcher.toy import clips

    train = [(world.sample_clip(np.random.default_rng([7, s]), two_object_prob=0.5), b"") for s in range(24)]
    assert {s.primary.trajectory for s, _ in train} == set(world.TRAJECTORIES)
    assert _digest_clips(train) == "f88da02af6616f867af045faad14d2f1433ca1545634e7e2fc08a44686d696be"
    old = {"demo": "423be7fd7733ca7188533a0442c213e568da53aca4ad0ef09f0f9796daac5d16",
           "benchmark": "d1aa30eaa7d6121744b1ccb2bf4913ca221436430d9e3ddaf2dd3c84c979616f"}
    for which, digest in old.items():
        refs = [clips.reference(which, i) for i in range(len(clips.SETS[which]))]
        assert all(spec.appearance is None for _, spec, _ in refs)
        assert _digest_clips([(spec, json.dumps(p).encode()) for _, spec, p in refs]) == digest


def test_demo_and_benchmark_files_are_unchanged(tmp_path):
    """manifest.csv + the sidecars as the old clips.write_clips wrote them (SHA-256, commit 92c1f92)."""
    import hashlib

    from motionmatcher.toy import clips

    old = {"demo": "e9de2cd57a6e74e369a7d366cd63440287eec38b0e0b832e33f791b6bd4126a0",
           "benchmark": "b77c365127abc822d0c72930f62122f629c4a88062d382688008c942c5552bf9"}
    for which, digest in old.items():
        out = tmp_path / which
        clips.write_clips(out, which)
        data = (out / "manifest.csv").read_bytes() + b"".join(
            p.read_bytes() for p in sorted((out / "videos").glob("*.gt.json")))
        assert hashlib.sha256(data).hexdigest() == digest, which


def test_appearance_setting_renders_grating_and_unnamed_distractor():
    rng = np.random.default_rng(11)
    plain = world.sample_clip(rng, appearance=("red", "square", "gray"), trajectory="line", two_object_prob=0.0)
    spec = world.add_appearance(plain, np.random.default_rng(3))
    assert spec.caption() == plain.caption() and spec.objects == plain.objects
    pat, dis = spec.pattern, spec.distractor
    assert pat["period"] in world.PATTERN_PERIODS and pat["angle"] in world.PATTERN_ANGLES
    assert dis.colour != "red" and dis.colour not in spec.caption() and dis.shape in world.SHAPES
    frames, gt = world.render_clip(spec)
    pframes, pgt = world.render_clip(plain)
    np.testing.assert_array_equal(gt["mask"], pgt["mask"])  # primary on top, same ground truth
    np.testing.assert_array_equal(gt["centroid"], pgt["centroid"])
    # background pixels (no object reaches them in frame 0): gray + gradient + the grating
    n = spec.size
    x, y = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    grad = np.linspace(-10, 10, n)[:, None]
    dx, dy, dr = dis.state(0.0)
    sel = (pframes[0, ..., 0] == np.rint(115 + grad)) & (np.hypot(x - dx * n, y - dy * n) > 1.6 * dr * n + 1)
    a = np.radians(pat["angle"])
    want = 115 + grad + 32 * np.cos(2 * np.pi * (x * np.cos(a) + y * np.sin(a)) / pat["period"] + pat["phase"])
    got = frames[0].astype(float)
    assert sel.sum() > 500 and np.abs(got[sel] - want[sel][:, None]).max() <= 0.5 + 1e-4
    # the distractor: its colour is drawn along its own track, clear of the primary
    det = detector.detect_colour(frames, dis.colour)
    assert (det.area > 4).all()
    assert np.nanmax(np.abs(det.centroid - gt["distractor_centroid"])) < 1.0
    assert (det.area >= 0.5 * gt["distractor_area"]).all()  # mostly visible, not under the primary
    js = world.gt_json(gt)
    assert js["appearance"] == spec.appearance and len(js["distractor_area"]) == 8
    again = world.ClipSpec.from_dict(js["spec"])
    np.testing.assert_array_equal(world.render_clip(again)[0], frames)
    assert "appearance" not in world.gt_json(pgt)["spec"] and "appearance" not in world.gt_json(pgt)
    with pytest.raises(ValueError, match="choose from"):
        world.add_appearance(plain, rng, ("stripes",))


def test_appearance_set_covers_every_family_in_both_settings(tmp_path):
    import pandas as pd

    from motionmatcher.toy import clips

    refs = [clips.reference("appearance", i) for i in range(len(clips.SETS["appearance"]))]
    assert len(refs) >= 16
    for leak in (False, True):
        sub = [spec for _, spec, _ in refs if (spec.appearance is not None) == leak]
        assert {s.primary.trajectory for s in sub} == set(world.TRAJECTORIES)
        assert all((s.primary.colour, s.primary.shape, s.background) in world.HELDOUT_APPEARANCES for s in sub)
    for vid, spec, prompts in refs:
        assert len(prompts) == 2 and vid.endswith("_leak") == (spec.appearance is not None)
        if spec.distractor is not None:  # its colour shows in every frame (>= half its area)
            frames, gt = world.render_clip(spec)
            assert (detector.detect_colour(frames, spec.distractor.colour).area >= 0.5 * gt["distractor_area"]).all()
        banned = {spec.primary.colour} | ({spec.distractor.colour} if spec.distractor else set())
        assert not any(c in p.split() for p in prompts for c in banned)
    manifest = pd.read_csv(clips.write_clips(tmp_path, "appearance"))
    assert len(manifest) == 2 * len(refs) and manifest.video_id.nunique() == len(refs)


def test_clips_at_nine_frames_are_the_same_references(tmp_path):
    """`--frames 9` (the toy Wan model's clips): the same ids, captions, prompts and motion as the
    8-frame set -- the object starts and ends where it does at 8 frames and passes through the
    same path (frame k of 9 is at time k/8, frame j of 8 at j/7: the endpoints coincide)."""
    import pandas as pd

    from motionmatcher.toy import clips

    m8 = pd.read_csv(clips.write_clips(tmp_path / "f8", "benchmark"))
    m9 = pd.read_csv(clips.write_clips(tmp_path / "f9", "benchmark", n_frames=9))
    pd.testing.assert_frame_equal(m8, m9)
    for vid in m8["video_id"].unique():
        g8 = json.loads((tmp_path / "f8" / "videos" / f"{vid}.gt.json").read_text())
        g9 = json.loads((tmp_path / "f9" / "videos" / f"{vid}.gt.json").read_text())
        assert len(g8["centroid"]) == 8 and len(g9["centroid"]) == 9
        assert g8["spec"]["objects"] == g9["spec"]["objects"]
        np.testing.assert_allclose(g9["centroid"][0], g8["centroid"][0], atol=1e-6)
        np.testing.assert_allclose(g9["centroid"][-1], g8["centroid"][-1], atol=1e-6)
    # the stamp names the frame count, so an 8-frame folder is not taken for a 9-frame one
    assert json.loads((tmp_path / "f9" / "toy_clips.json").read_text())["n_frames"] == 9
    assert "n_frames" not in json.loads((tmp_path / "f8" / "toy_clips.json").read_text())


def test_leak_ablation_removes_one_kind_and_keeps_every_other_draw(tmp_path):
    """Each clip of `--set leak_ablation` is its appearance-set source with exactly one kind of
    unprompted appearance gone: the same object path, caption, prompts and the other kind; its
    frames differ from the source's only where the removed kind was drawn."""
    import pandas as pd

    from motionmatcher.toy import clips

    for i, (source, removed) in enumerate(clips.ABLATIONS["leak_ablation"]):
        vid, spec, prompts = clips.ablated_reference("leak_ablation", i, n_frames=9)
        svid, sspec, sprompts = clips.reference("appearance", source, n_frames=9)
        other = ({"background_pattern", "distractor"} - {removed}).pop()
        assert vid == svid + {"background_pattern": "_nopattern", "distractor": "_nodistractor"}[removed]
        assert prompts == sprompts and spec.objects == sspec.objects and spec.caption() == sspec.caption()
        assert spec.appearance[removed] is None and spec.appearance[other] == sspec.appearance[other]
        frames, gt = world.render_clip(spec)
        sframes, sgt = world.render_clip(sspec)
        np.testing.assert_array_equal(gt["centroid"], sgt["centroid"])
        assert (gt.get("distractor_centroid") is not None) == (removed != "distractor")
        if removed == "distractor":  # the distractor's pixels: the only ones that change
            d = detector.detect_colour(sframes, sspec.distractor.colour).area
            assert (np.abs(frames.astype(int) - sframes.astype(int)).sum(-1) > 0).sum((1, 2)).max() <= d.max() * 2
    manifest = pd.read_csv(clips.write_clips(tmp_path, "leak_ablation", n_frames=9))
    assert manifest.video_id.nunique() == len(clips.ABLATIONS["leak_ablation"]) and len(manifest) == 8

"""The toy world's generator and its colour-segmentation detector."""

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

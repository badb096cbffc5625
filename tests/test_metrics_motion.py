"""Tests for motionmatcher.metrics.motion (motion discrepancy and motion fidelity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from motionmatcher.metrics.motion import motion_discrepancy, motion_fidelity, normalized_displacements
from motionmatcher.metrics.tracking import LucasKanadeTracker, grid_queries

H, W, T = 128, 128, 12


def _moving_tracks(grid: int = 10, n_frames: int = T) -> np.ndarray:
    """Grid tracks with a pan plus a position-dependent wobble; every point moves every step."""
    q = grid_queries(H, W, grid).astype(np.float64)
    t = np.arange(n_frames, dtype=np.float64)[None, :]
    phase = (q[:, 0:1] + 2 * q[:, 1:2]) / 40.0
    x = q[:, 0:1] + 1.5 * t + 2.0 * np.sin(0.7 * t + phase)
    y = q[:, 1:2] - 0.8 * t + 1.0 * np.cos(0.5 * t + phase)
    return np.stack([x, y], axis=-1)


# ---------------------------------------------------------------- references


def _discrepancy_reference(a, b, height, width):
    d = ((a[:, None] - b[None]) ** 2).sum(-1).mean(-1)  # (N, M)
    return (d.min(1).mean() + d.min(0).mean()) / (height * width)


def _fidelity_reference(src, gen):
    def unit(tr):
        v = np.diff(tr, axis=1)
        n = np.linalg.norm(v, axis=-1, keepdims=True)
        return np.divide(v, n, out=np.zeros_like(v), where=n > 1e-6)

    us, ug = unit(src), unit(gen)
    corr = np.einsum("mtc,ntc->mnt", ug, us).mean(-1)  # (M gen, N src)
    return corr.max(1).mean()


# ---------------------------------------------------------------- discrepancy


def test_discrepancy_hand_computed():
    a = np.array([[[0, 0], [1, 0]], [[2, 0], [2, 2]]], dtype=np.float32)  # 2 tracks, T=2
    b = np.array([[[0, 1], [1, 1]]], dtype=np.float32)  # 1 track
    # d(a1,b1) = (1 + 1)/2 = 1 ; d(a2,b1) = (5 + 2)/2 = 3.5
    # A->B: (1 + 3.5)/2 = 2.25 ; B->A: min(1, 3.5) = 1 ; total 3.25 / (4*5)
    assert motion_discrepancy(a, b, height=4, width=5) == pytest.approx(3.25 / 20, rel=1e-12)
    assert motion_discrepancy(b, a, height=4, width=5) == pytest.approx(3.25 / 20, rel=1e-12)


def test_discrepancy_identity_and_time_reversal():
    tr = _moving_tracks()
    assert motion_discrepancy(tr, tr, H, W) == pytest.approx(0.0, abs=1e-12)
    assert motion_discrepancy(tr, tr[:, ::-1], H, W) > 1e-3


def test_discrepancy_shift_known_answer_and_monotone():
    tr = _moving_tracks()  # grid spacing 12.8 px: for shifts < 6.4 px the nearest track is the shifted copy
    values = []
    for s in (0.5, 1.0, 2.0, 4.0):
        shifted = tr + np.array([s, 0.0])
        value = motion_discrepancy(tr, shifted, H, W)
        assert value == pytest.approx(2 * s**2 / (H * W), rel=1e-9)
        values.append(value)
    assert all(x < y for x, y in zip(values, values[1:]))


def test_discrepancy_zoom_grows_with_zoom():
    tr = _moving_tracks()
    centre = np.array([(W - 1) / 2, (H - 1) / 2])
    values = [motion_discrepancy(tr, centre + z * (tr - centre), H, W) for z in (1.0, 1.05, 1.1, 1.2)]
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert all(x < y for x, y in zip(values, values[1:]))


def test_discrepancy_matches_bruteforce_and_chunking():
    rng = np.random.default_rng(1)
    a = rng.random((37, 6, 2)) * 100
    b = rng.random((23, 6, 2)) * 100
    ref = _discrepancy_reference(a, b, 100, 80)
    assert motion_discrepancy(a, b, 100, 80) == pytest.approx(ref, rel=1e-9)
    assert motion_discrepancy(a, b, 100, 80, chunk_size=5) == pytest.approx(ref, rel=1e-9)


def test_discrepancy_input_validation():
    a = _moving_tracks(n_frames=8)
    with pytest.raises(ValueError):
        motion_discrepancy(a, _moving_tracks(n_frames=9), H, W)
    with pytest.raises(ValueError):
        motion_discrepancy(a[..., :1], a, H, W)
    bad = a.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        motion_discrepancy(bad, a, H, W)


def test_grid50_chunked_equals_one_block():
    """Grid 50 (2500 tracks) in row chunks gives the one-block result (no wall-clock assert:
    timings on a shared machine are not a test)."""
    rng = np.random.default_rng(0)
    a = rng.random((2500, 16, 2)) * 480
    b = rng.random((2500, 16, 2)) * 480
    assert motion_discrepancy(a, b, 480, 480, chunk_size=256) == pytest.approx(
        motion_discrepancy(a, b, 480, 480, chunk_size=2500), rel=1e-12)


# ---------------------------------------------------------------- fidelity


def test_normalized_displacements_static_is_zero():
    tr = np.array([[[0, 0], [3, 4], [3, 4]]], dtype=np.float64)
    u = normalized_displacements(tr)
    np.testing.assert_allclose(u, [[[0.6, 0.8], [0.0, 0.0]]])


def test_fidelity_hand_computed():
    src = np.array([
        [[0, 0], [1, 0], [2, 0]],  # u = (1,0), (1,0)
        [[0, 0], [0, 2], [0, 4]],  # u = (0,1), (0,1)
    ], dtype=np.float64)
    gen = np.array([
        [[0, 0], [3, 0], [3, 3]],  # u = (1,0), (0,1)  -> corr .5 with both sources
        [[5, 5], [5, 5], [4, 5]],  # u = (0,0), (-1,0) -> corr -.5 / 0 -> max 0
    ], dtype=np.float64)
    assert motion_fidelity(src, gen) == pytest.approx(0.25)
    # source side: s1 -> max(.5, -.5) = .5 ; s2 -> max(.5, 0) = .5
    assert motion_fidelity(src, gen, symmetric=True) == pytest.approx((0.25 + 0.5) / 2)
    # gen track 2 has path length 1 px: filtered out with min_motion=1.5
    assert motion_fidelity(src, gen, min_motion=1.5) == pytest.approx(0.5)
    assert np.isnan(motion_fidelity(src * 0, gen, min_motion=1.5))
    assert motion_fidelity(src, gen * 0, min_motion=1.5) == 0.0


def test_fidelity_identity_reversal_shift_zoom():
    tr = _moving_tracks()
    assert motion_fidelity(tr, tr) == pytest.approx(1.0, abs=1e-12)
    reversed_ = motion_fidelity(tr, tr[:, ::-1])
    assert reversed_ < 0.0  # the pan direction flips
    # fidelity compares motion directions, not positions: shift / zoom keep it at 1
    assert motion_fidelity(tr, tr + np.array([7.0, -3.0])) == pytest.approx(1.0, abs=1e-12)
    centre = np.array([(W - 1) / 2, (H - 1) / 2])
    assert motion_fidelity(tr, centre + 1.1 * (tr - centre)) == pytest.approx(1.0, abs=1e-12)


def test_fidelity_matches_bruteforce_and_chunking():
    rng = np.random.default_rng(2)
    src = rng.random((31, 7, 2)) * 50
    gen = rng.random((17, 7, 2)) * 50
    gen[0] = gen[0, :1]  # one static generated track
    ref = _fidelity_reference(src, gen)
    assert motion_fidelity(src, gen) == pytest.approx(ref, rel=1e-9)
    assert motion_fidelity(src, gen, chunk_size=4) == pytest.approx(ref, rel=1e-9)


# ---------------------------------------------------------------- real clips


def _shared_videos_dir() -> Path | None:
    repo = Path(__file__).resolve().parents[1]
    for candidate in (repo.parent / "shared" / "reference_videos", Path("/work/shared/reference_videos")):
        if (candidate / "bear.mp4").is_file() and (candidate / "eiffel.mp4").is_file():
            return candidate
    return None


def _load_clip(path: Path, size: int) -> np.ndarray:
    decord = pytest.importorskip("decord")
    import cv2

    reader = decord.VideoReader(str(path))
    frames = reader.get_batch(list(range(len(reader)))).asnumpy()
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def test_shared_videos_discrepancy():
    root = _shared_videos_dir()
    if root is None:
        pytest.skip("shared reference videos not available")
    size = 128
    tracker = LucasKanadeTracker()
    bear, _ = tracker.track(_load_clip(root / "bear.mp4", size), grid_size=20)
    eiffel, _ = tracker.track(_load_clip(root / "eiffel.mp4", size), grid_size=20)
    assert bear.shape == (400, 16, 2) and eiffel.shape == (400, 16, 2)
    assert motion_discrepancy(bear, bear, size, size) == pytest.approx(0.0, abs=1e-12)
    cross = motion_discrepancy(bear, eiffel, size, size)
    assert cross > 1e-3  # measured ~7.7e-3 (LK, 128 px, grid 20)
    assert motion_fidelity(bear, eiffel) < motion_fidelity(bear, bear)


# ---------------------------------------------------------------- named variants (official scripts)


def _three_tracks(n_frames: int = 5) -> np.ndarray:
    """Track 0 moves right, track 1 down, track 2 diagonally, 1 px per step, far apart."""
    t = np.arange(n_frames, dtype=np.float64)
    starts = np.array([[10.0, 10.0], [50.0, 10.0], [10.0, 50.0]])
    steps = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    return starts[:, None, :] + steps[:, None, :] * t[None, :, None]


def _official_discrepancy(a, b, height, width):
    """evaluations/motion_discrepancy.py of MotionMatcher, re-derived: mean over flattened (T, 2)."""
    fa, fb = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    dists = ((fa[None] - fb[:, None]) ** 2).mean(-1)  # (M, N)
    return (dists.min(1).mean() + dists.T.min(1).mean()) / height / width


def _official_fidelity(src, gen):
    """DMT's motion_fidelity_score.py, re-derived: identity subtracted before the max."""
    def unit(tr):
        v = np.diff(tr, axis=1)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    sim = np.einsum("ntc,mtc->nmt", unit(gen), unit(src)).mean(-1) - np.eye(gen.shape[0])
    return sim.max(1).mean()


def test_variants_known_answers_self_mirror_offset():
    tr = _three_tracks()
    r = 1 / np.sqrt(2)
    # against itself: discrepancy 0 in both; fidelity 1 without, mean second-best match with identity
    assert motion_discrepancy(tr, tr, 100, 100, variant="official") == pytest.approx(0.0, abs=1e-15)
    assert motion_fidelity(tr, tr, variant="no_identity") == pytest.approx(1.0)
    assert motion_fidelity(tr, tr, variant="official") == pytest.approx(r)
    # constant offset (3, 4) px: each track's nearest neighbour is its own shifted copy, 25 px^2
    shifted = tr + np.array([3.0, 4.0])
    assert motion_discrepancy(tr, shifted, 100, 100, variant="paper") == pytest.approx(2 * 25 / 1e4)
    assert motion_discrepancy(tr, shifted, 100, 100, variant="official") == pytest.approx(25 / 1e4)
    assert motion_fidelity(tr, shifted, variant="official") == pytest.approx(r)
    # mirror image x -> 99 - x: right becomes left. Per generated track, best source match:
    # no identity: left -> 0 (the down track), down -> 1, (-1, 1) -> 1/sqrt2;
    # with identity: left -> 0, down -> 1/sqrt2 (its own match removed), (-1, 1) -> 1/sqrt2
    mirror = tr.copy()
    mirror[..., 0] = 99.0 - mirror[..., 0]
    assert motion_fidelity(tr, mirror, variant="no_identity") == pytest.approx((0 + 1 + r) / 3)
    assert motion_fidelity(tr, mirror, variant="official") == pytest.approx((0 + r + r) / 3)
    # a single track and its mirror image: d = mean_t (2 x_t - 99)^2 for x = 10..14 (y unchanged)
    one, one_m = tr[:1], mirror[:1]
    d = np.mean([(2 * x - 99.0) ** 2 for x in range(10, 15)])
    assert motion_discrepancy(one, one_m, 100, 100, variant="paper") == pytest.approx(2 * d / 1e4)
    assert motion_discrepancy(one, one_m, 100, 100, variant="official") == pytest.approx(d / 1e4)


def test_variants_match_official_scripts_on_random_tracks():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 64, (30, 6, 2)).cumsum(1)
    b = rng.uniform(0, 64, (30, 6, 2)).cumsum(1)
    assert motion_discrepancy(a, b, 64, 80, variant="official") == pytest.approx(_official_discrepancy(a, b, 64, 80))
    assert motion_discrepancy(a, b, 64, 80, variant="paper") == pytest.approx(2 * _official_discrepancy(a, b, 64, 80))
    assert motion_fidelity(a, b, variant="official", chunk_size=7) == pytest.approx(_official_fidelity(a, b))


def test_variant_errors():
    tr = _three_tracks()
    with pytest.raises(ValueError, match="variant"):
        motion_discrepancy(tr, tr, 100, 100, variant="mean")
    with pytest.raises(ValueError, match="variant"):
        motion_fidelity(tr, tr, variant="dmt")
    with pytest.raises(ValueError, match="same number of source and generated tracks"):
        motion_fidelity(tr, tr[:2], variant="official")

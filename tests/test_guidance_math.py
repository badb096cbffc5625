"""MotionClone's and DMT's losses against hand computations (no UNet)."""

from __future__ import annotations

import pytest
import torch

from motionmatcher.methods.dmt import dmt_loss, space_time_descriptor
from motionmatcher.methods.motionclone import motion_loss

# one position, one head, F = 3 query frames × 3 key frames; no ties within a row
REF = torch.tensor([[0.7, 0.2, 0.1],
                    [0.1, 0.3, 0.6],
                    [0.2, 0.5, 0.3]])[None, None, None]  # (1, P=1, H=1, 3, 3)


@pytest.mark.parametrize("k, kept", [
    (1, [(0, 0), (1, 2), (2, 1)]),                                  # each row's largest
    (2, [(0, 0), (0, 1), (1, 2), (1, 1), (2, 1), (2, 2)]),          # its two largest
])
def test_motion_loss_is_the_top_k_masked_mse(k, kept):
    """L_m = ‖M ⊙ (A_ref − A)‖² / ‖M‖₁ with M the reference's top-k per query (official
    ``rank_k``): only the kept entries count, divided by their number (3k)."""
    gen = torch.rand(2, 1, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([sum(float(gen[b, 0, 0, q, f] - REF[0, 0, 0, q, f]) ** 2
                                 for q, f in kept) / len(kept) for b in range(2)])
    torch.testing.assert_close(motion_loss(REF, gen, k), expected, rtol=1e-6, atol=1e-7)


def test_motion_loss_ignores_the_dropped_entries():
    # a sample equal to the reference on its kept entries has zero loss, however far the rest is
    gen = REF.clone().expand(1, -1, -1, -1, -1).clone()
    gen[..., 0, 1] += 0.5
    gen[..., 1, 0] -= 0.3
    assert float(motion_loss(REF, gen, 1)) == 0.0
    gen[..., 0, 0] += 0.3
    assert float(motion_loss(REF, gen, 1)) == pytest.approx(0.09 / 3)


def test_dmt_loss_against_the_formula_by_hand():
    """L = (1/F) Σ_a (1 − (1/F) Σ_f cos(φ_f − φ_a, ψ_f − ψ_a)), cos(0, ·) = 0."""
    g = torch.Generator().manual_seed(4)
    gen, ref = torch.randn(2, 4, 5, generator=g), torch.randn(4, 5, generator=g)
    expected = []
    for b in range(2):
        total = 0.0
        for a in range(4):
            s = 0.0
            for f in range(4):
                u, v = gen[b, f] - gen[b, a], ref[f] - ref[a]
                if f != a:
                    s += float(u @ v / (u.norm() * v.norm()))
            total += 1 - s / 4
        expected.append(total / 4)
    torch.testing.assert_close(dmt_loss(gen, ref), torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_space_time_descriptor_is_the_spatial_mean_per_sample_and_frame():
    feats = torch.arange(2 * 3 * 2 * 2 * 2, dtype=torch.float32).reshape(6, 2, 2, 2)  # (B·F, C, h, w)
    d = space_time_descriptor(feats, 2)
    assert d.shape == (2, 3, 2)
    # sample 1, frame 2 is row 5; channel 1 holds 44..47
    assert float(d[1, 2, 1]) == pytest.approx((44 + 45 + 46 + 47) / 4)

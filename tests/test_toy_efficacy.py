"""Efficacy regression on the committed toy model: MotionMatcher customization must move the
sample's trajectory toward the reference's (ground-truth trajectory error below base's)."""

from pathlib import Path

import pytest

from motionmatcher.models import load_t2v_model
from motionmatcher.toy import efficacy

TOY = Path(__file__).resolve().parents[1] / "models" / "toy_t2v"


@pytest.mark.skipif(not (TOY / "unet").is_dir(), reason="the toy model is not committed")
# A known failure, kept strict so that the day it passes the marker must go: with the official
# LoRA targets, no base dropout and the fp32 extractor (issue 10), 40 MotionMatcher steps leave the
# trajectory where base puts it (base 0.163, motionmatcher 0.164 on this reference; README "Toy
# world"). Issue 13 stays open on it.
@pytest.mark.xfail(strict=True, reason="customization does not yet move the toy model's trajectory")
def test_motionmatcher_moves_trajectory_toward_reference():
    model = load_t2v_model(TOY)
    r = efficacy.run(model, index=0, seeds=(0, 1))
    assert r.customized_error < 0.9 * r.base_error, (
        f"trajectory error: base {r.base_error:.3f}, motionmatcher {r.customized_error:.3f}")

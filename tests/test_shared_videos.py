"""The foundation stages on real footage from ../shared/reference_videos (skipped when absent)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, SHARED_VIDEOS
from motionmatcher.backbones.latents import encode_video
from motionmatcher.files.manifest import load_manifest, videos
from motionmatcher.files.video import read_video_frames, resize_center_crop

pytestmark = pytest.mark.skipif(not (SHARED_VIDEOS / "manifest.csv").is_file(),
                                reason=f"{SHARED_VIDEOS} is absent")


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(SHARED_VIDEOS / "manifest.csv", n_frames=16)


def test_manifest_validates_and_resolves(manifest):
    assert len(manifest) >= 5
    assert manifest["video_path"].map(lambda p: p.startswith(str(SHARED_VIDEOS.resolve()))).all()
    with pytest.raises(Exception, match="need frame index"):
        load_manifest(SHARED_VIDEOS / "manifest.csv", n_frames=17)


def test_preprocess_and_latents_on_real_clips(manifest, tiny_model):
    for vid, row in videos(manifest).iterrows():
        frames, info = read_video_frames(row["video_path"], 8, 0, 2)
        assert frames.shape[0] == 8 and info["frame_indices"] == list(range(0, 16, 2))
        out = resize_center_crop(frames, 64, 48)
        assert out.shape == (8, 48, 64, 3) and out.dtype == np.uint8
        lat = encode_video(tiny_model.vae, out)
        assert lat.shape == (1, 4, 8, 6, 8) and torch.isfinite(lat).all()


def test_dag_lists_every_shared_video(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "-n", "--cores", "1", "--config", f"manifest={SHARED_VIDEOS / 'manifest.csv'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for vid in ("bear", "bus", "cat", "dog", "eiffel"):
        assert f"video={vid}" in res.stdout

"""The `metrics` stage as functions (motionmatcher.metrics.evaluate) on a demo clip, random-init CLIP.

"Samples" of the reference clip are the clip itself (motion discrepancy 0, motion fidelity 1
for every track that moves) and its time reversal (worse on both motion metrics)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from motionmatcher.toy.ball_clips import render_clip
from motionmatcher.metrics.evaluate import (
    METRIC_COLUMNS,
    SAMPLE_ID_COLUMNS,
    evaluate_reference,
    evaluate_samples,
    load_scorers,
    metrics_config_hash,
)
from motionmatcher.metrics import ClipScorer, MetricUnavailable, make_tracker
from motionmatcher.files.tensor_files import write_checked
from motionmatcher.files.table_schemas import METRICS, REFERENCE, write_table

GRID = 10
PROMPT = "a red ball rolling from left to right"


@pytest.fixture(scope="module")
def scorer() -> ClipScorer:
    return ClipScorer("ViT-B-32", pretrained="openai", random_init_seed=0)


@pytest.fixture(scope="module")
def tracker():
    return make_tracker("lk")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return render_clip("left_to_right", n_frames=8, size=(64, 64), seed=0)


def sample_rows(tmp_path, videos: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    for i, (name, frames) in enumerate(videos.items()):
        path = tmp_path / f"{name}.safetensors"
        write_checked(path, {"frames": torch.from_numpy(np.ascontiguousarray(frames))})
        rows.append({"video_id": "left_to_right", "method": name, "prompt_id": f"p{i}", "prompt": PROMPT,
                     "manifest_row": i, "seed": 0, "video_path": str(path.with_suffix(".mp4")),
                     "frames_path": str(path), "model_identity": "test", "seconds": 0.0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def scored(scorer, tracker, reference, tmp_path_factory) -> pd.DataFrame:
    rows = sample_rows(tmp_path_factory.mktemp("samples"),
                       {"identity": reference, "reversed": reference[::-1]})
    return evaluate_samples(rows, reference, scorer, tracker, GRID, expected_size=(64, 64))


def test_identity_and_time_reversal(scored, tracker, reference):
    assert list(scored["method"]) == ["identity", "reversed"]
    same, rev = scored.iloc[0], scored.iloc[1]

    assert same["motion_discrepancy"] == pytest.approx(0.0, abs=1e-9)
    # identical tracks: each track correlates 1 with itself at every step where it moves, so the
    # fidelity is the fraction of moving (track, step) pairs; the static background scores 0
    tracks, _ = tracker.track(reference, GRID)
    moving = np.linalg.norm(np.diff(tracks, axis=1), axis=-1) > 1e-6
    assert moving.any(axis=1).mean() > 0.2
    assert same["motion_fidelity"] == pytest.approx(moving.mean(), abs=1e-9)

    assert rev["motion_discrepancy"] > 0.01
    assert rev["motion_fidelity"] < same["motion_fidelity"] - 0.05

    # CLIP-T and frame consistency do not depend on the frame order
    assert -1.0 <= same["clip_t"] <= 1.0
    assert rev["clip_t"] == pytest.approx(same["clip_t"], abs=1e-5)
    assert rev["frame_consistency"] == pytest.approx(same["frame_consistency"], abs=1e-5)


def test_columns_and_null_image_reward(scored, tmp_path):
    assert list(scored.columns[:len(SAMPLE_ID_COLUMNS)]) == list(SAMPLE_ID_COLUMNS)
    assert set(METRIC_COLUMNS) <= set(scored.columns)
    assert scored["image_reward"].isna().all() and scored["image_reward"].dtype == np.float64
    assert set(scored["tracker"]) == {"lk"} and set(scored["grid_size"]) == {GRID}
    assert set(scored["clip_model"]) == {"ViT-B-32"} and set(scored["clip_weights"]) == {"random_init:0"}
    assert set(scored["height"]) == {64} and set(scored["n_frames"]) == {8}
    # the definitions: default variants, weight-free tracker, CLIP weights fingerprinted
    assert set(scored["discrepancy_variant"]) == {"paper"} and set(scored["fidelity_variant"]) == {"no_identity"}
    assert set(scored["tracker_weights_sha256"]) == {"none"}
    assert scored["clip_weights_sha256"].nunique() == 1 and len(scored["clip_weights_sha256"].iloc[0]) == 16
    assert scored["image_reward_weights_sha256"].isna().all()

    table = scored.assign(config_hash="h", code_version="v")
    write_table(table, METRICS, tmp_path / "m.parquet")
    back = pq.read_table(tmp_path / "m.parquet")
    assert back.schema.equals(METRICS)
    assert back.column("image_reward").null_count == 2
    assert back.column("motion_fidelity").null_count == 0


def test_official_variants_through_the_stage(scored, scorer, tracker, reference, tmp_path):
    from motionmatcher.results.summary_tables import summarize, summary_markdown

    rows = sample_rows(tmp_path, {"identity": reference, "reversed": reference[::-1]})
    official = evaluate_samples(rows, reference, scorer, tracker, GRID, expected_size=(64, 64),
                                variants={"discrepancy": "official", "fidelity": "official"})
    assert set(official["discrepancy_variant"]) == {"official"} and set(official["fidelity_variant"]) == {"official"}
    # official discrepancy = paper / 2; DMT's identity term lowers the self-comparison below no_identity
    np.testing.assert_allclose(official["motion_discrepancy"], scored["motion_discrepancy"] / 2, rtol=1e-12)
    assert official.iloc[0]["motion_fidelity"] < scored.iloc[0]["motion_fidelity"]
    # a table mixing both definitions says so in its header
    mixed = pd.concat([scored, official.assign(method=official["method"] + "_official")], ignore_index=True)
    md = summary_markdown(summarize(mixed), samples=mixed)
    assert "mixes 2 metric definitions" in md
    assert "motion discrepancy variant `official`" in md and "motion discrepancy variant `paper`" in md
    assert "not comparable" not in summary_markdown(summarize(scored), samples=scored)


class ConstantReward:
    weights_sha256 = "constantreward00"

    def score(self, frames, prompt):
        return 0.25


def test_image_reward_and_reference(scorer, tracker, reference, tmp_path):
    short = reference[:2]  # 2 frames keep this cheap
    rows = sample_rows(tmp_path, {"identity": short})
    out = evaluate_samples(rows, short, scorer, tracker, 4, image_reward=ConstantReward())
    assert list(out["image_reward"]) == [0.25]
    assert list(out["image_reward_weights_sha256"]) == ["constantreward00"]

    ref = evaluate_reference(short, PROMPT, scorer)
    assert ref["clip_t"] == pytest.approx(out.iloc[0]["clip_t"], abs=1e-6)  # same frames, same text
    assert ref["frame_consistency"] == pytest.approx(out.iloc[0]["frame_consistency"], abs=1e-6)
    assert ref["image_reward"] is None and (ref["n_frames"], ref["height"], ref["width"]) == (2, 64, 64)
    record = {**ref, "video_id": "v", "caption": PROMPT, "frames_path": "f", "config_hash": "h",
              "code_version": "c"}
    write_table(pd.DataFrame([record]), REFERENCE, tmp_path / "r.parquet")
    assert pq.read_table(tmp_path / "r.parquet").column("image_reward").null_count == 1


def test_resolution_and_length_are_checked(scorer, tracker, reference, tmp_path):
    rows = sample_rows(tmp_path, {"identity": reference})
    with pytest.raises(ValueError, match="same resolution"):
        evaluate_samples(rows, reference, scorer, tracker, 4, load_frames=lambda r: reference[:, :32, :32])
    with pytest.raises(ValueError, match="same resolution"):
        evaluate_samples(rows, reference, scorer, tracker, 4, load_frames=lambda r: reference[:6])
    with pytest.raises(ValueError, match="configured video size"):
        evaluate_samples(rows, reference, scorer, tracker, 4, expected_size=(32, 32))


def test_missing_clip_weights_fail_before_anything_else(tmp_path):
    cfg = {"clip": {"model": "ViT-B-32", "pretrained": "openai", "checkpoint": str(tmp_path / "none.bin"),
                    "random_init_seed": None},
           "tracker": "cotracker", "cotracker_checkpoint": None, "grid_size": 10,
           "image_reward": {"checkpoint": str(tmp_path / "none.pt")}}
    with pytest.raises(MetricUnavailable, match=r"metrics\.clip\.checkpoint"):
        load_scorers(cfg)


def test_config_hash():
    h = metrics_config_hash({"sample": {"seeds": [0]}}, {"grid_size": 10}, {"width": 64}, 0)
    assert h == metrics_config_hash({"sample": {"seeds": [0]}}, {"grid_size": 10}, {"width": 64}, 0)
    assert h != metrics_config_hash({"sample": {"seeds": [0]}}, {"grid_size": 10}, {"width": 64}, 1)
    assert h != metrics_config_hash({"sample": {"seeds": [0]}}, {"grid_size": 50}, {"width": 64}, 0)


def test_metrics_rules_request_a_gpu_unless_device_is_cpu(tmp_path):
    """`device: cuda` (paper.yaml) must give both metrics rules `gpu=1`, else Slurm places them
    on CPU nodes and the local profile runs them on cuda:0 without a slot."""
    import subprocess
    import sys

    from motionmatcher.metrics.evaluate import metrics_gpus
    from workflow_helpers import REPO

    for rule in ("metrics", "metrics_check"):
        assert metrics_gpus({"device": "cuda", "metrics": {"tracker": "lk"}}, rule) == 1
        assert metrics_gpus({"device": "auto"}, rule) == 1
        assert metrics_gpus({"device": "cpu", "metrics": {"tracker": "cotracker"}}, rule) == 0
    with pytest.raises(ValueError):
        metrics_gpus({"device": "cuda"}, "summary")
    # the rules carry it: a dry run of the demo manifest shows the resources of each job
    from motionmatcher.files.video import write_mp4

    write_mp4(render_clip("left_to_right", n_frames=20, size=(64, 48)), tmp_path / "a.mp4", fps=8)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video_id,video_path,caption,prompt\na,{tmp_path / 'a.mp4'},A ball.,A dog.\n")

    def dry_run(device):
        res = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "1",
             "--directory", str(tmp_path), "--config", f"manifest={manifest}", f"device={device}", "model=tiny",
             "--until", "metrics"],
            capture_output=True, text=True, cwd=REPO, timeout=300,
        )
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        jobs = {}
        for block in res.stdout.split("\nrule ")[1:]:
            name = block.split(":", 1)[0].strip()
            found = re.search(r"resources: (.*)", block)
            jobs.setdefault(name, []).append(found.group(1) if found else "")
        return jobs

    cuda = dry_run("cuda")
    for rule in ("metrics", "metrics_check"):
        assert cuda[rule] and all(re.search(r"\bgpu=1\b", r) for r in cuda[rule]), cuda[rule]


def test_metrics_config_hash_sees_the_videos_overrides(tmp_path):
    """rules/metrics.smk hashes the method's settings *on this video*: a per-video override
    (video_overrides) changes the metrics rows' config_hash, so it invalidates the metrics."""
    from types import SimpleNamespace

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    from motionmatcher.toy.ball_clips import render_clip
    from motionmatcher.files.video import write_mp4
    from workflow_helpers import REPO

    write_mp4(render_clip("left_to_right", n_frames=20, size=(64, 48)), tmp_path / "a.mp4", fps=8)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video_id,video_path,caption,prompt\na,{tmp_path / 'a.mp4'},A ball.,A dog.\n"
                        f"b,{tmp_path / 'a.mp4'},A ball.,A dog.\n")
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("a:\n  motionmatcher:\n    sample: {noise_prior: 0.25}\n")
    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1), storage_settings=StorageSettings(),
            config_settings=ConfigSettings(config={"manifest": str(manifest), "model": "tiny",
                                                   "video_overrides": str(overrides)}),
            snakefile=REPO / "Snakefile", workdir=tmp_path)._workflow
        params = workflow.get_rule("metrics").params
        on = {v: params.method_configs(SimpleNamespace(video=v))["motionmatcher"] for v in "ab"}
        metrics, video = workflow.config["metrics"], dict(workflow.config["video"])
    assert on["a"]["sample"]["noise_prior"] == 0.25 and on["b"]["sample"]["noise_prior"] != 0.25
    assert (metrics_config_hash(on["a"], metrics, video, 0)
            != metrics_config_hash(on["b"], metrics, video, 0))

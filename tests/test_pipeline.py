"""The demo DAG end to end on the tiny model (CPU), as `make demo` runs it, at test size."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from motionmatcher.toy.ball_clips import write_demo_dataset
from helpers import load_tensors, tensor_metadata
from motionmatcher.files.video import read_mp4
from workflow_helpers import run_snakemake, write_small_config

pytestmark = pytest.mark.pipeline


def snakemake(workdir: Path, configfile: Path, *args: str):
    return run_snakemake(workdir, configfile, *args, timeout=1500)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    write_demo_dataset(workdir / "demo", n_frames=20, size=(80, 64))
    cfg = write_small_config(workdir / "test_config.yaml", workdir / "demo" / "manifest.csv")
    res = snakemake(workdir, cfg)
    assert res.returncode == 0, res.stderr[-6000:]
    return workdir, cfg


def test_dry_run_lists_the_dag(demo_run):
    workdir, cfg = demo_run
    res = snakemake(workdir, cfg, "-n", "--forceall")
    assert res.returncode == 0, res.stderr
    for rule in ("build_tiny_model", "preprocess", "cache_latents", "cache_inversion", "customize", "sample", "videos_table"):
        assert rule in res.stdout


def test_second_run_has_nothing_to_do(demo_run):
    workdir, cfg = demo_run
    res = snakemake(workdir, cfg, "-n")
    assert res.returncode == 0
    assert "Nothing to be done" in res.stdout + res.stderr


def test_outputs(demo_run):
    workdir, _ = demo_run
    r = workdir / "results"
    videos = pd.read_parquet(r / "tables" / "videos.parquet")
    assert sorted(videos["video_id"]) == ["circle", "left_to_right", "zoom"]
    assert set(videos["n_prompts"]) == {2}
    assert all(list(ix) == [0, 2, 4, 6, 8, 10, 12, 14] for ix in videos["frame_indices"])
    frames = load_tensors(r / "preprocess" / "zoom" / "frames.safetensors")["frames"]
    assert frames.shape == (8, 64, 64, 3) and str(frames.dtype) == "torch.uint8"
    lat = workdir / "resources" / "latents" / "tiny" / "zoom.safetensors"
    assert load_tensors(lat)["latents"].shape == (1, 4, 8, 8, 8)
    assert tensor_metadata(lat)["model_identity"].startswith("tiny-")
    for method in ("base", "motionmatcher"):
        for vid in ("circle", "left_to_right", "zoom"):
            s = pd.read_parquet(r / "samples" / method / vid / "samples.parquet")
            assert len(s) == 2 and set(s["prompt_id"]) == {"p00", "p01"}
            mp4 = read_mp4(workdir / s["video_path"].iloc[0])
            assert mp4.shape == (8, 64, 64, 3)
            assert (r / "samples" / method / vid / "contact_sheet.png").stat().st_size > 0
    log = pd.read_parquet(r / "customize" / "motionmatcher" / "zoom" / "train_log.parquet")
    assert list(log["step"]) == [1, 2, 3, 4] and {"loss", "ca", "tsa", "lr", "seconds"} <= set(log.columns)
    rec = json.loads((r / "customize" / "motionmatcher" / "zoom" / "run.json").read_text())
    assert rec["train"]["steps"] == 4 and rec["model_identity"].startswith("tiny-")
    assert not (workdir / "resources" / "checkpoints" / "tiny" / "motionmatcher" / "zoom").exists()
    for rule_log in ("preprocess/zoom.log", "customize/motionmatcher/zoom.log", "sample/base/zoom.log"):
        assert (r / "logs" / rule_log).stat().st_size > 0


def test_tables(demo_run):
    workdir, _ = demo_run
    t = workdir / "results" / "tables"
    samples = pd.read_parquet(t / "samples.parquet")
    assert len(samples) == 2 * 3 * 2  # methods x videos x prompts (one seed)
    assert set(samples["method"]) == {"base", "motionmatcher"}
    for col in ("clip_t", "frame_consistency", "motion_discrepancy", "motion_fidelity"):
        assert samples[col].notna().all(), col
    # cosines (CLIP-T, frame consistency, DMT's motion fidelity) lie in [-1, 1]; the motion
    # discrepancy is a mean squared distance inside a 64x64 frame over its area: [0, 2]
    for col in ("clip_t", "frame_consistency", "motion_fidelity"):
        assert samples[col].map(float).between(-1.0, 1.0).all(), col
    assert samples["motion_discrepancy"].map(float).between(0.0, (64**2 + 64**2) / (64 * 64)).all()
    # the CLIP scores are those of each sample's own frames and prompt (config: random CLIP, seed 0)
    from motionmatcher.metrics.clip_score import ClipScorer

    scorer = ClipScorer("ViT-B-32", pretrained="openai", random_init_seed=0)
    for _, row in samples.iloc[[0, -1]].iterrows():
        frames = load_tensors(workdir / row["frames_path"])["frames"].numpy()
        got = scorer.score(frames, row["prompt"])
        assert float(row["clip_t"]) == pytest.approx(got["clip_t"], abs=1e-4)
        assert float(row["frame_consistency"]) == pytest.approx(got["frame_consistency"], abs=1e-4)
    assert samples["image_reward"].isna().all()  # no checkpoint configured
    assert set(samples["tracker"]) == {"lk"}
    summary = pd.read_parquet(t / "summary.parquet")
    per_method = summary[summary["level"] == "method"]
    assert sorted(per_method["method"]) == ["base", "motionmatcher"]
    assert set(per_method["n_samples"]) == {6}
    md = (t / "summary.md").read_text()
    assert "motionmatcher" in md and "base" in md


@pytest.mark.parametrize("fault", ["zeroed", "truncated"])
def test_corrupt_latents_stop_customize_naming_file_and_rebuild(demo_run, tmp_path, fault):
    """Fault injection on a copy of the finished run: the cached latents of one video are
    zeroed (same size, valid header) or truncated. `customize` must refuse them, naming the
    file and the command that rebuilds it, before training."""
    import shutil

    src, cfg = demo_run
    workdir = tmp_path / "run"
    shutil.copytree(src, workdir, symlinks=True)
    lat = workdir / "resources" / "latents" / "tiny" / "zoom.safetensors"
    raw = bytearray(lat.read_bytes())
    if fault == "zeroed":
        n = int.from_bytes(raw[:8], "little")
        raw[8 + n:] = bytes(len(raw) - 8 - n)
    else:
        raw = raw[: len(raw) // 2]
    lat.write_bytes(bytes(raw))
    target = workdir / "results" / "customize" / "motionmatcher" / "zoom"
    shutil.rmtree(target)
    res = snakemake(workdir, cfg, "--keep-going", "results/customize/motionmatcher/zoom/run.json")
    assert res.returncode != 0, "customize trained on corrupt latents"
    # the first attempt's log (later attempts stop at once: only an out-of-memory is retried)
    log = (workdir / "results" / "logs" / "customize" / "motionmatcher" / "zoom.log.attempt1").read_text()
    assert "resources/latents/tiny/zoom.safetensors" in log, log[-3000:]
    assert "snakemake --force" in log and "CorruptFileError" in log


def test_injected_oom_is_retried_at_the_next_memory_level(demo_run, tmp_path, monkeypatch):
    """Fault injection: MOTIONMATCHER_INJECT_OOM makes the first attempt of customize and
    sample raise torch.cuda.OutOfMemoryError. Each fails with a message naming the settings
    that lower memory, Snakemake's `retries:` reruns it at memory level 1, and run.json says so."""
    import shutil

    src, cfg = demo_run
    workdir = tmp_path / "run"
    shutil.copytree(src, workdir, symlinks=True)
    shutil.rmtree(workdir / "results" / "customize" / "motionmatcher" / "zoom")
    shutil.rmtree(workdir / "results" / "samples" / "motionmatcher" / "zoom")
    monkeypatch.setenv("MOTIONMATCHER_INJECT_OOM", "customize,sample")
    res = snakemake(workdir, cfg, "--keep-going", "results/samples/motionmatcher/zoom/samples.parquet")
    assert res.returncode == 0, res.stderr[-6000:]
    r = workdir / "results"
    train_rec = json.loads((r / "customize" / "motionmatcher" / "zoom" / "run.json").read_text())
    assert train_rec["memory"] == {"attempt": 2, "level": 1, "changed": {"gradient_checkpointing": True}}
    assert train_rec["train"]["gradient_checkpointing"] is True
    sample_rec = json.loads((r / "samples" / "motionmatcher" / "zoom" / "run.json").read_text())
    assert sample_rec["memory"]["attempt"] == 2 and sample_rec["memory"]["level"] == 1
    # the failed first attempts' logs, as Snakemake prints them (show-failed-logs, profiles/default)
    out = res.stderr
    assert "customize video zoom, method motionmatcher: CUDA out of memory at memory level 0" in out
    assert "sample video zoom, method motionmatcher: CUDA out of memory at memory level 0" in out
    assert "gradient_checkpointing: true" in out and "vae_chunk_size: 1" in out
    assert out.count("Trying to restart job") == 2
    # each attempt keeps its own log; the rule's log is the last attempt's
    for rule in ("customize", "sample"):
        logs = r / "logs" / rule / "motionmatcher"
        assert "motionmatcher: CUDA out of memory" in (logs / "zoom.log.attempt1").read_text()
        assert (logs / "zoom.log").read_text() == (logs / "zoom.log.attempt2").read_text()


# ---- issue 22: faults on a copy of the finished run (tests/test_faults.py has the unit level) ----


def _copy_run(demo_run, tmp_path):
    import shutil

    src, cfg = demo_run
    workdir = tmp_path / "run"
    shutil.copytree(src, workdir, symlinks=True)
    return workdir, cfg


def _hint(log: str) -> str:
    import re

    m = re.search(r"rebuild it with: (snakemake --force \S+)", log)
    assert m, log[-3000:]
    return m.group(1)


def test_flipped_adapter_bit_stops_the_job_with_a_working_hint(demo_run, tmp_path):
    """The issue's fault: one exponent bit of the adapter flipped, its inversion rerun. Before,
    the inversion was all NaN and black samples were scored; now the job stops naming the
    adapter, and the hint is a target Snakemake rebuilds (relative to the working directory)."""
    from test_faults import _flip_exponent_bit

    workdir, cfg = _copy_run(demo_run, tmp_path)
    adapter = workdir / "results" / "customize" / "motionmatcher" / "zoom" / "adapter" / "adapter_model.safetensors"
    _flip_exponent_bit(adapter)
    # the inversion with the method's weights runs inside the sample job (was rule method_inversion)
    res = snakemake(workdir, cfg, "--forcerun", "sample", "--keep-going",
                    "results/samples/motionmatcher/zoom/samples.parquet")
    assert res.returncode != 0, "a damaged adapter was used"
    log = (workdir / "results" / "logs" / "sample" / "motionmatcher" / "zoom.log.attempt1").read_text()
    assert "CorruptFileError" in log and "sha256" in log
    hint = _hint(log)
    assert hint == "snakemake --force results/customize/motionmatcher/zoom/adapter/adapter_model.safetensors"
    res = snakemake(workdir, cfg, "-n", *hint.split()[1:])
    assert res.returncode == 0 and "customize" in res.stdout, res.stderr[-3000:]


def test_damaged_sample_frames_hint_names_a_rule_output(demo_run, tmp_path):
    """Before: the hint named the frames file, which no rule produces (MissingRuleException)."""
    workdir, cfg = _copy_run(demo_run, tmp_path)
    # a sample's frames (not inversion.safetensors, the noise prior the job inverted)
    frames = sorted((workdir / "results" / "samples" / "motionmatcher" / "zoom" / "videos").glob("*_s[0-9]*.safetensors"))[0]
    raw = bytearray(frames.read_bytes())
    raw[-1] ^= 0x01
    frames.write_bytes(bytes(raw))
    res = snakemake(workdir, cfg, "--forcerun", "metrics", "--keep-going", "results/metrics/zoom.parquet")
    assert res.returncode != 0
    log = (workdir / "results" / "logs" / "metrics" / "zoom.log").read_text()
    assert _hint(log) == "snakemake --force results/samples/motionmatcher/zoom/samples.parquet"
    res = snakemake(workdir, cfg, "-n", *_hint(log).split()[1:])
    assert res.returncode == 0 and "MissingRule" not in res.stderr, res.stderr[-3000:]


def test_truncated_samples_table_is_named_and_a_verified_rerun_repairs_it(demo_run, tmp_path):
    """Before: pyarrow's "magic bytes not found" without a hint, and a plain rerun said
    "Nothing to be done". Now the metrics job names the table and its rebuild command, and
    `python -m motionmatcher.results.verify --delete` (make verify) + a rerun repairs it."""
    import subprocess
    import sys

    workdir, cfg = _copy_run(demo_run, tmp_path)
    table = workdir / "results" / "samples" / "motionmatcher" / "zoom" / "samples.parquet"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    res = snakemake(workdir, cfg, "--forcerun", "metrics", "--keep-going", "results/metrics/zoom.parquet")
    assert res.returncode != 0
    log = (workdir / "results" / "logs" / "metrics" / "zoom.log").read_text()
    assert "not a readable Parquet table" in log
    assert _hint(log) == "snakemake --force results/samples/motionmatcher/zoom/samples.parquet"
    res = subprocess.run([sys.executable, "-m", "motionmatcher.results.verify", "--delete", "results", "resources"],
                         cwd=workdir, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    deleted = [line for line in res.stdout.splitlines() if line.startswith("deleted ")]
    assert deleted == ["deleted results/samples/motionmatcher/zoom/samples.parquet"], res.stdout
    res = snakemake(workdir, cfg, "--keep-going", "results/samples/motionmatcher/zoom/samples.parquet")
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(pd.read_parquet(table)) == 2

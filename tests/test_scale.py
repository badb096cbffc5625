"""Costs that must not grow with the manifest: the probe cache of manifest validation, the
streaming aggregation of the metric tables, and the workflow's input functions (the method
config is merged once per (method, video with overrides), not once per job)."""

from __future__ import annotations

import os
import pstats
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import motionmatcher.files.manifest as manifest_mod
from motionmatcher.toy.ball_clips import render_clip
from motionmatcher.files.manifest import ManifestError, load_manifest
from motionmatcher.results.summary_tables import aggregate_metric_tables, concat_metric_tables
from motionmatcher.files.table_schemas import METRICS, write_table
from motionmatcher.files.video import write_mp4

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def clips(tmp_path) -> Path:
    write_mp4(render_clip("left_to_right", n_frames=12, size=(32, 32)), tmp_path / "a.mp4", fps=8)
    write_mp4(render_clip("circle", n_frames=4, size=(32, 32)), tmp_path / "short.mp4", fps=8)
    (tmp_path / "garbage.mp4").write_bytes(b"\x00not a video" * 50)
    rows = ["video_id,video_path,caption,prompt"]
    for i in range(6):
        os.link(tmp_path / "a.mp4", tmp_path / f"v{i}.mp4")
        rows += [f"v{i},v{i}.mp4,A ball.,A dog.", f"v{i},v{i}.mp4,A ball.,A cat."]
    rows += ["s,short.mp4,A ball.,A dog.", "g,garbage.mp4,A ball.,A dog."]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _problems(path, **kw) -> list[str]:
    with pytest.raises(ManifestError) as err:
        load_manifest(path, 8, **kw)
    return err.value.problems


def test_probe_cache_probes_each_file_once_until_it_changes(clips, monkeypatch):
    probed = []
    real = manifest_mod._probe
    monkeypatch.setattr(manifest_mod, "_probe", lambda p: probed.append(Path(p).name) or real(p))
    cache = clips / "cache" / "probe.json"

    uncached = _problems(clips / "m.csv", workers=1)
    assert len(probed) == 8
    probed.clear()
    first = _problems(clips / "m.csv", probe_cache=cache, workers=3)
    assert sorted(probed) == sorted([f"v{i}.mp4" for i in range(6)] + ["short.mp4", "garbage.mp4"])
    # the same report, in row order, with or without cache and threads: the short clip and the
    # garbage file, nothing else
    assert first == uncached and len(first) == 2
    assert "row 13 (line 14)" in first[0] and "has 4 frames" in first[0]
    assert "row 14 (line 15)" in first[1]

    probed.clear()
    assert _problems(clips / "m.csv", probe_cache=cache) == first
    assert probed == []  # nothing decoded again, the cached error included

    # a replaced file (new content, new size and mtime) is probed again, and only it
    (clips / "short.mp4").unlink()
    write_mp4(render_clip("circle", n_frames=12, size=(32, 32)), clips / "short.mp4", fps=8)
    probed.clear()
    again = _problems(clips / "m.csv", probe_cache=cache)
    assert probed == ["short.mp4"]
    assert len(again) == 1 and "row 14" in again[0]


def test_damaged_probe_cache_is_ignored(clips):
    cache = clips / "probe.json"
    cache.write_text("{not json")
    assert len(_problems(clips / "m.csv", probe_cache=cache)) == 2


def _metric_table(method: str, video: str, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    row = {}
    for f in METRICS:
        t = str(f.type)
        if t in ("double", "float"):
            row[f.name] = rng.random(n)
        elif t.startswith("int"):
            row[f.name] = rng.integers(0, 100, n)
        elif t == "bool":
            row[f.name] = rng.random(n) > 0.5
        else:
            row[f.name] = [f"{f.name}-{seed}-{i}" for i in range(n)]
    df = pd.DataFrame(row)
    df["method"], df["video_id"] = method, video
    return df


@pytest.mark.parametrize("rows_per_group,tables_per_group", [(1, 512), (3, 512), (65536, 2), (65536, 512)])
def test_streaming_aggregation_equals_concatenation(tmp_path, rows_per_group, tables_per_group):
    paths = []
    for i, n in enumerate([2, 0, 3, 1]):  # an empty table in the middle
        p = tmp_path / f"t{i}.parquet"
        write_table(_metric_table("m" if i % 2 else "base", f"v{i}", n, i), METRICS, p)
        paths.append(p)
    expected = tmp_path / "expected.parquet"
    write_table(concat_metric_tables((pd.read_parquet(p) for p in paths), METRICS.names), METRICS, expected)
    out = tmp_path / "samples.parquet"
    assert aggregate_metric_tables(paths, out, METRICS, rows_per_group=rows_per_group,
                                   tables_per_group=tables_per_group) == 6
    assert pq.read_schema(out).equals(METRICS)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(expected))
    assert not list(tmp_path.glob(".samples.parquet.*")), "a temporary was left behind"


def _method_config_calls(tmp_path: Path, n_videos: int) -> tuple[int, int]:
    """(merges of the method config, jobs) of a dry run on ``n_videos`` videos, counted by a
    profile of the Snakemake process."""
    ws = tmp_path / f"n{n_videos}"
    (ws / "videos").mkdir(parents=True)
    write_mp4(render_clip("left_to_right", n_frames=8, size=(32, 32)), ws / "clip.mp4", fps=8)
    rows = ["video_id,video_path,caption,prompt"]
    for i in range(n_videos):
        os.link(ws / "clip.mp4", ws / "videos" / f"v{i}.mp4")
        rows += [f"v{i},videos/v{i}.mp4,a red ball,a blue ball", f"v{i},videos/v{i}.mp4,a red ball,a cat"]
    (ws / "manifest.csv").write_text("\n".join(rows) + "\n")
    (ws / "overrides.yaml").write_text("v0:\n  motionmatcher:\n    train: {steps: 3}\n")
    prof = ws / "prof"
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), str(snakemake), "-n", "--cores", "1",
           "-s", str(REPO / "Snakefile"), "-d", str(ws), "--quiet", "rules",
           "--config", f"manifest={ws / 'manifest.csv'}", f"results_dir={ws / 'results'}",
           f"resources_dir={ws / 'resources'}", f"video_overrides={ws / 'overrides.yaml'}",
           "run_methods=[base,motionmatcher,ddpm_lora]"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ws,
                         env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    stats = pstats.Stats(str(prof)).stats
    merges = sum(v[1] for (f, _, name), v in stats.items()
                 if name == "method_config" and f.endswith(os.path.join("methods", "config.py")))
    jobs = [int(line.split()[-1]) for line in (out.stdout + out.stderr).splitlines()
            if line.startswith("total")]
    return merges, jobs[-1]


def test_method_config_is_merged_once_per_method_not_per_job(tmp_path):
    merges_small, jobs_small = _method_config_calls(tmp_path, 2)
    merges_large, jobs_large = _method_config_calls(tmp_path, 8)
    assert jobs_large > 3 * jobs_small
    # validation of run_methods and of the overridden video, then one cached merge per (method,
    # overridden video or not): independent of the number of videos, far fewer than the jobs
    assert merges_large == merges_small
    assert merges_small < jobs_small / 2


def test_streaming_aggregation_names_a_damaged_table(tmp_path):
    from motionmatcher.files.tensor_files import CorruptFileError

    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    write_table(_metric_table("base", "a", 2, 0), METRICS, good)
    write_table(_metric_table("base", "b", 2, 1), METRICS, bad)
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    out = tmp_path / "samples.parquet"
    with pytest.raises(CorruptFileError) as err:
        aggregate_metric_tables([good, bad], out, METRICS)
    assert "bad.parquet" in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".samples.parquet.*"))


def test_fresh_workspace_with_explicit_targets_finds_every_identity_record(tmp_path):
    """Regression: the identity records were written by the input function while Snakemake
    built the DAG; Snakemake had already listed ``results/video_identity/`` by then, so on a
    fresh workspace every record after the first ones was "missing" (MissingInputException
    with explicit targets, e.g. one preprocess output per video as a Slurm benchmark asks)."""
    ws = tmp_path / "ws"
    (ws / "videos").mkdir(parents=True)
    write_mp4(render_clip("left_to_right", n_frames=8, size=(32, 32)), ws / "clip.mp4", fps=8)
    rows = ["video_id,video_path,caption,prompt"]
    for i in range(6):
        os.link(ws / "clip.mp4", ws / "videos" / f"v{i}.mp4")
        rows.append(f"v{i},videos/v{i}.mp4,a red ball,a blue ball")
    (ws / "manifest.csv").write_text("\n".join(rows) + "\n")
    results = ws / "results"
    targets = [str(results / "preprocess" / f"v{i}" / "info.json") for i in range(6)]
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "-d", str(ws),
           *targets, "--config", f"manifest={ws / 'manifest.csv'}", f"results_dir={results}",
           f"resources_dir={ws / 'resources'}", "run_methods=[base]"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ws,
                         env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert sorted(p.name for p in (results / "video_identity").iterdir()) == [f"v{i}.json" for i in range(6)]
    assert "preprocess" in out.stdout and out.stdout.count("rule preprocess:") == 6

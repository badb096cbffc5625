"""The paper's tables and the Snakemake report.

Unit tests: the t-distribution intervals and paired differences of the summary table, and the
report's HTML / PNG pieces (motionmatcher.results.report). Pipeline test (marked ``pipeline``): a small
demo run with every method code path (untrained, one LoRA, two LoRAs with partial loading, full
fine-tune) on 2 videos, then ``snakemake --report report.zip``; the zip's pages name every method
and video and play their samples. ``MM_REPORT_TEST_ALL_METHODS=1`` runs all methods of the config
(slower).
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from motionmatcher.results.summary_tables import (mean_ci, paired_differences, statistics_markdown, summarize,
                                                  t_quantile)
from motionmatcher.files.table_schemas import SUMMARY, SUMMARY_METRICS
from workflow_helpers import run_snakemake, write_small_config

REPO = Path(__file__).resolve().parents[1]


# ---- statistics of the summary table --------------------------------------------------------


@pytest.mark.parametrize("df,expected", [(1, 12.7062047), (2, 4.30265273), (4, 2.77644511), (9, 2.26215716),
                                         (30, 2.04227246), (1000, 1.96233908)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-6)


def test_mean_ci_known_values():
    mean, lo, hi, n = mean_ci([1.0, 2.0, 3.0, 4.0, float("nan"), None])  # non-finite values left out
    half = 3.18244631 * np.std([1, 2, 3, 4], ddof=1) / 2  # t_{0.975, 3} · s / √4
    assert (mean, n) == (2.5, 4) and lo == pytest.approx(2.5 - half) and hi == pytest.approx(2.5 + half)
    assert math.isnan(mean_ci([5.0])[1]) and mean_ci([5.0])[0] == 5.0
    assert mean_ci([])[3] == 0


@pytest.fixture()
def samples() -> pd.DataFrame:
    # two methods on the same cells, except mm lacks (b, p0, 1); base has an extra NaN
    rows = []
    vals = {("a", "p0", 0): (0.30, 0.20), ("a", "p0", 1): (0.40, 0.25), ("b", "p0", 0): (0.50, 0.45),
            ("b", "p0", 1): (None, 0.10)}
    for (v, p, s), (mm, base) in vals.items():
        if mm is not None:
            rows.append({"method": "motionmatcher", "video_id": v, "prompt_id": p, "seed": s, "clip_t": mm})
        rows.append({"method": "base", "video_id": v, "prompt_id": p, "seed": s, "clip_t": base})
    frame = pd.DataFrame(rows)
    for m in ("frame_consistency", "image_reward", "motion_discrepancy", "motion_fidelity"):
        frame[m] = np.nan
    return frame


def test_paired_differences_match_cells(samples):
    d = paired_differences(samples, "base", "motionmatcher", "clip_t")
    assert sorted(np.round(d, 6)) == sorted([-0.10, -0.15, -0.05])  # (b, p0, 1) has no pair
    in_a = paired_differences(samples, "base", "motionmatcher", "clip_t", "a")
    assert list(np.round(in_a, 6)) == [-0.10, -0.15]


def test_summary_has_intervals_and_paired_columns(samples):
    s = summarize(samples, method_order=["motionmatcher", "base"])
    assert list(s.columns) == SUMMARY.names
    m = s[s["level"] == "method"].set_index("method")
    base = m.loc["base"]
    # method rows: the unit of the intervals is the video (per-video means a: 0.225, b: 0.275)
    assert base["ci_unit"] == "video" and base["clip_t_ci_n"] == 2
    mean, lo, hi, _ = mean_ci([0.225, 0.275])
    assert base["clip_t_ci_mean"] == pytest.approx(mean)
    assert (base["clip_t_ci_low"], base["clip_t_ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert base["paired_reference"] == "motionmatcher" and base["clip_t_diff_n"] == 2  # videos
    # cell differences a: -0.10, -0.15 -> -0.125; b: -0.05
    dmean, dlo, dhi, _ = mean_ci([-0.125, -0.05])
    assert base["clip_t_diff_mean"] == pytest.approx(-0.0875)
    assert base["clip_t_diff_ci_low"] == pytest.approx(dlo)
    assert base["clip_t_diff_ci_high"] == pytest.approx(dhi)
    ref = m.loc["motionmatcher"]
    assert ref["clip_t_diff_n"] == 0 and math.isnan(ref["clip_t_diff_mean"])
    assert base["motion_fidelity_diff_n"] == 0 and math.isnan(base["motion_fidelity_ci_low"])
    vb = s[(s["level"] == "video") & (s["method"] == "base") & (s["video_id"] == "b")].iloc[0]
    assert vb["clip_t_diff_n"] == 1 and vb["clip_t_diff_mean"] == pytest.approx(0.45 - 0.50)
    assert vb["ci_unit"] == "sample" and vb["clip_t_ci_n"] == 2
    # no reference method in the data: no paired columns, no error
    s2 = summarize(samples[samples["method"] == "base"], paired_reference="motionmatcher")
    assert s2["paired_reference"].isna().all() and (s2["clip_t_diff_n"] == 0).all()
    md = statistics_markdown(s)
    assert "## Paired differences against motionmatcher (unit: video)" in md
    assert "\u22120.0875" in md and "(n=2)" in md and "unit: video" in md


# ---- report pieces ----------------------------------------------------------------------------


def test_report_pieces(samples, tmp_path):
    from motionmatcher.results.report import metric_plot, summary_html, training_plot, video_page_html

    s = summarize(samples, method_order=["motionmatcher", "base"])
    page = summary_html(s, {"base": "no customization"})
    assert "<table>" in page and "motionmatcher" in page and "no customization" in page
    assert "Paired differences against motionmatcher" in page
    assert 'class="best"' in page  # the best CLIP-T mean is marked

    metric_plot(samples, "clip_t", tmp_path / "clip_t.png", ["base", "motionmatcher"])
    metric_plot(samples, "image_reward", tmp_path / "ir.png", ["base", "motionmatcher"])  # all null
    logs = pd.DataFrame({"video_id": ["a"] * 3 + ["b"] * 3, "method": "md", "step": [1, 2, 3] * 2,
                         "timestep": 1, "lr": 1e-3, "seconds": 0.1, "loss": [3, 2, 1, 3, 2.5, 2],
                         "spatial": [1, np.nan, 0.5, 1, 0.7, 0.6], "spatial_skipped": [0, 1, 0, 0, 0, 0]})
    training_plot(logs, "md", tmp_path / "train.png")
    for f in ("clip_t.png", "ir.png", "train.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    cells = [{"method": m, "prompt_id": "p0", "prompt": "a fox", "seed": 0, "src": f"{m}/p0_s0.mp4",
              "clip_t": 0.3} for m in ("base", "motionmatcher")]
    html = video_page_html("bear", "A bear <walks>", "reference.mp4", cells, ["base", "motionmatcher", "vmc"])
    assert html.count("<video") == 3 and 'src="reference.mp4"' in html and "&lt;walks&gt;" in html
    assert "CLIP-T 0.300" in html


# ---- the report of a small demo run -------------------------------------------------------------

SUBSET = ["base", "motionmatcher", "motiondirector", "vmc"]  # every method code path
@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    from motionmatcher.toy.ball_clips import write_demo_dataset

    workdir = tmp_path_factory.mktemp("report")
    manifest = pd.read_csv(write_demo_dataset(workdir / "demo", n_frames=12, size=(80, 64)))
    small = manifest[manifest["video_id"].isin(["circle", "zoom"])].groupby("video_id").head(1)
    small.to_csv(workdir / "demo" / "manifest_small.csv", index=False)
    methods = (list(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["methods"])
               if os.environ.get("MM_REPORT_TEST_ALL_METHODS") else SUBSET)
    path = write_small_config(workdir / "config.yaml", workdir / "demo" / "manifest_small.csv",
                              n_frames=4, steps=3, grid_size=8, run_methods=methods)
    res = run_snakemake(workdir, path)
    assert res.returncode == 0, res.stderr[-6000:]
    res = run_snakemake(workdir, path, "--report", str(workdir / "report.zip"))
    assert res.returncode == 0, res.stderr[-6000:]
    return workdir, methods


@pytest.mark.pipeline
def test_report_zip_shows_every_method_and_video(report_run):
    workdir, methods = report_run
    videos = ["circle", "zoom"]
    with zipfile.ZipFile(workdir / "report.zip") as z:
        names = z.namelist()
        main = z.read(next(n for n in names if n.endswith("report.html"))).decode()
        # the report's index lists its results (path -> labels, file in the zip)
        results = json.loads(re.search(r"var results = (\{.*?\});\n", main, re.S).group(1))
        labels = [r["labels"] or {} for r in results.values()]
        assert {lab["video"] for lab in labels if "video" in lab} == set(videos)
        assert {lab["method"] for lab in labels if "method" in lab} == set(methods)
        for r in results.values():
            assert any(n.endswith(r["data_uri"]) for n in names), r["data_uri"]
        pages = {lab["video"]: z.read(next(n for n in names if n.endswith(r["data_uri"]))).decode()
                 for r, lab in zip(results.values(), labels)
                 if r["name"].endswith(".html") and "video" in lab}
        assert set(pages) == set(videos)
        for video, page in pages.items():
            assert f"Video {video}" in page
            # the reference + one sample per method (1 prompt x 1 seed)
            assert page.count("<video") == len(methods) + 1
            for m in methods:
                assert f'src="{m}/p00_s0.mp4"' in page
        mp4s = [n for n in names if n.endswith(".mp4")]
        assert len(mp4s) == len(videos) * (len(methods) + 1)  # the pages' videos are in the zip
        table = next(z.read(n).decode() for n in names if n.endswith("table1.html"))
        for m in methods:
            assert f"<b>{m}</b>" in table
        by_path = {Path(p).relative_to("results/report").as_posix() for p in results}
        for metric in SUMMARY_METRICS:
            assert f"metrics/{metric}.png" in by_path
        assert {f"training/{m}.png" for m in methods if m != "base"} <= by_path
        assert {f"contact_sheets/{m}/{v}.png" for m in methods for v in videos} <= by_path
        assert "provenance.html" in by_path and "table1.html" in by_path


@pytest.mark.pipeline
def test_summary_markdown_has_intervals_and_paired_differences(report_run):
    workdir, methods = report_run
    md = (workdir / "results" / "tables" / "summary.md").read_text()
    assert "95% confidence intervals" in md and "Paired differences against motionmatcher" in md
    s = pd.read_parquet(workdir / "results" / "tables" / "summary.parquet")
    m = s[s["level"] == "method"].set_index("method")
    assert set(m.index) == set(methods)
    assert (m.drop(index="motionmatcher")["clip_t_diff_n"] == 2).all()  # 2 videos x 1 prompt x 1 seed

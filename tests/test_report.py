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
    html = video_page_html("bear", "A bear", "reference.mp4", cells, ["base", "motionmatcher"],
                           sheets={"base": "sheets/base.png", "motionmatcher": "sheets/motionmatcher.png"})
    assert html.count("<img") == 2 and 'src="sheets/motionmatcher.png"' in html


def _table_data(page: str):
    """The rows and columns a browse page renders (its JSON)."""
    m = re.search(r"<script>mmTable\((.*), (\[.*\]), (null|\d+)\);</script>", page)
    assert m, page[-2000:]
    return json.loads(m.group(1)), json.loads(m.group(2))


def test_browse_pages_list_every_video_and_method(samples):
    """The report's index for thousands of videos: every video once (even one without results),
    each method's per-video mean, links to the video and method pages; captions that would end
    the script element are escaped."""
    from motionmatcher.results.report import browse_index_html, browse_rows, method_page_html

    s = summarize(samples, method_order=["motionmatcher", "base"])
    videos = {"a": {"caption": "A <b>bear</b> </script>"}, "b": {"caption": "a fox"}, "c": {"caption": "none"}}
    rows = browse_rows(s, videos, ["motionmatcher", "base"])
    assert len(rows) == 6
    index = browse_index_html(rows, ["motionmatcher", "base"], {"base": "no customization"})
    assert "</script> </script>" not in index and "<b>bear" not in index
    data, columns = _table_data(index)
    assert [c["key"] for c in columns] == ["video_id", "caption", "m:motionmatcher", "m:base"]
    by_video = {r["video_id"]: r for r in data}
    assert set(by_video) == {"a", "b", "c"} and by_video["a"]["caption"] == videos["a"]["caption"]
    # per-video means of CLIP-T (the fixture's cells): base a (0.20, 0.25), b (0.45, 0.10); mm b: 0.50 only
    assert by_video["a"]["m:base"] == pytest.approx(0.225) and by_video["b"]["m:base"] == pytest.approx(0.275)
    assert by_video["a"]["m:motionmatcher"] == pytest.approx(0.35)
    assert by_video["b"]["m:motionmatcher"] == pytest.approx(0.50)
    assert by_video["c"]["m:base"] is None and by_video["c"]["page"] == "videos/c/index.html"
    assert 'href="methods/base.html"' in index and "no customization" in index

    page = method_page_html(rows, "base", "no customization")
    data, columns = _table_data(page)
    assert [r["video_id"] for r in data] == ["a", "b", "c"]
    assert data[1]["sheet"] == "../videos/b/sheets/base.png" and data[1]["page"] == "../videos/b/index.html"
    assert data[0]["n_samples"] == 2 and data[2]["n_samples"] is None
    keys = [c["key"] for c in columns]
    assert "clip_t" in keys and "motion_fidelity" not in keys  # only the metrics computed


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
    results_dir = workdir / "results"
    with zipfile.ZipFile(workdir / "report.zip") as z:
        names = z.namelist()
        main = z.read(next(n for n in names if n.endswith("report.html"))).decode()
        # the report's index lists its results (path -> labels, file in the zip)
        results = json.loads(re.search(r"var results = (\{.*?\});\n", main, re.S).group(1))
        labels = [r["labels"] or {} for r in results.values()]
        assert {lab["method"] for lab in labels if "method" in lab} == set(methods) - {"base"}  # training curves
        for r in results.values():
            assert any(n.endswith(r["data_uri"]) for n in names), r["data_uri"]
        by_path = {Path(p).relative_to("results/report").as_posix() for p in results}
        # one "Browse" item whatever the number of videos: no per-video or per-sheet items
        assert not any(p.startswith(("videos/", "contact_sheets/")) for p in by_path)
        browse = next(r for p, r in results.items() if Path(p).name == "index.html" and "browse" in p)
        index_name = next(n for n in names if n.endswith(browse["data_uri"]))
        root = index_name[: -len("index.html")]

        def read(rel):
            return z.read(root + rel)

        index = read("index.html").decode()
        data, _ = _table_data(index)
        assert sorted(r["video_id"] for r in data) == videos
        for m in methods:
            assert f'href="methods/{m}.html"' in index
            rows, _ = _table_data(read(f"methods/{m}.html").decode())
            assert sorted(r["video_id"] for r in rows) == videos
            assert all(r["n_samples"] == 1 and r["clip_t"] is not None for r in rows)
        for video in videos:
            page = read(f"videos/{video}/index.html").decode()
            assert f"Video {video}" in page
            # the reference + one sample per method (1 prompt x 1 seed), each method's contact sheet
            assert page.count("<video") == len(methods) + 1
            for m in methods:
                assert f'src="{m}/p00_s0.mp4"' in page and f'src="sheets/{m}.png"' in page
                assert read(f"videos/{video}/{m}/p00_s0.mp4")
                # the sheet is the sample job's (was rule report_contact_sheet's copy)
                assert read(f"videos/{video}/sheets/{m}.png") == \
                    (results_dir / "samples" / m / video / "contact_sheet.png").read_bytes()
        mp4s = [n for n in names if n.endswith(".mp4")]
        assert len(mp4s) == len(videos) * (len(methods) + 1)  # the pages' videos, once each
        table = next(z.read(n).decode() for n in names if n.endswith("table1.html"))
        for m in methods:
            assert f"<b>{m}</b>" in table
        for metric in SUMMARY_METRICS:
            assert f"metrics/{metric}.png" in by_path
        assert {f"training/{m}.png" for m in methods if m != "base"} <= by_path
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


def test_browse_page_script_searches_and_pages(tmp_path):
    """The index's script (run by node with a stub DOM, where installed): 1,200 videos, at most
    PAGE_ROWS rows in the document, a search narrows to the matching videos, cells escaped."""
    import shutil
    import subprocess

    from motionmatcher.results.report import PAGE_ROWS, browse_index_html, browse_rows

    if shutil.which("node") is None:
        pytest.skip("node not installed")
    rows = browse_rows(pd.DataFrame(), {f"v{i}": {"caption": f"cap {i} <x>"} for i in range(1200)}, ["a", "b"])
    page = browse_index_html(rows, ["a", "b"])
    js = re.search(r"<script>\n(function mmTable.*?)</script>", page, re.S).group(1)
    call = re.search(r"<script>(mmTable\(.*\);)</script>", page, re.S).group(1)
    (tmp_path / "t.js").write_text("""
const els = {};
function el(id) { return els[id] || (els[id] = {innerHTML: '', textContent: '', value: '', querySelectorAll() { return []; }}); }
global.document = {getElementById: el};
""" + js + call + """
const n = () => (el('body').innerHTML.match(/<tr>/g) || []).length;
const out = [n(), el('info').textContent];
el('q').value = 'V11 cap'; el('q').oninput();
out.push(n(), el('info').textContent, el('body').innerHTML);
console.log(JSON.stringify(out));
""")
    res = subprocess.run(["node", str(tmp_path / "t.js")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    shown, info, matched, info2, body = json.loads(res.stdout)
    assert shown == PAGE_ROWS and info.startswith("1200 of 1200 rows match")
    assert matched == 11 + 100 and info2 == "111 of 1200 rows match"  # v11, v110-v119, v1100-v1199
    assert '<a href="videos/v11/index.html">v11</a>' in body and "cap 11 &lt;x&gt;" in body

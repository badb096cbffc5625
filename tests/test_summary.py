"""Result tables: motionmatcher.results.summary_tables on hand-made per-sample metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from motionmatcher.results.summary_tables import (DASH, concat_metric_tables, format_stat,
                                                  statistics_markdown, summarize, summary_markdown)
from motionmatcher.files.table_schemas import SUMMARY, write_table

NAN = float("nan")


@pytest.fixture()
def samples() -> pd.DataFrame:
    # "mm" is listed first on purpose: the method order comes from method_order, not the data
    return pd.DataFrame({
        "method": ["mm", "base", "base", "base", "base"],
        "video_id": ["a", "a", "a", "b", "b"],
        "clip_t": [0.5, 0.1, 0.2, 0.3, 0.4],
        "frame_consistency": [0.9, 0.8, 0.8, 0.8, 0.8],
        "image_reward": [None, None, None, None, None],  # no ImageReward checkpoint configured
        "motion_discrepancy": [0.01, 0.02, 0.04, 0.06, 0.08],
        "motion_fidelity": [0.7, 0.5, NAN, 0.7, 0.9],  # one undefined value
        "tracker": "lk",
        "grid_size": 10,
        "clip_model": "ViT-B-32",
        "clip_weights": "random_init:0",
    })


@pytest.fixture()
def reference() -> pd.DataFrame:
    return pd.DataFrame({"video_id": ["a", "b"], "clip_t": [0.30, 0.20], "frame_consistency": [0.95, 0.97]})


def test_method_rows_pool_all_samples(samples, reference):
    s = summarize(samples, reference, method_order=["base", "mm"])
    assert list(s.columns) == SUMMARY.names
    m = s[s["level"] == "method"].set_index("method")
    assert list(m.index) == ["base", "mm"]
    assert m["video_id"].isna().all()

    base = m.loc["base"]
    assert base["n_samples"] == 4 and base["n_videos"] == 2
    assert base["clip_t_mean"] == pytest.approx(0.25)
    assert base["clip_t_std"] == pytest.approx(np.std([0.1, 0.2, 0.3, 0.4], ddof=1))
    assert base["clip_t_n"] == 4
    assert base["frame_consistency_std"] == pytest.approx(0.0)
    assert base["motion_discrepancy_mean"] == pytest.approx(0.05)
    # the NaN fidelity is left out, not propagated
    assert base["motion_fidelity_n"] == 3
    assert base["motion_fidelity_mean"] == pytest.approx(0.7)
    assert base["motion_fidelity_std"] == pytest.approx(0.2)
    # an all-null metric is null with n = 0, not an error
    assert base["image_reward_n"] == 0
    assert math.isnan(base["image_reward_mean"]) and math.isnan(base["image_reward_std"])
    assert base["reference_clip_t"] == pytest.approx(0.25)  # mean over videos a, b

    mm = m.loc["mm"]
    assert mm["n_samples"] == 1 and mm["clip_t_mean"] == pytest.approx(0.5)
    assert math.isnan(mm["clip_t_std"])  # ddof=1 std of one value is undefined
    assert mm["reference_clip_t"] == pytest.approx(0.30)


def test_video_rows(samples, reference):
    s = summarize(samples, reference, method_order=["base", "mm"])
    v = s[s["level"] == "video"]
    assert list(zip(v["method"], v["video_id"])) == [("base", "a"), ("base", "b"), ("mm", "a")]
    ba = v.iloc[0]
    assert ba["n_samples"] == 2 and ba["n_videos"] == 1
    assert ba["clip_t_mean"] == pytest.approx(0.15)
    assert ba["motion_fidelity_n"] == 1 and math.isnan(ba["motion_fidelity_std"])
    assert ba["reference_clip_t"] == pytest.approx(0.30)
    assert v.iloc[1]["reference_clip_t"] == pytest.approx(0.20)


def test_method_order_defaults_to_appearance_and_appends_unlisted(samples):
    assert list(summarize(samples)["method"][:2]) == ["mm", "base"]
    s = summarize(samples, method_order=["base"])
    assert list(s[s["level"] == "method"]["method"]) == ["base", "mm"]
    assert s["reference_clip_t"].isna().all()


def test_parquet_round_trip_keeps_nulls(samples, reference, tmp_path):
    path = tmp_path / "summary.parquet"
    write_table(summarize(samples, reference, ["base", "mm"]), SUMMARY, path)
    table = pq.read_table(path)
    assert table.schema.equals(SUMMARY)
    assert table.column("image_reward_mean").null_count == table.num_rows
    assert table.column("video_id").null_count == 2  # the two method rows


def test_markdown(samples, reference):
    s = summarize(samples, reference, method_order=["base", "mm"])
    md = summary_markdown(s, reference, samples)
    per_method = md.split("## Per method\n")[1].split("## Per method and video")[0]
    rows = [line for line in per_method.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    for label in ("CLIP-T \u2191", "Frame consistency \u2191", "ImageReward \u2191",
                  "Motion discrepancy \u2193", "Motion fidelity \u2191"):
        assert label in header
    assert [r.split("|")[1].strip() for r in body] == ["base", "mm"]  # one row per method
    cells = [c.strip() for c in body[0].strip("|").split("|")]
    assert cells[3] == "0.2500 \u00b1 0.1291"          # CLIP-T of base
    assert cells[5] == DASH                            # null ImageReward
    assert cells[7] == "0.7000 \u00b1 0.2000 (n=3)"    # fidelity with a missing value
    assert [c.strip() for c in body[1].strip("|").split("|")][3] == "0.5000"  # n = 1: no std

    per_video = md.split("## Per method and video\n")[1]
    video_rows = [line for line in per_video.splitlines() if line.startswith("| ")][1:]
    assert len(video_rows) == 3
    assert "Reference CLIP-T" in per_video and video_rows[0].rstrip(" |").endswith("0.3000")
    assert "Reference videos vs their own captions" in md and "0.2500 \u00b1 0.0707" in md
    assert "random" in md.lower()  # random CLIP weights are flagged


def test_format_stat():
    assert format_stat(None, None, 0) == DASH
    assert format_stat(NAN, NAN, 0, 3) == DASH
    assert format_stat(0.5, NAN, 1, 1) == "0.5000"
    assert format_stat(0.5, 0.25, 2, 3) == "0.5000 \u00b1 0.2500 (n=2)"
    assert format_stat(1.5e-5, 2e-6, 4, 4) == "1.50e-05 \u00b1 2.00e-06"


def test_concat_metric_tables():
    a = pd.DataFrame({"method": ["x"], "clip_t": [0.1], "extra": [1]})
    b = pd.DataFrame({"clip_t": [0.2, 0.3], "method": ["y", "y"]})
    out = concat_metric_tables([a, b.iloc[:0], b], ["method", "clip_t"])
    assert list(out.columns) == ["method", "clip_t"] and list(out["method"]) == ["x", "y", "y"]
    assert len(concat_metric_tables([], ["method"])) == 0


def test_video_level_interval_differs_from_pooled_hand_checked():
    """Two videos: a has 2 samples at 1.0, b has 6 samples at 3.0 (+ small spread).

    Pooled over the 8 samples the mean is 2.5 and the t interval (7 d.o.f.) is narrow; over the
    2 videos the mean of the video means is 2.0 and t_{0.975, 1} = 12.706 with std(1, 3) = √2
    gives 2.0 ± 12.706 · √2 / √2 = [−10.706, 14.706]. The paired difference against a method
    that is 0.5 lower on every cell is +0.5 over 2 videos with zero spread.
    """
    values = {"a": [1.0, 1.0], "b": [2.9, 3.1, 3.0, 3.0, 2.9, 3.1]}
    rows = []
    for video, vals in values.items():
        for seed, v in enumerate(vals):
            for method, offset in (("mm", 0.0), ("base", -0.5)):
                rows.append({"method": method, "video_id": video, "prompt_id": "p0", "seed": seed,
                             "clip_t": v + offset})
    s = summarize(pd.DataFrame(rows), method_order=["mm", "base"], paired_reference="base")
    mm = s[(s["level"] == "method") & (s["method"] == "mm")].iloc[0]
    assert mm["clip_t_mean"] == pytest.approx(2.5) and mm["clip_t_n"] == 8  # descriptive, pooled
    assert mm["ci_unit"] == "video" and mm["clip_t_ci_n"] == 2
    assert mm["clip_t_ci_mean"] == pytest.approx(2.0)
    assert mm["clip_t_ci_low"] == pytest.approx(2.0 - 12.7062047, abs=1e-6)
    assert mm["clip_t_ci_high"] == pytest.approx(2.0 + 12.7062047, abs=1e-6)
    # the pooled interval the old code reported is far narrower: 2.5 ± t_{0.975,7} s / √8
    pooled = np.array(values["a"] + values["b"])
    half = 2.36462425 * pooled.std(ddof=1) / math.sqrt(8)
    assert half < 1.0 < (mm["clip_t_ci_high"] - mm["clip_t_ci_mean"])
    assert mm["clip_t_diff_mean"] == pytest.approx(0.5) and mm["clip_t_diff_n"] == 2
    assert mm["clip_t_diff_ci_low"] == pytest.approx(0.5) and mm["clip_t_diff_ci_high"] == pytest.approx(0.5)
    vb = s[(s["level"] == "video") & (s["method"] == "mm") & (s["video_id"] == "b")].iloc[0]
    assert vb["ci_unit"] == "sample" and vb["clip_t_ci_n"] == 6 and vb["clip_t_diff_n"] == 6
    text = statistics_markdown(s)
    assert "unit: video" in text and "2.0000 [" in text and "(n=2)" in text

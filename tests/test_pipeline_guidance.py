"""The training-free methods (DMT, MotionClone) through the DAG on the tiny model: one video,
3 sampling steps, both methods (a small dedicated run; tests/test_pipeline.py covers the rest)."""

from __future__ import annotations

import pandas as pd
import pytest

import yaml

from motionmatcher.toy.ball_clips import write_demo_dataset
from workflow_helpers import REPO, run_snakemake, write_small_config

pytestmark = pytest.mark.pipeline


def test_dmt_and_motionclone_rows_sheets_and_report(tmp_path):
    write_demo_dataset(tmp_path / "demo", n_frames=20, size=(80, 64))
    manifest = pd.read_csv(tmp_path / "demo" / "manifest.csv")
    one = manifest[manifest["video_id"] == "zoom"].head(1).copy()
    assert "lighthouse" in one["prompt"].iloc[0]
    one["caption_object"], one["prompt_object"] = "ball", "lighthouse"  # MotionClone's location-aware masks
    one.to_csv(tmp_path / "demo" / "one.csv", index=False)
    methods = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["methods"]
    methods["dmt"]["guidance"]["optimization_steps"] = 2  # the demo's entries, fewer Adam steps
    for m in ("dmt", "motionclone"):  # the reference inverted at the 3 sampling steps, not 999
        methods[m]["guidance"]["inversion_steps"] = None
    cfg = write_small_config(tmp_path / "config.yaml", tmp_path / "demo" / "one.csv", steps=3,
                             run_methods=["dmt", "motionclone"], methods=methods,
                             report={"reference_method": "dmt"})
    r = tmp_path / "results"
    targets = [f"results/{p}" for p in (
        "tables/summary.md", "report/table1.html", "report/browse")]
    res = run_snakemake(tmp_path, cfg, "--cores", "2", *targets)  # ends --set-threads' list
    assert res.returncode == 0, res.stderr[-6000:]
    for method in ("dmt", "motionclone"):
        s = pd.read_parquet(r / "samples" / method / "zoom" / "samples.parquet")
        assert len(s) == 1 and s["num_steps"].iloc[0] == 3
        assert (r / "samples" / method / "zoom" / "contact_sheet.png").stat().st_size > 0
        assert ((r / "report" / "browse" / "videos" / "zoom" / "sheets" / f"{method}.png").read_bytes()
                == (r / "samples" / method / "zoom" / "contact_sheet.png").read_bytes())
        log = (r / "logs" / "sample" / method / "zoom.log").read_text()
        assert f"guidance {method}" in log
        # DMT's official prompts: the prefix on the caption and every target prompt
        assert ("prompt prefix 'Amazing quality, masterpiece, '" in log) == (method == "dmt")
    mc = pd.read_parquet(r / "samples" / "motionclone" / "zoom" / "samples.parquet")
    assert bool(mc["semantic_masks"].iloc[0]) and mc["prompt_object"].iloc[0] == "lighthouse"
    summary = pd.read_parquet(r / "tables" / "summary.parquet")
    assert sorted(summary[summary["level"] == "method"]["method"]) == ["dmt", "motionclone"]
    md = (r / "tables" / "summary.md").read_text()
    assert "dmt" in md and "motionclone" in md
    assert "motionclone" in (r / "report" / "table1.html").read_text()

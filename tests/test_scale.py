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
from motionmatcher.files.table_schemas import METRICS, SUMMARY_METRICS, write_table
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
    merges, jobs, _ = _dry_run(tmp_path, n_videos)
    return merges, jobs


def _dry_run(tmp_path: Path, n_videos: int) -> tuple[int, int, dict[str, int]]:
    """(merges of the method config, jobs, jobs per rule) of a dry run on ``n_videos`` videos
    with the methods base, motionmatcher and ddpm_lora; merges counted by a profile of the
    Snakemake process."""
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
    text = out.stdout + out.stderr
    jobs = [int(line.split()[-1]) for line in text.splitlines() if line.startswith("total")]
    per_rule = {}
    table = text[text.rindex("Job stats:"):]
    for line in table.splitlines()[3:]:
        if line.startswith("total"):
            break
        rule, count = line.split()
        per_rule[rule] = int(count)
    assert sum(per_rule.values()) == jobs[-1]
    return merges, jobs[-1], per_rule


# Jobs per reference video of a dry run with the methods base, motionmatcher and ddpm_lora (two
# trained), before issue 21's folding (commit d87fe4d) and after. Folded (no rule of that name
# any more; its work is done by the job named):
FOLDED = {
    "method_inversion": "sample",  # per trained (method, video): the inversion with the method's weights
    "report_contact_sheet": "report_browse",  # per (method, video): a copy of the contact sheet
    "report_video_page": "report_browse",  # per video: the page playing every method's samples
    "reference_metrics": "metrics",  # per video: the reference's CLIP-T (its fail-fast: metrics_check)
}
JOBS_PER_VIDEO_BEFORE = {"preprocess": 1, "cache_latents": 1, "cache_inversion": 1, "reference_metrics": 1,
                         "customize": 2, "method_inversion": 2, "sample": 3, "metrics": 3,
                         "report_contact_sheet": 3, "report_video_page": 1}
# metrics: one job per video for every method (was one per (method, video))
JOBS_PER_VIDEO = {**{r: n for r, n in JOBS_PER_VIDEO_BEFORE.items() if r not in FOLDED}, "metrics": 1}
# jobs whatever the number of videos: before, and after (+ report_browse, the report's index and
# pages; + metrics_check, the scorers loaded once at the start)
FIXED_JOBS_BEFORE = {"report_training_curve": 2, "videos_table": 1, "aggregate_samples": 1,
                     "report_metric_plot": 9, "report_provenance": 1, "summary": 1, "report_table": 1, "all": 1}
# (one metric plot per summary metric: 9 then, 11 since the toy world's two leakage columns)
FIXED_JOBS = {**FIXED_JOBS_BEFORE, "report_metric_plot": len(SUMMARY_METRICS), "report_browse": 1,
              "metrics_check": 1}


def test_jobs_per_video_are_the_folded_dag(tmp_path):
    """Jobs per video: equal at 2 and 8 videos, and the DAG before issue 21 less the folded
    rules, one metrics job per video (34 -> 15 jobs per video with the seven Table-1 methods)."""
    counts = {n: _dry_run(tmp_path, n)[2] for n in (2, 8)}
    per_video = {r: (counts[8].get(r, 0) - counts[2].get(r, 0)) / 6 for r in counts[8]}
    fixed = {r: counts[2][r] - 2 * per_video[r] for r in counts[2]}
    assert {r: n for r, n in per_video.items() if n} == JOBS_PER_VIDEO
    assert {r: n for r, n in fixed.items() if n} == FIXED_JOBS
    for n in (2, 8):
        assert counts[n] == {r: n * JOBS_PER_VIDEO.get(r, 0) + FIXED_JOBS.get(r, 0)
                             for r in {*JOBS_PER_VIDEO, *FIXED_JOBS}}
    assert not set(FOLDED) & set(counts[8]) and set(FOLDED.values()) <= set(counts[8])
    # 2 inversions, 3 sheets, 1 page, the reference's metrics, 2 of 3 metrics jobs
    assert sum(JOBS_PER_VIDEO_BEFORE.values()) - sum(JOBS_PER_VIDEO.values()) == 9


def test_method_config_is_merged_once_per_method_not_per_job(tmp_path):
    merges_small, jobs_small = _method_config_calls(tmp_path, 2)
    merges_large, jobs_large = _method_config_calls(tmp_path, 8)
    assert jobs_large - jobs_small == 6 * sum(JOBS_PER_VIDEO.values())
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


# ---- folded rules: the same outputs as the rules they replace ----------------------------------

_RUN_SCRIPT = r"""
import json, runpy, sys

class NS(dict):
    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None

spec = json.loads(open(sys.argv[1]).read())
snakemake = NS(rule=spec["rule"], threads=1, log=[spec["log"]], wildcards=NS(spec["wildcards"]),
               input=NS(spec["input"]), output=NS(spec["output"]), params=NS(spec["params"]),
               resources=NS(spec.get("resources", {})))
runpy.run_path(spec["script"], init_globals={"snakemake": snakemake}, run_name="__main__")
"""


def _run_script(tmp: Path, name: str, script: str, **spec) -> None:
    """A workflow script as Snakemake runs it (a ``snakemake`` object of the rule's fields), in
    a fresh process."""
    (tmp / f"{name}.json").write_text(__import__("json").dumps(
        {"rule": name, "script": str(REPO / "workflow_scripts" / script), "log": str(tmp / f"{name}.log"),
         **spec}))
    driver = tmp / "run_script.py"
    driver.write_text(_RUN_SCRIPT)
    out = subprocess.run([sys.executable, str(driver), str(tmp / f"{name}.json")], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    log = (tmp / f"{name}.log").read_text() if (tmp / f"{name}.log").exists() else ""
    assert out.returncode == 0, out.stderr[-3000:] + log[-3000:]


def test_sample_with_folded_inversion_equals_the_two_step_path(tiny_model_dir, tmp_path):
    """Rule method_inversion is folded into the sample job: a trained method's sample job now
    inverts the reference with the method's weights itself. Its inversion (written next to the
    samples) and its samples equal those of the old two steps -- method_inversion
    (workflow_scripts/cache_inversion.py with the adapter), then sample from that file."""
    import torch
    import yaml

    from motionmatcher.customization import lora as lora_lib
    from motionmatcher.methods import method_config
    from motionmatcher.backbones.models import load_t2v_model, model_identity
    from motionmatcher.files.tensor_files import read_checked

    n_frames, size = 4, 32
    frames = torch.from_numpy(render_clip("left_to_right", n_frames=n_frames, size=(size, size)))
    from motionmatcher.files.tensor_files import write_checked
    write_checked(tmp_path / "frames.safetensors", {"frames": frames})
    # a trained method's adapter: LoRA with random (non-zero) up-projections
    model = load_t2v_model(tiny_model_dir)
    cfg = lora_lib.lora_config(rank=4, dropout=0.0)
    lora_lib.add_lora(model.unet, cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    adapter = lora_lib.save_adapter(model.unet.eval(), tmp_path / "adapter", cfg) / "adapter_model.safetensors"
    assert adapter.is_file()

    common = {"device": "cpu", "dtype": "fp32", "n_frames": n_frames}
    _run_script(tmp_path, "cache_latents", "cache_latents.py",
                wildcards={"video": "v"}, input={"frames": str(tmp_path / "frames.safetensors"),
                                                 "model": str(tiny_model_dir)},
                output={"latents": str(tmp_path / "latents.safetensors")},
                params={**common, "chunk_size": 2, "height": size, "width": size})
    # the old first step: rule method_inversion
    _run_script(tmp_path, "method_inversion", "cache_inversion.py", wildcards={"video": "v", "method": "motionmatcher"},
                input={"latents": str(tmp_path / "latents.safetensors"), "model": str(tiny_model_dir),
                       "adapter": str(adapter)},
                output={"inversion": str(tmp_path / "old_inversion.safetensors")},
                params={**common, "num_steps": 3, "prompt": "", "parts": None})

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["sampling"] = {**config["sampling"], "num_steps": 3}
    sample = {**method_config(config, "motionmatcher")["sample"], "seeds": [0]}
    assert sample["noise_prior"] > 0 and sample["lora_min_timestep"] > 0
    base_params = {**common, "sample": sample, "guidance": None, "caption": "a ball", "inversion_prompt": "",
                   "video_path": str(tmp_path / "ref.mp4"),  # no ground-truth sidecar: no path on the sheet
                   "prompts": [{"row": 0, "prompt_id": "p00", "prompt": "a dog runs"}],
                   "width": size, "height": size, "fps": 8, "inversion_steps": 3}

    def sample_job(name, invert, inputs):
        out = tmp_path / name
        _run_script(tmp_path, name, "sample.py", wildcards={"video": "v", "method": "motionmatcher"},
                    input={"model": str(tiny_model_dir), "frames": str(tmp_path / "frames.safetensors"),
                           "adapter": str(adapter), **inputs},
                    output={"videos": str(out / "videos"), "table": str(out / "samples.parquet"),
                            "sheet": str(out / "contact_sheet.png"), "record": str(out / "run.json")},
                    params={**base_params, "invert": invert}, resources={"attempt": 1})
        return out

    old = sample_job("old", False, {"inversion": str(tmp_path / "old_inversion.safetensors")})
    new = sample_job("new", True, {"latents": str(tmp_path / "latents.safetensors")})

    ident = model_identity(tiny_model_dir)
    old_inv, old_meta = read_checked(tmp_path / "old_inversion.safetensors", model_identity=ident)
    new_inv, new_meta = read_checked(new / "videos" / "inversion.safetensors", model_identity=ident)
    assert torch.equal(old_inv["inversion"], new_inv["inversion"])
    for key in ("shape", "num_steps", "prompt", "parts", "content_sha256"):
        assert old_meta[key] == new_meta[key], key
    assert not (old / "videos" / "inversion.safetensors").exists()
    old_frames = read_checked(old / "videos" / "p00_s0.safetensors")[0]["frames"]
    new_frames = read_checked(new / "videos" / "p00_s0.safetensors")[0]["frames"]
    assert torch.equal(old_frames, new_frames)
    assert (old / "contact_sheet.png").read_bytes() == (new / "contact_sheet.png").read_bytes()
    # the adapter mattered: the base model's inversion (rule cache_inversion) is another tensor
    _run_script(tmp_path, "cache_inversion", "cache_inversion.py", wildcards={"video": "v"},
                input={"latents": str(tmp_path / "latents.safetensors"), "model": str(tiny_model_dir)},
                output={"inversion": str(tmp_path / "base_inversion.safetensors")},
                params={**common, "num_steps": 3, "prompt": ""})
    base_inv = read_checked(tmp_path / "base_inversion.safetensors")[0]["inversion"]
    assert (base_inv - new_inv["inversion"]).abs().max() > 1e-4
    a, b = pd.read_parquet(old / "samples.parquet"), pd.read_parquet(new / "samples.parquet")
    cols = [c for c in a.columns if c not in ("video_path", "frames_path", "seconds")]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_metrics_job_per_video_equals_the_per_method_jobs(tmp_path):
    """Rule metrics scores every method's samples of a video in one job and one table (and the
    reference, was rule reference_metrics): each method's rows equal what the old per-(method,
    video) job computed -- evaluate_samples on that method's rows alone -- in the order of the
    methods, and the reference's row equals evaluate_reference; metrics_check loads the same
    scorers and records them."""
    import json

    import numpy as np
    import torch
    import yaml

    from motionmatcher.files.table_schemas import METRICS, REFERENCE, read_table, write_table
    from motionmatcher.files.tensor_files import write_checked
    from motionmatcher.metrics.evaluate import (evaluate_reference, evaluate_samples, load_scorers,
                                                metric_variants, metrics_config_hash)
    from motionmatcher.methods import method_config

    size, n_frames = 32, 8
    reference = render_clip("left_to_right", n_frames=n_frames, size=(size, size), seed=0)
    write_checked(tmp_path / "frames.safetensors", {"frames": torch.from_numpy(reference)})
    clips = {"base": [reference, np.roll(reference, 3, axis=2)], "motionmatcher": [reference[::-1]]}
    tables = {}
    for method, videos in clips.items():
        rows = []
        for i, frames in enumerate(videos):
            path = tmp_path / f"{method}_{i}.safetensors"
            write_checked(path, {"frames": torch.from_numpy(np.ascontiguousarray(frames))})
            rows.append({"video_id": "v", "method": method, "prompt_id": f"p{i:02d}", "prompt": f"a ball {i}",
                         "manifest_row": i, "seed": 0, "video_path": str(path.with_suffix(".mp4")),
                         "frames_path": str(path), "model_identity": "test", "seconds": 0.0})
        tables[method] = tmp_path / f"{method}_samples.parquet"
        pd.DataFrame(rows).to_parquet(tables[method])
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    metrics = {**config["metrics"], "grid_size": 6}
    video = {**config["video"], "width": size, "height": size}
    methods = list(clips)
    configs = {m: method_config(config, m) for m in methods}
    common = {"metrics": metrics, "device": "cpu"}
    _run_script(tmp_path, "metrics_check", "metrics.py", wildcards={}, input={},
                output={"record": str(tmp_path / "check.json")}, params=common)
    _run_script(tmp_path, "metrics", "metrics.py", wildcards={"video": "v"},
                input={"samples": [str(tables[m]) for m in methods], "reference": str(tmp_path / "frames.safetensors"),
                       "check": str(tmp_path / "check.json")},
                output={"table": str(tmp_path / "metrics.parquet"), "reference": str(tmp_path / "reference.parquet")},
                params={**common, "methods": methods, "method_configs": configs, "video": video,
                        "video_path": str(tmp_path / "v.mp4"), "caption": "a red ball", "start_frame": 0,
                        "height": size, "width": size})

    scorer, image_reward, tracker = load_scorers(metrics, "cpu")
    check = json.loads((tmp_path / "check.json").read_text())
    assert check["tracker"] == tracker.name == "lk" and check["device"] == "cpu"
    volatile = ["metrics_seconds", "code_version"]
    table = read_table(tmp_path / "metrics.parquet")
    assert list(table["method"]) == ["base", "base", "motionmatcher"]
    for method in methods:  # the old job: one method's rows
        old = evaluate_samples(pd.read_parquet(tables[method]), reference, scorer, tracker, 6, image_reward=image_reward,
                               expected_size=(size, size), variants=metric_variants(metrics))
        old["config_hash"] = [metrics_config_hash(configs[method], metrics, video, s) for s in old["seed"]]
        old["code_version"] = "x"
        write_table(old, METRICS, tmp_path / f"old_{method}.parquet")
        a = read_table(tmp_path / f"old_{method}.parquet").drop(columns=volatile)
        b = table[table["method"] == method].reset_index(drop=True).drop(columns=volatile)
        assert len(b) == len(clips[method])
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    ref = read_table(tmp_path / "reference.parquet")
    expected = evaluate_reference(reference, "a red ball", scorer, image_reward)
    assert len(ref) == 1 and ref.loc[0, "video_id"] == "v"
    for key in ("clip_t", "frame_consistency", "clip_weights_sha256"):
        assert ref.loc[0, key] == expected[key], key
    assert ref.loc[0, "config_hash"] == metrics_config_hash(None, metrics, video, None)
    # each row scored its own sample: the reference itself, and its time reversal
    assert table["motion_discrepancy"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    assert table["motion_discrepancy"].iloc[2] > 0.01


def test_method_config_keys_are_the_classes_fields():
    """The key sets the method config is validated against (written out, so that the DAG
    process imports neither torch nor diffusers) are those of the classes that take them."""
    import inspect

    from motionmatcher.methods.registry import guidance_types
    from motionmatcher.methods.config import GUIDANCE_OPTIONS, SAMPLE_KEYS, TRAIN_KEYS
    from motionmatcher.customization.sampler import SamplingConfig
    from motionmatcher.customization.training import TrainConfig

    assert TRAIN_KEYS == set(TrainConfig.__dataclass_fields__)
    assert SAMPLE_KEYS == set(SamplingConfig.__dataclass_fields__) | {"seeds", "load_parts",
                                                                      "contact_sheet_frames", "prompt_prefix"}
    assert {name: set(opts) for name, opts in GUIDANCE_OPTIONS.items()} == {
        name: {k for k in inspect.signature(cls.__init__).parameters if k != "self"}
        for name, cls in guidance_types().items()}


def test_workflow_modules_import_without_torch():
    """What the Snakefile imports (rules/*.smk) and the method-config validation of every
    method of the demo config load neither torch nor diffusers (a DAG of 300,000 jobs pays for
    its imports once, but every snakemake call pays them, ~1 GB and seconds each)."""
    code = r'''
import sys, yaml
from motionmatcher.files.config_keys import check_config_keys
from motionmatcher.files.manifest import load_manifest
from motionmatcher.metrics.mtbench import check_mtbench_config
from motionmatcher.methods import load_video_overrides, method_config, video_override
from motionmatcher.jobs.provenance import code_version
from motionmatcher.files.table_schemas import SUMMARY_METRICS
from motionmatcher.files.video_identity import record_video_identity
from motionmatcher.metrics.evaluate import metrics_gpus
from motionmatcher.backbones.spec import TINY_MODELS, BackboneError, backbone_spec_for_config
backbone_spec_for_config("tiny").check_frames(8)
from motionmatcher.results.summary_tables import aggregate_metric_tables
from motionmatcher.files.tensor_files import CorruptFileError, write_bytes_atomic
cfg = yaml.safe_load(open(sys.argv[1]))
for m in cfg["methods"]:
    method_config(cfg, m)
print(sorted(m for m in ("torch", "diffusers", "transformers", "peft") if m in sys.modules))
'''
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "config" / "config.yaml")], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"


def test_backbone_specs_are_the_backbones():
    """The torch-free descriptions the DAG process checks the config with (backbones.spec)
    say what the backbones themselves say."""
    from motionmatcher.backbones import get_backbone
    from motionmatcher.backbones.spec import SPECS, BackboneSpec

    assert set(SPECS) == {"unet3d", "wan", "cogvideox"}
    for name, spec in SPECS.items():
        real = get_backbone(name)
        assert isinstance(real, BackboneSpec)
        for attr in ("name", "arch", "denoiser_class", "denoiser_folder", "latent_layout", "prediction_type",
                     "supported_losses", "supports_guidance", "sampling_defaults", "required_subfolders",
                     "real_depth", "frame_chunk"):
            assert getattr(spec, attr) == getattr(real, attr), (name, attr)
        assert spec.temporal_compression() == real.temporal_compression()
        for n in range(1, 14):
            assert spec.valid_frame_count(n) == real.valid_frame_count(n)

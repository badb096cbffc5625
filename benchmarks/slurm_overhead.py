"""Per-job overhead of running through Slurm (snakemake-executor-plugin-slurm), by status-check delay.

A chain of N trivial jobs (`sleep S`, S cycling through --sleep), each depending on the
previous one, runs through `--executor slurm` once per value of
`--slurm-init-seconds-before-status-checks`, plus once with the local executor as the baseline.
From sacct (Submit/Start/End, 1 s resolution) and the wall time it reports per job:

  queue     Start - Submit: submission to start (scheduling + launch; 0-1 s on an idle cluster)
  in_job    End - Start - S: the job step's own start (snakemake in the allocation, srun)
  notice    next Submit - End: the job ended -> Snakemake noticed (status poll) and submitted the
            next one; this is where the status-check delay shows
  overhead  (wall - sum S) / N: everything that is not the job's own work

With ``--pipeline N`` it instead runs the workflow's cheap stages for N toy videos (the demo's
clips, hard-linked N times, one prompt each; the base method, 2 sampling/inversion steps; the
outputs ``--targets`` of every video, default the metrics of `base` and the reference metrics:
preprocess, cache_latents + cache_inversion (one group job), metrics_check, sample, metrics) through profiles/slurm, once per ``--modes``:

  today   the profile without job arrays: one `sbatch` per Slurm job
  arrays  the profile as shipped: `slurm-array-jobs` rules as Slurm job arrays
          (one `sbatch` per rule and batch of jobs that became ready together)

and counts the `sbatch` calls (a counting shim first on PATH that calls the real one), the ones
with ``--array``, the Snakemake jobs and the wall time. Each job asks for 1 thread and 1.5 GB
(the test cluster's node has 2 CPUs); everything else is the profile's (first status check
``--init``, default the profile's 20 s).

Needs a running cluster: `tests/slurm/start.sh DIR; source DIR/env.sh` (or a real one, with
`--partition`/`--account`). Usage:

  python benchmarks/slurm_overhead.py [--jobs 4] [--sleep 5 30 90] [--init 2 10 20 40] [--partition debug]
  python benchmarks/slurm_overhead.py --pipeline 100 [--modes today arrays] [--partition debug]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

SNAKEFILE = """
N = {n}
SLEEPS = {sleeps}
rule all:
    input: f"step{{N - 1}}.done"
    localrule: True

rule step:
    input: lambda wc: [] if int(wc.i) == 0 else f"step{{int(wc.i) - 1}}.done"
    output: "step{{i}}.done"
    threads: 1
    resources: mem_mb=100, runtime=5
    params: sleep=lambda wc: SLEEPS[int(wc.i) % len(SLEEPS)]
    shell: "sleep {{params.sleep}}; touch {{output}}"
"""


def sacct_rows(prefix: str) -> list[dict]:
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "--format=JobIDRaw,JobName,State,Submit,Start,End",
         "--starttime", "now-1days", "--endtime", "now"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        jid, name, state, sub, start, end = line.split("|")
        if name.startswith(prefix):
            ts = {k: datetime.fromisoformat(v).timestamp()
                  for k, v in (("submit", sub), ("start", start), ("end", end))}
            rows.append({"id": int(jid), "state": state, **ts})
    return sorted(rows, key=lambda r: r["submit"])


def run_once(workdir: Path, n: int, sleeps: list[float], init: int | None, args) -> dict:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(SNAKEFILE.format(n=n, sleeps=list(sleeps)))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(workdir / "Snakefile"), "--directory", str(workdir),
           "--jobs", "10", "--nolock"]
    prefix = f"bench{os.getpid()}i{init}"
    if init is None:
        cmd += ["--cores", "1"]
    else:
        cmd += ["--executor", "slurm", "--slurm-init-seconds-before-status-checks", str(init),
                "--slurm-jobname-prefix", prefix, "--latency-wait", "5"]
        res = []
        if args.partition:
            res.append(f"slurm_partition={args.partition}")
        if args.account:
            res.append(f"slurm_account={args.account}")
        if res:
            cmd += ["--default-resources", *res]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed (init={init}):\n{proc.stderr[-4000:]}")
    sleep = [sleeps[i % len(sleeps)] for i in range(n)]
    out = {"init_seconds": init, "executor": "local" if init is None else "slurm", "jobs": n,
           "sleep": sleeps, "wall": round(wall, 1), "overhead_per_job": round((wall - sum(sleep)) / n, 1)}
    if init is not None:
        rows = sacct_rows(prefix)
        assert len(rows) == n and all(r["state"] == "COMPLETED" for r in rows), rows
        queue = [r["start"] - r["submit"] for r in rows]
        notice = [b["submit"] - a["end"] for a, b in zip(rows, rows[1:])]
        in_job = [r["end"] - r["start"] - s for r, s in zip(rows, sleep)]
        out.update(first_submit_after_start=round(rows[0]["submit"] - t0, 1),
                   queue_mean=round(statistics.mean(queue), 1), queue_max=max(queue),
                   in_job_mean=round(statistics.mean(in_job), 1),
                   notice_mean=round(statistics.mean(notice), 1) if notice else None,
                   notice_max=max(notice) if notice else None,
                   notice_by_sleep=[[s, n] for s, n in zip(sleep, notice)])
    return out


SHIM = """#!/bin/bash
# counts the calls of sbatch (benchmarks/slurm_overhead.py --pipeline), then runs the real one;
# one line per call: kind (array / single; array-stdin: the script fed through /dev/stdin) and
# the bytes of the command line
n=0; for a in "$@"; do n=$((n + ${{#a}} + 1)); done
kind=single
if [[ " $* " == *" --array="* ]]; then kind=array; [[ " $* " == *" /dev/stdin "* ]] && kind=array-stdin; fi
echo "$kind $n" >> "{log}"
exec {real} "$@"
"""
# per video: base metrics (-> sample <- cache_inversion <- cache_latents <- preprocess) and the
# reference metrics; {v} is the video id, paths relative to results_dir
PIPELINE_TARGETS = ["metrics/{v}.parquet", "metrics_reference/{v}.parquet"]


def pipeline_workspace(ws: Path, n: int, env: dict) -> Path:
    """N toy videos (the demo clips hard-linked N times, one prompt each), the base method,
    2 steps; returns the config file."""
    import pandas as pd

    clips = ws.parent / "clips"
    if not (clips / "manifest.csv").exists():
        subprocess.run([sys.executable, "-m", "motionmatcher.toy.clips", str(clips), "--set", "demo"],
                       check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    demo = pd.read_csv(clips / "manifest.csv").drop_duplicates("video_id")
    (ws / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        src = demo.iloc[i % len(demo)]
        vid = f"v{i:05d}"
        dst = ws / "videos" / f"{vid}.mp4"
        if not dst.exists():
            os.link(clips / src["video_path"], dst)
            gt = (clips / src["video_path"]).with_suffix(".gt.json")
            if gt.exists():
                os.link(gt, dst.with_suffix(".gt.json"))
        rows.append({"video_id": vid, "video_path": f"videos/{vid}.mp4", "caption": src["caption"],
                     "prompt": src["prompt"]})
    pd.DataFrame(rows).to_csv(ws / "manifest.csv", index=False)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg.update(manifest=str(ws / "manifest.csv"), results_dir=str(ws / "results"),
               resources_dir=str(ws / "resources"), model=str(REPO / "models" / "toy_t2v"),
               run_methods=["base"], device="cpu",
               inversion={**cfg["inversion"], "num_steps": 2},
               sampling={**cfg["sampling"], "num_steps": 2, "seeds": [0]},
               metrics={**cfg["metrics"], "grid_size": 4})
    (ws / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return ws / "config.yaml"


def pipeline_profiles(ws: Path, mode: str, args) -> tuple[Path, Path]:
    """(site profile, workflow profile) for ``mode``: profiles/slurm with the test cluster's
    partition (and the arrays off for `today`); profiles/default with 1 thread and 1.5 GB per job."""
    prof = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    if mode == "today":
        prof.pop("slurm-array-jobs", None)
        prof.pop("max-jobs-per-timespan", None)
        prof["jobs"] = 100  # the profile before job arrays
    elif mode != "arrays":
        raise SystemExit(f"unknown mode {mode!r} (today, arrays)")
    res = dict(prof.get("default-resources") or {})
    if args.partition:
        res["slurm_partition"] = args.partition
    if args.account:
        res["slurm_account"] = args.account
    prof["default-resources"] = res
    if args.init:
        prof["slurm-init-seconds-before-status-checks"] = args.init[0]
    site = ws / "profiles" / f"slurm_{mode}"
    site.mkdir(parents=True, exist_ok=True)
    (site / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    wf = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    wf["set-resources"] = {r: {**v, "mem_mb": 1500} for r, v in wf["set-resources"].items()}
    wf["set-threads"] = {r: 1 for r in wf["set-resources"]}
    wfdir = ws / "profiles" / "workflow"
    wfdir.mkdir(parents=True, exist_ok=True)
    (wfdir / "config.yaml").write_text(yaml.safe_dump(wf, sort_keys=False))
    return site, wfdir


def run_pipeline(root: Path, n: int, mode: str, args) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "MOTIONMATCHER_GPU_COUNT": "0"}
    ws = root / f"{mode}_{n}"
    if ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    cfg = pipeline_workspace(ws, n, env)
    site, wf = pipeline_profiles(ws, mode, args)
    shim_dir, count = ws / "shim", ws / "sbatch_calls.txt"
    shim_dir.mkdir()
    real = shutil.which("sbatch")
    (shim_dir / "sbatch").write_text(SHIM.format(log=count, real=real))
    (shim_dir / "sbatch").chmod(0o755)
    count.write_text("")
    env["PATH"] = f"{shim_dir}{os.pathsep}{env['PATH']}"
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "-d", str(ws),
           "--configfile", str(cfg), "--profile", str(site), "--workflow-profile", str(wf),
           "--slurm-jobname-prefix", f"bench{os.getpid()}{mode}",
           *[str(ws / "results" / t.format(v=f"v{i:05d}")) for i in range(n) for t in args.targets]]
    log = ws / "snakemake.log"
    t0 = time.time()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=args.timeout)
    wall = time.time() - t0
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed ({mode}, {n} videos; log {log}):\n{text[-4000:]}")
    calls = [line.split() for line in count.read_text().splitlines() if line.strip()]
    kinds = [c[0] for c in calls]
    stats = re.search(r"^Job stats:\n(.*?)^total\s+(\d+)", text, re.M | re.S)
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats.group(1), re.M)}
    slurm_jobs = len(re.findall(r"has been submitted with SLURM jobid", text)) + sum(
        len(range(int(a), int(b) + 1)) for a, b in
        re.findall(r"Submitted array job with Snakemake IDs .*? The individual task IDs are (\d+)-(\d+)", text))
    return {"mode": mode, "videos": n, "jobs": int(stats.group(2)), "jobs_by_rule": jobs,
            "slurm_jobs": slurm_jobs, "sbatch_calls": len(calls),
            "array_sbatch_calls": sum(k.startswith("array") for k in kinds),
            # plugin 2.8.0 falls back to a /dev/stdin script when the --wrap command line is over
            # the kernel's 128 KiB per argument, and that script runs the chunk's first job in
            # every task (benchmarks/results/slurm_arrays.md): must stay 0
            "array_stdin_calls": kinds.count("array-stdin"),
            "max_call_bytes": max((int(c[1]) for c in calls), default=0),
            # jobs that failed (and were retried) -- a job array whose tasks ran the wrong job shows here
            "job_errors": len(re.findall(r"^Error in rule ", text, re.M)),
            "wall": round(wall, 1), "targets": args.targets}


def main_pipeline(args) -> int:
    results = []
    if args.workdir:  # kept (logs of each run: WORKDIR/<mode>_<N>/snakemake.log)
        args.workdir.mkdir(parents=True, exist_ok=True)
        ctx = contextlib.nullcontext(str(args.workdir))
    else:
        ctx = tempfile.TemporaryDirectory(prefix="slurm-overhead-", dir=os.getcwd())
    with ctx as tmp:
        for n in args.pipeline:
            for mode in args.modes:
                r = run_pipeline(Path(tmp), n, mode, args)
                print(json.dumps(r), flush=True)
                results.append(r)
    print()
    print("| videos | mode | jobs (Snakemake) | Slurm jobs / array tasks | `sbatch` calls (of them `--array`) | wall (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['videos']} | {r['mode']} | {r['jobs']} | {r['slurm_jobs']} | "
              f"{r['sbatch_calls']} ({r['array_sbatch_calls']}) | {r['wall']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=4, help="length of the job chain")
    ap.add_argument("--sleep", type=float, nargs="+", default=[5.0, 30.0, 90.0],
                    help="seconds of work per job, cycled along the chain")
    ap.add_argument("--init", type=int, nargs="+", default=[2, 10, 20, 40],
                    help="values of --slurm-init-seconds-before-status-checks to try (plugin default 40)")
    ap.add_argument("--partition", default=None)
    ap.add_argument("--account", default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--pipeline", type=int, nargs="+", default=None, metavar="N",
                    help="instead: the workflow's cheap stages for N toy videos, per --modes")
    ap.add_argument("--modes", nargs="+", default=["today", "arrays"], help="with --pipeline: today, arrays")
    ap.add_argument("--targets", nargs="+", default=PIPELINE_TARGETS,
                    help="with --pipeline: outputs per video under results/, {v} = video id")
    ap.add_argument("--timeout", type=float, default=3600, help="with --pipeline: per run, seconds")
    ap.add_argument("--workdir", type=Path, default=None, help="with --pipeline: keep the workspaces here (default: a temporary folder)")
    args = ap.parse_args(argv)
    if not shutil.which("sbatch"):
        raise SystemExit("no sbatch: start a cluster (tests/slurm/start.sh DIR; source DIR/env.sh)")
    if args.pipeline:
        if args.init == [2, 10, 20, 40]:
            args.init = None  # the profile's
        return main_pipeline(args)
    results = []
    with tempfile.TemporaryDirectory(prefix="slurm-overhead-", dir=os.getcwd()) as tmp:
        for init in [None, *args.init]:
            r = run_once(Path(tmp) / f"init{init}", args.jobs, args.sleep, init, args)
            print(json.dumps(r), flush=True)
            results.append(r)
    print()
    print("| executor | init s | wall s | overhead/job s | queue (submit->start) mean/max s "
          "| in job (step start) mean s | notice (end->next submit) mean/max s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        if r["executor"] == "local":
            print(f"| local | - | {r['wall']} | {r['overhead_per_job']} | - | - | - |")
        else:
            print(f"| slurm | {r['init_seconds']} | {r['wall']} | {r['overhead_per_job']} | "
                  f"{r['queue_mean']} / {r['queue_max']:.0f} | {r['in_job_mean']} | "
                  f"{r['notice_mean']} / {r['notice_max']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

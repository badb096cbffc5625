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

Needs a running cluster: `tests/slurm/start.sh DIR; source DIR/env.sh` (or a real one, with
`--partition`/`--account`). Usage:

  python benchmarks/slurm_overhead.py [--jobs 4] [--sleep 5 30 90] [--init 2 10 20 40] [--partition debug]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

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
    args = ap.parse_args(argv)
    if not shutil.which("sbatch"):
        raise SystemExit("no sbatch: start a cluster (tests/slurm/start.sh DIR; source DIR/env.sh)")
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

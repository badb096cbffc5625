"""How the pipeline's fixed costs grow with the manifest: N reference videos x 2 prompts x the
seven Table-1 methods, nothing trained or sampled.

Per N and per code version (``--repo name=path``, e.g. today's main against a branch), prints:

* ``validate``  -- manifest validation (every row checked, every video probed), cold and warm
  (the second call reads the probe cache);
* ``dag``       -- a dry run (``snakemake -n``) on the empty workspace: the number of jobs and
  the Snakemake process's peak RSS (a dry run also prints every job);
* ``first job`` -- a real run (``--cores 1``) on another empty workspace, until Snakemake
  starts its first job (the line ``rule <name>:``; then the run is killed): what a user waits
  before anything runs;
* ``noop``      -- a dry run on a finished workspace (every output synthesised from the DAG,
  mtimes in dependency order, Snakemake's metadata written by ``--touch``): what a rerun after
  one failed job costs; it must find 0 jobs;
* ``aggregate`` -- the ``aggregate_samples`` step (all per-(method, video) metric tables into
  one Parquet file), its time and peak RSS;
* ``report``    -- the report's browse pages over N videos x 7 methods (``report_browse``'s
  HTML: the index and one page per method, from a synthetic summary, and -- where the code
  builds them there -- every video's page with its files hard-linked), where the code has them.

The clips are real and decodable: two toy clips, hard-linked N times (each path is probed).
Run it on an idle machine; every figure is the wall time of one run::

    .venv/bin/python benchmarks/scale.py --sizes 10 100 1000 10000 \
        --repo today=/tmp/mm_today --repo after=.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE1 = ["base", "motionmatcher", "ddpm_lora", "motiondirector", "vmc", "dmt", "motionclone"]
# dependency depth of each rule: a synthesised output gets mtime base + depth seconds, so every
# output is newer than its inputs (a rule not listed here is reported, not guessed)
DEPTH = {
    "preprocess": 1, "metrics_check": 1, "cache_latents": 2, "reference_metrics": 2, "cache_inversion": 3,
    "customize": 3, "method_inversion": 4, "report_training_curve": 4, "videos_table": 4,
    "sample": 5, "metrics": 6, "report_contact_sheet": 6, "aggregate_samples": 7,
    "report_video_page": 7, "report_metric_plot": 8, "report_provenance": 8, "summary": 8,
    "report_table": 9, "report_browse": 9,
}
# rules whose output is a directory (the synthesised output is a folder)
DIR_RULES = {"report_video_page", "report_browse"}


def run_measured(cmd: list[str], env: dict, log: Path, timeout: float) -> tuple[float, int, int]:
    """(wall seconds, exit code, peak RSS in MB) of ``cmd``, output to ``log``."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                return float("inf"), -9, usage.ru_maxrss // 1024
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, proc.returncode, usage.ru_maxrss // 1024


def first_job(cmd: list[str], env: dict, log: Path, timeout: float) -> tuple[float, str | None]:
    """Seconds until the real run ``cmd`` starts its first job (Snakemake prints ``rule
    <name>:`` / ``localrule <name>:``), and that rule; the run is then killed."""
    import signal

    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                start_new_session=True)
        try:
            for line in proc.stdout:
                out.write(line)
                m = re.match(r"^(?:local)?rule (\w+):", line)
                if m:
                    return time.perf_counter() - t0, m.group(1)
                if time.perf_counter() - t0 > timeout:
                    break
            return float("inf"), None
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def make_workspace(ws: Path, n: int, repo: Path, env: dict) -> Path:
    """Clips, manifest and config for ``n`` videos under ``ws``; returns the config path."""
    clips = ws.parent / "clips"
    if not (clips / "manifest.csv").exists():
        subprocess.run([sys.executable, "-m", "motionmatcher.toy.clips", str(clips), "--set", "demo"],
                       check=True, env=env, cwd=repo, stdout=subprocess.DEVNULL)
    import pandas as pd

    demo = pd.read_csv(clips / "manifest.csv")
    sources = demo.drop_duplicates("video_id")
    (ws / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        src = sources.iloc[i % len(sources)]
        vid = f"v{i:05d}"
        dst = ws / "videos" / f"{vid}.mp4"
        if not dst.exists():
            os.link(clips / src["video_path"], dst)
        for prompt in demo[demo["video_id"] == src["video_id"]]["prompt"]:
            rows.append({"video_id": vid, "video_path": f"videos/{vid}.mp4", "caption": src["caption"],
                         "prompt": prompt})
    pd.DataFrame(rows).to_csv(ws / "manifest.csv", index=False)
    cfg = ws / "config.yaml"
    cfg.write_text(json.dumps({
        "manifest": str(ws / "manifest.csv"), "results_dir": str(ws / "results"),
        "resources_dir": str(ws / "resources"), "model": str(repo / "models" / "toy_t2v"),
        "run_methods": TABLE1,
    }))
    return cfg


def snakemake_cmd(repo: Path, cfg: Path, ws: Path, *extra: str) -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    return [str(exe), "-s", str(repo / "Snakefile"), "--configfile", str(repo / "config" / "config.yaml"),
            str(cfg), "-d", str(ws), "--cores", "2", *extra]


def job_total(log: Path) -> int | None:
    text = log.read_text(errors="replace")
    if "Nothing to be done" in text:
        return 0
    m = re.findall(r"^total\s+(\d+)\s*$", text, re.M)
    return int(m[-1]) if m else None


def synthesise_outputs(repo: Path, cfg: Path, ws: Path, env: dict, timeout: float) -> list[str]:
    """Create every output of the DAG (empty files / folders), mtimes in dependency order."""
    log = ws / "summary.log"
    cmd = snakemake_cmd(repo, cfg, ws, "--summary", "--quiet", "all")
    with open(log, "w") as out:
        subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=True)
    base = time.time() - 1000
    unknown = set()
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0] == "output_file":
            continue
        path, rule = Path(parts[0]), parts[2]
        if not path.is_absolute():
            path = ws / path
        if rule not in DEPTH:
            unknown.add(rule)
        depth = DEPTH.get(rule, 10)
        is_dir = (rule == "sample" and path.name == "videos") or rule in DIR_RULES
        if is_dir:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        os.utime(path, (base + depth, base + depth))
    # the inputs (clips, manifest, config) are older than every output
    for p in [*(ws / "videos").iterdir(), ws / "manifest.csv", cfg]:
        os.utime(p, (base - 10, base - 10))
    # Snakemake's own metadata (code, params, software-env triggers), as a finished run leaves it
    with open(ws / "touch.log", "w") as out:
        subprocess.run(snakemake_cmd(repo, cfg, ws, "--touch", "--quiet", "all"), stdout=out,
                       stderr=subprocess.STDOUT, env=env, timeout=timeout, check=True)
    return sorted(unknown)


AGGREGATE = r"""
import sys, time, resource
from pathlib import Path
import pandas as pd
from motionmatcher.files.table_schemas import METRICS, write_table
import motionmatcher.results.summary_tables as S
paths = Path(sys.argv[1]).read_text().split()
out = sys.argv[2]
t0 = time.perf_counter()
if hasattr(S, "aggregate_metric_tables"):
    n = S.aggregate_metric_tables(paths, out)
else:
    table = S.concat_metric_tables((pd.read_parquet(p) for p in paths), METRICS.names)
    write_table(table, METRICS, out)
print(f"AGG {time.perf_counter() - t0:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}")
"""

VALIDATE = r"""
import sys, time
from motionmatcher.files.manifest import load_manifest
kw = {}
import inspect
if "probe_cache" in inspect.signature(load_manifest).parameters:
    kw["probe_cache"] = sys.argv[2]
for _ in range(2):
    t0 = time.perf_counter()
    m = load_manifest(sys.argv[1], 8, **kw)
    print(f"VALIDATE {time.perf_counter() - t0:.3f} {len(m)}")
"""


REPORT = r"""
import sys, time, resource
import numpy as np, pandas as pd
try:
    from motionmatcher.results.report import browse_index_html, browse_rows, method_page_html
except ImportError:
    print("REPORT - -"); sys.exit(0)
from motionmatcher.results.summary_tables import METRIC_SPECS
n, methods = int(sys.argv[1]), sys.argv[2].split(",")
videos = {f"v{i:05d}": {"caption": f"a caption of video {i}"} for i in range(n)}
rng = np.random.default_rng(0)
rows = [{"level": "video", "method": m, "video_id": v, "n_samples": 2,
         **{f"{k}_mean": rng.random() for k, _, _ in METRIC_SPECS}} for m in methods for v in videos]
summary = pd.DataFrame(rows)
t0 = time.perf_counter()
records = browse_rows(summary, videos, methods)
size = len(browse_index_html(records, methods))
for m in methods:
    size += len(method_page_html(records, m))
try:  # the video pages, built by report_browse since issue 21's third pass
    from motionmatcher.results.report import write_video_page
except ImportError:
    write_video_page = None
if write_video_page is not None:
    import tempfile
    from pathlib import Path
    tmp = Path(tempfile.mkdtemp(dir=sys.argv[3]))
    # one file per (method, prompt) / method / reference, linked per video (< ext4's 65,000 links)
    files = {}
    for key in ["reference", *(f"{m}_p{p}" for m in methods for p in range(2)), *(f"{m}_sheet" for m in methods)]:
        files[key] = tmp / f"{key}.bin"
        files[key].write_bytes(b"x" * 1000)
    rows = pd.DataFrame([{"video_id": v, "method": m, "prompt_id": f"p{p:02d}", "prompt": "a prompt", "seed": 0,
                          "video_path": str(files[f"{m}_p{p}"]), "clip_t": 0.3} for v in videos for m in methods
                         for p in range(2)])
    by_video = dict(tuple(rows.groupby("video_id", sort=False)))
    for v, info in videos.items():
        write_video_page(tmp / "videos" / v, v, info["caption"], files["reference"], by_video[v],
                         {m: files[f"{m}_sheet"] for m in methods}, methods)
        size += (tmp / "videos" / v / "index.html").stat().st_size
print(f"REPORT {time.perf_counter() - t0:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} {size}")
"""


def metric_tables(ws: Path, n: int, repo: Path, env: dict) -> Path:
    """One realistic metric table, hard-linked to every path the code's ``metrics`` rule writes:
    per (method, video), 2 prompts x 1 seed (before issue 21's third pass), or per video, 2 rows
    of each of the 7 methods (after); returns the file listing them."""
    listing = ws / "metric_tables.txt"
    per_video = "metrics/{{video}}.parquet" in (repo / "rules" / "metrics.smk").read_text()
    script = r"""
import sys
import numpy as np, pandas as pd
from motionmatcher.files.table_schemas import METRICS, write_table
rows = []
for m in sys.argv[2].split(","):
    for p in range(2):
        row = {}
        for f in METRICS:
            t = str(f.type)
            row[f.name] = (0.5 + p if t in ("double", "float") else p if t.startswith("int")
                           else True if t == "bool" else f"x{p}")
        row["method"] = m
        rows.append(row)
df = pd.DataFrame(rows)
write_table(df, METRICS, sys.argv[1])
"""
    paths = []
    # one template per method (per video: per 50,000 videos): a file system allows ~65,000 links
    # to one file (ext4)
    groups = [(None, TABLE1)] if per_video else [(m, [m]) for m in TABLE1]
    for method, methods in groups:
        template = ws / f"metric_template_{method or 'all'}.parquet"
        subprocess.run([sys.executable, "-c", script, str(template), ",".join(methods)], check=True, env=env,
                       cwd=repo)
        d = ws / "synthetic_metrics" / (method or "")
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            p = d / f"v{i:05d}.parquet"
            if not p.exists():
                os.link(template, p)
            paths.append(str(p))
    listing.write_text("\n".join(paths))
    return listing


def bench(name: str, repo: Path, n: int, work: Path, timeout: float, noop: bool = True,
          first: bool = True) -> dict:
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    ws = work / name / f"n{n}"
    if ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    cfg = make_workspace(ws, n, repo, env)
    row = {"code": name, "videos": n}

    out = subprocess.run([sys.executable, "-c", VALIDATE, str(ws / "manifest.csv"), str(ws / "probe_cache.json")],
                         capture_output=True, text=True, env=env, cwd=repo)
    times = [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("VALIDATE")]
    if out.returncode or len(times) != 2:
        raise RuntimeError(f"validation failed:\n{out.stdout}\n{out.stderr}")
    row["validate_s"], row["validate_warm_s"] = times

    log = ws / "dag.log"
    row["dag_s"], rc, row["dag_peak_mb"] = run_measured(snakemake_cmd(repo, cfg, ws, "-n"), env, log, timeout)
    row["jobs"] = job_total(log) if rc == 0 else None

    if first:  # on a workspace of its own: the killed run leaves a lock and an incomplete job
        ws1 = work / name / f"n{n}_first"
        if ws1.exists():
            shutil.rmtree(ws1)
        ws1.mkdir(parents=True)
        cfg1 = make_workspace(ws1, n, repo, env)
        cmd = snakemake_cmd(repo, cfg1, ws1)
        cmd[cmd.index("--cores") + 1] = "1"
        row["first_job_s"], row["first_rule"] = first_job(cmd, env, ws1 / "first.log", timeout)
        shutil.rmtree(ws1)

    if rc == 0 and noop:
        unknown = synthesise_outputs(repo, cfg, ws, env, timeout)
        if unknown:
            print(f"  (rules without a depth, outputs dated last: {', '.join(unknown)})", file=sys.stderr)
        log = ws / "noop.log"
        row["noop_s"], rc2, row["noop_peak_mb"] = run_measured(snakemake_cmd(repo, cfg, ws, "-n"), env, log, timeout)
        row["noop_jobs"] = job_total(log) if rc2 == 0 else None

    listing = metric_tables(ws, n, repo, env)
    out = subprocess.run([sys.executable, "-c", AGGREGATE, str(listing), str(ws / "samples.parquet")],
                         capture_output=True, text=True, env=env, cwd=repo)
    agg = [line.split() for line in out.stdout.splitlines() if line.startswith("AGG")]
    if out.returncode or not agg:
        raise RuntimeError(f"aggregation failed:\n{out.stdout}\n{out.stderr}")
    row["aggregate_s"], row["aggregate_peak_mb"] = float(agg[0][1]), int(agg[0][2])

    out = subprocess.run([sys.executable, "-c", REPORT, str(n), ",".join(TABLE1), str(ws)],
                         capture_output=True, text=True, env=env, cwd=repo)
    rep = [line.split() for line in out.stdout.splitlines() if line.startswith("REPORT")]
    if out.returncode or not rep:
        raise RuntimeError(f"report pages failed:\n{out.stdout}\n{out.stderr}")
    if rep[0][1] != "-":
        row["report_s"], row["report_mb"] = float(rep[0][1]), round(int(rep[0][3]) / 1e6, 1)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--repo", action="append", default=[],
                    help="name=path of a checkout to measure (default: this one, as 'this')")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mm_scale"))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per snakemake call")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--no-first-job", action="store_true", help="skip the time to the first job of a real run")
    ap.add_argument("--no-noop", action="store_true",
                    help="skip the no-op rerun (synthesising a finished workspace runs --touch over every job)")
    args = ap.parse_args(argv)
    repos = [r.split("=", 1) for r in args.repo] or [["this", str(ROOT)]]
    cols = ["code", "videos", "jobs", "validate_s", "validate_warm_s", "dag_s", "dag_peak_mb", "first_job_s",
            "first_rule", "noop_s",
            "noop_jobs", "noop_peak_mb", "aggregate_s", "aggregate_peak_mb", "report_s", "report_mb"]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    rows = []
    for n in args.sizes:
        for name, path in repos:
            row = bench(name, Path(path).resolve(), n, args.work, args.timeout, noop=not args.no_noop,
                        first=not args.no_first_job)
            rows.append(row)
            cells = [f"{row.get(c):.2f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in cols]
            print("| " + " | ".join(cells) + " |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

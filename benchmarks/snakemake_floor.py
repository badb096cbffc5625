"""Snakemake's own cost per job, without our rules: a trivial Snakefile of N "videos" x K jobs
(one `pre` job per video, then K-1 `step` jobs reading it; no params, resources or callables),
dry run (`snakemake -n`) and its peak memory, per N. The floor under any DAG of that many jobs
on this machine, to read benchmarks/scale.py's figures against (docs/scale.md)::

    .venv/bin/python benchmarks/snakemake_floor.py --videos 1000 10000 --jobs-per-video 15
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import run_measured  # noqa: E402

SNAKEFILE = '''
N = int(config["nvideos"])
K = int(config["per_video"])
VIDEOS = [f"v{i:05d}" for i in range(N)]

rule all:
    input: expand("out/{v}/s{k}.txt", v=VIDEOS, k=range(1, K))

rule pre:
    output: "pre/{v}.txt"
    shell: "touch {output}"

rule step:
    input: "pre/{v}.txt"
    output: "out/{v}/s{k}.txt"
    shell: "touch {output}"
'''


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--jobs-per-video", type=int, default=15)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--quiet", action="store_true", help="dry run without printing every job (snakemake --quiet)")
    args = ap.parse_args(argv)
    exe = Path(sys.executable).with_name("snakemake")
    print("| videos | jobs | dry run s | ms per job | peak MB |\n| --- | --- | --- | --- | --- |")
    for n in args.videos:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "Snakefile").write_text(SNAKEFILE)
            cmd = [str(exe), "-n", "--cores", "1", "-d", tmp, "-s", str(Path(tmp) / "Snakefile"), "--config",
                   f"nvideos={n}", f"per_video={args.jobs_per_video}"] + (["--quiet"] if args.quiet else [])
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            secs, rc, peak = run_measured(cmd, env, Path(tmp) / "log", args.timeout)
            if rc:
                raise SystemExit((Path(tmp) / "log").read_text()[-3000:])
            jobs = n * args.jobs_per_video + 1
            print(f"| {n:,} | {jobs:,} | {secs:.1f} | {1000 * secs / jobs:.2f} | {peak} |", flush=True)


if __name__ == "__main__":
    main()

"""The toy benchmark's results table: per method, ground-truth and existing metrics with
video-level 95 % confidence intervals.

Each metric is first averaged over a video's samples (prompts x seeds), then over videos; the
CI is the t interval of the per-video means (n_videos - 1 degrees of freedom), so it reflects
the spread across reference clips, not across correlated samples of one clip. Also prints
each method's trajectory error relative to base (ratio of means) and the Spearman
correlation, over all samples, of each existing motion metric with the trajectory error.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_table.py results/toy_benchmark/tables/samples.parquet
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

# two-sided 95 % quantiles of Student's t, df = 1..30 (above 30: the normal's 1.96)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96

COLUMNS = ("trajectory_error", "appearance_leakage", "background_leakage", "distractor_leakage",
           "text_alignment", "shape_alignment",
           "motion_discrepancy", "motion_fidelity", "clip_t")


def video_ci(per_video: pd.Series) -> tuple[float, float, float]:
    v = per_video.dropna().to_numpy(float)
    m = float(v.mean()) if len(v) else float("nan")
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = t975(len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return m, m - h, m + h


def table(samples: pd.DataFrame) -> str:
    methods = list(dict.fromkeys(samples["method"]))
    # tables of an older run lack the unprompted-appearance columns; a leakage column is null
    # for the videos without that appearance (its CI is over the videos that have it)
    cols = [c for c in COLUMNS if c in samples.columns]
    lines = ["| method | n samples | n videos | " + " | ".join(cols) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    for m in methods:
        s = samples[samples["method"] == m]
        cells = []
        for c in cols:
            mean, lo, hi = video_ci(s.groupby("video_id")[c].mean())
            cells.append(f"{mean:.3f} [{lo:.3f}, {hi:.3f}]")
        lines.append(f"| {m} | {len(s)} | {s['video_id'].nunique()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("samples", nargs="+",
                    help="results/<dir>/tables/samples.parquet, or per-video metrics tables")
    a = ap.parse_args(argv)
    samples = pd.concat([pd.read_parquet(p) for p in a.samples], ignore_index=True)
    if samples["trajectory_error"].isna().all():
        sys.exit(f"{' '.join(a.samples)}: no ground-truth metrics (are the references toy clips with .gt.json sidecars?)")
    print(table(samples))
    print()
    base = samples[samples["method"] == "base"]
    if len(base):
        b = base.groupby("video_id")["trajectory_error"].mean()
        for m in dict.fromkeys(samples["method"]):
            if m == "base":
                continue
            x = samples[samples["method"] == m].groupby("video_id")["trajectory_error"].mean()
            common = b.index.intersection(x.index)
            d = (x[common] - b[common])
            mean, lo, hi = video_ci(d)
            print(f"{m}: trajectory error / base = {x[common].mean() / b[common].mean():.2f} "
                  f"(paired difference {mean:+.3f} [{lo:+.3f}, {hi:+.3f}], {len(common)} videos)")
    print()
    # unprompted-appearance leakage (leak-prone references only): paired per video against
    # base and against DDPM-LoRA (the paper: MotionMatcher leaks less than DDPM-LoRA)
    for c in ("background_leakage", "distractor_leakage"):
        if c not in samples.columns or samples[c].isna().all():
            continue
        per = samples.groupby(["method", "video_id"])[c].mean().dropna()
        methods = list(dict.fromkeys(samples["method"]))
        for ref in ("base", "ddpm_lora"):
            if ref not in per.index.get_level_values(0):
                continue
            r = per[ref]
            for m in methods:
                if m == ref or m not in per.index.get_level_values(0) or (ref == "ddpm_lora" and m == "base"):
                    continue
                x = per[m]
                common = r.index.intersection(x.index)
                mean, lo, hi = video_ci(x[common] - r[common])
                print(f"{m} - {ref}: {c} paired difference {mean:+.3f} [{lo:+.3f}, {hi:+.3f}], "
                      f"{len(common)} videos ({(x[common] < r[common]).sum()} lower)")
        print()
    for c in ("motion_discrepancy", "motion_fidelity", "clip_t"):
        ok = samples[[c, "trajectory_error"]].dropna()
        if len(ok) > 2:
            rho = ok[c].rank().corr(ok["trajectory_error"].rank())
            print(f"Spearman({c}, trajectory_error) over {len(ok)} samples: {rho:+.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

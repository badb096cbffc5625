"""Do customized samples of leak-prone references follow the distractor's path?

A leak-prone toy reference (``--set appearance``) has an unnamed distractor moving on its own
path beside the prompted object. ``trajectory_error`` scores a sample's object against the
object's path only. This script scores the same centroid track
(:func:`motionmatcher.metrics.groundtruth.sample_centroid`) against both paths, per sample
of the references whose sidecar has ``distractor_centroid``, and prints per method the mean of
per-video means of both errors, their ratio to base and the paired difference to base over
videos with its 95 % t interval (:func:`toy_table.paired`). ``--per-video`` adds, per
reference, the two trajectory families, how far each object travels (sum of the centroid's
frame-to-frame steps / frame size), how far apart the paths lie, and each method's mean errors
to both paths.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_distractor_path.py results/toy_benchmark_wan/tables [--per-video]

It reads the folder's ``samples.parquet`` and ``videos.parquet``, each reference's sidecar and
each sample's frames (``frames_path``: the run's results folder must be present).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_table import paired  # noqa: E402

from motionmatcher.metrics.evaluate import load_frames_file  # noqa: E402
from motionmatcher.metrics.groundtruth import (parse_target, path_error, sample_centroid,  # noqa: E402
                                               sidecar_path)
from motionmatcher.toy import detector  # noqa: E402


def sidecar(video_path: str) -> dict | None:
    """The reference's ground truth, or None without a distractor."""
    gt = json.loads(sidecar_path(video_path).read_text())
    return gt if gt.get("distractor_centroid") else None


def paths(gt: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """The reference's object and distractor centroid paths and its frame size."""
    return (np.asarray(gt["centroid"], float), np.asarray(gt["distractor_centroid"], float),
            int(gt["frame_size"]))


def travel(path: np.ndarray, size: int) -> float:
    """Length of a centroid path (sum of its frame-to-frame steps) over the frame size."""
    return float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum() / size)


def score(samples: pd.DataFrame, reference_of) -> pd.DataFrame:
    """Per sample: error to the object's path and to the distractor's path."""
    rows = []
    for r in samples.itertuples():
        p = reference_of(r.video_id)
        if p is None:
            continue
        frames = load_frames_file(r.frames_path)
        size = frames.shape[1]
        if size != p[2]:
            raise ValueError(f"{r.frames_path}: frames of {size} px, the reference's ground truth is at {p[2]} px")
        colour, _ = parse_target(r.prompt)
        labels = detector.segment(frames)
        cen = sample_centroid(frames, colour, labels, detector.colour_areas(frames, labels),
                              detector.dominant_colour(frames))
        rows.append(dict(method=r.method, video_id=r.video_id, to_object=path_error(cen, p[0], size),
                         to_distractor=path_error(cen, p[1], size)))
    return pd.DataFrame(rows)


def report(scored: pd.DataFrame, between: dict) -> str:
    per = scored.groupby(["method", "video_id"])[["to_object", "to_distractor"]].mean()
    lines = ["| method | n videos | to object's path | x base | to distractor's path | x base | "
             "paired difference to base, distractor's path |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    base = per.loc["base"] if "base" in per.index.get_level_values(0) else None
    for m in dict.fromkeys(scored["method"]):
        x = per.loc[m]
        cells = []
        for c in ("to_object", "to_distractor"):
            cells.append(f"{x[c].mean():.3f}")
            cells.append(f"{x[c].mean() / base[c].mean():.2f}" if base is not None else "-")
        diff = ""
        if base is not None and m != "base":
            mean, lo, hi, _ = paired(scored, "to_distractor", m, "base")
            diff = f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        lines.append(f"| {m} | {len(x)} | " + " | ".join(cells) + f" | {diff} |")
    d = np.mean(list(between.values()))
    lines.append("")
    lines.append(f"Reference: the object's and the distractor's paths lie {d:.3f} apart "
                 f"(mean over frames / frame size, mean of {len(between)} videos).")
    return "\n".join(lines)


def per_video(scored: pd.DataFrame, gts: dict) -> str:
    """Per reference: the families and travel of object and distractor, the paths' distance,
    and each method's mean error to the object's / the distractor's path."""
    per = scored.groupby(["video_id", "method"])[["to_object", "to_distractor"]].mean()
    methods = list(dict.fromkeys(scored["method"]))
    lines = ["| reference | object: family, travel | distractor: family, travel | paths apart | "
             + " | ".join(f"{m}: to object / to distractor" for m in methods) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in methods) + " |"]
    for v in sorted(gts):
        gt = gts[v]
        obj, dis, size = paths(gt)
        fam_o = gt["spec"]["objects"][0]["trajectory"]
        fam_d = gt["appearance"]["distractor"]["trajectory"]
        cells = [f"{per.loc[(v, m), 'to_object']:.3f} / {per.loc[(v, m), 'to_distractor']:.3f}"
                 if (v, m) in per.index else "-" for m in methods]
        lines.append(f"| {v} | {fam_o}, {travel(obj, size):.2f} | {fam_d}, {travel(dis, size):.2f} | "
                     f"{path_error(obj, dis, size):.3f} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("By who carries the motion (object travel < half the distractor's, or not): mean over the "
                 "references of each method's errors, to object / to distractor (x base, to object)")
    lines += ["| references | n | " + " | ".join(methods) + " |",
              "| --- | --- | " + " | ".join("---" for _ in methods) + " |"]
    still = {v for v, gt in gts.items() if travel(paths(gt)[0], paths(gt)[2]) < 0.5 * travel(paths(gt)[1], paths(gt)[2])}
    for name, vids in (("distractor carries the motion", sorted(still)), ("object moves", sorted(set(gts) - still))):
        sub = per[per.index.get_level_values("video_id").isin(vids)].groupby("method").mean()
        base = sub["to_object"].get("base", float("nan"))
        cells = [f"{sub.loc[m, 'to_object']:.3f} / {sub.loc[m, 'to_distractor']:.3f}"
                 + (f" ({sub.loc[m, 'to_object'] / base:.2f}x)" if m != "base" and base > 0 else "")
                 if m in sub.index else "-" for m in methods]
        lines.append(f"| {name} | {len(vids)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", help="results/<dir>/tables: its samples.parquet and videos.parquet")
    ap.add_argument("--per-video", action="store_true", help="also the table per reference")
    a = ap.parse_args(argv)
    samples = pd.read_parquet(Path(a.tables) / "samples.parquet")
    videos = pd.read_parquet(Path(a.tables) / "videos.parquet").set_index("video_id")["video_path"]
    gts = {v: sidecar(videos[v]) for v in samples["video_id"].unique()}
    gts = {v: gt for v, gt in gts.items() if gt is not None}
    if not gts:
        sys.exit(f"{a.tables}: no reference has a distractor (a leak-prone toy clip's sidecar)")
    refs = {v: paths(gt) for v, gt in gts.items()}
    scored = score(samples[samples["video_id"].isin(refs)], refs.get)
    between = {v: path_error(p[0], p[1], p[2]) for v, p in refs.items()}
    print(report(scored, between))
    if a.per_video:
        print()
        print(per_video(scored, gts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

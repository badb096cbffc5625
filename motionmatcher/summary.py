"""Result tables: per-method (the paper's Table 1) and per-(method, video) statistics of the
per-sample metrics, as a DataFrame and as Markdown. Pure pandas; the workflow scripts only
read and write files.

``summarize`` returns one table with a ``level`` column (schema
:data:`motionmatcher.tables.SUMMARY`):

* ``level == "method"``: one row per method (``video_id`` null), statistics over **all** samples
  of the method (every video, prompt and seed pooled, not a mean of per-video means);
* ``level == "video"``: one row per (method, video).

For each metric ``M``: ``M_mean``, ``M_std`` (sample standard deviation, ``ddof=1``; NaN/null
when fewer than 2 values) and ``M_n`` (number of non-null values; 0 and a null mean for a
metric that was not computed, e.g. ImageReward without a checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from motionmatcher.tables import SUMMARY, SUMMARY_METRICS

__all__ = ["METRIC_SPECS", "DASH", "concat_metric_tables", "summarize", "format_stat", "summary_markdown"]

#: (column, Markdown label, higher is better)
METRIC_SPECS: tuple[tuple[str, str, bool], ...] = (
    ("clip_t", "CLIP-T", True),
    ("frame_consistency", "Frame consistency", True),
    ("image_reward", "ImageReward", True),
    ("motion_discrepancy", "Motion discrepancy", False),
    ("motion_fidelity", "Motion fidelity", True),
)
assert tuple(m for m, _, _ in METRIC_SPECS) == SUMMARY_METRICS

DASH = "\u2013"  # en dash: a value that was not computed
UP, DOWN = "\u2191", "\u2193"


def concat_metric_tables(frames: Iterable[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    """Concatenate per-(method, video) metric tables, keeping ``columns`` in order."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    return pd.concat([f[list(columns)] for f in frames], ignore_index=True)


def _ordered(values: Iterable, order: Sequence | None) -> list:
    seen = list(dict.fromkeys(v for v in values if not _is_null(v)))
    if not order:
        return seen
    head = [v for v in order if v in seen]
    return head + [v for v in seen if v not in head]


def _stats(group: pd.DataFrame) -> dict:
    out = {"n_samples": int(len(group)), "n_videos": int(group["video_id"].nunique())}
    for m in SUMMARY_METRICS:
        if m in group:
            values = pd.to_numeric(group[m], errors="coerce").astype("float64")
            values = values[np.isfinite(values)]
        else:
            values = pd.Series(dtype="float64")
        n = int(values.size)
        out[f"{m}_mean"] = float(values.mean()) if n else np.nan
        out[f"{m}_std"] = float(values.std(ddof=1)) if n >= 2 else np.nan
        out[f"{m}_n"] = n
    return out


def summarize(
    samples: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    method_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-method and per-(method, video) statistics of the per-sample metrics.

    Args:
        samples: per-sample metrics (columns ``method``, ``video_id`` and the metric columns;
            a missing or all-null metric column gives null statistics, not an error).
        reference: per-video reference metrics (``video_id``, ``clip_t``) or ``None``.
        method_order: order of the method rows (e.g. ``config["run_methods"]``); methods not
            listed follow in order of appearance. Videos keep their order of appearance.

    Returns:
        A DataFrame with the columns of :data:`motionmatcher.tables.SUMMARY`: the
        ``level == "method"`` rows first, then the ``level == "video"`` rows.
    """
    ref_clip = {}
    if reference is not None and len(reference):
        ref = reference.dropna(subset=["clip_t"])
        ref_clip = dict(zip(ref["video_id"], ref["clip_t"].astype(float)))

    methods = _ordered(samples["method"], method_order)
    method_rows, video_rows = [], []
    for method in methods:
        group = samples[samples["method"] == method]
        vids = _ordered(group["video_id"], None)
        refs = [ref_clip[v] for v in vids if v in ref_clip]
        method_rows.append({"level": "method", "method": method, "video_id": None, **_stats(group),
                            "reference_clip_t": float(np.mean(refs)) if refs else np.nan})
        for video in vids:
            vgroup = group[group["video_id"] == video]
            video_rows.append({"level": "video", "method": method, "video_id": video, **_stats(vgroup),
                               "reference_clip_t": ref_clip.get(video, np.nan)})
    out = pd.DataFrame.from_records(method_rows + video_rows, columns=SUMMARY.names)
    for field in SUMMARY:
        if field.type == "int64":
            out[field.name] = out[field.name].astype("int64")
        elif field.type == "double":
            out[field.name] = out[field.name].astype("float64")
    return out


def _is_null(x) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and not np.isfinite(x)) or x is pd.NA


def _num(x: float) -> str:
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.4f}"


def format_stat(mean, std, n: int, n_rows: int | None = None) -> str:
    """``"mean ± std"``; ``–`` when not computed; mean only when ``std`` is undefined (n = 1);
    ``" (n=k)"`` appended when the metric has fewer values than the row has samples."""
    if _is_null(mean) or not n:
        return DASH
    text = _num(float(mean)) if _is_null(std) else f"{_num(float(mean))} \u00b1 {_num(float(std))}"
    if n_rows is not None and int(n) != int(n_rows):
        text += f" (n={int(n)})"
    return text


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _metric_header() -> list[str]:
    return [f"{label} {UP if higher else DOWN}" for _, label, higher in METRIC_SPECS]


def _metric_cells(row: pd.Series) -> list[str]:
    return [format_stat(row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_n"], row["n_samples"])
            for m, _, _ in METRIC_SPECS]


def summary_markdown(
    summary: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    samples: pd.DataFrame | None = None,
    title: str = "MotionMatcher results",
) -> str:
    """Markdown of :func:`summarize`'s table: a per-method table (rows = methods, columns =
    CLIP-T, frame consistency, ImageReward, motion discrepancy, motion fidelity, each
    ``mean ± std``) and a per-(method, video) table, with the reference videos' CLIP-T
    against their captions as context. ``samples`` (optional) adds the tracker / CLIP model
    used and flags random CLIP weights."""
    lines = [f"# {title}", ""]
    lines.append(
        f"Mean \u00b1 sample standard deviation over samples (all videos, prompts and seeds of a method); "
        f"{UP} higher is better, {DOWN} lower is better; {DASH} = not computed "
        "(e.g. ImageReward without `metrics.image_reward.checkpoint`); (n=k) = the metric has k values."
    )
    if samples is not None and len(samples):
        notes = []
        if "tracker" in samples and "grid_size" in samples:
            pairs = samples[["tracker", "grid_size"]].drop_duplicates().itertuples(index=False)
            trackers = ", ".join(f"{t} (grid {int(g)}\u00d7{int(g)})" for t, g in pairs)
            notes.append(f"Motion metrics: tracks of the reference vs the sample, tracker {trackers}.")
        if "clip_model" in samples:
            cols = [c for c in ("clip_model", "clip_weights") if c in samples]
            models = ", ".join(" / ".join(map(str, r))
                               for r in samples[cols].drop_duplicates().itertuples(index=False))
            notes.append(f"CLIP: {models}.")
        weights = samples["clip_weights"].astype(str) if "clip_weights" in samples else pd.Series(dtype=str)
        if weights.str.startswith("random_init").any():
            notes.append("**CLIP weights are random (`metrics.clip.random_init_seed`): CLIP-T, frame "
                         "consistency and the reference CLIP-T are not meaningful.**")
        lines += [""] + notes
    if reference is not None and len(reference):
        values = pd.to_numeric(reference["clip_t"], errors="coerce").dropna()
        if len(values):
            std = values.std(ddof=1) if len(values) >= 2 else None
            lines += ["", f"Reference videos vs their own captions (the scale of CLIP-T): CLIP-T "
                          f"{format_stat(values.mean(), std, len(values))} over {len(values)} video(s)."]
        if "frame_consistency" in reference:
            fc = pd.to_numeric(reference["frame_consistency"], errors="coerce").dropna()
            if len(fc):
                std = fc.std(ddof=1) if len(fc) >= 2 else None
                lines[-1] += f" Frame consistency {format_stat(fc.mean(), std, len(fc))}."

    by_method = summary[summary["level"] == "method"]
    lines += ["", "## Per method", ""]
    lines += _table(
        ["Method", "Videos", "Samples", *_metric_header()],
        [[r["method"], str(int(r["n_videos"])), str(int(r["n_samples"])), *_metric_cells(r)]
         for _, r in by_method.iterrows()],
    )
    by_video = summary[summary["level"] == "video"]
    lines += ["", "## Per method and video", ""]
    lines += _table(
        ["Method", "Video", "Samples", *_metric_header(), "Reference CLIP-T"],
        [[r["method"], r["video_id"], str(int(r["n_samples"])), *_metric_cells(r),
          DASH if _is_null(r["reference_clip_t"]) else _num(float(r["reference_clip_t"]))]
         for _, r in by_video.iterrows()],
    )
    return "\n".join(lines) + "\n"

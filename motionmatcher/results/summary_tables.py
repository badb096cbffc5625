"""Result tables: per-method (the paper's Table 1) and per-(method, video) statistics of the
per-sample metrics, as a DataFrame and as Markdown. Pure pandas; the workflow scripts only
read and write files.

``summarize`` returns one table with a ``level`` column (schema
:data:`motionmatcher.files.table_schemas.SUMMARY`):

* ``level == "method"``: one row per method (``video_id`` null);
* ``level == "video"``: one row per (method, video).

Descriptive columns, for each metric ``M``: ``M_mean``, ``M_std`` (sample standard deviation,
``ddof=1``; null when fewer than 2 values) and ``M_n`` (number of non-null values; 0 and a null
mean for a metric that was not computed) over the row's **samples** (all videos, prompts and
seeds of the method pooled, as the paper's Table 1 averages).

Inferential columns: the unit of the interval is named in ``ci_unit``. All samples of one video
share one adapter and one reference clip, so they are not independent draws; the effective
sample size of a method is its number of videos. Hence on a method row (``ci_unit ==
"video"``), with ``m_v`` the mean of ``M`` over the samples of video ``v`` (``V`` videos with a
value)::

    M_ci_mean = 1/V sum_v m_v,   M_ci_low/high = M_ci_mean ± t_{0.975, V−1} · std_v(m_v) / √V

and ``M_ci_n = V``. The paired differences against ``paired_reference`` (default
``motionmatcher``) are formed cell by cell (video, prompt, seed; several samples of a cell
averaged), averaged within each video to ``d_v``, and the t interval is over the ``d_v``:
``M_diff_mean``, ``M_diff_ci_low``/``M_diff_ci_high``, ``M_diff_n`` (videos). On a video row
(``ci_unit == "sample"``) the only replicates are the samples (resp. the cells) of that one video:
the interval there describes within-video spread, not generalisation. The per-sample table
(``samples.parquet``) keeps every value for drill-down.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from motionmatcher.files.table_schemas import SUMMARY, SUMMARY_METRICS

__all__ = ["METRIC_SPECS", "DASH", "PAIR_KEYS", "concat_metric_tables", "summarize", "format_stat",
           "summary_markdown", "statistics_markdown", "t_quantile", "mean_ci", "paired_differences",
           "video_paired_differences", "video_means", "difficulty_breakdown", "difficulty_markdown",
           "DIFFICULTY_METRICS"]

#: The cell a sample belongs to; paired differences match samples of two methods on it.
PAIR_KEYS = ("video_id", "prompt_id", "seed")

#: (column, Markdown label, higher is better)
METRIC_SPECS: tuple[tuple[str, str, bool], ...] = (
    ("clip_t", "CLIP-T", True),
    ("frame_consistency", "Frame consistency", True),
    ("image_reward", "ImageReward", True),
    ("motion_discrepancy", "Motion discrepancy", False),
    ("motion_fidelity", "Motion fidelity", True),
    ("mtbench_fidelity", "MTBench fidelity", True),
    # toy-world ground truth (motionmatcher.metrics.groundtruth); null without a sidecar
    ("trajectory_error", "Trajectory error (GT)", False),
    ("appearance_leakage", "Appearance leakage (GT)", False),
    ("text_alignment", "Text alignment (GT)", True),
    ("background_leakage", "Background leakage (GT)", False),
    ("distractor_leakage", "Distractor leakage (GT)", False),
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


def aggregate_metric_tables(paths: Iterable[str | os.PathLike], out: str | os.PathLike,
                            schema: pa.Schema | None = None, rows_per_group: int = 65536,
                            tables_per_group: int = 512) -> int:
    """Concatenate the per-(method, video) metric tables at ``paths`` into one Parquet file
    ``out`` with ``schema`` (default :data:`motionmatcher.files.table_schemas.METRICS`), streaming: one input
    table and at most ``rows_per_group`` buffered rows from at most ``tables_per_group`` files
    are in memory at a time, however many files there are. The result equals ``write_table(concat_metric_tables(...))``. Atomic;
    returns the number of rows."""
    from motionmatcher.files.atomic import atomic_write
    from motionmatcher.files.table_schemas import METRICS, read_arrow_table

    schema = schema or METRICS
    total = 0

    def stream(tmp: str) -> None:
        nonlocal total
        buffered, n_buffered = [], 0
        with pq.ParquetWriter(tmp, schema) as writer:
            for path in paths:
                table = read_arrow_table(path, schema, columns=schema.names)  # damaged: rebuild hint
                if not table.num_rows:
                    continue
                buffered.append(table.select(schema.names).cast(schema))
                n_buffered += table.num_rows
                if n_buffered >= rows_per_group or len(buffered) >= tables_per_group:
                    writer.write_table(pa.concat_tables(buffered))
                    total += n_buffered
                    buffered, n_buffered = [], 0
            if buffered:
                writer.write_table(pa.concat_tables(buffered))
                total += n_buffered

    atomic_write(out, ".parquet", stream)
    return total


def _ordered(values: Iterable, order: Sequence | None) -> list:
    seen = list(dict.fromkeys(v for v in values if not _is_null(v)))
    if not order:
        return seen
    head = [v for v in order if v in seen]
    return head + [v for v in seen if v not in head]


# ---- Student t quantiles (no scipy in the environment) ----------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t distribution with ``df`` degrees of freedom (``0 < p < 1``)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, ci_low, ci_high, n)`` of the finite ``values``: ``mean ± t_{(1+level)/2, n−1} ·
    std / √n`` (std with ``ddof=1``); the interval is NaN for n < 2, everything NaN for n = 0."""
    v = np.asarray(pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce"), dtype="float64")
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, np.nan, np.nan, n
    half = t_quantile(0.5 + level / 2.0, n - 1) * float(v.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def _cell_differences(samples: pd.DataFrame, method: str, reference: str, metric: str,
                      video_id=None) -> pd.Series:
    """``metric(method) − metric(reference)`` per (video, prompt, seed) cell both have a finite
    value in (several samples of a cell are averaged), indexed by the cell keys."""
    if metric not in samples or "method" not in samples:
        return pd.Series(dtype="float64")
    keys = [k for k in PAIR_KEYS if k in samples]
    rows = samples if video_id is None else samples[samples["video_id"] == video_id]
    values = pd.to_numeric(rows[metric], errors="coerce").astype("float64")
    rows = rows.assign(_v=values)[np.isfinite(values)]

    def cells(name):
        return rows[rows["method"] == name].groupby(keys, dropna=False)["_v"].mean()

    a, b = cells(method), cells(reference)
    common = a.index.intersection(b.index)
    return a.loc[common] - b.loc[common]


def paired_differences(samples: pd.DataFrame, method: str, reference: str, metric: str,
                       video_id=None) -> pd.Series:
    """``metric(method) − metric(reference)`` per (video, prompt, seed) cell both have a finite
    value in (several samples of a cell are averaged), optionally within one video."""
    return _cell_differences(samples, method, reference, metric, video_id).reset_index(drop=True)


def video_paired_differences(samples: pd.DataFrame, method: str, reference: str, metric: str) -> pd.Series:
    """Per-video mean of the cell differences (:func:`paired_differences`), indexed by video:
    the unit of the paired interval on a method row."""
    d = _cell_differences(samples, method, reference, metric)
    if d.empty:
        return pd.Series(dtype="float64")
    level = "video_id" if "video_id" in (d.index.names or []) else 0
    return d.groupby(level=level, sort=False).mean()


def video_means(group: pd.DataFrame, metric: str) -> pd.Series:
    """Mean of ``metric`` over the finite values of each video, indexed by video (videos
    without a value left out): the unit of the interval on a method row."""
    if metric not in group:
        return pd.Series(dtype="float64")
    values = pd.to_numeric(group[metric], errors="coerce").astype("float64")
    rows = group.assign(_v=values)[np.isfinite(values)]
    return rows.groupby("video_id", sort=False)["_v"].mean()


def _finite_values(group: pd.DataFrame, metric: str) -> pd.Series:
    if metric not in group:
        return pd.Series(dtype="float64")
    values = pd.to_numeric(group[metric], errors="coerce").astype("float64")
    return values[np.isfinite(values)]


def _stats(group: pd.DataFrame, unit: str) -> dict:
    out = {"n_samples": int(len(group)), "n_videos": int(group["video_id"].nunique()), "ci_unit": unit}
    for m in SUMMARY_METRICS:
        values = _finite_values(group, m)
        n = int(values.size)
        out[f"{m}_mean"] = float(values.mean()) if n else np.nan
        out[f"{m}_std"] = float(values.std(ddof=1)) if n >= 2 else np.nan
        out[f"{m}_n"] = n
        units = video_means(group, m) if unit == "video" else values
        (out[f"{m}_ci_mean"], out[f"{m}_ci_low"], out[f"{m}_ci_high"],
         out[f"{m}_ci_n"]) = mean_ci(units)
    return out


def _paired(samples: pd.DataFrame, method: str, reference: str | None, video_id=None) -> dict:
    out = {"paired_reference": reference}
    for m in SUMMARY_METRICS:
        if reference is None or method == reference:
            d = pd.Series(dtype="float64")
        elif video_id is None:
            d = video_paired_differences(samples, method, reference, m)
        else:
            d = paired_differences(samples, method, reference, m, video_id)
        mean, lo, hi, n = mean_ci(d)
        out.update({f"{m}_diff_mean": mean, f"{m}_diff_ci_low": lo, f"{m}_diff_ci_high": hi,
                    f"{m}_diff_n": n})
    return out


def summarize(
    samples: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    method_order: Sequence[str] | None = None,
    paired_reference: str | None = "motionmatcher",
) -> pd.DataFrame:
    """Per-method and per-(method, video) statistics of the per-sample metrics.

    Args:
        samples: per-sample metrics (columns ``method``, ``video_id`` and the metric columns;
            a missing or all-null metric column gives null statistics, not an error).
        reference: per-video reference metrics (``video_id``, ``clip_t``) or ``None``.
        method_order: order of the method rows (e.g. ``config["run_methods"]``); methods not
            listed follow in order of appearance. Videos keep their order of appearance.
        paired_reference: the method every other one is compared with, cell by cell
            (``M_diff_*`` columns; null when it has no samples, and for itself).

    Returns:
        A DataFrame with the columns of :data:`motionmatcher.files.table_schemas.SUMMARY`: the
        ``level == "method"`` rows first, then the ``level == "video"`` rows.
    """
    ref_clip = {}
    if reference is not None and len(reference):
        ref = reference.dropna(subset=["clip_t"])
        ref_clip = dict(zip(ref["video_id"], ref["clip_t"].astype(float)))

    methods = _ordered(samples["method"], method_order)
    if paired_reference not in methods:
        paired_reference = None
    method_rows, video_rows = [], []
    for method in methods:
        group = samples[samples["method"] == method]
        vids = _ordered(group["video_id"], None)
        refs = [ref_clip[v] for v in vids if v in ref_clip]
        method_rows.append({"level": "method", "method": method, "video_id": None, **_stats(group, "video"),
                            "reference_clip_t": float(np.mean(refs)) if refs else np.nan,
                            **_paired(samples, method, paired_reference)})
        for video in vids:
            vgroup = group[group["video_id"] == video]
            video_rows.append({"level": "video", "method": method, "video_id": video,
                               **_stats(vgroup, "sample"),
                               "reference_clip_t": ref_clip.get(video, np.nan),
                               **_paired(samples, method, paired_reference, video)})
    out = pd.DataFrame.from_records(method_rows + video_rows, columns=SUMMARY.names)
    for field in SUMMARY:
        if field.type == "int64":
            out[field.name] = out[field.name].astype("int64")
        elif field.type == "double":
            out[field.name] = out[field.name].astype("float64")
        elif field.type == "string":
            out[field.name] = out[field.name].astype("object").where(out[field.name].notna(), None)
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


#: (column, label) of the per-sample columns that define the numbers (motionmatcher.metrics.evaluate)
DEFINITIONS = (
    ("discrepancy_variant", "motion discrepancy variant"),
    ("fidelity_variant", "motion fidelity variant"),
    ("tracker", "tracker"),
    ("grid_size", "grid"),
    ("tracker_weights_sha256", "tracker weights sha256"),
    ("clip_model", "CLIP model"),
    ("clip_weights", "CLIP weights"),
    ("clip_weights_sha256", "CLIP weights sha256"),
    ("image_reward_weights_sha256", "ImageReward weights sha256"),
    ("mtbench_variant", "MTBench variant"),
    ("mtbench_reference_tracks", "MTBench reference tracks"),
)


def definitions_markdown(samples: pd.DataFrame) -> list[str]:
    """Header lines naming each metric's definition (variant, tracker, grid, weights' hashes).
    More than one definition in one table is flagged in bold: those numbers do not compare."""
    cols = [(c, label) for c, label in DEFINITIONS if c in samples]
    if not cols:
        return []
    combos = samples[[c for c, _ in cols]].astype("object").where(samples[[c for c, _ in cols]].notna(), None)
    combos = combos.drop_duplicates()
    lines = []
    for _, row in combos.iterrows():
        parts = [f"{label} `{DASH if _is_null(row[c]) else row[c]}`" for c, label in cols]
        lines.append("Metric definitions: " + ", ".join(parts) + ".")
    if len(combos) > 1:
        lines.insert(0, f"**This table mixes {len(combos)} metric definitions (see below): numbers made "
                        "with different variants, trackers or weights are not comparable.**")
    return lines


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
        f"Mean \u00b1 sample standard deviation over samples (all videos, prompts and seeds of a method; "
        "descriptive, unit: sample; the confidence intervals below are over videos); "
        f"{UP} higher is better, {DOWN} lower is better; {DASH} = not computed "
        "(e.g. ImageReward without `metrics.image_reward.checkpoint`); (n=k) = the metric has k values."
    )
    if samples is not None and len(samples):
        notes = []
        notes += definitions_markdown(samples)
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


def _signed(x: float) -> str:
    text = _num(abs(float(x)))
    return ("\u2212" if x < 0 else "+") + text


def format_ci(mean, low, high, n: int) -> str:
    """``"mean [low, high]"``; mean only when the interval is undefined (n < 2); ``–`` when
    not computed."""
    if _is_null(mean) or not n:
        return DASH
    if _is_null(low) or _is_null(high):
        return _num(float(mean))
    return f"{_num(float(mean))} [{_num(float(low))}, {_num(float(high))}]"


def format_diff(mean, low, high, n: int) -> str:
    """``"+d [low, high] (n=k)"`` of a paired difference; ``–`` without pairs."""
    if _is_null(mean) or not n:
        return DASH
    text = _signed(float(mean))
    if not (_is_null(low) or _is_null(high)):
        text += f" [{_signed(float(low))}, {_signed(float(high))}]"
    return f"{text} (n={int(n)})"


def _unit_label(by_method: pd.DataFrame) -> str:
    units = list(by_method["ci_unit"].dropna().unique()) if "ci_unit" in by_method else []
    return units[0] if len(units) == 1 else "video"


def statistics_markdown(summary: pd.DataFrame) -> str:
    """Markdown of the interval columns of :func:`summarize`'s table: per method the mean over
    videos and its 95% CI for each metric, and the paired differences against the reference
    method (the workflow appends it to :func:`summary_markdown`'s text). The unit of every
    interval (videos) is stated; ``(n=k)`` counts units."""
    by_method = summary[summary["level"] == "method"]
    unit = _unit_label(by_method)
    lines = ["## Per method: 95% confidence intervals (unit: video)", "",
             f"Unit of the intervals: the {unit}. For each metric the mean over the videos of their "
             "per-video means, [95% CI, t distribution with videos − 1 degrees of freedom] "
             "(n = videos). The samples of one video share its adapter and reference clip, so they "
             "are not independent; the per-sample values are in `samples.parquet` and the per-video "
             "rows above.", ""]

    def ci(r, m):
        text = format_ci(r[f"{m}_ci_mean"], r[f"{m}_ci_low"], r[f"{m}_ci_high"], r[f"{m}_ci_n"])
        return text if text == DASH else f"{text} (n={int(r[f'{m}_ci_n'])})"

    def diff(r, m):
        return format_diff(r[f"{m}_diff_mean"], r[f"{m}_diff_ci_low"], r[f"{m}_diff_ci_high"],
                           r[f"{m}_diff_n"])

    lines += _table(
        ["Method", "Videos", "Samples", *_metric_header()],
        [[r["method"], str(int(r["n_videos"])), str(int(r["n_samples"])),
          *[ci(r, m) for m, _, _ in METRIC_SPECS]]
         for _, r in by_method.iterrows()],
    )
    refs = list(by_method["paired_reference"].dropna().unique()) if "paired_reference" in by_method else []
    if refs:
        ref = refs[0]
        lines += ["", f"## Paired differences against {ref} (unit: video)", "",
                  f"Method \u2212 {ref}: differences over the (video, prompt, seed) cells both have, "
                  "averaged within each video; mean over videos [95% CI, t distribution] (n = videos). "
                  f"A positive difference is better where {UP}, a negative one where {DOWN}.", ""]
        rows = [[r["method"], *[diff(r, m) for m, _, _ in METRIC_SPECS]]
                for _, r in by_method.iterrows() if r["method"] != ref]
        lines += _table(["Method", *_metric_header()], rows)
    return "\n".join(lines) + "\n"


#: the metrics broken down by MTBench's split (``difficulty`` column of the manifest)
DIFFICULTY_METRICS = ("mtbench_fidelity",)


def difficulty_breakdown(samples: pd.DataFrame, difficulty: dict, metrics: Sequence[str] = DIFFICULTY_METRICS,
                         method_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Per (method, difficulty): ``n_videos``, ``n_samples`` and for each metric ``M_mean``,
    ``M_std`` (``ddof=1``), ``M_n`` over the finite values of the samples of the videos of that
    difficulty (``difficulty``: ``video_id -> easy | medium | hard``; empty or missing: left
    out), plus an ``all`` row per method over the videos that have one. Rows in the order
    easy, medium, hard, all."""
    from motionmatcher.metrics.mtbench import DIFFICULTIES

    labels = {str(k): str(v) for k, v in (difficulty or {}).items() if isinstance(v, str) and v.strip()}
    rows = samples[samples["video_id"].astype(str).isin(labels)]
    rows = rows.assign(difficulty=rows["video_id"].astype(str).map(labels))
    out = []
    for method in _ordered(rows["method"], method_order):
        group = rows[rows["method"] == method]
        present = [d for d in DIFFICULTIES if d in set(group["difficulty"])]
        present += sorted(set(group["difficulty"]) - set(DIFFICULTIES))
        for label, part in [(d, group[group["difficulty"] == d]) for d in present] + [("all", group)]:
            rec = {"method": method, "difficulty": label, "n_videos": int(part["video_id"].nunique()),
                   "n_samples": int(len(part))}
            for m in metrics:
                values = _finite_values(part, m)
                rec[f"{m}_mean"] = float(values.mean()) if len(values) else np.nan
                rec[f"{m}_std"] = float(values.std(ddof=1)) if len(values) >= 2 else np.nan
                rec[f"{m}_n"] = int(len(values))
            out.append(rec)
    columns = ["method", "difficulty", "n_videos", "n_samples",
               *[f"{m}_{k}" for m in metrics for k in ("mean", "std", "n")]]
    return pd.DataFrame.from_records(out, columns=columns)


def difficulty_markdown(samples: pd.DataFrame, difficulty: dict,
                        method_order: Sequence[str] | None = None) -> str:
    """Markdown of :func:`difficulty_breakdown` (``""`` when no video has a difficulty or no
    MTBench number was computed)."""
    table = difficulty_breakdown(samples, difficulty, DIFFICULTY_METRICS, method_order)
    if table.empty or not table[[f"{m}_n" for m in DIFFICULTY_METRICS]].to_numpy().any():
        return ""
    labels = {m: label for m, label, _ in METRIC_SPECS}
    lines = ["## MTBench by difficulty", "",
             "Mean \u00b1 sample standard deviation over the samples of the videos of each MTBench split "
             "(manifest column `difficulty`); `all` pools the videos that have one.", ""]
    lines += _table(
        ["Method", "Difficulty", "Videos", "Samples", *[f"{labels[m]} {UP}" for m in DIFFICULTY_METRICS]],
        [[r["method"], r["difficulty"], str(int(r["n_videos"])), str(int(r["n_samples"])),
          *[format_stat(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"], r["n_samples"])
            for m in DIFFICULTY_METRICS]]
         for _, r in table.iterrows()],
    )
    return "\n".join(lines) + "\n"

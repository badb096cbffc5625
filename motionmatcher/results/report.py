"""The pieces of the Snakemake report (``snakemake --report report.zip``; rules/report.smk):
Table 1 as HTML, one comparison plot per metric, one training-loss plot per method, one HTML
page per reference video with every method's samples playing side by side, and a provenance
page (config, code version, libraries).

Pure pandas / matplotlib / string building (no torch import), so the report jobs start fast.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from motionmatcher.results.summary_tables import (DASH, METRIC_SPECS, format_ci, format_diff, format_stat,
                                                  mean_ci)

__all__ = [
    "setup_report_script",
    "summary_html",
    "metric_plot",
    "training_plot",
    "video_page_html",
    "write_video_page",
    "provenance_html",
    "browse_index_html",
    "method_page_html",
    "browse_rows",
    "LOSS_META_COLUMNS",
]

log = logging.getLogger("motionmatcher.results.report")

#: train_log.parquet columns that are not loss terms.
LOSS_META_COLUMNS = ("video_id", "method", "step", "timestep", "lr", "seconds", "spatial_skipped")

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
td .ci { display: block; color: #666; font-size: .85em; }
td.best { font-weight: bold; background: #eef7ee; }
p.note { color: #555; font-size: .9em; max-width: 60em; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
.grid { display: grid; gap: .5em; align-items: start; }
.cell { font-size: .8em; text-align: center; }
.cell video { width: 100%; border: 1px solid #ddd; background: #000; }
.cell .label { font-weight: bold; } .cell .metrics { color: #555; }
.rowhead { font-size: .85em; text-align: left; padding-top: .3em; }
img.sheet { max-width: 100%; border: 1px solid #ddd; }
img.thumb { max-height: 4em; }
input.search { font-size: 1em; padding: .3em; width: 24em; }
th.sortable { cursor: pointer; user-select: none; }
"""


def setup_report_script(smk) -> logging.Logger:
    """Logging of a report rule script into the rule's log file (no torch, no GPU slot)."""
    if smk.log:
        Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = open(smk.log[0], "w", buffering=1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    log.info("rule %s, wildcards %s", smk.rule, dict(smk.wildcards))
    return log


def _esc(x) -> str:
    return html.escape(str(x))


def _page(title: str, body: str, extra_head: str = "") -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style>{extra_head}</head>\n<body>\n<h1>{_esc(title)}</h1>\n{body}\n"
            "</body></html>\n")


def _td(text, cls: str | None = None, raw: bool = False) -> str:
    """A table cell (``text`` escaped unless ``raw``)."""
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{text if raw else _esc(text)}</td>"


def _tr(cells) -> str:
    return "<tr>" + "".join(cells) + "</tr>"


def _table(header: list[str], rows: list[str]) -> str:
    """``header``: raw ``<th>`` cells; ``rows``: rendered ``<tr>`` rows."""
    return f"<table><tr>{''.join(header)}</tr>{''.join(rows)}</table>"


def link_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Hard-link ``src`` to ``dst`` (a copy where the file system has no hard links, e.g. across
    devices): the report's pages show the pipeline's own files without a second copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_video_page(folder: str | os.PathLike, video_id: str, caption: str, reference_mp4: str | os.PathLike,
                     rows: pd.DataFrame, sheets: Mapping[str, str | os.PathLike], methods: Sequence[str],
                     descriptions: Mapping[str, str] | None = None, limit: int | None = None) -> int:
    """One reference video's page in ``folder`` (created): ``index.html`` playing the reference
    and every method's samples side by side (:func:`video_page_html`), ``reference.mp4``,
    ``<method>/<prompt_id>_s<seed>.mp4`` and ``sheets/<method>.png`` (the contact sheets), all
    hard-linked (:func:`link_file`). ``rows``: the video's per-sample metric rows (columns
    ``method, prompt_id, prompt, seed, video_path`` and the metrics), at most ``limit`` per
    method. Returns the number of samples shown."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    link_file(reference_mp4, folder / "reference.mp4")
    cells = []
    for method in methods:
        mine = rows[rows["method"] == method].sort_values(["prompt_id", "seed"])
        if limit:
            mine = mine.head(int(limit))
        (folder / method).mkdir()
        for row in mine.to_dict("records"):
            name = f"{method}/{row['prompt_id']}_s{int(row['seed'])}.mp4"
            link_file(row["video_path"], folder / name)
            cells.append({**row, "method": method, "src": name})
    (folder / "sheets").mkdir()
    shown = {}
    for method in methods:
        if method in sheets:
            link_file(sheets[method], folder / "sheets" / f"{method}.png")
            shown[method] = f"sheets/{method}.png"
    (folder / "index.html").write_text(video_page_html(video_id, caption, "reference.mp4", cells, list(methods),
                                                       descriptions, shown))
    return len(cells)


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and not math.isfinite(x)) and x is not pd.NA


# ---- Table 1 ---------------------------------------------------------------------------------


def _best(rows: pd.DataFrame, metric: str, higher: bool) -> set:
    values = pd.to_numeric(rows[f"{metric}_mean"], errors="coerce")
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return set()
    target = values.max() if higher else values.min()
    return set(values.index[values == target])


def _stat(r, m: str) -> str:
    return format_stat(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"], r["n_samples"])


def _diff(r, m: str) -> str:
    return format_diff(r[f"{m}_diff_mean"], r[f"{m}_diff_ci_low"], r[f"{m}_diff_ci_high"], r[f"{m}_diff_n"])


def summary_html(summary: pd.DataFrame, descriptions: Mapping[str, str] | None = None,
                 notes_markdown: str | None = None, title: str = "Table 1: motion customization") -> str:
    """HTML of the summary table (:func:`motionmatcher.results.summary_tables.summarize`): per method the mean ±
    std and the 95% CI of every metric (best mean in bold), the paired differences against
    the reference method, and the per-(method, video) rows (folded)."""
    descriptions = descriptions or {}
    by_method = summary[summary["level"] == "method"]
    head = [f"<th>{_esc(label)} {'&uarr;' if higher else '&darr;'}</th>" for _, label, higher in METRIC_SPECS]
    name_th = '<th class="name">Method</th>'
    best = {m: _best(by_method, m, higher) for m, _, higher in METRIC_SPECS}
    rows = []
    for idx, r in by_method.iterrows():
        desc = _esc(descriptions.get(r["method"], ""))
        cells = [_td(f"<b>{_esc(r['method'])}</b><br><small>{desc}</small>", "name", raw=True),
                 _td(int(r["n_videos"])), _td(int(r["n_samples"]))]
        for m, _, _ in METRIC_SPECS:
            ci = format_ci(r[f"{m}_ci_mean"], r[f"{m}_ci_low"], r[f"{m}_ci_high"], r[f"{m}_ci_n"])
            ci_text = ci.split(" ", 1)[1] if " [" in ci else ""
            cells.append(_td(f'{_esc(_stat(r, m))}<span class="ci">{_esc(ci_text)}</span>',
                             "best" if idx in best[m] else None, raw=True))
        rows.append(_tr(cells))
    parts = [
        '<p class="note">Mean &plusmn; sample standard deviation over all samples of a method (every video, '
        "prompt and seed); below it the 95% confidence interval over videos (mean of the per-video "
        "means, t distribution with videos &minus; 1 degrees of freedom: the samples of one video are not "
        "independent). &uarr; higher is better, &darr; lower is better; best mean in bold; "
        f"{DASH} = not computed.</p>",
        _table([name_th, "<th>Videos</th>", "<th>Samples</th>", *head], rows),
    ]
    refs = by_method["paired_reference"].dropna().unique() if "paired_reference" in by_method else []
    if len(refs):
        ref = refs[0]
        drows = [_tr([_td(r["method"], "name"), *[_td(_diff(r, m)) for m, _, _ in METRIC_SPECS]])
                 for _, r in by_method.iterrows() if r["method"] != ref]
        parts += [f"<h2>Paired differences against {_esc(ref)}</h2>",
                  f'<p class="note">Method &minus; {_esc(ref)} over the (video, prompt, seed) cells both '
                  "methods have, averaged within each video: mean over videos [95% CI, t distribution] "
                  "(n = videos).</p>",
                  _table([name_th, *head], drows)]
    vrows = []
    for _, r in summary[summary["level"] == "video"].iterrows():
        ref_clip = r["reference_clip_t"]
        vrows.append(_tr([_td(r["method"], "name"), _td(r["video_id"], "name"), _td(int(r["n_samples"])),
                          *[_td(_stat(r, m)) for m, _, _ in METRIC_SPECS],
                          _td(f"{ref_clip:.4f}" if _finite(ref_clip) else DASH)]))
    table = _table([name_th, '<th class="name">Video</th>', "<th>Samples</th>", *head,
                    "<th>Reference CLIP-T</th>"], vrows)
    parts += ["<h2>Per method and video</h2>",
              f"<details><summary>{len(vrows)} rows</summary>{table}</details>"]
    if notes_markdown:
        parts += ["<h2>summary.md</h2>",
                  f"<details><summary>Markdown version</summary><pre>{_esc(notes_markdown)}</pre></details>"]
    return _page(title, "\n".join(parts))


# ---- plots -----------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_plot(samples: pd.DataFrame, metric: str, out_png: str | os.PathLike,
                method_order: Sequence[str] | None = None) -> None:
    """One metric, all methods: every sample (small grey dots), each video's mean (a coloured
    marker per video) and the mean of the video means with its 95% CI over videos (black)."""
    plt = _plt()
    label, higher = next(((lab, hi) for m, lab, hi in METRIC_SPECS if m == metric), (metric, True))
    order = list(method_order or [])
    methods = order + [m for m in dict.fromkeys(samples["method"]) if m not in order]
    values = (pd.to_numeric(samples[metric], errors="coerce") if metric in samples
              else pd.Series(np.nan, index=samples.index))
    data = samples.assign(_v=values.astype("float64"))
    data = data[np.isfinite(data["_v"])]
    videos = list(dict.fromkeys(samples["video_id"])) if "video_id" in samples else []
    cmap = plt.get_cmap("tab10" if len(videos) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(methods) + 1.5), 4.2), dpi=110)
    rng = np.random.default_rng(0)
    spread = min(0.5 / max(len(videos), 1), 0.08)  # per-video markers side by side
    labeled: set = set()
    for i, method in enumerate(methods):
        rows = data[data["method"] == method]
        if rows.empty:
            continue
        ax.scatter(i + rng.uniform(-0.28, 0.28, len(rows)), rows["_v"], s=6, color="0.75", zorder=1)
        for j, video in enumerate(videos):
            v = rows[rows["video_id"] == video]["_v"]
            if len(v):
                ax.scatter(i + (j - (len(videos) - 1) / 2) * spread, v.mean(), s=30, color=cmap(j % cmap.N),
                           edgecolor="white", linewidth=0.5, zorder=2,
                           label=None if video in labeled else video)
                labeled.add(video)
        mean, lo, hi, n = mean_ci(rows.groupby("video_id", sort=False)["_v"].mean()
                                  if "video_id" in rows else rows["_v"])  # unit: video
        if np.isfinite(lo):
            ax.errorbar(i, mean, yerr=[[mean - lo], [hi - mean]], color="black", capsize=6, lw=1.5, zorder=3)
        ax.plot([i - 0.32, i + 0.32], [mean, mean], color="black", lw=2.2, zorder=3)
    tilt = len(methods) > 4
    ax.set_xticks(range(len(methods)), methods, rotation=20 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_ylabel(label)
    ax.set_title(f"{label} {'(higher is better)' if higher else '(lower is better)'}", fontsize=11)
    if data.empty:
        ax.text(0.5, 0.5, "not computed", transform=ax.transAxes, ha="center", va="center", color="0.4")
    elif videos and len(videos) <= 20:
        ax.legend(title="video (mean)", fontsize=7, title_fontsize=7, loc="center left",
                  bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)


def training_plot(logs: pd.DataFrame, method: str, out_png: str | os.PathLike) -> None:
    """Training-loss curves of one method: one panel per logged loss term (``loss`` first), a
    thin line per video and the mean over videos (thick)."""
    plt = _plt()
    terms = ["loss"] + [c for c in logs.columns if c not in LOSS_META_COLUMNS and c != "loss"
                        and pd.api.types.is_numeric_dtype(logs[c])]
    ncols = min(len(terms), 3)
    nrows = -(-len(terms) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), dpi=110, squeeze=False)
    for ax in axes.flat[len(terms):]:
        ax.set_visible(False)
    videos = list(dict.fromkeys(logs["video_id"])) if "video_id" in logs else [None]
    for ax, term in zip(axes.flat, terms):
        for video in videos:
            rows = logs if video is None else logs[logs["video_id"] == video]
            ax.plot(rows["step"], rows[term], lw=0.8, alpha=0.45 if len(videos) > 1 else 1.0,
                    label=video if len(videos) <= 10 else None)
        if len(videos) > 1:
            mean = logs.groupby("step")[term].mean()
            ax.plot(mean.index, mean.values, color="black", lw=2, label="mean")
        ax.set_title(term, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(method)
    if len(videos) <= 10:
        axes.flat[len(terms) - 1].legend(fontsize=7, frameon=False)
    fig.suptitle(f"{method}: training loss", fontsize=11)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)


# ---- per-video page --------------------------------------------------------------------------

_SYNC_JS = """<script>
function restartAll() { document.querySelectorAll('video').forEach(v => { v.currentTime = 0; v.play(); }); }
</script>"""


def _metric_text(row: Mapping) -> str:
    bits = []
    for m, label, _ in METRIC_SPECS:
        v = row.get(m)
        if _finite(v):
            bits.append(f"{label} {float(v):.3f}")
    return " · ".join(bits)


def video_page_html(video_id: str, caption: str, reference_src: str, cells: Sequence[Mapping],
                    methods: Sequence[str], descriptions: Mapping[str, str] | None = None,
                    sheets: Mapping[str, str] | None = None) -> str:
    """One reference video and every method's samples, side by side.

    ``cells``: one per sample, ``{"method", "prompt_id", "prompt", "seed", "src"}`` (``src``
    relative to the page) plus optional metric values. Rows are (prompt, seed); columns the
    reference, then ``methods`` in order. ``sheets``: method -> its contact sheet (PNG, relative
    to the page), shown below the videos.
    """
    descriptions = descriptions or {}
    keys = list(dict.fromkeys((c["prompt_id"], int(c["seed"])) for c in cells))
    prompts = {c["prompt_id"]: c["prompt"] for c in cells}
    by_key = {(c["method"], c["prompt_id"], int(c["seed"])): c for c in cells}
    ncol = 1 + len(methods)
    video_tag = '<video src="{src}" autoplay loop muted playsinline controls preload="auto"></video>'
    def header(label, note):
        return (f'<div class="cell"><div class="label">{_esc(label)}</div>'
                f'<div class="metrics">{_esc(note)}</div></div>')

    head = [header("reference", caption)] + [header(m, descriptions.get(m, "")) for m in methods]
    body = [f'<p class="note">Reference video <b>{_esc(video_id)}</b> (caption: '
            f"&ldquo;{_esc(caption)}&rdquo;) and, for every target prompt and seed, the sample of each "
            f"method ({len(methods)} methods, {len(keys)} prompt &times; seed rows). "
            '<button onclick="restartAll()">restart all in sync</button></p>',
            f'<div class="grid" style="grid-template-columns: repeat({ncol}, minmax(150px, 1fr));">', *head]
    for pid, seed in keys:
        body.append(f'<div class="rowhead" style="grid-column: 1 / span {ncol};"><b>{_esc(pid)}</b>, '
                    f"seed {seed}: &ldquo;{_esc(prompts[pid])}&rdquo;</div>")
        body.append(f'<div class="cell">{video_tag.format(src=_esc(reference_src))}</div>')
        for m in methods:
            c = by_key.get((m, pid, seed))
            if c is None:
                body.append(f'<div class="cell">{DASH}</div>')
            else:
                body.append(f'<div class="cell">{video_tag.format(src=_esc(c["src"]))}'
                            f'<div class="metrics">{_esc(_metric_text(c))}</div></div>')
    body.append("</div>")
    if sheets:
        body.append('<h2>Contact sheets</h2><p class="note">Per method: the reference\'s frames (top row), '
                    "then each sample's.</p>")
        for m in methods:
            if m in sheets:
                body.append(f'<h3 id="sheet-{_esc(m)}">{_esc(m)}</h3><img class="sheet" loading="lazy" '
                            f'alt="contact sheet of {_esc(m)} on {_esc(video_id)}" src="{_esc(sheets[m])}">')
    return _page(f"Video {video_id}: reference and samples", "\n".join(body), extra_head=_SYNC_JS)


# ---- browsing thousands of videos: an index and one page per method -----------------------
#
# Both pages carry their rows as JSON and render them with a few lines of JavaScript: a search
# box (substring of any cell), sort by a click on a column, and at most PAGE_ROWS rows in the
# document at once, so a page over 10,000 videos stays a few MB and responsive. Links are
# relative inside the report's "Browse" folder: videos/<video>/index.html, methods/<method>.html.

#: rows rendered at once (the search and the sort run over all rows)
PAGE_ROWS = 500

_TABLE_JS = """<script>
function mmTable(data, columns, initialSort) {
  const q = document.getElementById('q'), info = document.getElementById('info');
  const head = document.getElementById('head'), body = document.getElementById('body');
  let sortCol = initialSort, sortDir = 1, shown = %(page)d;
  const text = data.map(r => columns.map(c => r[c.key] == null ? '' : String(r[c.key])).join(' ').toLowerCase());
  head.innerHTML = '<tr>' + columns.map((c, i) => '<th class="sortable' + (c.num ? '' : ' name') +
    '" data-i="' + i + '">' + c.label + '</th>').join('') + '</tr>';
  head.querySelectorAll('th').forEach(th => th.onclick = () => {
    const i = +th.dataset.i; sortDir = sortCol === i ? -sortDir : 1; sortCol = i; render(); });
  function cell(c, r) {
    const v = r[c.key];
    if (v == null || v === '') return '<td' + (c.num ? '' : ' class="name"') + '>–</td>';
    if (c.img) return '<td class="name"><a href="' + r[c.img] + '"><img class="thumb" loading="lazy" src="' + r[c.img] + '" alt=""></a></td>';
    const t = c.num ? Number(v).toFixed(4) : String(v).replace(/[&<>"]/g, ch => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[ch]));
    return '<td' + (c.num ? '' : ' class="name"') + '>' + (c.link ? '<a href="' + r[c.link] + '">' + t + '</a>' : t) + '</td>';
  }
  function render() {
    const words = q.value.toLowerCase().split(/\\s+/).filter(Boolean);
    let idx = data.map((_, i) => i).filter(i => words.every(w => text[i].includes(w)));
    if (sortCol != null) {
      const k = columns[sortCol].key, num = columns[sortCol].num;
      idx.sort((a, b) => { let x = data[a][k], y = data[b][k];
        if (x == null || x === '') return 1; if (y == null || y === '') return -1;
        return (num ? x - y : String(x).localeCompare(String(y))) * sortDir; });
    }
    body.innerHTML = idx.slice(0, shown).map(i => '<tr>' + columns.map(c => cell(c, data[i])).join('') + '</tr>').join('');
    info.textContent = idx.length + ' of ' + data.length + ' rows match' + (idx.length > shown ? ', first ' + shown + ' shown (refine the search)' : '');
  }
  q.oninput = render; render();
}
</script>""" % {"page": PAGE_ROWS}


def _json_script(obj) -> str:
    """``obj`` as JSON safe inside a <script> element."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _clean(v):
    """A JSON value: None for missing / non-finite numbers."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def browse_rows(summary: pd.DataFrame, videos: Mapping[str, Mapping], methods: Sequence[str]) -> list[dict]:
    """One record per (method, video) of ``summary``'s video level (per-video means of every
    metric), for every video of ``videos`` (video id -> ``{"caption": ...}``) and method of
    ``methods``; a pair without a summary row has no values (a failed job is visible)."""
    by_key = {}
    if len(summary):
        rows = summary[summary["level"] == "video"]
        cols = ["method", "video_id", "n_samples"] + [f"{m}_mean" for m, _, _ in METRIC_SPECS]
        for r in rows[[c for c in cols if c in rows]].to_dict("records"):
            by_key[(r["method"], r["video_id"])] = r
    out = []
    for method in methods:
        for video, info in videos.items():
            r = by_key.get((method, video), {})
            rec = {"method": method, "video_id": video, "caption": info.get("caption"),
                   "n_samples": _clean(r.get("n_samples"))}
            for m, _, _ in METRIC_SPECS:
                rec[m] = _clean(r.get(f"{m}_mean"))
            out.append(rec)
    return out


def _table_page(title: str, intro: str, data: list[dict], columns: list[dict], sort: int | None) -> str:
    body = (f"{intro}\n<p><input id=\"q\" class=\"search\" type=\"search\" "
            "placeholder=\"search (video, caption, ...)\" autofocus> <span id=\"info\" class=\"note\"></span></p>\n"
            "<table><thead id=\"head\"></thead><tbody id=\"body\"></tbody></table>\n"
            f"<script>mmTable({_json_script(data)}, {_json_script(columns)}, {json.dumps(sort)});</script>")
    return _page(title, body, extra_head=_TABLE_JS)


def _present_metrics(rows: list[dict]) -> list[tuple[str, str, bool]]:
    return [spec for spec in METRIC_SPECS if any(r.get(spec[0]) is not None for r in rows)]


def browse_index_html(rows: list[dict], methods: Sequence[str], descriptions: Mapping[str, str] | None = None,
                      metric: str | None = None) -> str:
    """The report's entry point for many videos: links to one page per method and a searchable,
    sortable table with one row per video (its page, caption, and per method the per-video mean
    of ``metric``, default the first metric computed). ``rows``: :func:`browse_rows`."""
    descriptions = descriptions or {}
    present = _present_metrics(rows)
    metric = metric or (present[0][0] if present else METRIC_SPECS[0][0])
    label = next((lab for m, lab, _ in METRIC_SPECS if m == metric), metric)
    per_video: dict[str, dict] = {}
    for r in rows:
        v = per_video.setdefault(r["video_id"], {"video_id": r["video_id"], "caption": r["caption"],
                                                 "page": f"videos/{r['video_id']}/index.html"})
        v[f"m:{r['method']}"] = r.get(metric)
    data = list(per_video.values())
    columns = [{"key": "video_id", "label": "Video", "link": "page"}, {"key": "caption", "label": "Caption"}]
    columns += [{"key": f"m:{m}", "label": _esc(m), "num": True} for m in methods]
    links = "".join(f'<li><a href="methods/{_esc(m)}.html">{_esc(m)}</a> <small>{_esc(descriptions.get(m, ""))}'
                    "</small></li>" for m in methods)
    intro = (f"<p class=\"note\">{len(data)} reference videos &times; {len(methods)} methods. One page per "
             "method (every metric per video, contact sheets):</p>"
             f"<ul>{links}</ul><p class=\"note\">Per video below: its page (the reference and every "
             f"method's samples playing side by side) and each method's mean <b>{_esc(label)}</b> over "
             "the video's samples. Search matches any cell; click a column to sort.</p>")
    return _table_page("Browse: videos and methods", intro, data, columns, None)


def method_page_html(rows: list[dict], method: str, description: str = "") -> str:
    """One method: a searchable, sortable table of its videos (link to the video's page, its
    contact sheet, and the per-video mean of every metric computed). ``rows``: :func:`browse_rows`
    (only ``method``'s are used); links are relative to ``methods/<method>.html``."""
    mine = [dict(r) for r in rows if r["method"] == method]
    for r in mine:
        r["page"] = f"../videos/{r['video_id']}/index.html"
        r["sheet"] = f"../videos/{r['video_id']}/sheets/{method}.png"
    columns = [{"key": "video_id", "label": "Video", "link": "page"}, {"key": "caption", "label": "Caption"},
               {"key": "sheet", "label": "Contact sheet", "img": "sheet"},
               {"key": "n_samples", "label": "Samples", "num": True}]
    columns += [{"key": m, "label": f"{_esc(lab)} {'&uarr;' if hi else '&darr;'}", "num": True}
                for m, lab, hi in _present_metrics(mine)]
    intro = (f"<p class=\"note\"><a href=\"../index.html\">&larr; all videos</a>. Method <b>{_esc(method)}</b>"
             f"{': ' + _esc(description) if description else ''}; per reference video the mean of each "
             "metric over its samples (&uarr; higher is better, &darr; lower is better).</p>")
    return _table_page(f"Method {method}", intro, mine, columns, None)


# ---- provenance ------------------------------------------------------------------------------


def provenance_html(config: Mapping, code_version: str, libraries: Mapping[str, str],
                    facts: Mapping[str, Sequence[str]] | None = None) -> str:
    """The configuration as run (YAML), the code version and library versions, plus ``facts``
    (e.g. model identities / metric config hashes found in the result tables)."""
    import yaml

    rows = [_tr([_td("code version (git describe)", "name"), _td(code_version, "name")])]
    rows += [_tr([_td(k, "name"), _td(v, "name")]) for k, v in libraries.items()]
    rows += [_tr([_td(k, "name"), _td(", ".join(map(str, values)), "name")])
             for k, values in (facts or {}).items()]
    cfg = yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False, width=100)
    body = (f"<table>{''.join(rows)}</table>\n<h2>Configuration</h2>\n<p class=\"note\">The merged "
            "configuration of this run (config/config.yaml, then --configfile / --config).</p>"
            f"<pre>{_esc(cfg)}</pre>")
    return _page("Provenance: configuration and code version", body)

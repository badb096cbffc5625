"""Result tables: `aggregate_samples` (concatenate the per-(method, video) metric tables) and
`summary` (per-method and per-(method, video) statistics, Parquet + Markdown)."""
from pathlib import Path

import pandas as pd

from motionmatcher.runtime import setup_script
from motionmatcher.summary import (concat_metric_tables, difficulty_markdown, statistics_markdown, summarize,
                                   summary_markdown)
from motionmatcher.tables import METRICS, SUMMARY, write_table

log = setup_script(snakemake)
inp, out = snakemake.input, snakemake.output

if snakemake.rule == "aggregate_samples":
    table = concat_metric_tables((pd.read_parquet(path) for path in inp.tables), METRICS.names)
    write_table(table, METRICS, out.table)
    log.info("%d samples from %d tables -> %s", len(table), len(inp.tables), out.table)

elif snakemake.rule == "summary":
    samples = pd.read_parquet(inp.samples)
    reference = pd.concat([pd.read_parquet(path) for path in inp.reference], ignore_index=True)
    # paired differences against `report.reference_method` (default motionmatcher)
    paired_reference = (snakemake.config.get("report") or {}).get("reference_method", "motionmatcher")
    summary = summarize(samples, reference, method_order=list(snakemake.params.methods),
                        paired_reference=paired_reference)
    write_table(summary, SUMMARY, out.table)
    markdown = Path(out.markdown)
    tmp = markdown.with_name(markdown.name + ".tmp")
    by_difficulty = difficulty_markdown(samples, dict(snakemake.params.difficulty),
                                        method_order=list(snakemake.params.methods))
    title = f"MotionMatcher results: backbone {snakemake.params.backbone} (model {snakemake.params.model})"
    tmp.write_text(summary_markdown(summary, reference, samples, title=title) + "\n" + statistics_markdown(summary)
                   + ("\n" + by_difficulty if by_difficulty else ""), encoding="utf-8")
    tmp.replace(markdown)
    log.info("%d method rows, %d video rows -> %s, %s", (summary["level"] == "method").sum(),
             (summary["level"] == "video").sum(), out.table, out.markdown)

else:
    raise RuntimeError(f"workflow_scripts/summary.py does not serve rule {snakemake.rule!r}")

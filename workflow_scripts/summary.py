"""Result tables: `aggregate_samples` (concatenate the per-(method, video) metric tables) and
`summary` (per-method and per-(method, video) statistics, Parquet + Markdown)."""
import pandas as pd

from motionmatcher.files.atomic import write_text_atomic
from motionmatcher.jobs.rule_script import setup_script
from motionmatcher.files.table_schemas import METRICS, SUMMARY, read_table, write_table
from motionmatcher.results.summary_tables import (aggregate_metric_tables, difficulty_markdown,
                                                  statistics_markdown, summarize, summary_markdown)

log = setup_script(snakemake)
inp, out = snakemake.input, snakemake.output

if snakemake.rule == "aggregate_samples":
    n = aggregate_metric_tables(inp.tables, out.table, METRICS)  # streaming: memory bounded
    log.info("%d samples from %d tables -> %s", n, len(inp.tables), out.table)

elif snakemake.rule == "summary":
    samples = read_table(inp.samples)
    reference = pd.concat([read_table(path) for path in inp.reference], ignore_index=True)
    # paired differences against `report.reference_method` (default motionmatcher)
    paired_reference = (snakemake.config.get("report") or {}).get("reference_method", "motionmatcher")
    summary = summarize(samples, reference, method_order=list(snakemake.params.methods),
                        paired_reference=paired_reference)
    write_table(summary, SUMMARY, out.table)
    by_difficulty = difficulty_markdown(samples, dict(snakemake.params.difficulty),
                                        method_order=list(snakemake.params.methods))
    title = f"MotionMatcher results: backbone {snakemake.params.backbone} (model {snakemake.params.model})"
    write_text_atomic(out.markdown, summary_markdown(summary, reference, samples, title=title) + "\n"
                      + statistics_markdown(summary) + ("\n" + by_difficulty if by_difficulty else ""))
    log.info("%d method rows, %d video rows -> %s, %s", (summary["level"] == "method").sum(),
             (summary["level"] == "video").sum(), out.table, out.markdown)

else:
    raise RuntimeError(f"workflow_scripts/summary.py does not serve rule {snakemake.rule!r}")

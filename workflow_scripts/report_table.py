"""Report: Table 1 (results/tables/summary.parquet) as an HTML page."""
from pathlib import Path


from motionmatcher.files.table_schemas import read_table
from motionmatcher.results.report import setup_report_script, summary_html
from motionmatcher.files.atomic import write_text_atomic

log = setup_report_script(snakemake)
summary = read_table(snakemake.input.summary)
notes = Path(snakemake.input.markdown).read_text(encoding="utf-8")
write_text_atomic(snakemake.output.html, summary_html(summary, snakemake.params.descriptions, notes))
log.info("%d rows -> %s", len(summary), snakemake.output.html)

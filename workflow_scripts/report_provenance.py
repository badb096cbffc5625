"""Report: the configuration as run, the code version and library versions."""

from motionmatcher.files.table_schemas import read_table
from motionmatcher.results.report import provenance_html, setup_report_script
from motionmatcher.files.atomic import write_text_atomic
from motionmatcher.jobs.provenance import library_versions

log = setup_report_script(snakemake)
samples = read_table(snakemake.input.samples)
columns = ("model_identity", "code_version", "config_hash", "tracker", "clip_model", "clip_weights")
facts = {col: sorted(samples[col].dropna().astype(str).unique()) for col in columns if col in samples}
facts = {f"samples: {k}": v for k, v in facts.items()}
write_text_atomic(snakemake.output.html, provenance_html(snakemake.config, snakemake.params.code_version,
                                                         library_versions(), facts))
log.info("-> %s", snakemake.output.html)

"""Report plots: `report_metric_plot` (one metric, all methods) and `report_training_curve`
(the training-loss curves of one method over its videos)."""
import pandas as pd

from motionmatcher.files.table_schemas import read_table
from motionmatcher.results.report import metric_plot, setup_report_script, training_plot

log = setup_report_script(snakemake)
if snakemake.rule == "report_metric_plot":
    samples = read_table(snakemake.input.samples)
    metric_plot(samples, snakemake.wildcards.metric, snakemake.output.png, list(snakemake.params.methods))
elif snakemake.rule == "report_training_curve":
    logs = pd.concat([read_table(p) for p in snakemake.input.logs], ignore_index=True)
    training_plot(logs, snakemake.wildcards.method, snakemake.output.png)
else:
    raise RuntimeError(f"workflow_scripts/report_plots.py does not serve rule {snakemake.rule!r}")
log.info("-> %s", snakemake.output.png)

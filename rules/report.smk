# The Snakemake report: `snakemake --report report.zip` after a run (report/workflow.rst).
#
#   report_table           Table 1 (results/tables/summary.parquet) as HTML, with 95% CIs and paired
#                          differences against `report.reference_method`
#   report_metric_plot     per metric: every method, per-video means, method mean + 95% CI (PNG)
#   report_training_curve  per trained method: loss curves over its videos (PNG)
#   report_browse          the report's "Browse" item: an index of every video (searchable,
#                          sortable, linking to its page), one page per method (every video's
#                          metrics and contact sheet) and one folder per video (index.html playing
#                          the reference and every method's samples side by side, each method's
#                          contact sheet; the mp4s and PNGs hard-linked in). One job and one report
#                          item whatever the number of videos (issue 21: 10,000 videos)
#   report_provenance      the merged config, code version (git describe), library versions
#
# All are local, cheap jobs (no torch, no GPU) in `rule all`; labels {video, method, metric} let a
# reader filter the report's tables.

wildcard_constraints:
    metric="|".join(SUMMARY_METRICS),


rule report_table:
    input:
        summary=f"{R}/tables/summary.parquet",
        markdown=f"{R}/tables/summary.md",
    output:
        html=report(f"{RP}/table1.html", caption="../report/table1.rst", category="Table 1",
                    labels={"table": "Table 1 (per method)"}),
    params:
        descriptions=_descriptions(),
    log:
        f"{R}/logs/report/table1.log",
    conda:
        ENV
    localrule: True
    script:
        "../workflow_scripts/report_table.py"


rule report_metric_plot:
    input:
        samples=f"{R}/tables/samples.parquet",
    output:
        png=report(f"{RP}/metrics/{{metric}}.png", caption="../report/metric_plot.rst", category="Metrics",
                   labels={"metric": "{metric}"}),
    params:
        methods=config["run_methods"],
    log:
        f"{R}/logs/report/metric_{{metric}}.log",
    conda:
        ENV
    localrule: True
    script:
        "../workflow_scripts/report_plots.py"


rule report_training_curve:
    input:
        logs=lambda wc: expand(f"{R}/customize/{wc.method}/{{video}}/train_log.parquet", video=VIDEOS.index),
    output:
        png=report(f"{RP}/training/{{method}}.png", caption="../report/training_curve.rst",
                   category="Training", labels={"method": "{method}"}),
    log:
        f"{R}/logs/report/training_{{method}}.log",
    conda:
        ENV
    localrule: True
    script:
        "../workflow_scripts/report_plots.py"


rule report_browse:
    input:
        summary=f"{R}/tables/summary.parquet",
        # every sample's row (its mp4, metrics); the contact sheets and previews named below are
        # upstream of it, so not listed one by one (O(1) inputs whatever the number of videos)
        samples=f"{R}/tables/samples.parquet",
    output:
        browse=report(directory(f"{RP}/browse"), htmlindex="index.html", caption="../report/browse.rst",
                      category="Browse", labels={"page": "videos and methods"}),
    params:
        methods=config["run_methods"],
        captions={v: r["caption"] for v, r in _VIDEO_ROWS.items()},
        descriptions=_descriptions(),
        # where each video's preview and each (method, video)'s contact sheet are (a dict: not
        # formatted with wildcards by Snakemake)
        layout={"reference": f"{R}/preprocess/{{video}}/preview.mp4",
                "sheet": f"{R}/samples/{{method}}/{{video}}/contact_sheet.png"},
        max_samples_per_method=REPORT.get("max_samples_per_method"),
    log:
        f"{R}/logs/report/browse.log",
    conda:
        ENV
    localrule: True
    script:
        "../workflow_scripts/report_browse.py"


rule report_provenance:
    input:
        samples=f"{R}/tables/samples.parquet",
    output:
        html=report(f"{RP}/provenance.html", caption="../report/provenance.rst", category="Provenance",
                    labels={"page": "config and code version"}),
    params:
        code_version=code_version(),
    log:
        f"{R}/logs/report/provenance.log",
    conda:
        ENV
    localrule: True
    script:
        "../workflow_scripts/report_provenance.py"

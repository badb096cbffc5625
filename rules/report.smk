# The Snakemake report: `snakemake --report report.zip` after a run (report/workflow.rst).
#
#   report_table           Table 1 (results/tables/summary.parquet) as HTML, with 95% CIs and paired
#                          differences against `report.reference_method`
#   report_metric_plot     per metric: every method, per-video means, method mean + 95% CI (PNG)
#   report_training_curve  per trained method: loss curves over its videos (PNG)
#   report_video_page      per video: a folder with index.html playing the reference and every
#                          method's samples side by side (the mp4s are copied in; zip report only)
#   report_contact_sheet   per (method, video): the sample rule's contact sheet, for the report
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
        descriptions=lambda wc: _descriptions(),
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


rule report_video_page:
    input:
        reference=f"{R}/preprocess/{{video}}/preview.mp4",
        metrics=expand(f"{R}/metrics/{{method}}/{{{{video}}}}.parquet", method=config["run_methods"]),
        videos=expand(f"{R}/samples/{{method}}/{{{{video}}}}/videos", method=config["run_methods"]),
    output:
        page=report(directory(f"{RP}/videos/{{video}}"), htmlindex="index.html",
                    caption="../report/video_page.rst", category="Samples", labels={"video": "{video}"}),
    params:
        methods=config["run_methods"],
        caption=video_param("caption"),
        descriptions=lambda wc: _descriptions(),
        max_samples_per_method=REPORT.get("max_samples_per_method"),
    log:
        f"{R}/logs/report/video_{{video}}.log",
    conda:
        ENV
    localrule: True
    script:
        "../workflow_scripts/report_video_page.py"


rule report_contact_sheet:
    input:
        f"{R}/samples/{{method}}/{{video}}/contact_sheet.png",
    output:
        report(f"{RP}/contact_sheets/{{method}}/{{video}}.png", caption="../report/contact_sheet.rst",
               category="Contact sheets", subcategory="{video}",
               labels={"video": "{video}", "method": "{method}"}),
    log:
        f"{R}/logs/report/contact_sheet_{{method}}_{{video}}.log",
    conda:
        ENV
    localrule: True
    shell:
        "cp {input:q} {output:q} 2> {log:q}"


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

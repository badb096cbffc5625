# MotionMatcher: motion customization of text-to-video diffusion models, at dataset scale.
# This file only sets up and includes; the stages live in rules/, one .smk each.

import os

from snakemake.utils import min_version

min_version("9.0")


# The demo config; `--configfile` / `--config` on the command line override it.
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "rules/common.smk"
include: "rules/model.smk"
include: "rules/preprocess.smk"
include: "rules/latents.smk"
include: "rules/customize.smk"
include: "rules/sample.smk"
include: "rules/metrics.smk"
include: "rules/aggregate.smk"
include: "rules/report.smk"


report: "report/workflow.rst"


rule all:
    input:
        all_outputs(),
        report_outputs(),
    default_target: True

# Metrics of every sample and the result tables.
#
#   metrics_check      once per run: loads the configured scorers (CLIP, ImageReward, tracker) on
#                      the configured device; missing weights fail here, at the start of the run
#                      (high priority, needs no input), with the message of
#                      motionmatcher.metrics.MetricUnavailable naming the config keys to set --
#                      not after training. Every metrics job waits for it.
#   metrics            per video: CLIP-T, frame consistency, ImageReward, motion discrepancy /
#                      fidelity of every method's samples vs the reference clip (one table per
#                      video, a row per sample of every method), and the reference vs its own
#                      caption (the scale of CLIP-T). One job and one table per video, not per
#                      (method, video) plus one for the reference (issue 21: 8 jobs and 6 files
#                      per video less with the seven Table-1 methods; the scorers load once per
#                      video). A method added to run_methods re-scores the video's other methods
#                      too (cheap next to sampling).
#   aggregate_samples  results/tables/samples.parquet: all per-sample rows (streaming concat)
#   summary            results/tables/summary.{parquet,md}: per method and per (method, video)
#
# Both metrics rules run CLIP (and ImageReward when configured) on config["device"], so they
# request a GPU unless device is cpu (motionmatcher.metrics.evaluate.metrics_gpus; LK tracking
# alone needs none).

from motionmatcher.metrics.evaluate import metrics_gpus


rule metrics_check:
    output:
        record=f"{R}/metrics_check.json",
    params:
        metrics=config["metrics"],
        device=config["device"],
    log:
        f"{R}/logs/metrics_check.log",
    conda:
        ENV
    priority: 100
    threads: 2
    resources:
        mem_mb=6000,
        runtime=20,
        gpu=metrics_gpus(config, "metrics_check"),
    script:
        "../workflow_scripts/metrics.py"


rule metrics:
    input:
        samples=expand(f"{R}/samples/{{method}}/{{{{video}}}}/samples.parquet", method=config["run_methods"]),
        reference=f"{R}/preprocess/{{video}}/frames.safetensors",
        check=rules.metrics_check.output.record,
    output:
        table=f"{R}/metrics/{{video}}.parquet",  # every method's rows, in the order of params.methods
        reference=f"{R}/metrics_reference/{{video}}.parquet",
    params:
        methods=config["run_methods"],
        # each method's settings with this video's overrides (the rows' config_hash)
        method_configs=lambda wc: {m: method_config(config, m, wc.video) for m in config["run_methods"]},
        metrics=config["metrics"],
        video=V,
        video_path=video_param("video_path"),  # its <stem>.gt.json sidecar: toy ground truth
        caption=video_param("caption"),
        start_frame=video_param("start_frame"),
        height=V["height"],
        width=V["width"],
        device=config["device"],
    log:
        f"{R}/logs/metrics/{{video}}.log",
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,  # every method of the video
        gpu=metrics_gpus(config, "metrics"),
    script:
        "../workflow_scripts/metrics.py"


rule aggregate_samples:
    input:
        tables=expand(f"{R}/metrics/{{video}}.parquet", video=VIDEOS.index),
    output:
        table=f"{R}/tables/samples.parquet",
    params:
        methods=config["run_methods"],
    log:
        f"{R}/logs/tables/aggregate_samples.log",
    conda:
        ENV
    localrule: True
    script:
        "../workflow_scripts/summary.py"


rule summary:
    input:
        samples=rules.aggregate_samples.output.table,
        reference=expand(f"{R}/metrics_reference/{{video}}.parquet", video=VIDEOS.index),
    output:
        table=f"{R}/tables/summary.parquet",
        markdown=f"{R}/tables/summary.md",
    params:
        methods=config["run_methods"],
        backbone=BACKBONE.name,
        model=config["model"],
        # MTBench's split per video (manifest column `difficulty`): summary.md breaks mtbench_fidelity down by it
        difficulty={v: d for v, d in VIDEOS.get("difficulty", {}).items() if isinstance(d, str) and d},
    log:
        f"{R}/logs/tables/summary.log",
    conda:
        ENV
    localrule: True
    script:
        "../workflow_scripts/summary.py"

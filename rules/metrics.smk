# Metrics of every sample and the result tables.
#
#   metrics            per (method, video): CLIP-T, frame consistency, ImageReward, motion
#                      discrepancy / fidelity of each sample vs the reference clip
#   reference_metrics  per video: the reference clip vs its own caption (scale of CLIP-T)
#   aggregate_samples  results/tables/samples.parquet: all per-sample rows (cheap concat)
#   summary            results/tables/summary.{parquet,md}: per method and per (method, video)
#
# A new method or video only adds metrics jobs; the concat and the summary are re-made.
# Missing CLIP weights fail at the start of the first metrics / reference_metrics job (before
# any tracking) with the message of motionmatcher.metrics.MetricUnavailable, which names the
# config keys to set; reference_metrics only needs the preprocessed frames and has a high
# priority, so on a real run that failure comes within minutes, not after training.
# Both rules run CLIP (and ImageReward when configured) on config["device"], so they request a
# GPU unless device is cpu (motionmatcher.metrics.evaluate.metrics_gpus; LK tracking alone needs none).

from motionmatcher.metrics.evaluate import metrics_gpus


rule metrics:
    input:
        samples=f"{R}/samples/{{method}}/{{video}}/samples.parquet",
        reference=f"{R}/preprocess/{{video}}/frames.safetensors",
    output:
        table=f"{R}/metrics/{{method}}/{{video}}.parquet",
    params:
        metrics=config["metrics"],
        method_config=lambda wc: method_config(config, wc.method, wc.video),  # with its per-video overrides
        video=V,
        video_path=video_param("video_path"),  # its <stem>.gt.json sidecar: toy ground truth
        start_frame=video_param("start_frame"),
        height=V["height"],
        width=V["width"],
        device=config["device"],
    log:
        f"{R}/logs/metrics/{{method}}/{{video}}.log",
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=metrics_gpus(config, "metrics"),
    script:
        "../workflow_scripts/metrics.py"


# Not under results/metrics/: a method may be called "reference".
rule reference_metrics:
    input:
        frames=f"{R}/preprocess/{{video}}/frames.safetensors",
    output:
        table=f"{R}/metrics_reference/{{video}}.parquet",
    params:
        caption=video_param("caption"),
        metrics=config["metrics"],
        video=V,
        height=V["height"],
        width=V["width"],
        device=config["device"],
    log:
        f"{R}/logs/metrics_reference/{{video}}.log",
    conda:
        ENV
    priority: 10
    threads: 2
    resources:
        mem_mb=6000,
        runtime=20,
        gpu=metrics_gpus(config, "reference_metrics"),
    script:
        "../workflow_scripts/reference_metrics.py"


rule aggregate_samples:
    input:
        tables=expand(
            f"{R}/metrics/{{method}}/{{video}}.parquet", method=config["run_methods"], video=VIDEOS.index
        ),
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

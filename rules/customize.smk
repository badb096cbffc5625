rule customize:
    input:
        latents=rules.cache_latents.output.latents,
        model=MODEL_DIR,
    output:
        adapter=f"{R}/customize/{{method}}/{{video}}/adapter/adapter_model.safetensors",
        adapter_config=f"{R}/customize/{{method}}/{{video}}/adapter/adapter_config.json",
        train_log=f"{R}/customize/{{method}}/{{video}}/train_log.parquet",
        record=f"{R}/customize/{{method}}/{{video}}/run.json",
    params:
        train=lambda wc: method_config(config, wc.method, wc.video)["train"],
        video_override=lambda wc: video_override(config, wc.method, wc.video),
        caption=video_param("caption"),
        n_frames=V["n_frames"],
        seed=config["seed"],
        checkpoint_dir=lambda wc: f"{C}/checkpoints/{MODEL_TAG}/{wc.method}/{wc.video}",
        device=config["device"],
        dtype=config["dtype"],
    log:
        f"{R}/logs/customize/{{method}}/{{video}}.log",
    conda:
        ENV
    threads: 2
    retries: 2  # only after a CUDA out-of-memory, at the next memory level (motionmatcher/jobs/memory_levels.py: check_retry)
    resources:
        mem_mb=lambda wc: method_config(config, wc.method, wc.video)["resources"]["mem_mb"],
        runtime=lambda wc: method_config(config, wc.method, wc.video)["resources"]["runtime"],
        gpu=1,
        attempt=lambda wc, attempt: attempt,
    script:
        "../workflow_scripts/customize.py"

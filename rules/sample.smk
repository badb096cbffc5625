rule sample:
    input:
        unpack(sample_inputs),
    output:
        videos=directory(f"{R}/samples/{{method}}/{{video}}/videos"),
        table=f"{R}/samples/{{method}}/{{video}}/samples.parquet",
        sheet=f"{R}/samples/{{method}}/{{video}}/contact_sheet.png",
        record=f"{R}/samples/{{method}}/{{video}}/run.json",
    params:
        sample=lambda wc: method_config(config, wc.method, wc.video)["sample"],
        guidance=lambda wc: method_config(config, wc.method, wc.video)["guidance"],
        caption=video_param("caption"),
        inversion_prompt=config["inversion"]["prompt"],
        prompts=video_prompts,
        n_frames=V["n_frames"],
        width=V["width"],
        height=V["height"],
        fps=V["fps"],
        device=config["device"],
        dtype=config["dtype"],
    log:
        f"{R}/logs/sample/{{method}}/{{video}}.log",
    conda:
        ENV
    threads: 2
    retries: 2  # only after a CUDA out-of-memory, at the next memory level (motionmatcher/jobs/memory_levels.py: check_retry)
    resources:
        mem_mb=lambda wc: method_config(config, wc.method, wc.video)["sample_resources"]["mem_mb"],
        runtime=lambda wc: method_config(config, wc.method, wc.video)["sample_resources"]["runtime"],
        gpu=1,
        attempt=lambda wc, attempt: attempt,
    script:
        "../workflow_scripts/sample.py"

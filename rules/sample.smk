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
        video_path=video_param("video_path"),  # its <stem>.gt.json sidecar: the contact sheet's ground-truth path
        inversion_prompt=config["inversion"]["prompt"],
        # True: invert the reference's latents with the method's weights here (was rule method_inversion)
        invert=lambda wc: inverts_with_method(wc.method, wc.video),
        inversion_steps=config["inversion"]["num_steps"],
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
        # + the inversion with the method's weights, where the job does it (rule method_inversion's 30 min)
        runtime=lambda wc: method_config(config, wc.method, wc.video)["sample_resources"]["runtime"]
        + (30 if inverts_with_method(wc.method, wc.video) else 0),
        gpu=1,
        attempt=lambda wc, attempt: attempt,
    script:
        "../workflow_scripts/sample.py"

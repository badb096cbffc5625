rule cache_latents:
    input:
        frames=rules.preprocess.output.frames,
        model=MODEL_DIR,
    output:
        latents=f"{C}/latents/{MODEL_TAG}/{{video}}.safetensors",
    params:
        chunk_size=config["latents"]["chunk_size"],
        n_frames=V["n_frames"],
        height=V["height"],
        width=V["width"],
        device=config["device"],
        dtype=config["dtype"],
    log:
        f"{R}/logs/cache_latents/{{video}}.log",
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=16000,
        runtime=20,
        gpu=1,
    script:
        "../workflow_scripts/cache_latents.py"


rule cache_inversion:
    input:
        latents=rules.cache_latents.output.latents,
        model=MODEL_DIR,
    output:
        inversion=f"{C}/inversion/{MODEL_TAG}/{{video}}.safetensors",
    params:
        num_steps=config["inversion"]["num_steps"],
        n_frames=V["n_frames"],
        prompt=config["inversion"]["prompt"],
        device=config["device"],
        dtype=config["dtype"],
    log:
        f"{R}/logs/cache_inversion/{{video}}.log",
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=16000,
        runtime=30,
        gpu=1,
    script:
        "../workflow_scripts/cache_inversion.py"


rule method_inversion:
    input:
        latents=rules.cache_latents.output.latents,
        model=MODEL_DIR,
        adapter=f"{R}/customize/{{method}}/{{video}}/adapter/adapter_model.safetensors",
    output:
        inversion=f"{R}/inversion/{{method}}/{{video}}.safetensors",
    params:
        n_frames=V["n_frames"],
        num_steps=config["inversion"]["num_steps"],
        prompt=config["inversion"]["prompt"],
        parts=lambda wc: method_config(config, wc.method, wc.video)["sample"].get("load_parts"),
        device=config["device"],
        dtype=config["dtype"],
    log:
        f"{R}/logs/method_inversion/{{method}}/{{video}}.log",
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=16000,
        runtime=30,
        gpu=1,
    script:
        "../workflow_scripts/cache_inversion.py"

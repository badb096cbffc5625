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



# The noise prior of a trained method (DDIM inversion with its own weights, as the official code
# inverts) is computed inside its `sample` job since issue 21 (one job per (method, video) less,
# one model load less): the sample job loads the method's weights anyway, inverts, writes the
# result to <results_dir>/samples/<method>/<video>/videos/inversion.safetensors and samples.

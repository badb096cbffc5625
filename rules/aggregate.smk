rule videos_table:
    input:
        info=expand(f"{R}/preprocess/{{video}}/info.json", video=VIDEOS.index),
        latents=expand(f"{C}/latents/{MODEL_TAG}/{{video}}.safetensors", video=VIDEOS.index),
        inversion=expand(f"{C}/inversion/{MODEL_TAG}/{{video}}.safetensors", video=VIDEOS.index),
    output:
        table=f"{R}/tables/videos.parquet",
    params:
        manifest=MANIFEST.to_dict("records"),
    log:
        f"{R}/logs/videos_table.log",
    conda:
        ENV
    localrule: True
    script:
        "../workflow_scripts/videos_table.py"

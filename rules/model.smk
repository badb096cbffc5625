rule build_tiny_model:
    output:
        directory(f"{C}/models/{TINY_MODEL}"),
    params:
        seed=0,
        name=TINY_MODEL,
    log:
        f"{R}/logs/build_tiny_model.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/build_tiny_model.py"

rule build_tiny_model:
    output:
        directory(f"{C}/models/{{tiny}}"),
    wildcard_constraints:
        tiny="|".join(TINY_MODELS),
    params:
        seed=0,
    log:
        f"{R}/logs/build_tiny_model/{{tiny}}.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/build_tiny_model.py"

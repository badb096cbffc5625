def sample_inputs(wc):
    return {
        "model": MODEL_DIR,
        "frames": f"{R}/preprocess/{wc.video}/frames.safetensors",
        "inversion": f"{C}/inversion/{MODEL_TAG}/{wc.video}.safetensors",
        "adapter": adapter_input(wc),
    }


def video_prompts(wc):
    rows = MANIFEST[MANIFEST["video_id"] == wc.video]
    return rows[["row", "prompt_id", "prompt"]].to_dict("records")


rule sample:
    input:
        unpack(sample_inputs),
    output:
        videos=directory(f"{R}/samples/{{method}}/{{video}}/videos"),
        table=f"{R}/samples/{{method}}/{{video}}/samples.parquet",
        sheet=f"{R}/samples/{{method}}/{{video}}/contact_sheet.png",
    params:
        sample=lambda wc: method_config(config, wc.method)["sample"],
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
    resources:
        mem_mb=24000,
        runtime=120,
        gpu=1,
    script:
        "../workflow_scripts/sample.py"

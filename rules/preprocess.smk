rule preprocess:
    input:
        video=video_param("video_path"),
        identity=video_identity,  # size + sha256: a replaced file reruns even if it is older
    output:
        frames=f"{R}/preprocess/{{video}}/frames.safetensors",
        preview=f"{R}/preprocess/{{video}}/preview.mp4",
        info=f"{R}/preprocess/{{video}}/info.json",
    params:
        n_frames=V["n_frames"],
        width=V["width"],
        height=V["height"],
        fps=V["fps"],
        start_frame=video_param("start_frame"),
        frame_step=video_param("frame_step"),
    log:
        f"{R}/logs/preprocess/{{video}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../workflow_scripts/preprocess.py"

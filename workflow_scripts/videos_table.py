"""The manifest as run: one row per reference video with its preprocessing facts."""
import json
from pathlib import Path

import pandas as pd

from motionmatcher.jobs.rule_script import setup_script
from motionmatcher.files.table_schemas import VIDEOS, write_table

log = setup_script(snakemake)
manifest = pd.DataFrame(snakemake.params.manifest)
rows = []
for info_path, lat, inv in zip(snakemake.input.info, snakemake.input.latents, snakemake.input.inversion):
    info = json.loads(Path(info_path).read_text())
    m = manifest[manifest["video_id"] == info["video_id"]]
    first = m.iloc[0]
    rows.append({
        **{k: info[k] for k in ("video_id", "source_fps", "source_width", "source_height",
                                 "source_num_frames", "frame_indices", "width", "height", "n_frames")},
        "video_path": first["video_path"],
        "caption": first["caption"],
        "n_prompts": len(m),
        "prompts": list(m["prompt"]),
        "start_frame": int(first["start_frame"]),
        "frame_step": int(first["frame_step"]),
        "frames_path": str(Path(info_path).with_name("frames.safetensors")),
        "preview_path": str(Path(info_path).with_name("preview.mp4")),
        "latents_path": lat,
        "inversion_path": inv,
    })
write_table(pd.DataFrame(rows), VIDEOS, snakemake.output.table)
log.info("%d videos -> %s", len(rows), snakemake.output.table)

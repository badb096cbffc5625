"""Decode a reference video, pick its frames, resize + center-crop, write tensor + preview."""
import json
from pathlib import Path

import torch

from motionmatcher.jobs.rule_script import setup_script
from motionmatcher.files.atomic import write_json
from motionmatcher.files.tensor_files import write_checked
from motionmatcher.files.video import read_video_frames, resize_center_crop, write_mp4

log = setup_script(snakemake)
p = snakemake.params
frames, info = read_video_frames(
    snakemake.input.video, int(p.n_frames), int(p.start_frame), int(p.frame_step)
)
log.info("%s: %d frames of %dx%d at %.3g fps; using indices %s",
         snakemake.input.video, info["num_frames"], info["width"], info["height"], info["fps"],
         info["frame_indices"])
frames = resize_center_crop(frames, int(p.width), int(p.height))
write_checked(snakemake.output.frames, {"frames": torch.from_numpy(frames)},
              metadata={"video": snakemake.input.video, "layout": "FHWC uint8 RGB"})
write_mp4(frames, snakemake.output.preview, fps=p.fps)
write_json(snakemake.output.info, {
    "video_id": snakemake.wildcards.video,
    "video_path": str(snakemake.input.video),
    "source_sha256": json.loads(Path(snakemake.input.identity).read_text())["sha256"],
    "source_size": json.loads(Path(snakemake.input.identity).read_text())["size"],
    "source_fps": info["fps"],
    "source_width": info["width"],
    "source_height": info["height"],
    "source_num_frames": info["num_frames"],
    "frame_indices": list(info["frame_indices"]),
    "width": int(p.width),
    "height": int(p.height),
    "n_frames": int(p.n_frames),
})

"""Score one reference clip against its own caption (the scale of the sample CLIP-T)."""
import sys

import pandas as pd

from motionmatcher.metrics.evaluate import (evaluate_reference, load_frames_file, load_scorers,
                                            metrics_config_hash)
from motionmatcher.metrics import MetricUnavailable
from motionmatcher.backbones.models import resolve_device
from motionmatcher.jobs.provenance import code_version
from motionmatcher.jobs.rule_script import setup_script
from motionmatcher.files.table_schemas import REFERENCE, write_table

log = setup_script(snakemake)
p = snakemake.params
wc = snakemake.wildcards
device = resolve_device(p.device)
frames = load_frames_file(snakemake.input.frames)  # verified before the models load

try:
    scorer, image_reward, _ = load_scorers(p.metrics, device, need_tracker=False)
except MetricUnavailable as e:
    log.error("%s", e)
    print(f"rule reference_metrics ({wc.video}): {e}", file=sys.__stderr__, flush=True)
    raise

if frames.shape[1:3] != (int(p.height), int(p.width)):
    raise ValueError(f"{snakemake.input.frames}: frames are {frames.shape[1]}x{frames.shape[2]} (HxW), "
                     f"the configured video size is {p.height}x{p.width}; re-run preprocess")
record = evaluate_reference(frames, p.caption, scorer, image_reward)
record.update(
    video_id=wc.video,
    caption=p.caption,
    frames_path=str(snakemake.input.frames),
    config_hash=metrics_config_hash(None, p.metrics, p.video, None),
    code_version=code_version(),
)
write_table(pd.DataFrame([record]), REFERENCE, snakemake.output.table)
log.info("reference %s: CLIP-T %.4f, frame consistency %.4f", wc.video, record["clip_t"],
         record["frame_consistency"])

"""Rule ``metrics``: score every method's samples of one reference video -- CLIP-T, frame
consistency, ImageReward, motion discrepancy and motion fidelity; one table, a row per sample
-- and the reference clip against its own caption (the scale of CLIP-T). The scorers load once
and the reference is tracked once for all methods.

Rule ``metrics_check``: load the configured scorers once at the start of a run, so that
missing weights fail there (not after training) with the how-to message."""
import json
import sys

import pandas as pd

from motionmatcher.metrics.evaluate import (clip_fields, evaluate_reference, evaluate_samples, image_reward_sha256,
                                            load_frames_file, load_scorers, metric_variants, metrics_config_hash)
from motionmatcher.metrics import MetricUnavailable
from motionmatcher.metrics.mtbench import mtbench_setup
from motionmatcher.metrics.groundtruth import load_ground_truth
from motionmatcher.backbones.models import resolve_device
from motionmatcher.files.atomic import write_text_atomic
from motionmatcher.jobs.provenance import code_version
from motionmatcher.jobs.rule_script import setup_script
from motionmatcher.files.table_schemas import METRICS, REFERENCE, read_table, write_table

log = setup_script(snakemake)
p = snakemake.params
wc = snakemake.wildcards
device = resolve_device(p.device)
where = f"rule {snakemake.rule}" + (f" ({wc.video})" if snakemake.rule == "metrics" else "")
# The cached frames first (cheap, verified: a damaged file is named with its rebuild command),
# then the models, so that missing weights fail before any tracking, with the how-to message
# (also on the console: stderr goes to the log file).
reference = load_frames_file(snakemake.input.reference) if snakemake.rule == "metrics" else None
try:
    scorer, image_reward, tracker = load_scorers(p.metrics, device)
except MetricUnavailable as e:
    log.error("%s", e)
    print(f"{where}: {e}", file=sys.__stderr__, flush=True)
    raise

if snakemake.rule == "metrics_check":
    record = {"device": str(device), **clip_fields(scorer), "tracker": tracker.name,
              "image_reward_weights_sha256": image_reward_sha256(image_reward)}
    write_text_atomic(snakemake.output.record, json.dumps(record, indent=1) + "\n")
    log.info("scorers load on %s: %s", device, record)
    sys.exit(0)

# MTBench: the box of the video's first-frame mask under metrics.mtbench.root (and, for
# reference: mtbench, the original full clip) -- docs/metrics_mtbench.md
mtbench_cfg = dict(p.metrics.get("mtbench") or {})
setup = None
if mtbench_cfg.get("enabled"):
    setup = mtbench_setup(mtbench_cfg, wc.video, p.video_path, (int(p.height), int(p.width)),
                          int(p.start_frame))

# every method's samples in one call (the reference tracked once), in the order of the methods
methods = list(p.methods)
samples = pd.concat([read_table(path) for path in snakemake.input.samples], ignore_index=True)
ground_truth = load_ground_truth(p.video_path, int(p.video["n_frames"]), (int(p.height), int(p.width)))
table = evaluate_samples(
    samples, reference, scorer, tracker, int(p.metrics["grid_size"]),
    image_reward=image_reward, expected_size=(int(p.height), int(p.width)),
    variants=metric_variants(p.metrics), mtbench=mtbench_cfg, mtbench_setup=setup,
    ground_truth=ground_truth,
)
table["config_hash"] = [metrics_config_hash(p.method_configs[m], p.metrics, p.video, s)
                        for m, s in zip(table["method"], table["seed"])]
table["code_version"] = code_version()
write_table(table, METRICS, snakemake.output.table)
log.info("%s samples of %s -> %s", " + ".join(str((table["method"] == m).sum()) for m in methods), wc.video,
         snakemake.output.table)

record = evaluate_reference(reference, p.caption, scorer, image_reward)
record.update(
    video_id=wc.video,
    caption=p.caption,
    frames_path=str(snakemake.input.reference),
    config_hash=metrics_config_hash(None, p.metrics, p.video, None),
    code_version=code_version(),
)
write_table(pd.DataFrame([record]), REFERENCE, snakemake.output.reference)
log.info("reference %s: CLIP-T %.4f, frame consistency %.4f", wc.video, record["clip_t"],
         record["frame_consistency"])

"""Score every sample of one (method, reference video): CLIP-T, frame consistency, ImageReward,
motion discrepancy and motion fidelity (models loaded once, reference tracked once)."""
import sys

import pandas as pd

from motionmatcher.metrics.evaluate import (evaluate_samples, load_frames_file, load_scorers, metric_variants,
                                            metrics_config_hash)
from motionmatcher.metrics import MetricUnavailable
from motionmatcher.metrics.mtbench import mtbench_setup
from motionmatcher.metrics.groundtruth import load_ground_truth
from motionmatcher.backbones.models import resolve_device
from motionmatcher.jobs.provenance import code_version
from motionmatcher.jobs.rule_script import setup_script
from motionmatcher.files.table_schemas import METRICS, read_table, write_table

log = setup_script(snakemake)
p = snakemake.params
wc = snakemake.wildcards
device = resolve_device(p.device)
reference = load_frames_file(snakemake.input.reference)

# The cached frames first (cheap, verified: a damaged file is named with its rebuild command),
# then the models, so that missing weights fail before any tracking, with the how-to message
# (also on the console: stderr goes to the log file).
try:
    scorer, image_reward, tracker = load_scorers(p.metrics, device)
except MetricUnavailable as e:
    log.error("%s", e)
    print(f"rule metrics ({wc.method}, {wc.video}): {e}", file=sys.__stderr__, flush=True)
    raise

# MTBench: the box of the video's first-frame mask under metrics.mtbench.root (and, for
# reference: mtbench, the original full clip) -- docs/metrics_mtbench.md
mtbench_cfg = dict(p.metrics.get("mtbench") or {})
setup = None
if mtbench_cfg.get("enabled"):
    setup = mtbench_setup(mtbench_cfg, wc.video, p.video_path, (int(p.height), int(p.width)),
                          int(p.start_frame))

samples = read_table(snakemake.input.samples)
ground_truth = load_ground_truth(p.video_path, int(p.video["n_frames"]), (int(p.height), int(p.width)))
table = evaluate_samples(
    samples, reference, scorer, tracker, int(p.metrics["grid_size"]),
    image_reward=image_reward, expected_size=(int(p.height), int(p.width)),
    variants=metric_variants(p.metrics), mtbench=mtbench_cfg, mtbench_setup=setup,
    ground_truth=ground_truth,
)
table["config_hash"] = [metrics_config_hash(p.method_config, p.metrics, p.video, s) for s in table["seed"]]
table["code_version"] = code_version()
write_table(table, METRICS, snakemake.output.table)
log.info("%d samples of %s/%s -> %s", len(table), wc.method, wc.video, snakemake.output.table)

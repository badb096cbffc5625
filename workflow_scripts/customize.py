"""Train one method's adapter on one reference video (the one training loop)."""
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from motionmatcher.jobs.memory_levels import apply_memory_level, memory_level, out_of_memory_hint
from motionmatcher.backbones import latent_frames_of, load_model
from motionmatcher.backbones.models import model_identity, resolve_device, resolve_dtype
from motionmatcher.jobs.provenance import code_version, library_versions
from motionmatcher.jobs.rule_script import setup_script
from motionmatcher.files.atomic import write_json
from motionmatcher.files.tensor_files import read_checked
from motionmatcher.customization.training import TrainConfig, train
from motionmatcher.customization.trained_weights import save_trained, trained_parts

log = setup_script(snakemake)
p = snakemake.params
wc = snakemake.wildcards
device = resolve_device(p.device)
dtype = resolve_dtype(p.dtype, device)
# checked before the model loads: hash, model identity, number of frames
latents = read_checked(snakemake.input.latents, device=device, model_identity=model_identity(snakemake.input.model),
                       shapes={"latents": [1, None, latent_frames_of(snakemake.input.model, p.n_frames), None, None]})[0]["latents"]
# fp32 master weights: the base is loaded in fp32 and the forward runs under autocast on GPU.
model = load_model(snakemake.input.model, device)
attempt = int(getattr(snakemake.resources, "attempt", 1))
level = memory_level(attempt, "train")
train_settings, memory_changes = apply_memory_level(dict(p.train), "train", level)
if memory_changes:
    log.info("attempt %d: memory level %d: %s", attempt, level, memory_changes)
cfg = TrainConfig.from_dict(train_settings)
label = f"video {wc.video}, method {wc.method}"
t0 = time.time()
start = {}  # resumed_from / resumed_at_step / skipped_checkpoints
with out_of_memory_hint("customize", "train", level, label):
    lcfg, frame = train(model, latents, p.caption, cfg, seed=int(p.seed),
                        checkpoint_dir=p.checkpoint_dir, dtype=dtype, label=label, record=start)
seconds = time.time() - t0
# adapter/: a plain peft adapter, or (declared `trainable:` parts) the trained tensors + index
save_trained(model.unet, Path(snakemake.output.adapter).parent, lcfg)
frame.insert(0, "video_id", wc.video)
frame.insert(1, "method", wc.method)
pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), snakemake.output.train_log)
write_json(snakemake.output.record, {
    "video_id": wc.video,
    "method": wc.method,
    "caption": p.caption,
    "train": train_settings,
    "memory": {"attempt": attempt, "level": level, "changed": memory_changes},
    "video_override": dict(p.video_override),  # this video's overrides, per method of the chain
    "seed": int(p.seed),
    "device": str(device),
    "dtype": str(dtype),
    "model": str(snakemake.input.model),
    "model_identity": model.identity,
    "latents": str(snakemake.input.latents),
    "seconds": seconds,
    "resume": start,
    "parts": trained_parts(Path(snakemake.output.adapter).parent),
    "final_loss": float(frame["loss"].iloc[-1]),
    "code_version": code_version(),
    "libraries": library_versions(),
})
log.info("%s: %d steps in %.1f s, final loss %.4g", label, len(frame), seconds, frame["loss"].iloc[-1])
# The adapter is saved: the resume checkpoints have served their purpose.
import shutil  # noqa: E402

shutil.rmtree(p.checkpoint_dir, ignore_errors=True)

"""Sample every target prompt x seed of one reference video with one method (model loaded once)."""
from pathlib import Path

import pandas as pd
import torch

from motionmatcher.customization.guidance import Reference
from motionmatcher.methods.registry import make_guidance
from motionmatcher.files.manifest import OBJECT_COLUMNS
from motionmatcher.jobs.memory_levels import apply_memory_level, memory_level, out_of_memory_hint
from motionmatcher.customization.inversion import invert_reference
from motionmatcher.backbones import latent_frames_of, load_model
from motionmatcher.backbones.models import model_identity, resolve_device, resolve_dtype
from motionmatcher.jobs.provenance import code_version, library_versions
from motionmatcher.jobs.rule_script import setup_script
from motionmatcher.metrics.groundtruth import load_ground_truth
from motionmatcher.files.atomic import write_json
from motionmatcher.files.tensor_files import NonFiniteError, read_checked, write_checked
from motionmatcher.customization.sampler import SamplingConfig, sample_videos
from motionmatcher.files.table_schemas import SAMPLES, write_table
from motionmatcher.customization.trained_weights import load_trained
from motionmatcher.files.video import contact_sheet, save_png, write_mp4

log = setup_script(snakemake)
p = snakemake.params
wc = snakemake.wildcards
device = resolve_device(p.device)
latent_shape = [1, None, latent_frames_of(snakemake.input.model, p.n_frames), None, None]
invert = bool(getattr(p, "invert", False))  # the noise prior: inverted here with the method's weights
if not invert:  # the base model's cached inversion (rule cache_inversion)
    inversion = read_checked(snakemake.input.inversion, device=device, model_identity=model_identity(snakemake.input.model),
                             shapes={"inversion": latent_shape})[0]["inversion"]
reference = read_checked(snakemake.input.frames, shapes={"frames": [int(p.n_frames), int(p.height), int(p.width), 3]})[0]
model = load_model(snakemake.input.model, device, resolve_dtype(p.dtype, device))
adapter = snakemake.input.get("adapter") or None
attempt = int(getattr(snakemake.resources, "attempt", 1))
level = memory_level(attempt, "sample")
s, memory_changes = apply_memory_level(dict(p.sample), "sample", level)
if memory_changes:
    log.info("attempt %d: memory level %d: %s", attempt, level, memory_changes)
loaded = {"lora": [], "full": []}
if adapter:  # all trained parts, or the method's `sample.load_parts` (MotionDirector: temporal)
    loaded = load_trained(model.unet, Path(adapter).parent, s.get("load_parts"))
    log.info("loaded parts %s", loaded)
cfg = SamplingConfig(**{k: s[k] for k in SamplingConfig.__dataclass_fields__ if k in s})
guidance = make_guidance(p.guidance)  # training-free methods (DMT, MotionClone); None otherwise
prefix = s.get("prompt_prefix") or ""  # DMT's official examples: "Amazing quality, masterpiece, "
if prefix:
    log.info("prompt prefix %r on the caption and every prompt", prefix)
guide_ref = None
if guidance is not None:
    ref_latents = read_checked(snakemake.input.latents, device=device, model_identity=model_identity(snakemake.input.model),
                               shapes={"latents": [1, None, latent_frames_of(snakemake.input.model, p.n_frames), None, None]})[0]["latents"]
    with torch.no_grad():
        guide_ref = Reference(ref_latents.float(), model.encode_prompt([prefix + p.caption]),
                              model.encode_prompt([p.inversion_prompt]), caption=prefix + p.caption)
    log.info("guidance %s: %s", guidance.name, p.guidance)

out_dir = Path(snakemake.output.videos)
out_dir.mkdir(parents=True, exist_ok=True)
if invert:  # was rule method_inversion (workflow_scripts/cache_inversion.py with an adapter)
    if not adapter:
        raise ValueError(f"method {wc.method}: inverting with the method's weights needs its adapter input")
    weights_dir = Path(adapter).parent
    inv_path = out_dir / "inversion.safetensors"
    inv_latents = read_checked(snakemake.input.latents, device=device, model_identity=model_identity(snakemake.input.model),
                               shapes={"latents": latent_shape})[0]["latents"].float()  # fp32
    with out_of_memory_hint("sample", "sample", level, f"video {wc.video}, method {wc.method}"), \
            NonFiniteError.naming(snakemake.output.table, [adapter, snakemake.input.latents]):
        # the method's parts are on the UNet already (load_trained above: `sample.load_parts`, as
        # the inversion loaded them), active at scale 1 until the sampler sets its schedule
        inversion = invert_reference(model, inv_latents, p.inversion_prompt, int(p.inversion_steps)).float()
    log.info("inverted with %s (parts: %s)", weights_dir, s.get("load_parts") or "all")
    write_checked(inv_path, {"inversion": inversion}, model_identity=model.identity,
                  step=f"DDIM inversion ({int(p.inversion_steps)} steps, weights {weights_dir})",
                  rebuild_target=snakemake.output.table,
                  inputs=[adapter, snakemake.input.latents], metadata={
        "shape": list(inv_latents.shape),
        "num_steps": int(p.inversion_steps),
        "prompt": p.inversion_prompt,
        "weights": str(weights_dir),
        "parts": ",".join(s["load_parts"]) if s.get("load_parts") else "all",
    })

rows = list(p.prompts)
inputs = [adapter, str(inv_path) if invert else snakemake.input.inversion, snakemake.input.get("latents") or None]
with out_of_memory_hint("sample", "sample", level, f"video {wc.video}, method {wc.method}"), \
        NonFiniteError.naming(snakemake.output.table, inputs):
    samples = sample_videos(
        model,
        [prefix + r["prompt"] for r in rows for _ in s["seeds"]],
        [seed for _ in rows for seed in s["seeds"]],
        n_frames=int(p.n_frames), height=int(p.height), width=int(p.width), cfg=cfg,
        inversion_latents=inversion, has_adapter=bool(loaded["lora"]),
        row_labels=[f"manifest row {r['row']} ({wc.video})" for r in rows for _ in s["seeds"]],
        guidance=guidance, reference=guide_ref,
        # per row: MotionClone's object words (manifest caption_object/prompt_object), if any
        guidance_inputs=[{k: r[k] for k in OBJECT_COLUMNS if r.get(k)} or None
                         for r in rows for _ in s["seeds"]],
    )

records, sheet_rows = [], [("reference", reference["frames"].numpy())]
meta = [(r, seed) for r in rows for seed in s["seeds"]]
for k, ((row, seed), smp) in enumerate(zip(meta, samples)):
    guided = guidance.sample_record(k) if guidance is not None else {}
    stem = f"{row['prompt_id']}_s{seed}"
    mp4, tensors = out_dir / f"{stem}.mp4", out_dir / f"{stem}.safetensors"
    write_mp4(smp["frames"], mp4, fps=p.fps)
    write_checked(tensors, {"frames": torch.from_numpy(smp["frames"])}, model_identity=model.identity,
                  rebuild_target=snakemake.output.table,  # the rule's output; the frames are in its folder
                  metadata={"prompt": row["prompt"], "seed": seed, "method": wc.method})
    sheet_rows.append((f"{row['prompt_id']} s{seed}: {row['prompt']}", smp["frames"]))
    records.append({
        "video_id": wc.video, "method": wc.method, "prompt_id": row["prompt_id"],
        "prompt": row["prompt"], "manifest_row": int(row["row"]), "seed": int(seed),
        "num_steps": cfg.num_steps, "guidance_scale": cfg.guidance_scale,
        "negative_prompt": cfg.negative_prompt, "noise_prior": cfg.noise_prior,
        "lora_min_timestep": cfg.lora_min_timestep, "lora_scale": cfg.lora_scale,
        "adapter_path": str(Path(adapter).parent) if adapter else None,
        "video_path": str(mp4), "frames_path": str(tensors), "seconds": smp["seconds"],
        "model_identity": model.identity,
        "caption_object": row.get("caption_object"), "prompt_object": row.get("prompt_object"),
        # MotionClone: location-aware semantic masks (True) or the global form
        "semantic_masks": bool(guided.get("semantic_masks", False)),
    })
# a toy-world reference's ground-truth path (<stem>.gt.json) over every frame; real videos: none
truth = load_ground_truth(p.video_path, int(p.n_frames), (int(p.height), int(p.width)))
save_png(contact_sheet(sheet_rows, n_cols=int(s.get("contact_sheet_frames", 4)),
                       track=None if truth is None else truth["centroid"]), snakemake.output.sheet)
write_table(pd.DataFrame(records), SAMPLES, snakemake.output.table)
write_json(snakemake.output.record, {
    "video_id": wc.video, "method": wc.method, "sample": s, "loaded_parts": loaded,
    "memory": {"attempt": attempt, "level": level, "changed": memory_changes},
    "model_identity": model.identity, "n_samples": len(records),
    "semantic_masks": {f"{r['prompt_id']}_s{r['seed']}": r["semantic_masks"] for r in records},
    "code_version": code_version(), "libraries": library_versions(),
})
log.info("%d samples -> %s", len(records), out_dir)

"""Sample every target prompt x seed of one reference video with one method (model loaded once)."""
from pathlib import Path

import pandas as pd
import torch

from motionmatcher.guidance import Reference, make_guidance
from motionmatcher.models import load_t2v_model, resolve_device, resolve_dtype
from motionmatcher.runtime import load_tensors, save_tensors, setup_script
from motionmatcher.sampler import SamplingConfig, sample_videos
from motionmatcher.tables import SAMPLES, write_table
from motionmatcher.training import load_trained
from motionmatcher.video import contact_sheet, save_png, write_mp4

log = setup_script(snakemake)
p = snakemake.params
wc = snakemake.wildcards
device = resolve_device(p.device)
model = load_t2v_model(snakemake.input.model, device, resolve_dtype(p.dtype, device))
adapter = snakemake.input.get("adapter") or None
s = p.sample
loaded = {"lora": [], "full": []}
if adapter:  # all trained parts, or the method's `sample.load_parts` (MotionDirector: temporal)
    loaded = load_trained(model.unet, Path(adapter).parent, s.get("load_parts"))
    log.info("loaded parts %s", loaded)
cfg = SamplingConfig(**{k: s[k] for k in SamplingConfig.__dataclass_fields__ if k in s})
inversion = load_tensors(snakemake.input.inversion, device)["inversion"]
guidance = make_guidance(p.guidance)  # training-free methods (DMT, MotionClone); None otherwise
reference = None
if guidance is not None:
    with torch.no_grad():
        reference = Reference(load_tensors(snakemake.input.latents, device)["latents"].float(),
                              model.encode_prompt([p.caption]), model.encode_prompt([p.inversion_prompt]))
    log.info("guidance %s: %s", guidance.name, p.guidance)

rows = list(p.prompts)
samples = sample_videos(
    model,
    [r["prompt"] for r in rows for _ in s["seeds"]],
    [seed for _ in rows for seed in s["seeds"]],
    n_frames=int(p.n_frames), height=int(p.height), width=int(p.width), cfg=cfg,
    inversion_latents=inversion, has_adapter=bool(loaded["lora"]),
    row_labels=[f"manifest row {r['row']} ({wc.video})" for r in rows for _ in s["seeds"]],
    guidance=guidance, reference=reference,
)

out_dir = Path(snakemake.output.videos)
out_dir.mkdir(parents=True, exist_ok=True)
records, sheet_rows = [], [("reference", load_tensors(snakemake.input.frames)["frames"].numpy())]
meta = [(r, seed) for r in rows for seed in s["seeds"]]
for (row, seed), smp in zip(meta, samples):
    stem = f"{row['prompt_id']}_s{seed}"
    mp4, tensors = out_dir / f"{stem}.mp4", out_dir / f"{stem}.safetensors"
    write_mp4(smp["frames"], mp4, fps=p.fps)
    save_tensors({"frames": torch.from_numpy(smp["frames"])}, tensors,
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
    })
save_png(contact_sheet(sheet_rows, n_cols=int(s.get("contact_sheet_frames", 4))), snakemake.output.sheet)
write_table(pd.DataFrame(records), SAMPLES, snakemake.output.table)
log.info("%d samples -> %s", len(records), out_dir)

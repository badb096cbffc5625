"""VAE-encode a preprocessed reference video into scaled latents (safetensors)."""
from motionmatcher.backbones.latents import encode_video
from motionmatcher.backbones import load_model
from motionmatcher.backbones.models import resolve_device, resolve_dtype
from motionmatcher.jobs.rule_script import setup_script
from motionmatcher.files.tensor_files import read_checked, write_checked

log = setup_script(snakemake)
p = snakemake.params
device = resolve_device(p.device)
frames = read_checked(snakemake.input.frames, shapes={"frames": [int(p.n_frames), int(p.height), int(p.width), 3]})[0]["frames"]
model = load_model(snakemake.input.model, device, resolve_dtype(p.dtype, device))
latents = encode_video(model.vae, frames, chunk_size=int(p.chunk_size))
log.info("latents %s from frames %s", tuple(latents.shape), tuple(frames.shape))
write_checked(snakemake.output.latents, {"latents": latents.float()}, model_identity=model.identity,
              step="VAE encode of the reference frames", inputs=[snakemake.input.frames], metadata={
    "shape": list(latents.shape),
    "scaling_factor": getattr(model.vae.config, "scaling_factor", None),  # Wan: per-channel mean/std instead
    "frames": str(snakemake.input.frames),
})

"""VAE-encode a preprocessed reference video into scaled latents (safetensors)."""
from motionmatcher.latents import encode_video
from motionmatcher.models import load_t2v_model, resolve_device, resolve_dtype
from motionmatcher.runtime import load_tensors, save_tensors, setup_script

log = setup_script(snakemake)
p = snakemake.params
device = resolve_device(p.device)
model = load_t2v_model(snakemake.input.model, device, resolve_dtype(p.dtype, device))
frames = load_tensors(snakemake.input.frames)["frames"]
latents = encode_video(model.vae, frames, chunk_size=int(p.chunk_size))
log.info("latents %s from frames %s", tuple(latents.shape), tuple(frames.shape))
save_tensors({"latents": latents.float()}, snakemake.output.latents, metadata={
    "shape": list(latents.shape),
    "model_identity": model.identity,
    "scaling_factor": model.vae.config.scaling_factor,
    "frames": str(snakemake.input.frames),
})

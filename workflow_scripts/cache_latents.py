"""VAE-encode a preprocessed reference video into scaled latents (safetensors)."""
from motionmatcher.latents import encode_video
from motionmatcher.models import load_t2v_model, resolve_device, resolve_dtype
from motionmatcher.runtime import setup_script
from motionmatcher.tensor_files import read_checked, write_checked

log = setup_script(snakemake)
p = snakemake.params
device = resolve_device(p.device)
frames = read_checked(snakemake.input.frames, shapes={"frames": [int(p.n_frames), int(p.height), int(p.width), 3]})[0]["frames"]
model = load_t2v_model(snakemake.input.model, device, resolve_dtype(p.dtype, device))
latents = encode_video(model.vae, frames, chunk_size=int(p.chunk_size))
log.info("latents %s from frames %s", tuple(latents.shape), tuple(frames.shape))
write_checked(snakemake.output.latents, {"latents": latents.float()}, model_identity=model.identity,
              step="VAE encode of the reference frames", inputs=[snakemake.input.frames], metadata={
    "shape": list(latents.shape),
    "scaling_factor": model.vae.config.scaling_factor,
    "frames": str(snakemake.input.frames),
})

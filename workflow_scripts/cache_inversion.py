"""DDIM-invert a reference's cached latents with the base model (the sampling noise prior)."""
from motionmatcher.inversion import ddim_inversion
from motionmatcher.models import load_t2v_model, resolve_device, resolve_dtype
from motionmatcher.runtime import load_tensors, save_tensors, setup_script

log = setup_script(snakemake)
p = snakemake.params
device = resolve_device(p.device)
model = load_t2v_model(snakemake.input.model, device, resolve_dtype(p.dtype, device))
latents = load_tensors(snakemake.input.latents, device)["latents"].float()  # inversion runs in fp32
text = model.encode_prompt([p.prompt])
out = ddim_inversion(model.unet, model.scheduler_config, latents, text, num_steps=int(p.num_steps))
save_tensors({"inversion": out["latents"].float()}, snakemake.output.inversion, metadata={
    "shape": list(latents.shape),
    "model_identity": model.identity,
    "num_steps": int(p.num_steps),
    "prompt": p.prompt,
})

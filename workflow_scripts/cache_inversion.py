"""DDIM-invert a reference's cached latents with the base model (the sampling noise prior)."""
from motionmatcher.inversion import ddim_inversion
from motionmatcher.models import load_t2v_model, model_identity, resolve_device, resolve_dtype
from motionmatcher.runtime import setup_script
from motionmatcher.tensor_files import read_checked, write_checked

log = setup_script(snakemake)
p = snakemake.params
device = resolve_device(p.device)
latents = read_checked(snakemake.input.latents, device=device, model_identity=model_identity(snakemake.input.model),
                       shapes={"latents": [1, None, int(p.n_frames), None, None]})[0]["latents"].float()  # fp32
model = load_t2v_model(snakemake.input.model, device, resolve_dtype(p.dtype, device))
text = model.encode_prompt([p.prompt])
out = ddim_inversion(model.unet, model.scheduler_config, latents, text, num_steps=int(p.num_steps))
write_checked(snakemake.output.inversion, {"inversion": out["latents"].float()}, model_identity=model.identity, metadata={
    "shape": list(latents.shape),
    "num_steps": int(p.num_steps),
    "prompt": p.prompt,
})

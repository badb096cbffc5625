"""DDIM-invert a reference's cached latents (the sampling noise prior): with the base model, or,
given an ``adapter`` input, with the method's trained weights on the UNet (as its official code)."""
from pathlib import Path

from motionmatcher.customization.inversion import invert_reference
from motionmatcher.backbones import latent_frames_of, load_model
from motionmatcher.backbones.models import model_identity, resolve_device, resolve_dtype
from motionmatcher.jobs.rule_script import setup_script
from motionmatcher.files.tensor_files import read_checked, write_checked

log = setup_script(snakemake)
p = snakemake.params
device = resolve_device(p.device)
latents = read_checked(snakemake.input.latents, device=device, model_identity=model_identity(snakemake.input.model),
                       shapes={"latents": [1, None, latent_frames_of(snakemake.input.model, p.n_frames), None, None]})[0]["latents"].float()  # fp32
model = load_model(snakemake.input.model, device, resolve_dtype(p.dtype, device))
adapter = snakemake.input.get("adapter") or None
weights_dir = Path(adapter).parent if adapter else None
parts = getattr(p, "parts", None) if adapter else None
out = invert_reference(model, latents, p.prompt, int(p.num_steps), weights_dir=weights_dir, parts=parts)
log.info("inverted with %s", f"{weights_dir} (parts: {parts or 'all'})" if adapter else "the base model")
write_checked(snakemake.output.inversion, {"inversion": out.float()}, model_identity=model.identity,
              step=f"DDIM inversion ({int(p.num_steps)} steps, "
                   f"{'weights ' + str(weights_dir) if adapter else 'base model'})",
              inputs=[adapter, snakemake.input.latents], metadata={
    "shape": list(latents.shape),
    "num_steps": int(p.num_steps),
    "prompt": p.prompt,
    "weights": str(weights_dir) if adapter else "base",
    "parts": ",".join(parts) if parts else ("all" if adapter else ""),
})

"""DDIM-invert a reference's cached latents (the sampling noise prior): with the base model, or,
given an ``adapter`` input, with the method's trained weights on the UNet (as its official code)."""
from pathlib import Path

from motionmatcher.inversion import invert_reference
from motionmatcher.models import load_t2v_model, resolve_device, resolve_dtype
from motionmatcher.runtime import load_tensors, save_tensors, setup_script

log = setup_script(snakemake)
p = snakemake.params
device = resolve_device(p.device)
model = load_t2v_model(snakemake.input.model, device, resolve_dtype(p.dtype, device))
latents = load_tensors(snakemake.input.latents, device)["latents"].float()  # inversion runs in fp32
adapter = snakemake.input.get("adapter") or None
weights_dir = Path(adapter).parent if adapter else None
parts = getattr(p, "parts", None) if adapter else None
out = invert_reference(model, latents, p.prompt, int(p.num_steps), weights_dir=weights_dir, parts=parts)
log.info("inverted with %s", f"{weights_dir} (parts: {parts or 'all'})" if adapter else "the base model")
save_tensors({"inversion": out}, snakemake.output.inversion, metadata={
    "shape": list(latents.shape),
    "model_identity": model.identity,
    "num_steps": int(p.num_steps),
    "prompt": p.prompt,
    "weights": str(weights_dir) if adapter else "base",
    "parts": ",".join(parts) if parts else ("all" if adapter else ""),
})

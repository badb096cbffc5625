"""Write the embedded tiny text-to-video model as a diffusers-format directory."""
from motionmatcher.models import write_tiny_model
from motionmatcher.runtime import setup_script

log = setup_script(snakemake)
path = write_tiny_model(snakemake.output[0], seed=snakemake.params.seed)
log.info("tiny model written to %s", path)

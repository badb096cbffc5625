"""Write a seeded tiny text-to-video model (`tiny`, `wan-tiny`, `cogvideox-tiny`) as a diffusers-format directory."""
from motionmatcher.backbones import write_tiny
from motionmatcher.jobs.rule_script import setup_script

log = setup_script(snakemake)
path = write_tiny(snakemake.params.name, snakemake.output[0], seed=snakemake.params.seed)
log.info("tiny model %s written to %s", snakemake.params.name, path)

# Two commands: `make demo` (set up + run the CPU demo) and `make test` (set up + run the tests).
# `make slurm-profile`: install the Slurm site profile, then `snakemake --profile slurm`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: setup demo demo-data test dag slurm-profile toy-model toy-model-res toy-model-dit toy-benchmark mutants verify

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

demo-data: setup
	$(PY) -m motionmatcher.toy.clips resources/demo --set demo

# Re-train the committed toy text-to-video model from its seed (CPU: about an hour on 2 cores).
toy-model: setup
	$(PY) -m motionmatcher.toy.pretrain --out models/toy_t2v --work resources/toy_pretrain --seed 0 --unet-steps 4475

# Toy models whose matched features have resolution (issue #19; docs/toy_models.md), from seed 0,
# resumable: rerun to continue from the checkpoints in resources/toy_pretrain_res, checkpoints/wan-toy-vae3k.
# TOY_ARGS: e.g. `--device cuda --amp`, or `--stop-at 500` to train in slices on a CPU.
TOY_ARGS ?=
toy-model-res: setup
	$(PY) -m motionmatcher.toy.geometries --geometry unet-res --out models/toy_t2v_res --work resources/toy_pretrain_res --seed 0 $(TOY_ARGS)

# The toy DiT (geometry wan-toy-vae3k): word-level tokenizer, 8,192 clips, VAE 3,000 steps (~26 min on 2 threads),
# DiT 5,000 steps with a weight average (~77 min: 0.92 s per step; docs/toy_models.md). Its work directory is in
# git (checkpoints/, the encoded clips excepted: re-encoded on resume), so a run carries over to the next checkout.
# Earlier recipes that failed the gate: --geometry wan-toy (character tokenizer), wan-toy-word (VAE 725 steps).
toy-model-dit: setup
	$(PY) -m motionmatcher.toy.geometries --geometry wan-toy-vae3k --out models/toy_wan --work checkpoints/wan-toy-vae3k --seed 0 $(TOY_ARGS)

# The efficacy benchmark on the toy model (config/toy_benchmark.yaml) and its table.
toy-benchmark: setup
	$(PY) -m motionmatcher.toy.clips resources/toy_benchmark --set benchmark
	$(SNAKEMAKE) --profile profiles/local --cores $(CORES) --configfile config/toy_benchmark.yaml
	$(PY) benchmarks/toy_table.py results/toy_benchmark/tables/samples.parquet

# The toy model's jobs are small (a 0.9M-parameter UNet on 8x8 latents): one thread each, so
# that the two videos' customizations (400 steps) run side by side on 2 cores, not one after the other.
demo: demo-data
	$(SNAKEMAKE) --profile profiles/local --cores $(CORES) --max-threads 1
	@echo
	@echo "Results: results/ (tables in results/tables/, samples in results/samples/<method>/<video>/)"

test: setup
	$(PY) -m pytest tests

# Mutation check of the numerical core (docs/testing.md): hand-written mutants, each applied to a
# copy of the repo, its fast tests run; prints the survivors. Slow (tens of minutes): not in `test`.
mutants: setup
	$(PY) tools/mutants.py $(MUTANTS_ARGS)

# Find damaged outputs (truncated tables, altered tensor files: docs/troubleshooting.md), delete
# the outputs that rebuild them, and rerun the workflow. Another run: make verify
# VERIFY_DIRS="results/x resources" SNAKEMAKE_ARGS="--configfile my.yaml"
VERIFY_DIRS ?= results resources
SNAKEMAKE_ARGS ?=
verify: setup
	$(PY) -m motionmatcher.results.verify --delete $(VERIFY_DIRS)
	$(SNAKEMAKE) --profile profiles/local --cores $(CORES) $(SNAKEMAKE_ARGS)

# The rule graph as rulegraph.svg (needs Graphviz's `dot`: apt-get install graphviz).
dag: setup demo-data
	@command -v dot >/dev/null || { echo "make dag needs Graphviz's dot (apt-get install graphviz)" >&2; exit 1; }
	$(SNAKEMAKE) --rulegraph > rulegraph.dot
	dot -Tsvg rulegraph.dot -o rulegraph.svg && rm rulegraph.dot

# The Slurm site profile `slurm` (profiles/slurm/ -> ~/.config/snakemake/slurm, where
# `snakemake --profile slurm` finds it); an existing one is kept (edit it there).
SNAKEMAKE_PROFILES ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake
slurm-profile:
	@mkdir -p "$(SNAKEMAKE_PROFILES)/slurm"
	@for f in config.yaml partitions.example.yaml; do \
	    if [ -e "$(SNAKEMAKE_PROFILES)/slurm/$$f" ]; then echo "kept existing $(SNAKEMAKE_PROFILES)/slurm/$$f"; \
	    else cp "profiles/slurm/$$f" "$(SNAKEMAKE_PROFILES)/slurm/$$f" && echo "installed $(SNAKEMAKE_PROFILES)/slurm/$$f"; fi; \
	done
	@echo "edit $(SNAKEMAKE_PROFILES)/slurm/config.yaml (places marked EDIT), then: snakemake --profile slurm"

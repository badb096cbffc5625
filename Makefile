# Two commands: `make demo` (set up + run the CPU demo) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: setup demo demo-data test dag clean-demo toy-model toy-benchmark

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
	$(PY) -m motionmatcher.toy.pretrain --out models/toy_t2v --work resources/toy_pretrain --seed 0

# The efficacy benchmark on the toy model (config/toy_benchmark.yaml) and its table.
toy-benchmark: setup
	$(PY) -m motionmatcher.toy.clips resources/toy_benchmark --set benchmark
	$(SNAKEMAKE) --profile profiles/local --cores $(CORES) --configfile config/toy_benchmark.yaml
	$(PY) benchmarks/toy_table.py results/toy_benchmark/tables/samples.parquet

demo: demo-data
	$(SNAKEMAKE) --profile profiles/local --cores $(CORES)
	@echo
	@echo "Results: results/ (tables in results/tables/, samples in results/samples/<method>/<video>/)"

test: setup
	$(PY) -m pytest tests

dag: setup demo-data
	$(SNAKEMAKE) --rulegraph | dot -Tsvg > rulegraph.svg

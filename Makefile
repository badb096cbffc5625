# Two commands: `make demo` (set up + run the CPU demo) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: setup demo demo-data test dag clean-demo

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

demo-data: setup
	$(PY) -m motionmatcher.demo_data resources/demo

demo: demo-data
	$(SNAKEMAKE) --profile profiles/local --cores $(CORES)
	@echo
	@echo "Results: results/ (tables in results/tables/, samples in results/samples/<method>/<video>/)"

test: setup
	$(PY) -m pytest tests

dag: setup demo-data
	$(SNAKEMAKE) --rulegraph | dot -Tsvg > rulegraph.svg

"""The benchmark scripts import what they use from the library (they are not run in CI; a
refactor of the library must not leave them broken)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "benchmarks").glob("[a-z]*.py")))
def test_benchmark_script_imports(name):
    mod = load(name)
    assert callable(getattr(mod, "main", None)), f"benchmarks/{name}.py has no main()"


@pytest.mark.parametrize("name", ["guidance", "methods"])
def test_benchmark_config_loading(name):
    """Both merge config/paper.yaml over config/config.yaml as Snakemake does."""
    cfg = load(name).load_config(REPO / "config" / "paper.yaml")
    assert "motionmatcher" in cfg["methods"] and cfg["manifest"]

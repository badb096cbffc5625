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


def test_toy_average_models_is_the_mean_of_the_two_models(tmp_path):
    """benchmarks/toy_average_models.py: averaged denoiser / text-encoder tensors (by hand:
    (1 + 3) / 2 = 2), everything else copied from the first model; a mismatch is refused."""
    import torch
    from safetensors.torch import load_file, save_file

    mod = load("toy_average_models")
    for name, v in (("a", 1.0), ("b", 3.0)):
        for sub in ("transformer", "text_encoder"):
            (tmp_path / name / sub).mkdir(parents=True)
            save_file({"w": torch.full((2, 3), v, dtype=torch.float16)},
                      str(tmp_path / name / sub / "m.safetensors"))
        (tmp_path / name / "toy_model.json").write_text(name)
    mod.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "avg")])
    for sub in ("transformer", "text_encoder"):
        w = load_file(str(tmp_path / "avg" / sub / "m.safetensors"))["w"]
        assert w.dtype == torch.float16 and torch.equal(w, torch.full((2, 3), 2.0, dtype=torch.float16))
    assert (tmp_path / "avg" / "toy_model.json").read_text() == "a"
    save_file({"w": torch.zeros(3, 2, dtype=torch.float16)},
              str(tmp_path / "b" / "transformer" / "m.safetensors"))
    with pytest.raises(SystemExit, match="not the same architecture"):
        mod.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "avg2")])


def test_toy_gate_breaks_the_colour_rate_down_by_appearance():
    """benchmarks/toy_gate.py's `colour_rate_by`: per colour, shape, background and triple, read
    off the captions (by hand: red is right 1 of 2 times, black 1 of 2, gray 1 of 1)."""
    mod = load("toy_gate")
    prompts = ["A red square moving left on a black background.", "a red circle on a gray background",
               "A blue square on a black background, moving up."]
    by = mod.rates_by(prompts, [False, True, True])
    assert by["colour"] == {"blue": 1.0, "red": 0.5}
    assert by["shape"] == {"circle": 1.0, "square": 0.5}
    assert by["background"] == {"black": 0.5, "gray": 1.0}
    assert by["triple"] == {"blue square black": 1.0, "red circle gray": 1.0, "red square black": 0.0}

"""The plain mean of two exported toy models' weights (denoiser and text encoder), as a model
directory the gate takes -- a two-point stand-in for a moving average of the weights
(docs/toy_models.md, "More clips"). Everything but the averaged safetensors is copied from the
first model; both must have the same architecture.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_average_models.py A B --out DIR
    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_gate.py --model DIR --n 56 --guidance 2
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

AVERAGED = ("transformer", "unet", "text_encoder")


def average(a: Path, b: Path, out: Path) -> list[Path]:
    """Write ``out`` = ``a`` with the averaged weights of :data:`AVERAGED`; returns the files."""
    if out.exists():
        raise SystemExit(f"{out}: exists; choose another --out")
    shutil.copytree(a, out)
    done = []
    for sub in AVERAGED:
        for fa in sorted((a / sub).glob("*.safetensors")):
            fb = b / sub / fa.name
            if not fb.is_file():
                raise SystemExit(f"{fb}: missing (the two models must have the same files)")
            ta, tb = load_file(str(fa)), load_file(str(fb))
            if ta.keys() != tb.keys() or any(ta[k].shape != tb[k].shape for k in ta):
                raise SystemExit(f"{fa} and {fb}: different tensors (not the same architecture)")
            mean = {k: ((ta[k].to(torch.float32) + tb[k].to(torch.float32)) / 2).to(ta[k].dtype) for k in ta}
            save_file(mean, str(out / sub / fa.name))
            done.append(out / sub / fa.name)
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    for f in average(a.a, a.b, a.out):
        print(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Efficacy of customization on the toy model, in one process per reference: base vs a method's
customized model, same seeds, scored with the ground-truth trajectory error.

For each benchmark reference (``--index``; :data:`motionmatcher.toy.clips.SETS`), runs
:func:`motionmatcher.toy.efficacy.run` (the library's ``encode_video``, ``ddim_inversion``,
``train``, ``sample_videos`` -- what the pipeline runs, without Snakemake) and prints per seed the
trajectory error of base and of the customized sample, their means and the ratio; with
``--figure`` also a contact sheet (reference, then base and customized per seed, upscaled x4).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_efficacy.py --index 0 1 3 --seeds 0 1 2 3 \\
        [--model models/toy_t2v] [--steps 400] [--lr 5e-3] [--figure benchmarks/figures/toy_efficacy.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from motionmatcher.backbones.models import load_t2v_model  # noqa: E402
from motionmatcher.methods.motionmatcher import MotionLossWeights  # noqa: E402
from motionmatcher.toy import efficacy  # noqa: E402
from motionmatcher.files.video import contact_sheet, save_png  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/toy_t2v")
    ap.add_argument("--index", type=int, nargs="+", default=[1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--loss", default="motion_matching")
    ap.add_argument("--steps", type=int, default=efficacy.DEFAULT_STEPS)
    ap.add_argument("--lr", type=float, default=efficacy.DEFAULT_LR)
    ap.add_argument("--base-inversion", action="store_true",
                    help="customized samples from the base model's inversion (default: the customized UNet's)")
    official = MotionLossWeights()
    ap.add_argument("--loss-weights", type=float, nargs=2, default=(official.ca_weight, official.tsa_weight),
                    metavar=("CA", "TSA"),
                    help="motion_matching's lambda_CA, lambda_TSA (default the official 2000, 2000)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figure", type=Path, help="contact sheet of the first reference")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = []
    for k, index in enumerate(a.index):
        model = load_t2v_model(a.model)  # fresh: the UNet is customized in place
        cfg = efficacy.default_train_config(loss=a.loss, steps=a.steps, lr=a.lr, ca_weight=a.loss_weights[0],
                                            tsa_weight=a.loss_weights[1])
        t0 = time.time()
        r = efficacy.run(model, index=index, seeds=tuple(a.seeds), train_cfg=cfg,
                         invert_with_method=not a.base_inversion)
        rec = dict(index=index, loss=a.loss, steps=a.steps, lr=a.lr, loss_weights=list(a.loss_weights),
                   seeds=a.seeds,
                   inversion="base" if a.base_inversion else "method",
                   base=[x["trajectory_error"] for x in r.base],
                   customized=[x["trajectory_error"] for x in r.customized],
                   base_mean=r.base_error, customized_mean=r.customized_error,
                   ratio=r.customized_error / r.base_error, seconds=round(time.time() - t0, 1))
        out.append(rec)
        print(f"reference {index}: trajectory error base {r.base_error:.3f} "
              f"[{', '.join(f'{v:.3f}' for v in rec['base'])}], {a.loss} {r.customized_error:.3f} "
              f"[{', '.join(f'{v:.3f}' for v in rec['customized'])}], ratio {rec['ratio']:.2f} "
              f"({rec['seconds']} s)", flush=True)
        if a.figure and k == 0:
            up = lambda f: np.repeat(np.repeat(f, 4, axis=1), 4, axis=2)  # noqa: E731
            rows = [("reference", up(r.reference))]
            for s, b, c, eb, ec in zip(a.seeds, r.base_frames, r.customized_frames, rec["base"], rec["customized"]):
                rows += [(f"base seed {s}: error {eb:.2f}", up(b)), (f"{a.loss} seed {s}: error {ec:.2f}", up(c))]
            a.figure.parent.mkdir(parents=True, exist_ok=True)
            save_png(contact_sheet(rows, n_cols=8), a.figure)
    base = np.mean([o["base_mean"] for o in out])
    cust = np.mean([o["customized_mean"] for o in out])
    print(f"mean over {len(out)} reference(s): base {base:.3f}, {a.loss} {cust:.3f}, ratio {cust / base:.2f}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How large the trained methods' gradients are against AdamW's ε, on a toy model.

AdamW's update of a parameter is ``lr · m̂ / (√v̂ + ε)`` (ε = 1e-8, torch's default and the
official code's): where the gradient is far below ε, the update shrinks in proportion to the
gradient instead of being ~``lr``. On the committed toy model the motion-matching losses are tiny
(CA MSE ~6e-12 per element, TSA ~3e-10: ``train_log.parquet`` of the decided benchmark), so this
script measures, for each method of a benchmark config, over ``--steps`` training steps on one
reference: the median |gradient| of the trained parameters that get one, the share of them
below ε, and the share of the LoRA-up weights (``lora_B``, zero at the start) that the steps
moved by more than 1e-4.

``--results DIR`` (a finished benchmark's results folder, e.g. ``results/toy_appearance``) reads
what the full 400-step customizations left instead, per method over its videos: the median of
the per-step CA / TSA MSE (``train_log.parquet``) and the median summed Frobenius norm of the
adapter's ``lora_B`` weights (``adapter/adapter_model.safetensors``); nothing is trained.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/toy_loss_scale.py \
        [--methods motionmatcher,motionmatcher_ca,motionmatcher_tsa,ddpm_lora] [--steps 10] [--reference 0] \
        [--config config/toy_benchmark_wan.yaml --model DIR]
    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_loss_scale.py --results results/toy_appearance
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402

EPS = 1e-8


def trained(results: Path, methods: list[str]) -> None:
    """Per method: median CA / TSA MSE of the training steps and median summed ||lora_B||_F."""
    import pandas as pd
    from safetensors.torch import load_file

    print(f"{results}: per method, medians over its videos")
    print("| method | videos | CA MSE | TSA MSE | summed lora_B norm |")
    print("| --- | --- | --- | --- | --- |")
    for m in methods:
        runs = sorted((results / "customize" / m).glob("*/train_log.parquet"))
        if not runs:
            raise SystemExit(f"{results / 'customize' / m}: no finished customization (train_log.parquet)")
        ca, tsa, norm = [], [], []
        for log in runs:
            d = pd.read_parquet(log)
            ca.append(d["ca"].median() if "ca" in d else float("nan"))  # not a motion-matching loss
            tsa.append(d["tsa"].median() if "tsa" in d else float("nan"))
            t = load_file(str(log.parent / "adapter" / "adapter_model.safetensors"))
            norm.append(sum(float(v.norm()) for k, v in t.items() if "lora_B" in k))
        med = lambda v: float(pd.Series(v).median())  # noqa: E731  (NaN for a term not trained)
        print(f"| {m} | {len(runs)} | {med(ca):.1e} | {med(tsa):.1e} | {med(norm):.1f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="motionmatcher,motionmatcher_ca,motionmatcher_tsa,ddpm_lora")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reference", type=int, default=0, help="index in the appearance set")
    ap.add_argument("--config", default="config/toy_benchmark.yaml", help="layered on config/config.yaml")
    ap.add_argument("--model", help="a model directory instead of the config's (e.g. a checkpoint "
                    "exported with --export-checkpoint)")
    ap.add_argument("--results", type=Path, help="read a finished benchmark's customizations instead")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.results:
        trained(a.results, a.methods.split(","))
        return 0
    from motionmatcher.backbones import load_model
    from motionmatcher.backbones.latents import encode_video
    from motionmatcher.customization import training
    from motionmatcher.methods import method_config
    from motionmatcher.methods.config import _merge
    from motionmatcher.toy import clips, world

    cfg = _merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                 yaml.safe_load((REPO / a.config).read_text()))
    if a.model:
        cfg["model"] = a.model
    n_frames = int(cfg["video"]["n_frames"])
    name, spec, _ = clips.reference("appearance", a.reference, n_frames=n_frames)
    frames, gt = world.render_clip(spec)
    grads: list[torch.Tensor] = []
    orig_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kw):
        grads.append(torch.cat([p.grad.detach().abs().flatten() for g in self.param_groups
                                for p in g["params"] if p.grad is not None]))
        return orig_step(self, *args, **kw)

    torch.optim.AdamW.step = recording_step
    print(f"{cfg['model']}, reference {name}, {a.steps} steps, AdamW eps {EPS:g}")
    print("| method | loss (step 1) | median abs grad | share of grads < eps | lora_B entries moved > 1e-4 |")
    print("| --- | --- | --- | --- | --- |")
    for m in a.methods.split(","):
        grads.clear()
        model = load_model(REPO / cfg["model"])
        latents = encode_video(model.vae, frames)
        tc = training.TrainConfig.from_dict(method_config(cfg, m)["train"])
        tc = training.TrainConfig(**{**tc.__dict__, "steps": a.steps, "checkpoint_every": 10**6})
        with tempfile.TemporaryDirectory() as ck:
            _, log = training.train(model, latents, gt["caption"], tc, seed=0, checkpoint_dir=ck,
                                    progress=False)
        g = torch.cat(grads)
        ups = [p.detach().flatten() for n, p in model.unet.named_parameters() if "lora_B" in n]
        moved = float((torch.cat(ups).abs() > 1e-4).float().mean()) if ups else float("nan")
        print(f"| {m} | {log['loss'].iloc[0]:.2e} | {g.median():.2e} | {(g < EPS).float().mean():.0%} | "
              f"{moved:.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU cost of one customization on a toy model (issue #19 item 3's budget: the toy benchmark's
400 steps), per trained method of a benchmark config (default: the committed model with
config/toy_benchmark.yaml), one torch thread.

For each method: the benchmark's training settings (``methods:`` of config/config.yaml with
config/toy_benchmark.yaml on top), reference 0 of the benchmark set, ``--steps`` steps after
``--warmup`` steps; prints seconds per step (median of the loop's own per-step times,
``train_log`` ``seconds``) and the projected minutes for the configured steps. ``--walk``
turns off the module index of the training loop (:mod:`motionmatcher.customization.module_index`:
the per-step walks of the module tree done once) to measure what it saves; the results are
bit-identical either way (tests/test_module_index.py).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/toy_customization_cost.py [--walk]
    # the toy Wan model with its benchmark config (the methods that run on a DiT; 9-frame reference)
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/toy_customization_cost.py \
        --config config/toy_benchmark_wan.yaml --methods motionmatcher,motionmatcher_ca,motionmatcher_tsa,ddpm_lora
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402

TRAINED = ("motionmatcher", "motionmatcher_ca", "motionmatcher_tsa", "ddpm_lora", "motiondirector", "vmc")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(TRAINED))
    ap.add_argument("--steps", type=int, default=20, help="measured steps per method")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--walk", action="store_true", help="without the module index (the walks every step)")
    ap.add_argument("--config", default="config/toy_benchmark.yaml", help="layered on config/config.yaml")
    ap.add_argument("--model", help="default: the config's model")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from motionmatcher.backbones import load_model
    from motionmatcher.backbones.latents import encode_video
    from motionmatcher.customization import training
    from motionmatcher.methods import method_config
    from motionmatcher.methods.config import _merge
    from motionmatcher.toy import clips, world

    cfg = _merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                 yaml.safe_load((REPO / a.config).read_text()))
    model_dir = REPO / (a.model or cfg["model"])
    n_frames = int(cfg["video"]["n_frames"])
    if a.walk:
        training.fixed_structure = lambda m: contextlib.nullcontext()
    _, spec, _ = clips.reference("benchmark", 0, n_frames=n_frames)
    frames, gt = world.render_clip(spec)
    caption = gt["caption"]
    print(f"{model_dir.name}, {n_frames} frames, {a.config}")
    print(f"| method | s/step ({'walks' if a.walk else 'index'}) | configured steps | min per customization |")
    print("| --- | --- | --- | --- |")
    for m in a.methods.split(","):
        model = load_model(model_dir)
        latents = encode_video(model.vae, frames)
        tc = training.TrainConfig.from_dict(method_config(cfg, m)["train"])
        steps = tc.steps
        tc = training.TrainConfig(**{**tc.__dict__, "steps": a.warmup + a.steps, "checkpoint_every": 10**6})
        with tempfile.TemporaryDirectory() as ck:
            _, log = training.train(model, latents, caption, tc, seed=0, checkpoint_dir=ck, progress=False)
        per = statistics.median(log["seconds"].iloc[a.warmup:])
        print(f"| {m} | {per:.3f} | {steps} | {per * steps / 60:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

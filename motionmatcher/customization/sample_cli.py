"""Sample prompts with a given adapter outside the DAG.

    python -m motionmatcher.customization.sample_cli --model resources/models/tiny \
        --adapter results/customize/motionmatcher/zoom/adapter \
        --inversion results/samples/motionmatcher/zoom/videos/inversion.safetensors \
        --prompt "The camera zooms in on a lighthouse." --seed 0 --out /tmp/samples

The noise prior of a trained method is the DDIM inversion of the reference *with that method's
weights* (computed by its ``sample`` job, as the official code inverts, and written to
``<results_dir>/samples/<method>/<video>/videos/inversion.safetensors``);
``resources/inversion/<model>/<video>.safetensors`` is the base model's, which the pipeline uses for ``base``, the training-free methods and with
``inversion.with_method: false``. Pass the one the pipeline used to reproduce its samples.

Writes ``<out>/<index>_s<seed>.mp4`` per (prompt, seed). Settings default to the paper's
(75 DDIM steps, CFG 12, noise prior 0.3, LoRA for t >= 500). ``--frames/--height/--width``
default to the inversion's (without one: 16 frames at 384x384); a value that does not match
the inversion is refused before any sampling.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from motionmatcher.backbones import load_model
from motionmatcher.backbones.models import resolve_device, resolve_dtype
from motionmatcher.files.tensor_files import read_checked
from motionmatcher.customization.sampler import SamplingConfig, sample_videos
from motionmatcher.customization.trained_weights import load_trained
from motionmatcher.files.video import write_mp4


def _latent_frames(model, n_frames: int) -> int:
    return model.latent_frames(n_frames) if hasattr(model, "latent_frames") else n_frames


def video_size_of(model, inversion, path, frames, height, width):
    """(frames, height, width) to sample: the given ones, the missing ones taken from the
    inversion latents ``(1, C, f, h, w)``; a message (str) when a given one does not match."""
    if inversion is None:
        return frames or 16, height or 384, width or 384
    _, _, f, h, w = inversion.shape
    s = model.vae_scale_factor
    fits = [n for n in range(1, 8 * f + 9) if _fits(model, n, f)]
    wanted = {"--frames": (frames, fits[0] if fits else f, fits),
              "--height": (height, h * s, [h * s]), "--width": (width, w * s, [w * s])}
    bad = [f"{flag} {given} does not match the inversion ({', '.join(map(str, ok[:3]))} would)"
           for flag, (given, _, ok) in wanted.items() if given is not None and given not in ok]
    if bad:
        return (f"{path}: latents of {f} frames at {h}x{w}: " + "; ".join(bad)
                + ": omit the option to take the inversion's size")
    return tuple(given if given is not None else default for given, default, _ in wanted.values())


def _fits(model, n_frames: int, latent_frames: int) -> bool:
    try:
        return _latent_frames(model, n_frames) == latent_frames
    except ValueError:
        return False


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="diffusers-format model directory")
    ap.add_argument("--adapter", help="a method's adapter/ directory (omit for the base model)")
    ap.add_argument("--part", action="append", help="adapter parts to load (default: all), e.g. temporal")
    ap.add_argument("--inversion", help="cached DDIM inversion (safetensors) for the noise prior: for a trained "
                    "method the pipeline's <results_dir>/samples/<method>/<video>/videos/inversion.safetensors (see above)")
    ap.add_argument("--prompt", action="append", required=True)
    ap.add_argument("--seed", type=int, action="append")
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, help="default: the inversion's, else 16")
    ap.add_argument("--height", type=int, help="default: the inversion's, else 384")
    ap.add_argument("--width", type=int, help="default: the inversion's, else 384")
    ap.add_argument("--fps", type=float, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    for f in SamplingConfig.__dataclass_fields__.values():
        if f.name not in ("batch_size",):
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    device = resolve_device(args.device)
    model = load_model(args.model, device, resolve_dtype(args.dtype, device))
    has_adapter = False
    if args.adapter:
        has_adapter = bool(load_trained(model.unet, args.adapter, parts=args.part)["lora"])
    inv = None
    if args.inversion:  # the pipeline's cache: hash and model identity checked, then the sizes
        inv = read_checked(args.inversion, device=device, model_identity=model.identity,
                           shapes={"inversion": [1, None, None, None, None]})[0]["inversion"]
    sizes = video_size_of(model, inv, args.inversion, args.frames, args.height, args.width)
    if isinstance(sizes, str):
        ap.error(sizes)
    args.frames, args.height, args.width = sizes
    if inv is None and args.noise_prior > 0:
        ap.error("--noise-prior > 0 needs --inversion")
    cfg = SamplingConfig(**{k: getattr(args, k) for k in SamplingConfig.__dataclass_fields__ if hasattr(args, k)})
    seeds = args.seed or [0]
    prompts = [p for p in args.prompt for _ in seeds]
    out = Path(args.out)
    samples = sample_videos(model, prompts, seeds * len(args.prompt), n_frames=args.frames,
                            height=args.height, width=args.width, cfg=cfg, inversion_latents=inv,
                            has_adapter=has_adapter)
    for i, s in enumerate(samples):
        path = out / f"{i // len(seeds):02d}_s{s['seed']}.mp4"
        write_mp4(s["frames"], path, fps=args.fps)
        print(path, "-", s["prompt"])


if __name__ == "__main__":
    main()

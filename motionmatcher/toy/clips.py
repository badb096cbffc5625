"""Reference clips of the toy world for the benchmark and the demo, with ground-truth sidecars.

Every clip is drawn from the *held-out* appearances (:data:`.world.HELDOUT_APPEARANCES`, never
seen by the pretrained toy model), one object, a fixed trajectory family per clip. Each
reference gets two target prompts that change colour and shape (appearance only: the motion
has to come from the customization). Written per clip: ``videos/<id>.mp4`` and
``videos/<id>.gt.json`` (the sidecar :mod:`motionmatcher.metrics.groundtruth` reads), plus
``manifest.csv``.

CLI::

    python -m motionmatcher.toy.clips OUT_DIR [--set benchmark|demo] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import numpy as np

from ..files.atomic import atomic_write
from ..files.video import write_mp4
from . import world

#: (trajectory family, held-out appearance) of each reference clip.
SETS: dict[str, list[tuple[str, tuple[str, str, str]]]] = {
    "benchmark": [
        ("line", ("red", "triangle", "gray")),
        ("circle_cw", ("green", "circle", "black")),
        ("circle_ccw", ("blue", "square", "brown")),
        ("zigzag", ("yellow", "circle", "gray")),
        ("bounce", ("white", "triangle", "brown")),
        ("line", ("red", "square", "black")),
        ("approach", ("green", "triangle", "brown")),
        ("line", ("blue", "circle", "gray")),
    ],
    "demo": [
        ("line", ("red", "triangle", "gray")),
        ("circle_cw", ("green", "circle", "black")),
    ],
}
VERSION = 1


def target_prompts(appearance: tuple[str, str, str], rng: np.random.Generator, n: int = 2) -> list[str]:
    """n prompts with another colour and another shape than the reference, same background."""
    colour, shape, bg = appearance
    colours = [c for c in world.COLOURS if c != colour]
    shapes = [s for s in world.SHAPES if s != shape]
    picks = rng.permutation(len(colours))[:n]
    return [f"a {colours[i]} {shapes[k % len(shapes)]} on a {bg} background" for k, i in enumerate(picks)]


def write_clips(out: str | Path, which: str = "benchmark", seed: int = 0, fps: int = 8) -> Path:
    """Write the clips, sidecars and manifest of set ``which``; returns the manifest path.

    A no-op when ``out`` already holds this set (same version, set and seed), so re-running
    the demo does not touch the clips' timestamps (Snakemake would redo everything)."""
    out = Path(out)
    stamp = json.dumps(dict(version=VERSION, set=which, seed=seed, fps=fps))
    if (out / "toy_clips.json").exists() and (out / "toy_clips.json").read_text() == stamp \
            and (out / "manifest.csv").exists():
        return out / "manifest.csv"
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (traj, app) in enumerate(SETS[which]):
        rng = np.random.default_rng([seed, i])
        spec = world.sample_clip(rng, appearance=app, trajectory=traj, two_object_prob=0.0,
                                 motion_word_prob=1.0)
        frames, gt = world.render_clip(spec)
        vid = f"{i:02d}_{traj}_{app[0]}_{app[1]}"
        write_mp4(frames, out / "videos" / f"{vid}.mp4", fps=fps)
        side = json.dumps(world.gt_json(gt), indent=1)
        atomic_write(out / "videos" / f"{vid}.gt.json", ".json", lambda tmp, s=side: Path(tmp).write_text(s))
        for p in target_prompts(app, rng):
            rows.append((vid, f"videos/{vid}.mp4", gt["caption"], p))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("video_id", "video_path", "caption", "prompt"))
    w.writerows(rows)
    manifest = out / "manifest.csv"
    atomic_write(manifest, ".csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))
    atomic_write(out / "toy_clips.json", ".json", lambda tmp: Path(tmp).write_text(stamp))
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write toy-world reference clips with ground truth.")
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", dest="which", choices=sorted(SETS), default="benchmark")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(write_clips(a.out, a.which, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

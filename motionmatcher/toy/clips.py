"""Reference clips of the toy world for the benchmark and the demo, with ground-truth sidecars.

Every clip is drawn from the *held-out* appearances (:data:`.world.HELDOUT_APPEARANCES`, never
seen by the pretrained toy model), one object, a fixed trajectory family per clip. Each
reference gets two target prompts that change colour and shape (appearance only: the motion
has to come from the customization). The ``appearance`` set adds leak-prone references
(:func:`.world.add_appearance`: a background grating and an unnamed distractor object that
neither the caption nor the target prompts name; the target prompts also avoid the
distractor's colour), so a customization that memorises the reference's appearance shows in
``background_leakage`` / ``distractor_leakage``. Written per clip: ``videos/<id>.mp4`` and
``videos/<id>.gt.json`` (the sidecar :mod:`motionmatcher.metrics.groundtruth` reads), plus
``manifest.csv``.

CLI::

    python -m motionmatcher.toy.clips OUT_DIR [--set benchmark|demo|appearance|leak_ablation] [--seed 0] [--frames 8]

``--set leak_ablation`` draws leak-prone references of ``appearance`` with the grating or the
distractor taken out (:data:`ABLATIONS`), everything else as drawn there.

``--frames 9`` draws the same references (same random draws: motion, appearance, prompts) at
9 frames, for the toy Wan model (``wan-toy`` of :mod:`.geometries`: its causal VAE takes
4k + 1 frames); the trajectory covers the same path in 9 frames instead of 8.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from ..files.atomic import atomic_write
from ..files.video import write_mp4
from . import world

#: The leak-prone setting of the ``appearance`` set: every kind of unprompted appearance.
LEAK = world.APPEARANCE_KINDS
_FAMILIES = ("line", "circle_cw", "circle_ccw", "zigzag", "bounce", "approach", "recede", "line")
_HELDOUT = sorted(world.HELDOUT_APPEARANCES)

#: (trajectory family, held-out appearance[, unprompted appearance kinds]) of each reference.
SETS: dict[str, list[tuple]] = {
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
    # 16 references: every trajectory family (and a second line) plain and leak-prone, every
    # held-out appearance once in each setting
    "appearance": [(t, _HELDOUT[k]) for k, t in enumerate(_FAMILIES)]
    + [(t, _HELDOUT[(k + 4) % 8], LEAK) for k, t in enumerate(_FAMILIES)],
}
VERSION = 1

#: Leak-prone references of the ``appearance`` set with one kind of unprompted appearance taken
#: out and every draw kept (object, path, prompts, the other kind): which kind makes a
#: customization worse than base there. (index in ``appearance``, kind removed) per clip.
ABLATIONS: dict[str, list[tuple[int, str]]] = {
    "leak_ablation": [(13, "background_pattern"), (13, "distractor"),
                      (14, "background_pattern"), (14, "distractor")],
}
_REMOVED_SUFFIX = {"background_pattern": "_nopattern", "distractor": "_nodistractor"}


def target_prompts(appearance: tuple[str, str, str], rng: np.random.Generator, n: int = 2,
                   exclude: tuple[str, ...] = ()) -> list[str]:
    """n prompts with another colour and another shape than the reference, same background
    (colours in ``exclude`` not used either)."""
    colour, shape, bg = appearance
    colours = [c for c in world.COLOURS if c != colour and c not in exclude]
    shapes = [s for s in world.SHAPES if s != shape]
    picks = rng.permutation(len(colours))[:n]
    return [f"a {colours[i]} {shapes[k % len(shapes)]} on a {bg} background" for k, i in enumerate(picks)]


def reference(which: str, index: int, seed: int = 0, n_frames: int = 8) -> tuple[str, "world.ClipSpec", list[str]]:
    """(video id, spec, target prompts) of reference ``index`` of set ``which``, ``n_frames`` long."""
    entry = SETS[which][index]
    traj, app = entry[:2]
    kinds = entry[2] if len(entry) > 2 else ()
    rng = np.random.default_rng([seed, index])
    spec = world.sample_clip(rng, appearance=app, trajectory=traj, two_object_prob=0.0,
                             motion_word_prob=1.0, n_frames=n_frames)
    vid = f"{index:02d}_{traj}_{app[0]}_{app[1]}"
    if kinds:  # drawn after the plain clip's draws: its motion is what the plain setting gives
        spec = world.add_appearance(spec, rng, kinds)
        vid += "_leak"
    dis = spec.distractor
    return vid, spec, target_prompts(app, rng, exclude=(dis.colour,) if dis is not None else ())


def ablated_reference(which: str, index: int, seed: int = 0, n_frames: int = 8
                      ) -> tuple[str, "world.ClipSpec", list[str]]:
    """Reference ``index`` of ablation set ``which`` (:data:`ABLATIONS`): the ``appearance``
    set's leak-prone reference with one kind of unprompted appearance removed, its video id
    suffixed ``_nopattern`` / ``_nodistractor``."""
    source, removed = ABLATIONS[which][index]
    vid, spec, prompts = reference("appearance", source, seed, n_frames)
    if not (spec.appearance or {}).get(removed):
        raise ValueError(f"{which}[{index}]: appearance reference {source} ({vid}) has no {removed} to remove")
    spec = dataclasses.replace(spec, appearance={**spec.appearance, removed: None})
    return vid + _REMOVED_SUFFIX[removed], spec, prompts


def write_clips(out: str | Path, which: str = "benchmark", seed: int = 0, fps: int = 8,
                n_frames: int = 8) -> Path:
    """Write the clips (``n_frames`` each), sidecars and manifest of set ``which``; returns the
    manifest path.

    A no-op when ``out`` already holds this set (same version, set and seed), so re-running
    the demo does not touch the clips' timestamps (Snakemake would redo everything)."""
    out = Path(out)
    # 8 frames: the stamp as it was before the frame count was a choice (existing folders stay valid)
    stamp = json.dumps(dict(version=VERSION, set=which, seed=seed, fps=fps,
                            **({"n_frames": n_frames} if n_frames != 8 else {})))
    if (out / "toy_clips.json").exists() and (out / "toy_clips.json").read_text() == stamp \
            and (out / "manifest.csv").exists():
        return out / "manifest.csv"
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    draw = reference if which in SETS else ablated_reference
    for i in range(len(SETS[which] if which in SETS else ABLATIONS[which])):
        vid, spec, prompts = draw(which, i, seed, n_frames)
        frames, gt = world.render_clip(spec)
        write_mp4(frames, out / "videos" / f"{vid}.mp4", fps=fps)
        side = json.dumps(world.gt_json(gt), indent=1)
        atomic_write(out / "videos" / f"{vid}.gt.json", ".json", lambda tmp, s=side: Path(tmp).write_text(s))
        for p in prompts:
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
    ap.add_argument("--set", dest="which", choices=sorted(SETS) + sorted(ABLATIONS), default="benchmark")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=8, help="frames per clip (9 for the toy Wan model)")
    a = ap.parse_args(argv)
    if a.frames < 2:
        ap.error(f"--frames {a.frames}: a clip needs at least 2 frames")
    print(write_clips(a.out, a.which, a.seed, n_frames=a.frames))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

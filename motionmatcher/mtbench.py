"""Import an MTBench folder (DeT, ICCV 2025) as a manifest of this pipeline, and find what its
evaluation tracks.

MTBench's layout, one folder per reference video ``<split>/<video>/``::

    videos/<video>.mp4              the reference clip (or the path in videos.txt)
    masks/<video>/00000.png         first-frame mask: its box is where the evaluation tracks
    trajectories/<video>.pth        DeT's training targets (not used by its evaluation)
    prompts.txt                     the caption of the reference video (first line)
    eval_prompts.txt                target prompts, one per line

The benchmark comes in three splits, ``MTBench_{easy,medium,hard}/<video>/``; the official
``evaluation.py`` treats every child of its ``--benchmark_root`` as a video folder, so one root
is one split. :func:`import_mtbench` takes either one split or a folder holding the splits (a
child named ``easy``, ``medium`` or ``hard``, alone or after ``_`` / ``-``), and writes one
manifest row per (video, eval prompt): ``video_id`` = the folder name, ``caption`` = the first
line of ``prompts.txt``, ``prompt`` = an eval prompt (whitespace stripped, empty lines skipped),
``difficulty`` = the split (empty when a lone split's name does not say it).
:func:`mtbench_setup` gives the ``mtbench_fidelity`` metric what to track for a video
(``metrics.mtbench``; ``docs/metrics_mtbench.md``).

CLI: ``python -m motionmatcher.mtbench MTBENCH_ROOT manifest.csv``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from motionmatcher.metrics.mtbench import (
    MTBENCH_REFERENCES,
    MTBenchSetup,
    box_mask,
    crop_mask,
    grid_points,
    read_first_frame_mask,
)

log = logging.getLogger(__name__)

__all__ = ["MTBenchError", "import_mtbench", "mtbench_rows", "stored_trajectories", "split_difficulty",
           "video_folder", "first_frame_mask", "mtbench_setup", "DIFFICULTIES"]

_VIDEO_SUFFIXES = (".mp4", ".gif", ".avi", ".mov", ".webm")
#: MTBench's splits, in order
DIFFICULTIES = ("easy", "medium", "hard")
_SPLIT = re.compile(r"(?:^|.*[_-])(easy|medium|hard)$", re.IGNORECASE)


class MTBenchError(ValueError):
    """The folder is not in MTBench's layout (the message names the file)."""


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _video_file(folder: Path) -> Path:
    listed = folder / "videos.txt"
    if listed.is_file():
        names = _lines(listed)
        if names:
            path = folder / names[0]
            if not path.is_file():
                raise MTBenchError(f"{listed}: lists {names[0]!r}, which does not exist")
            return path
    own = folder / "videos" / f"{folder.name}.mp4"
    if own.is_file():
        return own
    found = sorted(p for p in (folder / "videos").glob("*") if p.suffix.lower() in _VIDEO_SUFFIXES)
    if len(found) != 1:
        raise MTBenchError(f"{folder / 'videos'}: expected {folder.name}.mp4 or exactly one video, found "
                           f"{[p.name for p in found]}")
    return found[0]


def split_difficulty(name: str) -> str | None:
    """``easy`` / ``medium`` / ``hard`` when a folder name is one (``MTBench_hard``, ``hard``),
    else ``None``."""
    m = _SPLIT.fullmatch(name)
    return m.group(1).lower() if m else None


def _is_video_folder(folder: Path) -> bool:
    return (folder / "videos").is_dir() or (folder / "videos.txt").is_file()


def _children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _splits(root: Path) -> list[tuple[str | None, Path]]:
    """``[(difficulty, split folder)]``: the root's split children, or the root itself as one split."""
    children = _children(root)
    splits = [(split_difficulty(c.name), c) for c in children
              if not _is_video_folder(c) and split_difficulty(c.name)
              and any(map(_is_video_folder, _children(c)))]
    if not splits:
        return [(split_difficulty(root.name), root)]
    loose = [c.name for c in children if _is_video_folder(c)]
    if loose:
        names = ", ".join(p.name for _, p in splits)
        raise MTBenchError(f"MTBench root {str(root)!r} holds both splits ({names}) and video folders "
                           f"({', '.join(loose[:5])}); give one split or the folder of the splits")
    order = {d: i for i, d in enumerate(DIFFICULTIES)}
    return sorted(splits, key=lambda s: (order[s[0]], s[1].name))


def _split_rows(split: Path, difficulty: str | None) -> list[dict]:
    rows = []
    for folder in _children(split):
        if not _is_video_folder(folder):
            log.info("MTBench: %s has no videos/, skipped", folder)
            continue
        if not re.fullmatch(r"[A-Za-z0-9_-]+", folder.name):
            raise MTBenchError(f"{folder}: the folder name is the video_id and may only contain letters, "
                               "digits, '_' and '-'")
        for name in ("prompts.txt", "eval_prompts.txt"):
            if not (folder / name).is_file():
                raise MTBenchError(f"{folder / name}: missing (MTBench layout)")
        captions = _lines(folder / "prompts.txt")
        prompts = _lines(folder / "eval_prompts.txt")
        if not captions:
            raise MTBenchError(f"{folder / 'prompts.txt'}: empty; its first line is the caption")
        if not prompts:
            raise MTBenchError(f"{folder / 'eval_prompts.txt'}: no eval prompt")
        video = _video_file(folder)
        rows += [{"video_id": folder.name, "video_path": str(video), "caption": captions[0], "prompt": p,
                  "difficulty": difficulty or ""} for p in prompts]
    return rows


def mtbench_rows(root: str | Path) -> list[dict]:
    """Manifest rows (``video_id, video_path, caption, prompt, difficulty``) of every video folder
    of ``root``: one split, or a folder of splits (``easy``/``medium``/``hard``, e.g.
    ``MTBench_easy``)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MTBenchError(f"MTBench root {str(root)!r} is not a directory")
    rows, seen = [], {}
    for difficulty, split in _splits(root):
        for r in _split_rows(split, difficulty):
            first = seen.setdefault(r["video_id"], split)
            if first != split:
                raise MTBenchError(f"video_id {r['video_id']!r} is in two splits: "
                                   f"{first / r['video_id']} and {split / r['video_id']}")
            rows.append(r)
    if not rows:
        raise MTBenchError(f"MTBench root {str(root)!r} holds no video folder (<video>/videos/<video>.mp4, "
                           "or easy/medium/hard splits of them)")
    return rows


def import_mtbench(root: str | Path, manifest: str | Path) -> list[dict]:
    """Write the manifest CSV of an MTBench folder; returns its rows."""
    rows = mtbench_rows(root)
    manifest = Path(manifest)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["video_id", "video_path", "caption", "prompt", "difficulty"])
        writer.writeheader()
        writer.writerows(rows)
    log.info("MTBench: %d rows of %d videos -> %s", len(rows), len({r["video_id"] for r in rows}), manifest)
    return rows


def video_folder(root: str | Path | None, video_id: str) -> Path | None:
    """The folder of ``video_id`` under an MTBench root (one split, or the folder of the splits),
    or ``None`` when ``root`` is not set or has no such folder."""
    if root is None or str(root).strip() == "":
        return None
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    for _, split in _splits(root):
        if (split / video_id).is_dir():
            return split / video_id
    return None


def stored_trajectories(root: str | Path | None, video_id: str) -> Path | None:
    """DeT's training targets ``<folder>/trajectories/<video_id>.pth`` (or the path in
    ``trajectories.txt``) if they exist, else ``None``. Not the evaluation reference: MTBench's
    ``evaluation.py`` re-tracks the video (:func:`mtbench_setup`)."""
    folder = video_folder(root, video_id)
    if folder is None:
        return None
    listed = folder / "trajectories.txt"
    if listed.is_file() and _lines(listed):
        path = folder / _lines(listed)[0]
    else:
        path = folder / "trajectories" / f"{video_id}.pth"
    return path if path.is_file() else None


def first_frame_mask(root: str | Path | None, video_id: str) -> Path | None:
    """``<folder>/masks/<video_id>/00000.png`` (the path ``evaluation.py`` opens) if it exists."""
    folder = video_folder(root, video_id)
    path = None if folder is None else folder / "masks" / video_id / "00000.png"
    return path if path is not None and path.is_file() else None


def mtbench_setup(cfg: Mapping[str, Any], video_id: str, video_path: str | Path,
                  size: tuple[int, int], start_frame: int = 0) -> MTBenchSetup:
    """What ``mtbench_fidelity`` tracks for one video, from the ``metrics.mtbench`` config.

    * the box of ``masks/<video>/00000.png`` under ``cfg["root"]`` (:func:`first_frame_mask`),
      for ``reference: clip`` cropped like the frames (:func:`~motionmatcher.metrics.mtbench.crop_mask`
      to ``size = (height, width)``); no mask file: the whole grid, no support grid (the
      official code's ``else`` branch), logged;
    * for ``reference: mtbench`` the original clip ``video_path``, every frame at its own size.

    Raises:
        MTBenchError: ``reference: mtbench`` without the video's mask (naming the path looked for).
    """
    reference = str(cfg.get("reference", "clip"))
    if reference not in MTBENCH_REFERENCES:
        raise MTBenchError(f"metrics.mtbench.reference must be one of {MTBENCH_REFERENCES}, "
                           f"got {reference!r}")
    grid = int(cfg.get("grid_size", 50))
    mask_path = first_frame_mask(cfg.get("root"), video_id)
    if mask_path is None:
        if reference == "mtbench":
            raise MTBenchError(f"metrics.mtbench.reference: mtbench: no first-frame mask of {video_id!r} "
                               f"(masks/{video_id}/00000.png) under metrics.mtbench.root {cfg.get('root')!r}")
        log.warning("MTBench: no first-frame mask of %s under metrics.mtbench.root %r: the whole %dx%d grid "
                    "is tracked (as evaluation.py without a mask file)", video_id, cfg.get("root"), grid, grid)
        return MTBenchSetup(reference, grid_points(grid), False, grid)
    mask = read_first_frame_mask(mask_path)
    frames = None
    if reference == "clip":
        if int(start_frame) != 0:
            log.warning("MTBench: %s starts at frame %d but MTBench's masks are of frame 0 (masks/ is "
                        "indexed by the source dataset's frames): the box is of frame 0", video_id, start_frame)
        mask = crop_mask(mask, width=int(size[1]), height=int(size[0]))
        if not mask.any():
            raise MTBenchError(f"{mask_path}: the mask lies outside the centre crop to {size[1]}x{size[0]}")
    else:
        from motionmatcher.files.video import read_mp4

        frames = read_mp4(video_path)
        if frames.shape[1:3] != mask.shape:
            log.warning("MTBench: %s is %dx%d, its mask %s is %dx%d (the box is placed in CoTracker's "
                        "resolution, as evaluation.py does)", video_path, frames.shape[2], frames.shape[1], mask_path,
                        mask.shape[1], mask.shape[0])
    points = grid_points(grid, box_mask(mask))
    if len(points) == 0:
        raise MTBenchError(f"{mask_path}: no point of the {grid}x{grid} grid falls inside the mask's box")
    log.info("MTBench %s: %d of %dx%d grid points in the box of %s (%s reference)", video_id, len(points),
             grid, grid, mask_path, reference)
    return MTBenchSetup(reference, points, True, grid, str(mask_path), frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="MTBench folder: one split (one sub-folder per video) or the folder "
                                     "of the easy/medium/hard splits")
    parser.add_argument("manifest", help="manifest CSV to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = import_mtbench(args.root, args.manifest)
    print(f"{len(rows)} rows -> {args.manifest}; set metrics.mtbench.enabled: true and metrics.mtbench.root: "
          f"{Path(args.root).resolve()} (the first-frame masks; docs/metrics_mtbench.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

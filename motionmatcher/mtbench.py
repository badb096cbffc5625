"""Import an MTBench folder (DeT, ICCV 2025) as a manifest of this pipeline.

MTBench's layout, one folder per reference video ``<root>/<video>/``::

    videos/<video>.mp4              the reference clip (or the path in videos.txt)
    masks/<video>/00000.png         first-frame mask (not used here)
    trajectories/<video>.pth        CoTracker3 trajectories, (T, N, 3) = (x/W, y/H, visibility)
    prompts.txt                     the caption of the reference video (first line)
    eval_prompts.txt                target prompts, one per line

:func:`import_mtbench` writes one manifest row per (video, eval prompt): ``video_id`` = the
folder name, ``caption`` = the first line of ``prompts.txt``, ``prompt`` = an eval prompt
(whitespace stripped, empty lines skipped). :func:`stored_trajectories` finds the stored
trajectories of a video for the ``mtbench_fidelity`` metric (``metrics.mtbench.root``).

CLI: ``python -m motionmatcher.mtbench MTBENCH_ROOT manifest.csv``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["MTBenchError", "import_mtbench", "mtbench_rows", "stored_trajectories"]

_VIDEO_SUFFIXES = (".mp4", ".gif", ".avi", ".mov", ".webm")


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


def mtbench_rows(root: str | Path) -> list[dict]:
    """Manifest rows (``video_id, video_path, caption, prompt``) of every video folder of ``root``."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MTBenchError(f"MTBench root {str(root)!r} is not a directory")
    rows = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        if not (folder / "videos").is_dir() and not (folder / "videos.txt").is_file():
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
        rows += [{"video_id": folder.name, "video_path": str(video), "caption": captions[0], "prompt": p}
                 for p in prompts]
    if not rows:
        raise MTBenchError(f"MTBench root {str(root)!r} holds no video folder (<video>/videos/<video>.mp4)")
    return rows


def import_mtbench(root: str | Path, manifest: str | Path) -> list[dict]:
    """Write the manifest CSV of an MTBench folder; returns its rows."""
    rows = mtbench_rows(root)
    manifest = Path(manifest)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["video_id", "video_path", "caption", "prompt"])
        writer.writeheader()
        writer.writerows(rows)
    log.info("MTBench: %d rows of %d videos -> %s", len(rows), len({r["video_id"] for r in rows}), manifest)
    return rows


def stored_trajectories(root: str | Path | None, video_id: str) -> Path | None:
    """``<root>/<video_id>/trajectories/<video_id>.pth`` (or the path in ``trajectories.txt``)
    if it exists, else ``None``."""
    if root is None or str(root).strip() == "":
        return None
    folder = Path(root).expanduser() / video_id
    listed = folder / "trajectories.txt"
    if listed.is_file() and _lines(listed):
        path = folder / _lines(listed)[0]
    else:
        path = folder / "trajectories" / f"{video_id}.pth"
    return path if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="MTBench folder (one sub-folder per video)")
    parser.add_argument("manifest", help="manifest CSV to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = import_mtbench(args.root, args.manifest)
    print(f"{len(rows)} rows -> {args.manifest}; set metrics.mtbench.root: {Path(args.root).resolve()} "
          "to score against its stored trajectories")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

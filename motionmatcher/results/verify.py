"""Find damaged workflow files and make the next Snakemake run rebuild them (``make verify``).

Snakemake decides what to rerun from file times, parameters and code, not from content: a
truncated ``samples.parquet`` or a bit-flipped adapter is "up to date" to it. This reads every
checked tensor file (:func:`motionmatcher.files.tensor_files.read_checked`: content hash, finite
values) and every Parquet table (:func:`motionmatcher.files.table_schemas.read_table`) under the given
folders and lists each damaged one with the workflow output that rebuilds it. With
``--delete`` that output is deleted, so the next plain ``snakemake`` run makes it again (and,
by file time, everything made from it)::

    python -m motionmatcher.results.verify results resources            # report only (exit 1 if damaged)
    python -m motionmatcher.results.verify --delete results resources   # then rerun snakemake

Not checked: training resume checkpoints (``checkpoints/``: the trainer checks them itself and
falls back to an older one) and tensor files without a content hash that are not adapters
(model weights, files of other programs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["Damage", "find_damage", "main"]

SKIP_DIRS = {"checkpoints", ".snakemake", "models"}


class Damage(dict):
    """``{"path", "problem", "target"}``: a damaged file and the output that rebuilds it."""


def _target(path: Path, meta: dict | None) -> Path:
    if meta and meta.get("rebuild_target"):
        return Path(os.path.normpath(path.parent / meta["rebuild_target"]))
    if path.parent.name == "videos" and (path.parent.parent / "samples.parquet").exists():
        return path.parent.parent / "samples.parquet"  # a sample's frames: rule sample's table
    return path


def _header(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > 100_000_000:
                return None
            return dict(json.loads(f.read(n)).get("__metadata__") or {})
    except (OSError, ValueError):
        return None


def _check_tensor_file(path: Path) -> Damage | None:
    from ..files.tensor_files import CorruptFileError, read_checked

    meta = _header(path)
    if meta is not None and "content_sha256" not in meta and path.name != "adapter_model.safetensors":
        return None  # not a checked file of the workflow
    try:
        read_checked(path)
    except CorruptFileError as e:
        return Damage(path=str(path), problem=e.problem, target=str(_target(path, meta)))
    return None


def _check_table(path: Path) -> Damage | None:
    from ..files.table_schemas import read_table
    from ..files.tensor_files import CorruptFileError

    try:
        read_table(path)
    except CorruptFileError as e:
        return Damage(path=str(path), problem=e.problem, target=str(path))
    return None


def find_damage(folders) -> list[Damage]:
    """Every damaged checked tensor file and Parquet table under ``folders``."""
    out = []
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            for name in sorted(files):
                path = Path(root) / name
                if name.endswith(".safetensors"):
                    d = _check_tensor_file(path)
                elif name.endswith(".parquet"):
                    d = _check_table(path)
                else:
                    continue
                if d:
                    out.append(d)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", default=["results", "resources"])
    ap.add_argument("--delete", action="store_true",
                    help="delete the output that rebuilds each damaged file, so the next snakemake run remakes it")
    args = ap.parse_args(argv)
    damage = find_damage([f for f in args.folders if os.path.isdir(f)])
    for d in damage:
        print(f"damaged: {d['path']}: {d['problem']}\n  rebuilt by: {d['target']}")
    if not damage:
        print(f"no damaged files under {', '.join(args.folders)}")
        return 0
    if args.delete:
        for target in sorted({d["target"] for d in damage}):
            Path(target).unlink(missing_ok=True)
            print(f"deleted {target}")
        print("now rerun your snakemake command (e.g. `make demo`): it rebuilds the deleted outputs "
              "and what is made from them")
        return 0
    print(f"{len(damage)} damaged file(s); `python -m motionmatcher.results.verify --delete {' '.join(args.folders)}` "
          "deletes their outputs so that the next snakemake run rebuilds them")
    return 1


if __name__ == "__main__":
    sys.exit(main())

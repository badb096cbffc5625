"""What a job records about how its result was made: the code version (``git describe``), the
versions of the libraries that change numbers, and short hashes of configs (the fingerprints of
training runs and metric definitions)."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["VERSIONED_PACKAGES", "code_version", "config_hash", "library_versions"]

VERSIONED_PACKAGES = ("torch", "diffusers", "peft", "transformers", "open_clip_torch", "snakemake", "numpy")


def config_hash(obj, full: bool = False) -> str:
    """sha256 of ``obj`` as canonical JSON: 12 hex digits, or all 64 with ``full``."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
    return digest if full else digest[:12]


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def code_version() -> str:
    """``git describe`` of the repository holding this package, or the package version."""
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return metadata.version("motionmatcher")
    except metadata.PackageNotFoundError:
        return "unknown"

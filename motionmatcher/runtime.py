"""Plumbing shared by the workflow scripts: logging, devices, atomic files, provenance."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from motionmatcher.tensor_files import serialize, write_bytes_atomic

# torch is imported where it is used: the workflow's DAG process imports this module
# (code_version) and must not pay for torch (issue 21)

log = logging.getLogger("motionmatcher")

VERSIONED_PACKAGES = ("torch", "diffusers", "peft", "transformers", "open_clip_torch", "snakemake", "numpy")


def setup_script(smk) -> logging.Logger:
    """Send a rule script's stderr (logging, tqdm, warnings) to the rule's ``log:`` file, take a
    GPU slot for rules that request ``gpu`` (motionmatcher.gpu_slots) and use the rule's
    ``threads`` for torch."""
    attempt = getattr(smk.resources, "attempt", None)
    if smk.log:
        Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
        target = smk.log[0]
        if attempt is not None:  # a retried rule: each attempt keeps its own log (memory_levels)
            from motionmatcher.memory_levels import attempt_log

            target = attempt_log(smk.log[0], attempt)
        sys.stderr = open(target, "w", buffering=1)
        if attempt is not None:  # the rule's log: the same file under its declared name
            Path(smk.log[0]).unlink(missing_ok=True)
            try:
                os.link(target, smk.log[0])
            except OSError:  # a file system without hard links
                os.symlink(Path(target).name, smk.log[0])
        # file descriptor 2 too: what child processes (ffmpeg) and C libraries print on an
        # error goes to the rule's log, not to Snakemake's console
        os.dup2(sys.stderr.fileno(), 2)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # before a GPU slot or any work: a retry only after an out-of-memory
    if attempt is not None and smk.log:
        from motionmatcher.memory_levels import check_retry

        check_retry(smk.log[0], attempt, f"rule {smk.rule} {dict(smk.wildcards)}")
    # A GPU rule on a workstation takes a free device (CUDA_VISIBLE_DEVICES) before anything
    # initialises CUDA; under Slurm, or without GPUs, this does nothing.
    if int(getattr(smk.resources, "gpu", 0) or 0) > 0:
        from motionmatcher.gpu_slots import acquire_gpu_slot

        acquire_gpu_slot(f"{smk.rule} {dict(smk.wildcards)}", n=int(smk.resources.gpu))
    import torch

    torch.set_num_threads(max(1, int(smk.threads)))
    log.info("rule %s, wildcards %s, threads %s, attempt %s", smk.rule, dict(smk.wildcards), smk.threads,
             getattr(smk.resources, "attempt", 1))
    return log


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write safetensors atomically (temp file + rename, the temporary removed on failure);
    metadata values are stringified and written in sorted key order (identical inputs give
    identical bytes). Cached files that readers must check: :func:`motionmatcher.tensor_files.write_checked`."""
    write_bytes_atomic(path, serialize(tensors, metadata))


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device))


def tensor_metadata(path: str | os.PathLike) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def write_json(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


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
    repo = Path(__file__).resolve().parents[1]
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

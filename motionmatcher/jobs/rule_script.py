"""The first call of every workflow rule script: :func:`setup_script` (the rule's log, a GPU slot,
threads, a retry only after an out-of-memory)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

# torch is imported in setup_script: the table jobs (aggregation) import this module without it

__all__ = ["setup_script"]

log = logging.getLogger("motionmatcher")


def setup_script(smk) -> logging.Logger:
    """Send a rule script's stderr (logging, tqdm, warnings) to the rule's ``log:`` file, take a
    GPU slot for rules that request ``gpu`` (motionmatcher.jobs.gpu_slots) and use the rule's
    ``threads`` for torch."""
    attempt = getattr(smk.resources, "attempt", None)
    if smk.log:
        Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
        target = smk.log[0]
        if attempt is not None:  # a retried rule: each attempt keeps its own log (memory_levels)
            from motionmatcher.jobs.memory_levels import attempt_log

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
        from motionmatcher.jobs.memory_levels import check_retry

        check_retry(smk.log[0], attempt, f"rule {smk.rule} {dict(smk.wildcards)}")
    # A GPU rule on a workstation takes a free device (CUDA_VISIBLE_DEVICES) before anything
    # initialises CUDA; under Slurm, or without GPUs, this does nothing.
    if int(getattr(smk.resources, "gpu", 0) or 0) > 0:
        from motionmatcher.jobs.gpu_slots import acquire_gpu_slot

        acquire_gpu_slot(f"{smk.rule} {dict(smk.wildcards)}", n=int(smk.resources.gpu))
    import torch

    torch.set_num_threads(max(1, int(smk.threads)))
    log.info("rule %s, wildcards %s, threads %s, attempt %s", smk.rule, dict(smk.wildcards), smk.threads,
             getattr(smk.resources, "attempt", 1))
    return log

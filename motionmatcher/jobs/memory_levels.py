"""GPU memory levels: what a retried ``customize`` / ``sample`` job changes to fit in memory.

A job that runs out of GPU memory fails with :class:`GpuOutOfMemory`, whose message names the
settings that lower memory; the rules declare ``retries: 2`` and pass Snakemake's ``attempt``
(as the ``attempt`` resource), so each retry runs at the next level:

====== =============================================== =============================================
level  training (``customize``)                        sampling (``sample``)
====== =============================================== =============================================
0      the configured settings                         the configured settings
1      ``gradient_checkpointing: true``                ``batch_size: 1``
2      as level 1                                      ``batch_size: 1``, ``vae_chunk_size: 1``
====== =============================================== =============================================

Every level computes the same thing: gradient checkpointing recomputes the same forward
(motionmatcher.customization.checkpointing; resume checkpoints stay valid across levels), and each sample has
its own seeded generator, so batching and VAE chunking change only floating-point rounding. The level and what it changed are recorded in ``run.json``.

Only an out-of-memory is retried: Snakemake's ``retries`` reruns any failure, so attempt N > 1
first reads attempt N − 1's log (:func:`check_retry`) and stops at once, naming that log, unless
it records a CUDA out-of-memory (a NaN, a manifest error or a missing file would fail the same way
again). Each attempt keeps its own log, ``<log>.attempt<N>`` (:func:`attempt_log`; the rule's
``log:`` is a hard link to the current attempt's), because Snakemake removes the rule's log of a
failed attempt before the retry.

Fault injection: ``MOTIONMATCHER_INJECT_OOM=customize,sample`` (rule names) raises
``torch.cuda.OutOfMemoryError`` at level 0 of those rules, so the whole path (message, retry,
record) can be tested without a GPU.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

__all__ = ["LEVELS", "GpuOutOfMemory", "NotRetried", "memory_level", "apply_memory_level", "out_of_memory_hint",
           "ENV_INJECT", "OOM_MARK", "attempt_log", "check_retry"]

ENV_INJECT = "MOTIONMATCHER_INJECT_OOM"

LEVELS: dict[str, list[dict]] = {
    "train": [{}, {"gradient_checkpointing": True}, {"gradient_checkpointing": True}],
    "sample": [{}, {"batch_size": 1}, {"batch_size": 1, "vae_chunk_size": 1}],
}

#: what to tell a user who runs out of memory, per kind of job
ADVICE = {
    "train": ("training.gradient_checkpointing: true (or the method's train.gradient_checkpointing); "
              "fewer video.n_frames or a smaller video.width/height (then rebuild the caches); "
              "dtype: bfloat16"),
    "sample": ("sampling.batch_size: 1; sampling.vae_chunk_size: 1 (or the method's sample.*); "
               "dtype: bfloat16 or float16"),
}


class GpuOutOfMemory(RuntimeError):
    """CUDA ran out of memory; the message says which settings lower memory."""


class NotRetried(RuntimeError):
    """A retry after a failure that was not a CUDA out-of-memory: stopped before any work."""


#: the line :func:`out_of_memory_hint` writes to the job's log on an out-of-memory
OOM_MARK = "motionmatcher: CUDA out of memory"


def attempt_log(log: str | os.PathLike, attempt: int) -> Path:
    """Attempt ``attempt``'s own log next to the rule's ``log`` (which Snakemake deletes
    before a retry): ``<log>.attempt<N>``."""
    return Path(f"{log}.attempt{int(attempt)}")


def check_retry(log: str | os.PathLike, attempt: int, rule: str) -> None:
    """Raise :class:`NotRetried` on attempt N > 1 unless attempt N − 1's log records a CUDA
    out-of-memory (:data:`OOM_MARK`, or torch's "CUDA out of memory" message)."""
    if int(attempt) <= 1:
        return
    prev = attempt_log(log, int(attempt) - 1)
    text = prev.read_text(errors="replace") if prev.exists() else ""
    if OOM_MARK in text or "CUDA out of memory" in text:
        return
    raise NotRetried(
        f"{rule}: attempt {int(attempt) - 1} failed with an error that is not a CUDA out-of-memory "
        f"(its log: {prev}{'' if prev.exists() else ', missing'}); only an out-of-memory is retried "
        f"(at the next memory level), so attempt {int(attempt)} stops here")


def memory_level(attempt: int, kind: str) -> int:
    """Level of Snakemake attempt ``attempt`` (1-based), capped at the last level."""
    return max(0, min(int(attempt) - 1, len(LEVELS[kind]) - 1))


def apply_memory_level(settings: dict, kind: str, level: int) -> tuple[dict, dict]:
    """``settings`` (a method's ``train`` or ``sample`` dict) at ``level``; returns (new
    settings, the entries the level changed)."""
    changes = {k: v for k, v in LEVELS[kind][level].items() if settings.get(k) != v}
    return {**settings, **changes}, changes


@contextlib.contextmanager
def out_of_memory_hint(rule: str, kind: str, level: int, label: str = ""):
    """Turn ``torch.cuda.OutOfMemoryError`` inside the block into :class:`GpuOutOfMemory`
    naming the memory level and the settings that lower memory; inject one when
    ``MOTIONMATCHER_INJECT_OOM`` names ``rule`` and this is level 0."""
    try:
        injected = rule in [r.strip() for r in os.environ.get(ENV_INJECT, "").split(",")]
        if injected and level == 0:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by {ENV_INJECT}={os.environ[ENV_INJECT]})")
        yield
    except torch.cuda.OutOfMemoryError as e:
        print(f"{OOM_MARK} (rule {rule}, memory level {level})", file=sys.stderr, flush=True)
        last = len(LEVELS[kind]) - 1
        nxt = (f"Snakemake retries this job at memory level {level + 1}: {LEVELS[kind][level + 1]}"
               if level < last else "this was the last memory level")
        raise GpuOutOfMemory(
            f"{rule} {label}: CUDA out of memory at memory level {level} ({LEVELS[kind][level] or 'configured settings'}). "
            f"{nxt}. Settings that lower memory: {ADVICE[kind]}. ({e})"
        ) from e

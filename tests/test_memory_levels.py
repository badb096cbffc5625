"""GPU memory levels of retried jobs (motionmatcher.jobs.memory_levels)."""

from __future__ import annotations

import pytest
import torch

from motionmatcher.jobs.memory_levels import (GpuOutOfMemory, apply_memory_level, memory_level,
                                              out_of_memory_hint)


def test_levels_step_up_and_cap():
    assert [memory_level(a, "sample") for a in (1, 2, 3, 4)] == [0, 1, 2, 2]
    s, changed = apply_memory_level({"batch_size": 4, "vae_chunk_size": 8, "seeds": [0]}, "sample", 2)
    assert s == {"batch_size": 1, "vae_chunk_size": 1, "seeds": [0]} and changed == {"batch_size": 1, "vae_chunk_size": 1}
    t, changed = apply_memory_level({"gradient_checkpointing": False, "steps": 4}, "train", 1)
    assert t["gradient_checkpointing"] is True and changed == {"gradient_checkpointing": True}
    assert apply_memory_level({"steps": 4}, "train", 0) == ({"steps": 4}, {})


def test_oom_message_names_the_settings_and_next_level():
    with pytest.raises(GpuOutOfMemory) as e:
        with out_of_memory_hint("sample", "sample", 0, "video v"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
    msg = str(e.value)
    assert "memory level 0" in msg and "vae_chunk_size: 1" in msg and "batch_size: 1" in msg
    assert "retries this job at memory level 1" in msg and "Tried to allocate" in msg
    with pytest.raises(GpuOutOfMemory, match="last memory level"):
        with out_of_memory_hint("customize", "train", 2):
            raise torch.cuda.OutOfMemoryError("x")


def test_injection_switch_fires_on_the_first_level_only(monkeypatch):
    monkeypatch.setenv("MOTIONMATCHER_INJECT_OOM", "customize")
    with pytest.raises(GpuOutOfMemory, match="injected"):
        with out_of_memory_hint("customize", "train", 0):
            pass
    with out_of_memory_hint("customize", "train", 1):
        pass
    with out_of_memory_hint("sample", "sample", 0):
        pass


ATTEMPT_SCRIPT = """
import sys, types
import torch
from motionmatcher.jobs.rule_script import setup_script
from motionmatcher.jobs.memory_levels import out_of_memory_hint
smk = types.SimpleNamespace(log=[sys.argv[1]], resources=types.SimpleNamespace(attempt=int(sys.argv[2])),
                            threads=1, rule="sample", wildcards={"video": "v"})
log = setup_script(smk)
log.info("attempt %s works", sys.argv[2])
if sys.argv[3] == "oom":
    with out_of_memory_hint("sample", "sample", 0, "video v"):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
if sys.argv[3] == "nan":
    raise FloatingPointError("loss is NaN at step 3")
"""


def _attempt(tmp_path, attempt, outcome):
    import subprocess
    import sys

    from workflow_helpers import REPO

    log = tmp_path / "logs" / "sample.log"
    return log, subprocess.run([sys.executable, "-c", ATTEMPT_SCRIPT, str(log), str(attempt), outcome],
                               capture_output=True, text=True, cwd=REPO, timeout=120)


def test_only_an_out_of_memory_is_retried_and_each_attempt_keeps_its_log(tmp_path):
    """Snakemake's `retries` reruns any failure and deletes the failed attempt's log first:
    a retry after a NaN stops before any work, naming the first attempt's log, which is kept."""
    log, res = _attempt(tmp_path, 1, "nan")
    assert res.returncode != 0
    first = log.with_name("sample.log.attempt1")
    assert "loss is NaN" in first.read_text() and log.read_text() == first.read_text()
    log.unlink()  # what Snakemake does before the retry
    _, res = _attempt(tmp_path, 2, "ok")
    assert res.returncode != 0
    text = log.read_text()
    assert "NotRetried" in text and "not a CUDA out-of-memory" in text and str(first) in text
    assert "attempt 2 works" not in text  # stopped before any work
    assert "loss is NaN" in first.read_text()  # the first attempt's log survives

    # an out-of-memory is retried (at the next memory level), and both logs are kept
    other = tmp_path / "oom"
    log, res = _attempt(other, 1, "oom")
    assert res.returncode != 0 and "CUDA out of memory at memory level 0" in log.read_text()
    log.unlink()
    log, res = _attempt(other, 2, "ok")
    assert res.returncode == 0, log.read_text()
    assert "attempt 2 works" in log.read_text() == log.with_name("sample.log.attempt2").read_text()
    assert "memory level 0" in log.with_name("sample.log.attempt1").read_text()

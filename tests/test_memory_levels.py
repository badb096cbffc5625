"""GPU memory levels of retried jobs (motionmatcher.memory_levels)."""

from __future__ import annotations

import pytest
import torch

from motionmatcher.memory_levels import GpuOutOfMemory, apply_memory_level, memory_level, out_of_memory_hint


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

"""Fingerprints of the weights behind a metric, recorded in every metrics row.

Two runs are only comparable when the metric definitions (variant, tracker, grid) and the
weights agree; the tables carry a short SHA-256 of each so that a difference shows.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

__all__ = ["file_sha256", "module_sha256", "SHORT"]

#: hex digits kept (48 bits: enough to tell two weight files apart in a table)
SHORT = 16


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:SHORT]


def file_sha256(path: str | Path) -> str:
    """Short SHA-256 of a file's bytes (memoised on path, size and modification time)."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return _file_sha256(str(p), st.st_size, st.st_mtime_ns)


def module_sha256(module) -> str:
    """Short SHA-256 of a torch module's state dict (names, dtypes, shapes and values, in order):
    identifies the weights whatever file or cache they came from."""
    import torch

    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:SHORT]

"""Measurement plumbing shared by the benchmark scripts.

Each variant runs in its own child process (so peak memory is not inherited from the one
before); a child prints one ``RESULT {json}`` line. Peak memory is
``torch.cuda.max_memory_allocated`` on a GPU, and on a CPU the peak RSS increase sampled by a
psutil thread about every millisecond (approximate: short spikes can be missed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

MEMORY_CUDA = "cuda max_memory_allocated"
MEMORY_CPU = "peak RSS increase (psutil, ~1 ms sampling)"


class RssSampler:
    def __init__(self, interval=0.001):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def rss_now() -> int:
    import psutil

    return psutil.Process().memory_info().rss


@contextmanager
def measured(device, base_rss: int | None = None):
    """Time and peak memory of the block: yields a dict that gets ``seconds`` and ``peak_bytes``
    (over the memory in use at entry, or over ``base_rss`` on CPU)."""
    import torch

    out = {}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        yield out
        torch.cuda.synchronize()
        out["seconds"] = time.perf_counter() - t0
        out["peak_bytes"] = torch.cuda.max_memory_allocated() - before
    else:
        base = rss_now() if base_rss is None else base_rss
        with RssSampler() as s:
            t0 = time.perf_counter()
            yield out
            out["seconds"] = time.perf_counter() - t0
        out["peak_bytes"] = s.peak - base


def memory_kind(device) -> str:
    return MEMORY_CUDA if device.type == "cuda" else MEMORY_CPU


def run_children(script: str, argv: list[str], names: list[str], what: str) -> list[dict]:
    """Run ``script argv --_child NAME`` for each name in its own process; collect RESULTs."""
    results = []
    for name in names:
        cmd = [sys.executable, str(Path(script).resolve()), *argv, "--_child", name]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"{what} {name} failed (exit {proc.returncode})")
        results.append(json.loads(lines[-1][7:]))
        print(f"  {name}: done", file=sys.stderr, flush=True)
    return results

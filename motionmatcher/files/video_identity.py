"""The identity of a reference video file -- its size and sha256 -- as a small JSON file that
the ``preprocess`` rule takes as an input.

Snakemake reruns a job when an input is newer than its outputs. A reference replaced by an
*older* file of the same name (``cp -p other.mp4 ref.mp4``, a restore from a backup, an rsync
of another tree) is not newer, so the results kept describing the old clip. The identity file
closes that hole: it gets the current time exactly when the video's size or content hash
differ from the recorded ones, which makes ``preprocess`` (and everything made
from it) out of date.

Hashing every video on every Snakemake start would be slow at dataset scale, so the record
also holds the path, size and modification time it was computed from: when those are
unchanged the recorded hash is taken as is. When only the path or modification time changed
(a touched file, a moved folder) and the content is the same, the record is updated but keeps
its file time (nothing reruns because of it). A record made for the first time gets the video's own modification time, so adding this
check to existing results does not rebuild them.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .atomic import write_bytes_atomic

__all__ = ["file_sha256", "record_video_identities", "record_video_identity"]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read(record: Path) -> dict | None:
    try:
        rec = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def record_video_identity(video: str | os.PathLike, record: str | os.PathLike) -> dict:
    """Bring ``record`` (JSON: video_path, size, sha256, mtime_ns) up to date with ``video``
    and return its content. The file gets a new modification time only when the video's size
    or sha256 changed; the path is only part of the cache key (a moved project folder is up to
    date; see the module docstring)."""
    video, record = Path(video), Path(record)
    st = video.stat()
    old = _read(record)
    here = {"video_path": str(video.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if old and all(old.get(k) == v for k, v in here.items()) and old.get("sha256"):
        return old  # unchanged path, size and time: the recorded hash stands
    new = {**here, "sha256": file_sha256(video)}
    same_content = old is not None and all(old.get(k) == new[k] for k in ("size", "sha256"))
    previous_time = record.stat().st_mtime_ns if same_content else None
    write_bytes_atomic(record, (json.dumps(new, indent=2, sort_keys=True) + "\n").encode())
    if same_content:  # only the time changed: keep the record's time, nothing reruns for it
        os.utime(record, ns=(previous_time, previous_time))
    elif old is None:  # first record: as old as the video, so existing results stay up to date
        os.utime(record, ns=(st.st_mtime_ns, st.st_mtime_ns))
    return new


def record_video_identities(records: dict[str, tuple[str | os.PathLike, str | os.PathLike]],
                            workers: int = 8) -> None:
    """:func:`record_video_identity` for every ``{video_id: (video, record)}``, in ``workers``
    threads (hashing is I/O and C code; an unchanged video costs a stat and a small read).

    The workflow calls this once, before Snakemake builds the DAG: a record written while the
    DAG is built is not seen by Snakemake, which lists a folder's files once and caches them."""
    items = list(records.values())
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        list(pool.map(lambda pair: record_video_identity(*pair), items))

"""Atomic writing, the one way every file and folder of the package is written.

A reader (a later job, a rerun after a crash, ``make verify``) must never see half a file. Each
writer here makes its result under a temporary name in the destination folder -- unique
(``.<name>.<random>.tmp<suffix>``), so two writers of one path never share a temporary -- then:

1. fsyncs the temporary file (its bytes are on disk before the name points at them),
2. renames it onto the final name with :func:`os.replace` (atomic within one file system),
3. fsyncs the folder (the rename itself survives a power cut).

The temporary is removed if anything fails (a full disk, an exception of the writer, Ctrl-C).
Files get the usual permissions, ``0666`` less the umask (not ``tempfile.mkstemp``'s ``0600``),
folders ``0777`` less the umask (not ``tempfile.mkdtemp``'s ``0700``).

* :func:`atomic_write` -- ``write(tmp_path)`` makes the file (ffmpeg, pyarrow, PIL, ...);
* :func:`write_bytes_atomic`, :func:`write_text_atomic`, :func:`write_json` -- the common cases;
* :func:`atomic_directory` -- a folder that appears complete or not at all (models, checkpoints).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["atomic_directory", "atomic_write", "write_bytes_atomic", "write_json", "write_text_atomic"]

PathLike = str | os.PathLike


def _fsync_path(path: PathLike) -> None:
    """fsync a file or a folder by name (a file system that cannot fsync a folder is let be)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_path(os.path.join(folder, name))
        _fsync_path(folder)


def _temporary_name(dest: Path, suffix: str) -> Path:
    return dest.parent / f".{dest.name}.{secrets.token_hex(4)}.tmp{suffix}"


def atomic_write(path: PathLike, suffix: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` -- it makes the file at ``tmp_path`` -- then move it onto ``path``.

    ``suffix`` ends the temporary's name, for writers that pick the format from it (``.mp4``).
    The temporary lives in the destination folder (created if needed), is fsynced before the
    rename, and the folder after it; it is removed if ``write`` fails.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temporary_name(dest, suffix)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0666 less the umask
        except FileExistsError:  # pragma: no cover - astronomically unlikely
            continue
        os.close(fd)
        break
    try:
        write(str(tmp))
        _fsync_path(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(dest.parent)


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, "", lambda tmp: Path(tmp).write_bytes(data))


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path: PathLike, obj) -> None:
    """``obj`` as indented JSON with sorted keys (anything else as ``str``), atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """A folder that appears at ``path`` complete or not at all.

    Yields a fresh temporary folder next to ``path`` to fill; when the block ends without an
    exception, every file in it is fsynced, an existing ``path`` is removed and the temporary is
    renamed onto ``path`` (then the parent is fsynced). On an exception the temporary is removed
    and ``path`` is left as it was.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temporary_name(dest, "")
        try:
            os.mkdir(tmp, 0o777)  # 0777 less the umask
        except FileExistsError:  # pragma: no cover
            continue
        break
    try:
        yield tmp
        _fsync_tree(tmp)
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_path(dest.parent)

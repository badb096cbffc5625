"""Safetensors files that say what produced them, and readers that check it.

Every cached tensor file of the pipeline (frames, latents, inversion, resume checkpoints) is
written by :func:`write_checked` and read by :func:`read_checked`. The header metadata holds

* ``content_sha256`` -- :func:`content_hash` of the tensors (names, dtypes, shapes, bytes);
* ``shapes`` -- ``{name: shape}``;
* ``model_identity`` -- the model that produced it, where one did;
* ``rebuild`` -- the command that writes the file again,

plus whatever the writer adds. A reader gets the tensors only when the file parses, the hash
matches the bytes, and the shapes and the model identity are the ones it expects; otherwise a
:class:`CorruptFileError` names the file, what is wrong and the rebuild command. A truncated
file, zeroed tensor data or a cache made with another model are all caught before any work.

The header is written with its metadata keys sorted (:func:`canonical_header`): safetensors
itself serialises metadata from a hash map in a random order, so identical runs would otherwise
give files that differ byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

__all__ = ["CorruptFileError", "content_hash", "canonical_header", "write_checked", "read_checked",
           "rebuild_command", "write_bytes_atomic"]


class CorruptFileError(RuntimeError):
    """A tensor file that is unreadable, altered, or not what the reader expects."""

    def __init__(self, path, problem: str, rebuild: str | None = None):
        self.path = Path(path)
        self.problem = problem
        self.rebuild = rebuild
        hint = f"; rebuild it with: {rebuild}" if rebuild else ""
        super().__init__(f"{path}: {problem}{hint}")


def rebuild_command(path: str | os.PathLike) -> str:
    """The Snakemake command that writes ``path`` again (``--force``: even if it exists)."""
    return f"snakemake --force {path}   (then rerun your snakemake command)"


def content_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def canonical_header(data: bytes) -> bytes:
    """The same safetensors bytes with the ``__metadata__`` keys in sorted order."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    ordered = {}
    if meta is not None:
        ordered["__metadata__"] = dict(sorted(meta.items()))
    ordered.update(header)
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # cannot happen for a reordering of safetensors' own compact JSON
        raise ValueError("canonical safetensors header is longer than the original")
    return data[:8] + text + b" " * (n - len(text)) + data[8 + n:]


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it into place; the
    temporary is removed when anything fails (e.g. a full disk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def serialize(tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> bytes:
    """safetensors bytes with a canonical header; metadata values are JSON-stringified."""
    meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return canonical_header(save_bytes(cpu, metadata=meta))


def write_checked(path: str | os.PathLike, tensors: dict[str, torch.Tensor], *,
                  model_identity: str | None = None, rebuild: str | None = None,
                  metadata: dict | None = None) -> dict:
    """Write ``tensors`` atomically with their shapes, hash, model identity and rebuild
    command in the metadata; returns the metadata written."""
    meta = dict(metadata or {})
    meta.update({
        "content_sha256": content_hash(tensors),
        "shapes": {k: list(v.shape) for k, v in tensors.items()},
        "rebuild": rebuild or rebuild_command(path),
    })
    if model_identity is not None:
        meta["model_identity"] = model_identity
    write_bytes_atomic(path, serialize(tensors, meta))
    return meta


def _metadata(path: Path, raw: bytes) -> dict:
    n = int.from_bytes(raw[:8], "little")
    return dict(json.loads(raw[8:8 + n]).get("__metadata__") or {})


def read_checked(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                 model_identity: str | None = None, shapes: dict | None = None,
                 rebuild: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`write_checked`; return ``(tensors, metadata)``.

    Checks, in order: the file exists and parses; it has a content hash and the tensors match
    it; ``shapes`` (``{name: shape}``, ``None`` entries in a shape match any size) and
    ``model_identity``, when given, are those recorded. Raises :class:`CorruptFileError`
    naming the file and the command that rebuilds it (``rebuild``, else the one recorded in
    the file, else ``snakemake --force <path>``).
    """
    path = Path(path)
    hint = rebuild or rebuild_command(path)
    if not path.is_file():
        raise CorruptFileError(path, "file is missing", hint)
    raw = path.read_bytes()
    try:
        tensors = load_bytes(raw)
        meta = _metadata(path, raw)
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:  # truncated, garbage header
        raise CorruptFileError(path, f"not a readable safetensors file ({e})", hint) from None
    hint = rebuild or meta.get("rebuild") or hint
    recorded = meta.get("content_sha256")
    if not recorded:
        raise CorruptFileError(path, "has no content hash (written by an older version or another "
                                     "program)", hint)
    if content_hash(tensors) != recorded:
        raise CorruptFileError(path, "content does not match its recorded sha256 (the file was "
                                     "altered or partly overwritten)", hint)
    try:
        recorded_shapes = json.loads(meta.get("shapes") or "{}")
    except json.JSONDecodeError:
        recorded_shapes = None
    actual_shapes = {k: list(v.shape) for k, v in tensors.items()}
    if recorded_shapes != actual_shapes:
        raise CorruptFileError(path, f"tensor shapes {actual_shapes} differ from the recorded {recorded_shapes}", hint)
    if model_identity is not None and meta.get("model_identity") != model_identity:
        raise CorruptFileError(path, f"made with model {meta.get('model_identity')!r}, this run uses "
                                     f"{model_identity!r}", hint)
    for name, want in (shapes or {}).items():
        if name not in tensors:
            raise CorruptFileError(path, f"has no tensor {name!r} (has: {', '.join(tensors)})", hint)
        got = list(tensors[name].shape)
        if len(got) != len(want) or any(w is not None and int(w) != g for w, g in zip(want, got)):
            raise CorruptFileError(path, f"tensor {name!r} has shape {got}, expected {list(want)}", hint)
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta

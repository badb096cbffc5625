"""Safetensors files that say what produced them, and readers that check it.

Every cached tensor file of the pipeline (frames, latents, inversion, resume checkpoints) is
written by :func:`write_checked` and read by :func:`read_checked`. The header metadata holds

* ``content_sha256`` -- :func:`content_hash` of the tensors (names, dtypes, shapes, bytes);
* ``shapes`` -- ``{name: shape}``;
* ``model_identity`` -- the model that produced it, where one did;
* ``rebuild_target`` -- the workflow output that writes the file again (the file itself, or for
  a file inside a rule's output folder the rule's table), relative to the file's own folder, so
  that the hint still works in a moved or copied results folder;
* ``rebuild`` -- a rebuild instruction that is not ``snakemake --force <target>`` (e.g. the
  training checkpoints'), when the writer gives one,

plus whatever the writer adds. A reader gets the tensors only when the file parses, the hash
matches the bytes, every floating-point value is finite, and the shapes and the model identity
are the ones it expects; otherwise a :class:`CorruptFileError` names the file, what is wrong and
the rebuild command (a path relative to the working directory). A truncated file, zeroed tensor
data or a cache made with another model are all caught before any work.

A writer refuses NaN / Inf values (:class:`NonFiniteError`, naming the file, the step that made
them and the inputs to rebuild): a diverged step or a damaged input stops the job instead of
passing garbage down the pipeline to be scored.

The header is written with its metadata keys sorted (:func:`canonical_header`): safetensors
itself serialises metadata from a hash map in a random order, so identical runs would otherwise
give files that differ byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from safetensors import SafetensorError

# torch (and safetensors.torch) are imported inside the functions that use tensors: the
# workflow's DAG process and the table jobs import this module (write_bytes_atomic, the error
# types) without paying torch's ~1 s and ~500 MB (issue 21).

from .atomic import write_bytes_atomic

__all__ = ["CorruptFileError", "NonFiniteError", "check_finite", "content_hash", "canonical_header", "write_checked",
           "read_checked", "rebuild_command"]


class CorruptFileError(RuntimeError):
    """A tensor file that is unreadable, altered, or not what the reader expects."""

    def __init__(self, path, problem: str, rebuild: str | None = None):
        self.path = Path(path)
        self.problem = problem
        self.rebuild = rebuild
        hint = f"; rebuild it with: {rebuild}" if rebuild else ""
        super().__init__(f"{path}: {problem}{hint}")


class NonFiniteError(ValueError):
    """A step produced NaN or Inf values; nothing was written."""

    def __init__(self, path, step: str, detail: str, inputs=()):
        self.path = None if path is None else Path(path)
        self.step = step
        self.detail = detail
        self.inputs = [str(i) for i in inputs if i]
        where = f"{path}: " if path is not None else ""
        msg = f"{where}{step} produced non-finite values ({detail}); nothing was written"
        if self.inputs:
            targets = " ".join(_relative(i) for i in self.inputs)
            msg += (f". It was made from {', '.join(_relative(i) for i in self.inputs)}: if one of them is damaged "
                    f"rebuild it with `snakemake --force {targets}`; if the rebuilt inputs give NaN again, the step "
                    "diverges with these settings (e.g. lower the method's lr, use dtype fp32)")
        super().__init__(msg)

    @staticmethod
    @contextlib.contextmanager
    def naming(path, inputs=()):
        """Re-raise a :class:`NonFiniteError` from the block as one about output ``path``, made
        from ``inputs`` (a job's output and input files)."""
        try:
            yield
        except NonFiniteError as e:
            raise NonFiniteError(path, e.step, e.detail, e.inputs or inputs) from None


def _relative(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies under it (Snakemake's targets)."""
    p = os.path.abspath(path)
    cwd = os.getcwd()
    try:
        if os.path.commonpath([p, cwd]) == cwd:
            return os.path.relpath(p, cwd)
    except ValueError:  # other drive (Windows)
        pass
    return str(path)


def rebuild_command(path: str | os.PathLike) -> str:
    """The Snakemake command that writes ``path`` again (``--force``: even if it exists), with
    ``path`` relative to the working directory."""
    return f"snakemake --force {_relative(path)}   (then rerun your snakemake command)"


def check_finite(tensors: dict, *, path=None, step: str = "the step", inputs=()) -> None:
    """Raise :class:`NonFiniteError` when a floating-point tensor (or numpy array) of
    ``tensors`` holds NaN or Inf, naming the first such tensor and how many values are bad."""
    import torch

    for name, t in tensors.items():
        t = torch.as_tensor(t)
        if not (t.is_floating_point() or t.is_complex()):
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(t).sum())
            bad = int((~finite).sum())
            raise NonFiniteError(path, step, f"tensor {name!r}: {n_nan} NaN and {bad - n_nan} Inf of "
                                             f"{t.numel()} values", inputs)


def content_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in sorted name order."""
    import torch

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


def serialize(tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> bytes:
    """safetensors bytes with a canonical header; metadata values are JSON-stringified."""
    from safetensors.torch import save as save_bytes

    meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return canonical_header(save_bytes(cpu, metadata=meta))


def write_checked(path: str | os.PathLike, tensors: dict[str, torch.Tensor], *,
                  model_identity: str | None = None, rebuild: str | None = None,
                  metadata: dict | None = None, rebuild_target: str | os.PathLike | None = None,
                  step: str | None = None, inputs=()) -> dict:
    """Write ``tensors`` atomically with their shapes, hash, model identity and rebuild
    target in the metadata; returns the metadata written.

    ``rebuild_target``: the workflow output whose rule writes this file (default: the file);
    ``rebuild``: an instruction other than ``snakemake --force <target>``. Non-finite values
    raise :class:`NonFiniteError` naming ``step`` (what computed them) and ``inputs``
    (the files they were made from) and write nothing.
    """
    check_finite(tensors, path=path, step=step or f"the step writing {Path(path).name}", inputs=inputs)
    meta = dict(metadata or {})
    target = Path(rebuild_target) if rebuild_target is not None else Path(path)
    meta.update({
        "content_sha256": content_hash(tensors),
        "shapes": {k: list(v.shape) for k, v in tensors.items()},
    })
    if rebuild:
        meta["rebuild"] = rebuild
    else:
        meta["rebuild_target"] = os.path.relpath(os.path.abspath(target), os.path.abspath(Path(path).parent))
    if model_identity is not None:
        meta["model_identity"] = model_identity
    write_bytes_atomic(path, serialize(tensors, meta))
    return meta


def _metadata(path: Path, raw: bytes) -> dict:
    n = int.from_bytes(raw[:8], "little")
    return dict(json.loads(raw[8:8 + n]).get("__metadata__") or {})


def _recorded_hint(path: Path, meta: dict) -> str | None:
    recorded = meta.get("rebuild")
    if recorded and not recorded.startswith("snakemake --force"):
        return recorded  # an instruction of its own (training checkpoints)
    target = meta.get("rebuild_target")
    if target:
        return rebuild_command(os.path.normpath(path.parent / target))
    return None  # older files recorded the absolute path they were first written at


def read_checked(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                 model_identity: str | None = None, shapes: dict | None = None,
                 rebuild: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`write_checked`; return ``(tensors, metadata)``.

    Checks, in order: the file exists and parses; it has a content hash and the tensors match
    it; every floating-point value is finite; ``shapes`` (``{name: shape}``, ``None`` entries
    in a shape match any size) and ``model_identity``, when given, are those recorded. Raises
    :class:`CorruptFileError` naming the file and the command that rebuilds it (``rebuild``,
    else ``snakemake --force <rebuild_target>`` with the recorded target resolved from where
    the file is now, else the recorded instruction, else ``snakemake --force <path>``; paths
    relative to the working directory).
    """
    path = Path(path)
    hint = rebuild or rebuild_command(path)
    if not path.is_file():
        raise CorruptFileError(path, "file is missing", hint)
    from safetensors.torch import load as load_bytes

    raw = path.read_bytes()
    try:
        tensors = load_bytes(raw)
        meta = _metadata(path, raw)
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:  # truncated, garbage header
        raise CorruptFileError(path, f"not a readable safetensors file ({e})", hint) from None
    hint = rebuild or _recorded_hint(path, meta) or hint
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
    try:
        check_finite(tensors)
    except NonFiniteError as e:
        raise CorruptFileError(path, f"holds non-finite values ({e.detail})", hint) from None
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

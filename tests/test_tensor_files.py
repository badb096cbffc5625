"""Checked tensor files (motionmatcher.files.tensor_files): faults are caught and named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from motionmatcher.files.tensor_files import CorruptFileError, read_checked, write_checked
from helpers import save_tensors


@pytest.fixture()
def cached(tmp_path):
    path = tmp_path / "latents.safetensors"
    t = {"latents": torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(0))}
    write_checked(path, t, model_identity="tiny-abc", metadata={"scaling_factor": 0.18})
    return path, t


def zero_data(path):
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    raw[8 + n:] = bytes(len(raw) - 8 - n)
    path.write_bytes(bytes(raw))


def test_round_trip_checks_pass(cached):
    path, t = cached
    got, meta = read_checked(path, model_identity="tiny-abc", shapes={"latents": [1, None, 8, None, None]})
    assert torch.equal(got["latents"], t["latents"])
    assert meta["model_identity"] == "tiny-abc" and meta["scaling_factor"] == "0.18"
    assert meta["rebuild_target"] == path.name  # relative to the file's folder


@pytest.mark.parametrize("fault, words", [
    ("truncate", "not a readable safetensors"),
    ("zero", "sha256"),
    ("flip", "sha256"),
    ("delete", "missing"),
])
def test_damaged_file_is_named_with_its_rebuild_command(cached, fault, words):
    path, _ = cached
    if fault == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif fault == "zero":
        zero_data(path)
    elif fault == "flip":
        raw = bytearray(path.read_bytes())
        raw[-3] ^= 0x40
        path.write_bytes(bytes(raw))
    else:
        path.unlink()
    with pytest.raises(CorruptFileError) as e:
        read_checked(path)
    msg = str(e.value)
    assert str(path) in msg and words in msg
    assert f"snakemake --force {path}" in msg


def test_other_model_or_shape_is_refused(cached):
    path, _ = cached
    with pytest.raises(CorruptFileError, match="made with model 'tiny-abc', this run uses 'zeroscope"):
        read_checked(path, model_identity="zeroscope-123")
    with pytest.raises(CorruptFileError, match=r"shape \[1, 4, 8, 8, 8\], expected \[1, None, 16"):
        read_checked(path, shapes={"latents": [1, None, 16, None, None]})


def test_file_without_hash_is_refused(tmp_path):
    path = tmp_path / "old.safetensors"
    save_tensors({"x": torch.ones(3)}, path)
    with pytest.raises(CorruptFileError, match="no content hash"):
        read_checked(path)


def test_identical_writes_give_identical_bytes_across_processes(tmp_path):
    """safetensors orders metadata by a randomly seeded hash map; ours is sorted."""
    code = (f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "from helpers import save_tensors; "
            "save_tensors({'a': torch.arange(4.0)}, sys.argv[1], metadata={k: i for i, k in enumerate('abcdefghij')})")
    outs = []
    for i in range(3):
        out = tmp_path / f"{i}.safetensors"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    import os

    from motionmatcher.files.atomic import write_json

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        write_json(tmp_path / "x.json", {"a": 1})
    with pytest.raises(OSError):
        save_tensors({"a": torch.ones(2)}, tmp_path / "y.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_metrics_refuse_a_damaged_frames_file(tmp_path):
    """The metrics stage reads sample and reference frames through the checked reader: a frames
    file altered after it was written is named, not scored."""
    from motionmatcher.metrics.evaluate import load_frames_file, load_sample_frames

    path = tmp_path / "seed0.safetensors"
    frames = torch.randint(0, 255, (4, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    write_checked(path, {"frames": frames})
    assert (load_sample_frames({"frames_path": str(path)}) == frames.numpy()).all()
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x10
    path.write_bytes(bytes(raw))
    for read in (load_frames_file, lambda p: load_sample_frames({"frames_path": p})):
        with pytest.raises(CorruptFileError, match="sha256") as e:
            read(str(path))
        assert str(path) in str(e.value)


def test_one_atomic_writer_fsyncs_a_unique_temporary_and_keeps_the_umask(tmp_path, monkeypatch):
    """files.atomic: the temporary is in the destination folder under a name no other writer
    uses, fsynced before the rename and the folder after it; the file gets 0666 less the umask."""
    import os

    from motionmatcher.files import atomic

    synced, replaced = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((str(a), str(b))), real_replace(a, b)))
    old = os.umask(0o027)
    try:
        atomic.write_json(tmp_path / "a.json", {"x": 1})
        atomic.write_json(tmp_path / "a.json", {"x": 2})
    finally:
        os.umask(old)
    (tmp1, dest1), (tmp2, dest2) = replaced
    assert dest1 == dest2 == str(tmp_path / "a.json")
    assert tmp1 != tmp2 and all(Path(t).parent == tmp_path and Path(t).name.startswith(".a.json.") for t in (tmp1, tmp2))
    assert synced == [tmp1, str(tmp_path), tmp2, str(tmp_path)]  # the file before the rename, the folder after
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert list(tmp_path.iterdir()) == [tmp_path / "a.json"]


def test_atomic_directory_appears_complete_or_not_at_all(tmp_path):
    from motionmatcher.files.atomic import atomic_directory

    out = tmp_path / "model"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("writer failed")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # the old one is kept
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary left

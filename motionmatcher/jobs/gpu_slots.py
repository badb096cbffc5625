"""One GPU per job on a workstation: a lock-file slot allocator.

Snakemake counts the ``gpu`` resource only as a number (``--resources gpu=N`` caps how many
GPU jobs run at once) and never sets ``CUDA_VISIBLE_DEVICES``, so without help every
concurrent GPU job would land on the first card. :func:`acquire_gpu_slot` (called by
``motionmatcher.jobs.rule_script.setup_script`` for every rule that requests ``gpu``) picks a free
device, sets ``CUDA_VISIBLE_DEVICES`` to it before torch initialises CUDA, and holds an
exclusive ``fcntl.flock`` on ``<lock dir>/gpu-<device>.lock`` for the life of the process.
The kernel drops the lock when the process ends, however it ends (exit, exception, SIGKILL,
OOM kill), so a crashed job can never leave a stale slot behind.

Which devices form the pool (first match wins):

``MOTIONMATCHER_GPUS``        comma-separated devices, as ``CUDA_VISIBLE_DEVICES`` takes them
                              (``0,1,3``, or GPU UUIDs); nvidia-smi's (PCI bus) order
``CUDA_VISIBLE_DEVICES``      set by the user for the run: only those devices are handed out,
                              one per job (``""`` / ``-1``: no GPU, nothing is done)
``MOTIONMATCHER_GPU_COUNT``   a count N: devices ``0 .. N-1``
``nvidia-smi -L``             every GPU of the machine (a subprocess: CUDA is not initialised)

No device in the pool (a CPU machine): nothing is done. Under Slurm (``SLURM_JOB_ID`` set) the
allocation is Slurm's (its gres plugin sets ``CUDA_VISIBLE_DEVICES``), nothing is done either.

Locks live in ``MOTIONMATCHER_GPU_LOCK_DIR`` (default ``/tmp/motionmatcher-gpu-locks-<uid>``;
point several users or several checkouts at one shared folder to make them share the cards
politely). With every slot taken, a job waits, polling, and logs who holds the slots once a
minute; ``MOTIONMATCHER_GPU_WAIT_TIMEOUT`` (seconds) turns the wait into a
:class:`GpuSlotTimeout` naming the holders. Inside Snakemake's cap (``gpu=N`` with N <= pool
size) a job only waits when something outside the run holds a card.

``python -m motionmatcher.jobs.gpu_slots`` prints the pool and who holds which slot.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("motionmatcher.jobs.gpu_slots")

ENV_GPUS = "MOTIONMATCHER_GPUS"
ENV_COUNT = "MOTIONMATCHER_GPU_COUNT"
ENV_LOCK_DIR = "MOTIONMATCHER_GPU_LOCK_DIR"
ENV_TIMEOUT = "MOTIONMATCHER_GPU_WAIT_TIMEOUT"
#: Set in a slot holder's environment: its children (which inherit the narrowed
#: CUDA_VISIBLE_DEVICES) must not try to lock the same device again.
ENV_HELD = "MOTIONMATCHER_GPU_SLOT"

POLL_SECONDS = 0.5
REPORT_EVERY_SECONDS = 60.0

# device entry -> open file descriptor holding the flock (kept for the life of the process)
_held: dict[str, int] = {}


class GpuSlotTimeout(RuntimeError):
    """Every GPU slot stayed taken for longer than MOTIONMATCHER_GPU_WAIT_TIMEOUT."""


class UnsafeLockError(RuntimeError):
    """The lock folder or a lock file is not safe to use (symlink, foreign owner, open folder)."""


@dataclass(frozen=True)
class Pool:
    devices: tuple[str, ...]
    source: str  # which setting defined the pool (for messages)
    skip_reason: str = ""  # non-empty: do nothing, and why


def lock_dir() -> Path:
    default = f"/tmp/motionmatcher-gpu-locks-{os.getuid()}"
    return Path(os.environ.get(ENV_LOCK_DIR) or default)


def _split(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def nvidia_smi_count() -> int:
    """GPUs listed by ``nvidia-smi -L`` (0 without the tool or a driver); CUDA stays untouched."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    if out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def gpu_pool(environ: os._Environ | dict | None = None) -> Pool:
    """The devices this process may take a slot on, or why it takes none."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_JOB_ID"):
        return Pool((), "slurm", "running under Slurm (SLURM_JOB_ID set): Slurm assigns the GPU")
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if env.get(ENV_HELD) and env.get(ENV_HELD) == cvd:
        return Pool((), "parent", f"a parent process already holds slot {cvd}")
    if env.get(ENV_GPUS, "").strip():
        return Pool(_split(env[ENV_GPUS]), ENV_GPUS)
    if cvd is not None:
        devices = _split(cvd)
        if not devices or devices[0] == "-1":
            return Pool((), "CUDA_VISIBLE_DEVICES", f"CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU")
        return Pool(devices, "CUDA_VISIBLE_DEVICES")
    if env.get(ENV_COUNT, "").strip():
        n = int(env[ENV_COUNT])
        if n <= 0:
            return Pool((), ENV_COUNT, f"{ENV_COUNT}={n}: no GPU")
        return Pool(tuple(str(i) for i in range(n)), ENV_COUNT)
    n = nvidia_smi_count()
    if n == 0:
        return Pool((), "nvidia-smi", "no GPU found (nvidia-smi -L lists none)")
    return Pool(tuple(str(i) for i in range(n)), "nvidia-smi")


def profile_gpu_cap() -> int:
    """The ``gpu`` resource limit of the local profile: one job per device of the pool; on a
    machine without GPUs no cap (the GPU rules then run on CPU cores, capped by ``cores``)."""
    pool = gpu_pool()
    if pool.devices:
        return len(pool.devices)
    return max(1, os.cpu_count() or 1)


def ensure_lock_dir() -> Path:
    """The lock folder, created private (0700) when missing, and checked to be safe.

    Refused (:class:`UnsafeLockError`): a symlink or non-directory; the default per-user
    folder when it is not ours or others may write to it (someone prepared it in /tmp); a
    configured shared folder that others may write to without the sticky bit (anyone could
    replace the lock files in it: make it with ``mkdir -m 1777``).
    """
    directory = lock_dir()
    if not os.path.lexists(directory):
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:  # a concurrent job made it
            pass
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeLockError(f"GPU lock folder {directory} is a symlink; refusing to use it "
                              f"(remove it, or set {ENV_LOCK_DIR} to a real folder)")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeLockError(f"GPU lock folder {directory} is not a directory")
    open_to_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if not os.environ.get(ENV_LOCK_DIR):
        if st.st_uid != os.getuid() or open_to_others:
            raise UnsafeLockError(
                f"GPU lock folder {directory} is owned by uid {st.st_uid} with mode "
                f"{stat.S_IMODE(st.st_mode):o}; it must be yours and not writable by others "
                f"(remove it; it is made again with mode 700)")
    elif open_to_others and not st.st_mode & stat.S_ISVTX:
        raise UnsafeLockError(
            f"GPU lock folder {directory} (mode {stat.S_IMODE(st.st_mode):o}) is writable by others "
            f"without the sticky bit: anyone could replace its lock files; use `chmod 1777 {directory}`")
    return directory


def _lock_path(device: str) -> Path:
    return lock_dir() / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


def _open_lock(path: Path) -> int:
    """Open (creating it if missing) a lock file without following symlinks."""
    nofollow = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | nofollow, 0o644)
        except FileExistsError:
            pass
        try:
            fd = os.open(path, os.O_RDWR | nofollow)
        except PermissionError:  # another user's lock file in a shared lock dir: flock needs no write
            fd = os.open(path, os.O_RDONLY | nofollow)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeLockError(f"GPU lock file {path} is a symlink; refusing to open it "
                                  "(someone else made it: remove it)") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeLockError(f"GPU lock file {path} is not a regular file; remove it")
    return fd


def _try_lock(device: str) -> int | None:
    fd = _open_lock(_lock_path(device))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _write_holder(fd: int, device: str, label: str) -> None:
    """Note who holds the slot in the lock file -- only in a file that is ours alone (our uid,
    one link): a file another user made, or a name hard-linked to some other file, is locked
    but never truncated or written."""
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    info = f"pid={os.getpid()} host={socket.gethostname()} device={device} since={since} job={label}\n"
    st = os.fstat(fd)
    if st.st_uid != os.getuid() or st.st_nlink != 1:
        log.warning("GPU slot: lock file of device %s is not ours alone (uid %d, %d links); "
                    "holding it without writing the holder note", device, st.st_uid, st.st_nlink)
        return
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
    except OSError:  # read-only (someone else's file): the lock works without the note
        pass


def _read_note(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        return os.read(fd, 4096).decode(errors="replace").strip()
    finally:
        os.close(fd)


def holders(devices: tuple[str, ...] | None = None) -> dict[str, str]:
    """device -> what its lock file says about the holder, for every slot held now
    (by another process or this one)."""
    devices = gpu_pool().devices if devices is None else devices
    out = {}
    for dev in devices:
        path = _lock_path(dev)
        if not path.exists():
            continue
        if dev in _held:
            out[dev] = _read_note(path)
            continue
        try:
            fd = _try_lock(dev) if lock_dir().is_dir() else None
        except UnsafeLockError as e:
            out[dev] = str(e)
            continue
        if fd is None:
            out[dev] = _read_note(path) or "(holder unknown)"
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    return out


def acquire_gpu_slot(label: str = "", n: int = 1, timeout: float | None = None) -> str | None:
    """Take ``n`` free devices of the pool, set ``CUDA_VISIBLE_DEVICES`` to them and hold their
    locks until the process ends. Returns the new ``CUDA_VISIBLE_DEVICES``, or None when there
    is nothing to do (Slurm, no GPU, a parent holds the slot). Must run before CUDA is
    initialised (before the first ``torch.cuda`` call)."""
    if _held:
        return os.environ.get("CUDA_VISIBLE_DEVICES")
    pool = gpu_pool()
    if pool.skip_reason:
        log.info("GPU slot: none taken, %s", pool.skip_reason)
        return None
    if n > len(pool.devices):
        raise ValueError(f"a job wants {n} GPUs but the pool ({pool.source}) has "
                         f"{len(pool.devices)}: {list(pool.devices)}")
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        log.warning("GPU slot: CUDA was initialised before the slot was taken; CUDA_VISIBLE_DEVICES "
                    "set now does not move this process to its device")
    if timeout is None and os.environ.get(ENV_TIMEOUT, "").strip():
        timeout = float(os.environ[ENV_TIMEOUT])
    directory = ensure_lock_dir()

    start = time.monotonic()
    next_report = start
    while True:
        got: dict[str, int] = {}
        for dev in pool.devices:
            fd = _try_lock(dev)
            if fd is not None:
                got[dev] = fd
                if len(got) == n:
                    break
        if len(got) == n:
            break
        for fd in got.values():  # all or nothing: never sit on a partial set
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            raise GpuSlotTimeout(
                f"no free GPU slot for {label or 'this job'} after {waited:.0f} s "
                f"({ENV_TIMEOUT}={timeout:g}); all {len(pool.devices)} devices of the pool "
                f"({pool.source}: {','.join(pool.devices)}) are held, lock dir {directory}:\n"
                + "\n".join(f"  gpu {d}: {h}" for d, h in holders(pool.devices).items())
            )
        if time.monotonic() >= next_report:
            log.info("GPU slot: all %d devices (%s) busy, waiting; holders: %s",
                     len(pool.devices), pool.source, holders(pool.devices))
            next_report = time.monotonic() + REPORT_EVERY_SECONDS
        time.sleep(POLL_SECONDS)

    for dev, fd in got.items():
        _write_holder(fd, dev, label)
        _held[dev] = fd
    visible = ",".join(got)
    if pool.source != "CUDA_VISIBLE_DEVICES":
        # indices given as nvidia-smi's: make CUDA number the devices the same way
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    os.environ[ENV_HELD] = visible
    log.info("GPU slot: CUDA_VISIBLE_DEVICES=%s (pool %s: %s, lock dir %s)",
             visible, pool.source, ",".join(pool.devices), directory)
    return visible


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m motionmatcher.jobs.gpu_slots",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--acquire", action="store_true",
                    help="take a slot, print CUDA_VISIBLE_DEVICES and hold it until killed (for tests)")
    ap.add_argument("--hold", type=float, default=float("inf"), help="with --acquire: seconds to hold")
    ap.add_argument("--label", default="cli")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.acquire:
        try:
            acquire_gpu_slot(args.label)
        except (GpuSlotTimeout, UnsafeLockError) as e:
            print(e, file=sys.stderr)
            return 3
        print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}", flush=True)
        deadline = time.monotonic() + args.hold
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        return 0
    pool = gpu_pool()
    skip = f"  [{pool.skip_reason}]" if pool.skip_reason else ""
    print(f"pool ({pool.source}): {','.join(pool.devices) or '-'}{skip}")
    print(f"lock dir: {lock_dir()}")
    held = holders(pool.devices)
    for dev in pool.devices:
        print(f"  gpu {dev}: {held.get(dev, 'free')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

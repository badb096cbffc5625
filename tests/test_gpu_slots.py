"""motionmatcher.jobs.gpu_slots: one device per concurrent GPU job on a workstation, with fake GPUs
(MOTIONMATCHER_GPUS names the devices; nothing here needs a GPU)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from motionmatcher.jobs import gpu_slots

REPO = Path(__file__).resolve().parents[1]


def clean_env(lock_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "MOTIONMATCHER_")) and k != "CUDA_VISIBLE_DEVICES"}
    env[gpu_slots.ENV_LOCK_DIR] = str(lock_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


class FakeJob:
    """A fake GPU job: takes a slot, prints CUDA_VISIBLE_DEVICES, sleeps."""

    def __init__(self, env: dict[str, str], label: str, hold: float = 120.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "motionmatcher.jobs.gpu_slots", "--acquire", "--label", label,
             "--hold", str(hold)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def device(self, timeout: float = 30.0) -> str:
        """The CUDA_VISIBLE_DEVICES the job got (blocks until it has a slot)."""
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line:
                break
            if self.proc.poll() is not None:
                raise AssertionError(f"fake job exited {self.proc.returncode}: {self.proc.stderr.read()}")
        assert line.startswith("CUDA_VISIBLE_DEVICES="), line
        return line.strip().split("=", 1)[1]

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=30)


@pytest.fixture()
def jobs():
    started: list[FakeJob] = []
    yield started
    for j in started:
        j.kill()


def test_concurrent_jobs_get_different_devices(tmp_path, jobs):
    env = clean_env(tmp_path / "locks", MOTIONMATCHER_GPUS="0,1")
    jobs += [FakeJob(env, "a"), FakeJob(env, "b")]
    devices = {jobs[0].device(), jobs[1].device()}
    assert devices == {"0", "1"}
    # the lock files say who holds them
    text = (tmp_path / "locks" / "gpu-0.lock").read_text()
    assert f"pid={jobs[0].proc.pid}" in text or f"pid={jobs[1].proc.pid}" in text


def test_killed_job_frees_its_slot_and_a_waiting_job_gets_it(tmp_path, jobs):
    env = clean_env(tmp_path / "locks", MOTIONMATCHER_GPUS="0,1")
    a, b = FakeJob(env, "a"), FakeJob(env, "b")
    jobs += [a, b]
    dev_a, dev_b = a.device(), b.device()
    c = FakeJob(env, "c")  # all slots taken: waits
    jobs.append(c)
    time.sleep(2.0)
    assert c.proc.poll() is None  # still waiting, nothing printed yet
    assert select.select([c.proc.stdout], [], [], 0)[0] == []
    a.kill(signal.SIGKILL)  # no cleanup code runs: the kernel drops the flock
    assert c.device(timeout=20) == dev_a
    assert dev_b != dev_a


def test_all_slots_taken_times_out_with_a_clear_message(tmp_path, jobs):
    env = clean_env(tmp_path / "locks", MOTIONMATCHER_GPUS="0")
    jobs.append(FakeJob(env, "holder"))
    assert jobs[0].device() == "0"
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "motionmatcher.jobs.gpu_slots", "--acquire", "--label", "late", "--hold", "0"],
        env={**env, gpu_slots.ENV_TIMEOUT: "1.5"}, capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 3, res.stderr
    assert time.monotonic() - t0 >= 1.5
    assert "no free GPU slot for late" in res.stderr
    assert f"pid={jobs[0].proc.pid}" in res.stderr and "job=holder" in res.stderr


def run_acquire(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "motionmatcher.jobs.gpu_slots", "--acquire", "--hold", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_under_slurm_cuda_visible_devices_is_left_alone(tmp_path):
    lock_dir = tmp_path / "locks"
    res = run_acquire(clean_env(lock_dir, MOTIONMATCHER_GPUS="0,1", SLURM_JOB_ID="123",
                                CUDA_VISIBLE_DEVICES="7"))
    assert res.returncode == 0 and res.stdout.strip() == "CUDA_VISIBLE_DEVICES=7"
    assert "running under Slurm" in res.stderr
    res = run_acquire(clean_env(lock_dir, MOTIONMATCHER_GPUS="0,1", SLURM_JOB_ID="123"))
    assert res.stdout.strip() == "CUDA_VISIBLE_DEVICES=<unset>"
    assert not lock_dir.exists()


def test_user_cuda_visible_devices_is_the_pool(tmp_path, jobs):
    env = clean_env(tmp_path / "locks", CUDA_VISIBLE_DEVICES="3,5")
    jobs += [FakeJob(env, "a"), FakeJob(env, "b")]
    assert {jobs[0].device(), jobs[1].device()} == {"3", "5"}
    # "" / -1 hide every GPU: nothing to allocate
    for hidden in ("", "-1"):
        res = run_acquire(clean_env(tmp_path / "locks", CUDA_VISIBLE_DEVICES=hidden))
        assert res.stdout.strip() == f"CUDA_VISIBLE_DEVICES={hidden}", res.stderr


def test_no_gpu_machine_does_nothing(tmp_path):
    env = clean_env(tmp_path / "locks", PATH="/nonexistent")  # no nvidia-smi
    res = run_acquire(env)
    assert res.returncode == 0
    assert res.stdout.strip() == "CUDA_VISIBLE_DEVICES=<unset>"
    assert "no GPU found" in res.stderr
    env = clean_env(tmp_path / "locks", MOTIONMATCHER_GPU_COUNT="0")
    assert run_acquire(env).stdout.strip() == "CUDA_VISIBLE_DEVICES=<unset>"


def test_gpu_count_and_child_of_a_holder(tmp_path, jobs):
    env = clean_env(tmp_path / "locks", MOTIONMATCHER_GPU_COUNT="2")
    jobs.append(FakeJob(env, "a"))
    dev = jobs[0].device()
    assert dev in {"0", "1"}
    # a child process of a slot holder inherits its device and does not lock it again
    res = run_acquire({**env, "CUDA_VISIBLE_DEVICES": dev, gpu_slots.ENV_HELD: dev})
    assert res.stdout.strip() == f"CUDA_VISIBLE_DEVICES={dev}" and "parent process" in res.stderr


def test_setup_script_takes_a_slot_for_gpu_rules_only(tmp_path):
    code = """
import os, sys, types
from motionmatcher.jobs.rule_script import setup_script
gpu = int(sys.argv[1])
smk = types.SimpleNamespace(log=[sys.argv[2]], threads=1, rule="sample", wildcards={"video": "v"},
                            resources=types.SimpleNamespace(gpu=gpu) if gpu else types.SimpleNamespace())
setup_script(smk)
print(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
"""
    env = clean_env(tmp_path / "locks", MOTIONMATCHER_GPUS="4")
    for gpu, expected in ((1, "4"), (0, "<unset>")):
        log = tmp_path / f"rule{gpu}.log"
        res = subprocess.run([sys.executable, "-c", code, str(gpu), str(log)], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == expected
        if gpu:
            assert "GPU slot: CUDA_VISIBLE_DEVICES=4" in log.read_text()


def test_status_cli_lists_holders(tmp_path, jobs):
    env = clean_env(tmp_path / "locks", MOTIONMATCHER_GPUS="0,1")
    jobs.append(FakeJob(env, "busy"))
    dev = jobs[0].device()
    out = subprocess.run([sys.executable, "-m", "motionmatcher.jobs.gpu_slots"], env=env,
                         capture_output=True, text=True, timeout=60).stdout
    assert f"gpu {dev}: pid={jobs[0].proc.pid}" in out
    assert f"gpu {({'0', '1'} - {dev}).pop()}: free" in out


def test_local_profile_caps_gpu_jobs_at_the_pool_size(monkeypatch):
    from snakemake.profiles import ProfileConfigFileParser

    for k in list(os.environ):
        if k.startswith(("SLURM_", "MOTIONMATCHER_")) or k == "CUDA_VISIBLE_DEVICES":
            monkeypatch.delenv(k)
    profile = REPO / "profiles" / "local" / "config.yaml"

    def gpu_limit():
        with open(profile) as f:
            return ProfileConfigFileParser().parse(f)["resources"]

    monkeypatch.setenv("MOTIONMATCHER_GPUS", "0,2,3")
    assert gpu_limit() == ["gpu=3"]
    monkeypatch.delenv("MOTIONMATCHER_GPUS")
    monkeypatch.setenv("MOTIONMATCHER_GPU_COUNT", "2")
    assert gpu_limit() == ["gpu=2"]
    monkeypatch.setenv("MOTIONMATCHER_GPU_COUNT", "0")  # no GPU: GPU rules on CPU, no extra cap
    assert gpu_limit() == [f"gpu={max(1, os.cpu_count() or 1)}"]


def test_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    """Fault injection: the lock file is a symlink to another file (a predictable /tmp name
    prepared by someone else). The job must not write through it."""
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    victim = tmp_path / "precious.txt"
    victim.write_text("precious data\n")
    (locks / "gpu-0.lock").symlink_to(victim)
    res = run_acquire(clean_env(locks, MOTIONMATCHER_GPUS="0", MOTIONMATCHER_GPU_WAIT_TIMEOUT="2"))
    assert victim.read_text() == "precious data\n"
    assert res.returncode != 0
    assert "symlink" in res.stderr and str(locks / "gpu-0.lock") in res.stderr


def test_foreign_lock_file_is_never_truncated(tmp_path):
    """A lock name hard-linked to another file of ours: locking must not overwrite it."""
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    victim = tmp_path / "precious.txt"
    victim.write_text("precious data\n")
    os.link(victim, locks / "gpu-0.lock")
    res = run_acquire(clean_env(locks, MOTIONMATCHER_GPUS="0", MOTIONMATCHER_GPU_WAIT_TIMEOUT="2"))
    assert victim.read_text() == "precious data\n", res.stderr


def test_unsafe_lock_folder_is_refused(tmp_path):
    locks = tmp_path / "open"
    locks.mkdir()
    locks.chmod(0o777)  # anyone may replace files in it (no sticky bit)
    res = run_acquire(clean_env(locks, MOTIONMATCHER_GPUS="0", MOTIONMATCHER_GPU_WAIT_TIMEOUT="2"))
    assert res.returncode != 0 and "sticky" in res.stderr and str(locks) in res.stderr
    linked = tmp_path / "linked"
    linked.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    res = run_acquire(clean_env(linked, MOTIONMATCHER_GPUS="0", MOTIONMATCHER_GPU_WAIT_TIMEOUT="2"))
    assert res.returncode != 0 and "symlink" in res.stderr


def test_new_lock_folder_is_private(tmp_path, jobs):
    locks = tmp_path / "new" / "locks"
    job = FakeJob(clean_env(locks, MOTIONMATCHER_GPUS="0"), "a")
    jobs.append(job)
    assert job.device() == "0"
    assert (locks.stat().st_mode & 0o777) == 0o700

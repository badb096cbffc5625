"""The demo DAG through a real Slurm cluster (tests/slurm/start.sh: slurmctld, slurmd, slurmdbd,
mariadb, munge on this machine, two fake GPUs) with profiles/slurm, against a local run.

One module-scoped run set (about 5 minutes on 2 cores):
  * local run:  `--profile profiles/local`, 2 videos (left_to_right, zoom), 1 prompt each,
  * slurm run 1: exactly `snakemake --profile slurm`, with the site profile installed by
    `make slurm-profile` into a private XDG_CONFIG_HOME and edited for the test cluster
    (partition `debug`, 2 s first status check, Slurm logs kept, the test config) and the
    workflow profile profiles/default (1.5 GB per job), the same 2 videos plus `circle`, whose
    preprocessed frames are corrupt (written before the run, newer than the clip, so
    preprocess is not rerun): circle's jobs fail, the other videos' jobs finish,
  * slurm run 2: circle dropped from the manifest: only the local table rules are left.
Both sides use 1 thread per job (`set-threads`), so results must be bit-identical: same code,
same CPU, same thread count, same seeds; nothing is compared with a tolerance.

Skips (with the reason) when not root, when Slurm is missing and there is no apt-get, or when
start.sh fails (e.g. another Slurm owns /etc/slurm/slurm.conf).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from motionmatcher.toy.ball_clips import write_demo_dataset
from helpers import load_tensors
from workflow_helpers import write_small_config

REPO = Path(__file__).resolve().parents[1]
START = REPO / "tests" / "slurm" / "start.sh"
STOP = REPO / "tests" / "slurm" / "stop.sh"
GOOD = ("left_to_right", "zoom")
BAD = "circle"
METHOD = "motionmatcher"
GPU_RULES = ("cache_latents", "cache_inversion", "customize", "sample")
COMPUTE_RULES = {"build_tiny_model", "preprocess", *GPU_RULES, "metrics", "metrics_check"}
THREADS = {r: 1 for r in ("build_tiny_model", "preprocess", *GPU_RULES, "metrics", "metrics_check")}

pytestmark = pytest.mark.pipeline


def _free_port_base() -> int:
    """Four consecutive free TCP ports (slurmctld, slurmd, slurmdbd, mariadb)."""
    for base in range(16817, 17817, 8):
        try:
            for port in range(base, base + 4):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


def _no_slurm_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster needs root (it installs packages and runs the daemons)")
    installed = shutil.which("slurmctld") or Path("/usr/sbin/slurmctld").exists()
    if not installed and not shutil.which("apt-get"):
        pytest.skip("Slurm is not installed and there is no apt-get to install it")
    state = tmp_path_factory.mktemp("slurm_cluster")
    env = {**_no_slurm_env(), "MM_SLURM_PORT": str(_free_port_base()), "MM_SLURM_GPUS": "2"}
    res = subprocess.run(["bash", str(START), str(state)], env=env, capture_output=True, text=True,
                         timeout=1200)
    if res.returncode != 0:
        subprocess.run(["bash", str(STOP), str(state)], env=env, capture_output=True, timeout=300)
        pytest.skip(f"tests/slurm/start.sh could not start a cluster (rc {res.returncode}): "
                    + (res.stderr.strip().splitlines() or ["no output"])[-1])
    try:
        yield {"state": state, "env": {**env, "SLURM_CONF": str(state / "etc" / "slurm.conf")}}
    finally:
        subprocess.run(["bash", str(STOP), str(state)], env=env, capture_output=True, timeout=300)


def write_config(path: Path, manifest: Path) -> Path:
    """The smallest demo config: 8 frames 64x64, 2 steps everywhere, one method, 10x10 tracks."""
    return write_small_config(path, manifest, steps=2, checkpoint_every=1, grid_size=10,
                              run_methods=[METHOD])


def install_site_profile(config_home: Path, configfile: Path) -> Path:
    """The documented set-up step (`make slurm-profile` into $XDG_CONFIG_HOME/snakemake/slurm),
    then the edits a user makes for their cluster -- here the test cluster's partition, a fast
    first status check, every Slurm log kept -- plus the test's small config and 1 thread per job."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home)}
    subprocess.run(["make", "-s", "-C", str(REPO), "slurm-profile"], env=env, check=True, capture_output=True)
    path = config_home / "snakemake" / "slurm" / "config.yaml"
    prof = yaml.safe_load(path.read_text())
    prof["default-resources"] = {**prof["default-resources"], "slurm_partition": "debug"}
    prof["slurm-init-seconds-before-status-checks"] = 2
    prof["slurm-keep-successful-logs"] = True
    prof["set-threads"] = THREADS
    prof["configfile"] = str(configfile)
    path.write_text(yaml.safe_dump(prof, sort_keys=False))
    return path


def slurm_workdir(workdir: Path) -> Path:
    """A working directory for `snakemake --profile slurm` as typed: the workflow is found at
    workflow/Snakefile (a link to the repository) and its workflow profile at
    profiles/default/, the repository's with each job's memory small enough for this machine."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "workflow").symlink_to(REPO, target_is_directory=True)
    prof = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    # small memory for this machine; wall times long enough for a machine shared with other work
    prof["set-resources"] = {rule: {**res, "mem_mb": 1500, "runtime": max(60, int(res.get("runtime", 0)))}
                             for rule, res in prof["set-resources"].items()}
    (workdir / "profiles" / "default").mkdir(parents=True)
    (workdir / "profiles" / "default" / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return workdir


SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def snakemake(workdir: Path, configfile: Path, profile: Path, env: dict, *args: str):
    """Start snakemake in the background; its output goes to <workdir>-<config>.log."""
    log = workdir.parent / f"{workdir.name}-{configfile.stem}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
             "--configfile", str(configfile), "--profile", str(profile), *args],
            env=env, stdout=f, stderr=subprocess.STDOUT, text=True,
        )
    return proc, log


def snakemake_profile_slurm(workdir: Path, env: dict, name: str):
    """`snakemake --profile slurm`, exactly as typed, in ``workdir``."""
    log = workdir.parent / f"{workdir.name}-{name}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([str(SNAKEMAKE), "--profile", "slurm"], cwd=workdir, env=env,
                                stdout=f, stderr=subprocess.STDOUT, text=True)
    return proc, log


def finish(run, timeout: float = 1800) -> tuple[int, str]:
    proc, log = run
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return rc, log.read_text()


def sacct(env: dict) -> pd.DataFrame:
    out = subprocess.run(
        ["sacct", "-X", "-P",
         "--format=JobID%30,JobIDRaw,JobName%80,State,ReqTRES%120,AllocTRES%120,Comment%200,Submit,Start,End",
         "--starttime", "now-1days", "--endtime", "now"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    lines = [ln.split("|") for ln in out.strip().splitlines()]
    df = pd.DataFrame(lines[1:], columns=lines[0])
    return df[df["JobName"].str.startswith("motionmatcher_")].reset_index(drop=True)


def submissions(out: str) -> dict[str, tuple[str, str | None]]:
    """Slurm job id (``<id>`` or, for an array task, ``<id>_<task>``, as sacct's JobID) -> (the
    job it ran, as the plugin's comment ``rule_<rule>_wildcards_<values>``, or None for a group
    job; the Slurm log path the plugin reports, None for an array task), from Snakemake's output.
    An array job's comment names only its first task's wildcards (plugin 2.8.0), so the job an
    array task ran comes from here, not from sacct."""
    out = own_lines(out)
    label = {}
    for m in re.finditer(r"^rule (\w+):\n((?:    .*\n)+)", out + "\n", re.M):
        jobid = re.search(r"^    jobid: (\d+)$", m.group(2), re.M)
        wc = re.search(r"^    wildcards: (.*)$", m.group(2), re.M)
        if jobid:
            values = "_".join(kv.split("=", 1)[1] for kv in wc.group(1).split(", ")) if wc else ""
            label[jobid.group(1)] = f"rule_{m.group(1)}" + (f"_wildcards_{values}" if values else "")
    subs = {}
    for job, sid, log in re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", out):
        subs[sid] = (label.get(job), log)
    for ids, sid, first, last in re.findall(r"Submitted array job with Snakemake IDs ([\d,]+) and SLURM job "
                                            r"ID (\d+)\. The individual task IDs are (\d+)-(\d+)\.", out):
        for task, job in zip(range(int(first), int(last) + 1), ids.split(",")):
            subs[f"{sid}_{task}"] = (label[job], None)
    return subs


def own_lines(out: str) -> str:
    """Snakemake's output without the failed jobs' logs it prints (show-failed-logs): those hold
    the output of Snakemake inside the Slurm job, which runs its rule as a `localrule`."""
    keep, depth, lines, i = [], 0, out.splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        is_rule = line == "=" * 80  # Snakemake's frame of a printed log
        if line.startswith("Logfile ") and line.endswith(":") and i + 1 < len(lines) \
                and lines[i + 1].strip() == "=" * 80:
            depth, i = depth + 1, i + 2  # a (possibly nested) log block opens
            continue
        if depth and is_rule:
            depth -= 1
        elif depth == 0:
            keep.append(lines[i])
        i += 1
    return "\n".join(keep)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm_pipeline")
    demo = base / "demo"
    write_demo_dataset(demo, n_frames=20, size=(80, 64))
    rows = pd.read_csv(demo / "manifest.csv").groupby("video_id", sort=False).head(1)
    good = rows[rows["video_id"].isin(GOOD)]
    good.to_csv(demo / "good.csv", index=False)
    # circle last: the good videos keep their manifest rows (a sample's params name its row)
    pd.concat([good, rows[rows["video_id"] == BAD]]).to_csv(demo / "poisoned.csv", index=False)
    assert (rows["video_id"] == BAD).any()

    local, slurm = base / "local", slurm_workdir(base / "slurm")
    local.mkdir()
    cfg_good = write_config(base / "good.yaml", demo / "good.csv")
    cfg_poisoned = write_config(base / "poisoned.yaml", demo / "poisoned.csv")
    config_home = base / "xdg"
    profile = install_site_profile(config_home, cfg_poisoned)
    env_slurm = {**cluster["env"], "XDG_CONFIG_HOME": str(config_home)}

    # The injected failure: corrupt preprocessed frames of `circle`, newer than its clip.
    pre = slurm / "results" / "preprocess" / BAD
    pre.mkdir(parents=True)
    (pre / "frames.safetensors").write_bytes(b"this is not a safetensors file")
    (pre / "preview.mp4").write_bytes(b"")
    (pre / "info.json").write_text("{}")

    threads = [f"{r}={n}" for r, n in THREADS.items()]
    env_local = {**_no_slurm_env(), "MOTIONMATCHER_GPU_COUNT": "0"}
    p_local = snakemake(local, cfg_good, REPO / "profiles" / "local", env_local,
                        "--cores", "2", "--set-threads", *threads)
    p_slurm = snakemake_profile_slurm(slurm, env_slurm, "poisoned")
    rc1, out1 = finish(p_slurm)
    rc_local, out_local = finish(p_local)
    assert rc_local == 0, out_local[-6000:]
    jobs_run1 = sacct(cluster["env"])
    subs = submissions(out1)
    # the job each Slurm job ran (a group job: its comment names the group)
    jobs_run1["Job"] = [subs.get(j, (None, None))[0] or c for j, c in zip(jobs_run1["JobID"], jobs_run1["Comment"])]
    install_site_profile(config_home, cfg_good)  # the same command, now with the good manifest
    p_slurm2 = snakemake_profile_slurm(slurm, env_slurm, "good")
    rc2, out2 = finish(p_slurm2)
    return {"local": local, "slurm": slurm, "rc1": rc1, "out1": out1, "rc2": rc2, "out2": out2,
            "jobs": jobs_run1, "jobs_after": sacct(cluster["env"]), "profile": profile}


def test_failed_video_is_reported_and_other_videos_finish(runs):
    out = own_lines(runs["out1"])
    assert runs["rc1"] != 0, out[-4000:]
    # the failed job is named: the GPU cache group of circle (its metrics job, one per video,
    # waits for its samples and is never tried)
    assert "Error in group video_cache" in out
    assert f"resources/latents/tiny/{BAD}.safetensors" in out
    assert "Error in rule metrics:" not in out
    assert "Trying to restart job" in out  # retries: 1 from the profile
    r = runs["slurm"] / "results"
    for v in GOOD:
        assert (r / "samples" / METHOD / v / "samples.parquet").exists()
        assert (r / "metrics" / f"{v}.parquet").exists()
        assert (r / "metrics_reference" / f"{v}.parquet").exists()
    assert not (runs["slurm"] / "resources" / "latents" / "tiny" / f"{BAD}.safetensors").exists()
    # the tables wait for every video: not attempted in this run (run 2 makes them)
    assert "summary" not in re.findall(r"^(?:local)?rule (\w+):", out, re.M)


def test_every_non_local_job_went_through_slurm(runs):
    out1, jobs = own_lines(runs["out1"]), runs["jobs"]
    # `snakemake --profile slurm` as typed: the installed site profile plus the workflow profile
    assert "Using profiles slurm and workflow specific profile profiles/default for setting" in runs["out1"]
    local_rules = set(re.findall(r"^localrule (\w+):", out1, re.M))
    remote_rules = set(re.findall(r"^rule (\w+):", out1, re.M))
    assert local_rules.isdisjoint(COMPUTE_RULES), local_rules
    assert COMPUTE_RULES - {"cache_latents", "cache_inversion"} <= remote_rules  # the group: sacct, below
    submitted = submissions(runs["out1"])
    assert sorted(submitted) == sorted(jobs["JobID"])
    # job arrays (profiles/slurm: slurm-array-jobs): the preprocess jobs of both good videos were
    # ready together and went out as one array; metrics (one job per video) as an array or single
    # jobs, by how many were ready in the same round
    arrays = {j.split("_")[0] for j in submitted if "_" in j}
    assert arrays, submitted
    assert {submitted[j][0].split("_wildcards_")[0] for j in submitted if "_" in j} <= {
        "rule_preprocess", "rule_metrics"}
    pre = [j for j, (label, _) in submitted.items() if (label or "").startswith("rule_preprocess_")]
    assert len(pre) == len(GOOD) and all("_" in j for j in pre) and len({j.split("_")[0] for j in pre}) == 1, pre
    # one Slurm log per job in the profile's slurm-logdir (all kept in the test profile); an array
    # task's is <logdir>/rule_<rule>/<array id>_<task>.log (the plugin reports another path for it)
    logdir = runs["slurm"] / "logs" / "slurm"
    expected_logs = [Path(log).resolve() if log else
                     (logdir / label.split("_wildcards_")[0] / f"{j}.log").resolve()
                     for j, (label, log) in submitted.items()]
    assert sorted(expected_logs) == [p.resolve() for p in sorted(logdir.rglob("*.log"))]

    done = jobs[jobs["State"] == "COMPLETED"]["Job"].tolist()
    expected = ["rule_build_tiny_model", "rule_metrics_check"] + [
        f"rule_{rule}_wildcards_{wc}" for v in GOOD
        for rule, wc in (("preprocess", v), ("customize", f"{METHOD}_{v}"),
                         ("sample", f"{METHOD}_{v}"), ("metrics", v))
    ]
    for comment in expected:
        assert done.count(comment) == 1, (comment, done)
    # cache_latents + cache_inversion: one Slurm job per video (group video_cache)
    assert sum("video_cache" in c for c in done) == len(GOOD)
    failed = jobs[jobs["State"] == "FAILED"]["Job"].tolist()
    assert sum("video_cache" in c for c in failed) == 2  # circle, attempt 1 and 2
    assert not any("rule_metrics" in c for c in failed)
    # run 2 only had the local table rules left
    assert runs["rc2"] == 0, runs["out2"][-4000:]
    assert "submitted with SLURM jobid" not in runs["out2"]
    local2 = set(re.findall(r"^localrule (\w+):", own_lines(runs["out2"]), re.M))
    assert {"videos_table", "aggregate_samples", "summary"} <= local2
    assert len(runs["jobs_after"]) == len(jobs)


def test_gpu_rules_requested_a_gpu(runs):
    jobs = runs["jobs"]
    # the cache group, customize, sample (with the method's inversion), and (CLIP on the
    # configured device) metrics and metrics_check; preprocess, build and the tables need no GPU
    gpu_rules = ("video_cache", "rule_customize_", "rule_sample_", "rule_metrics_")
    gpu = jobs["Job"].str.contains("|".join(gpu_rules))
    assert jobs.loc[gpu, "Job"].str.contains("video_cache").any()
    assert (jobs.loc[gpu, "Job"] == "rule_metrics_check").any()
    for video in GOOD:
        for rule in gpu_rules[1:]:
            assert jobs.loc[gpu, "Job"].str.contains(f"{rule}.*{video}").any(), (rule, video)
    assert (~gpu).sum() > 0  # preprocess and build_tiny_model jobs exist and request none
    for col in ("ReqTRES", "AllocTRES"):
        assert jobs.loc[gpu, col].str.contains("gres/gpu=1").all(), jobs.loc[gpu, [col, "Job"]]
        assert not jobs.loc[~gpu, col].str.contains("gres/gpu").any(), jobs.loc[~gpu, [col, "Job"]]
    # the jobs ran in their Slurm allocation: the slot allocator left the GPU to Slurm
    log = (runs["slurm"] / "results" / "logs" / "customize" / METHOD / f"{GOOD[0]}.log").read_text()
    assert "running under Slurm" in log


def _frames(path: Path) -> torch.Tensor:
    return load_tensors(path)["frames"]


def test_results_equal_the_local_run(runs):
    local, slurm = runs["local"], runs["slurm"]
    volatile = ["metrics_seconds", "seconds", "code_version"]  # wall times; git describe at run time
    for table in ("videos", "samples", "summary"):
        a = pd.read_parquet(local / "results" / "tables" / f"{table}.parquet")
        b = pd.read_parquet(slurm / "results" / "tables" / f"{table}.parquet")
        drop = [c for c in volatile if c in a.columns]
        pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop), check_exact=True)
    for v in GOOD:
        for rel in (f"resources/latents/tiny/{v}.safetensors", f"resources/inversion/tiny/{v}.safetensors",
                    f"results/customize/{METHOD}/{v}/adapter/adapter_model.safetensors"):
            ta, tb = load_tensors(local / rel), load_tensors(slurm / rel)
            assert ta.keys() == tb.keys()
            for k in ta:
                assert torch.equal(ta[k], tb[k]), (rel, k)
        s = pd.read_parquet(local / "results" / "samples" / METHOD / v / "samples.parquet")
        for rel in s["frames_path"]:
            assert torch.equal(_frames(local / rel), _frames(slurm / rel)), rel
        for rel in (f"results/metrics/{v}.parquet", f"results/metrics_reference/{v}.parquet"):
            a, b = pd.read_parquet(local / rel), pd.read_parquet(slurm / rel)
            drop = [c for c in volatile if c in a.columns]
            pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop), check_exact=True)


ARRAY_SNAKEFILE = """
rule all:
    input: expand("out/{i}.txt", i=range(5)), "single.txt"
    localrule: True

rule preprocess:  # an array rule of profiles/slurm: 5 jobs ready together
    output: "out/{i}.txt"
    threads: 1
    resources: mem_mb=100, runtime=5
    shell: "echo {wildcards.i} > {output}"

rule metrics:  # an array rule too, but only one job: a plain submission
    output: "single.txt"
    threads: 1
    resources: mem_mb=100, runtime=5
    shell: "touch {output}"
"""

SBATCH_SHIM = """#!/bin/bash
kind=single
if [[ " $* " == *" --array="* ]]; then kind=array; [[ " $* " == *" /dev/stdin "* ]] && kind=array-stdin; fi
echo $kind >> {log}
exec {real} "$@"
"""


def test_profile_array_rules_fit_arrays():
    """The rules profiles/slurm submits as job arrays: plugin 2.8.0 sends a whole array with its
    first job's resources and never arrays a group job; and it drops (never submits) array jobs
    of a round that got only some of a rule's ready jobs, so nothing may cap the round."""
    prof = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    rules = {r.strip() for r in prof["slurm-array-jobs"].split(",")}
    assert rules == {"preprocess", "metrics"}
    assert not rules & set(prof.get("groups", {})), "group members are never submitted as arrays"
    # per-method mem_mb/runtime (config resources / sample_resources): not one value per rule
    assert not rules & {"customize", "sample"}
    for rule in rules:  # the same resources for every job of the rule: no per-wildcard function
        text = "\n".join((REPO / "rules").joinpath(f).read_text() for f in
                         ("preprocess.smk", "latents.smk", "metrics.smk"))
        body = re.search(rf"^rule {rule}:\n(.*?)(?=^rule |\Z)", text, re.M | re.S).group(1)
        res = re.search(r"^    resources:\n((?:        .*\n)+)", body, re.M).group(1)
        assert "lambda" not in res, (rule, res)
    assert prof["jobs"] == "unlimited"
    # plugin 2.8.0 puts every task's command (~2.4 kB each for this workflow: the 30-video array of
    # benchmarks/slurm_overhead.py --pipeline 30 was one 71,750-byte sbatch call) in ONE argument;
    # past Linux's 128 KiB per argument it falls back to a /dev/stdin script in which every task
    # runs the first job. The profile's chunk must stay well under that: <= 25 tasks (~60 kB).
    assert 1 <= int(prof["slurm-array-limit"]) <= 25
    n, per = prof["max-jobs-per-timespan"].split("/")
    assert int(n) >= 100000 and per == "1s"


def test_array_jobs_one_sbatch_per_rule_batch(cluster, tmp_path):
    """profiles/slurm on the test cluster: 5 ready jobs of an array rule go out in ONE
    `sbatch --array=1-5` (5 array tasks in sacct), a rule with a single job in a plain sbatch:
    2 sbatch calls instead of 6; with the documented off switch, one sbatch per job again."""
    prof = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    prof["default-resources"] = {**prof["default-resources"], "slurm_partition": "debug", "mem_mb": 100}
    prof["slurm-init-seconds-before-status-checks"] = 2
    prof["latency-wait"] = 5
    prof["slurm-array-limit"] = 3  # the 5 ready jobs in two chunks: 1-3 and 4-5
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    shim = tmp_path / "shim"
    shim.mkdir()
    real = shutil.which("sbatch", path=cluster["env"].get("PATH", "") + os.pathsep + "/usr/bin")
    results = {}
    for mode, extra in (("arrays", []),
                        ("off", ["--slurm-array-jobs", "", "--jobs", "100", "--max-jobs-per-timespan", "100/1s"])):
        wd, calls = tmp_path / mode, tmp_path / f"{mode}_sbatch.txt"
        wd.mkdir()
        (wd / "Snakefile").write_text(ARRAY_SNAKEFILE)
        (shim / "sbatch").write_text(SBATCH_SHIM.format(log=calls, real=real))
        (shim / "sbatch").chmod(0o755)
        calls.write_text("")
        prefix = f"arraytest{mode}"
        env = {**cluster["env"], "PATH": f"{shim}{os.pathsep}{cluster['env'].get('PATH', '')}"}
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(wd / "Snakefile"), "--directory", str(wd),
             "--profile", str(tmp_path / "profile"), "--workflow-profile", "none",
             "--slurm-jobname-prefix", prefix, *extra],
            env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        # every task ran its own job (the /dev/stdin fallback of plugin 2.8.0 runs the first job in each)
        assert [(wd / "out" / f"{i}.txt").read_text().strip() for i in range(5)] == [str(i) for i in range(5)]
        assert (wd / "single.txt").exists()
        out = subprocess.run(["sacct", "-X", "-P", "-n", "--format=JobID,JobName,State",
                              "--starttime", "now-1days", "--endtime", "now"],
                             env=cluster["env"], capture_output=True, text=True, check=True).stdout
        ids = [ln.split("|")[0] for ln in out.splitlines() if ln.split("|")[1].startswith(prefix)]
        assert all(ln.split("|")[2] == "COMPLETED" for ln in out.splitlines() if ln.split("|")[1].startswith(prefix))
        results[mode] = (sorted(calls.read_text().split()), ids, proc.stderr)

    calls, ids, log = results["arrays"]
    assert calls == ["array", "array", "single"], log[-4000:]  # chunks of slurm-array-limit, no stdin script
    tasks = [i for i in ids if "_" in i]
    assert len(tasks) == 5 and len({i.split("_")[0] for i in tasks}) == 2, ids
    assert sorted(int(i.split("_")[1]) for i in tasks) == [1, 2, 3, 4, 5]  # two arrays: tasks 1-3 and 4-5
    assert len(ids) == 6
    assert "The individual task IDs are 1-3." in log and "The individual task IDs are 4-5." in log

    calls, ids, log = results["off"]
    assert calls == ["single"] * 6, log[-4000:]
    assert len(ids) == 6 and not any("_" in i for i in ids), ids


def test_stop_ends_orphaned_job_processes(cluster, tmp_path):
    """Fault injection (runs last: it takes the cluster down): a job is running when the
    controller dies (as when a test is killed mid-run), so `scancel` cannot reach it. stop.sh
    must still end the job's processes (slurmstepd and the job script), found from its state."""
    import time

    env, state = cluster["env"], cluster["state"]
    script = tmp_path / "orphan.sh"
    script.write_text("#!/bin/bash\nsleep 900\n")
    jid = subprocess.run(["sbatch", "--parsable", "-p", "debug", "--mem=100", "-o", str(tmp_path / "o.log"),
                          str(script)], env=env, capture_output=True, text=True, check=True).stdout.strip()
    pids: list[int] = []
    for _ in range(240):
        out = subprocess.run(["scontrol", "listpids", jid], env=env, capture_output=True, text=True).stdout
        pids = [int(ln.split()[0]) for ln in out.splitlines()[1:] if ln.split() and ln.split()[0].isdigit()]
        if pids:
            break
        time.sleep(0.25)
    assert pids, f"job {jid} did not start"
    stepd = [int(p) for p in subprocess.run(["pgrep", "-P", (state / "pids" / "slurmd.pid").read_text().strip()],
                                            capture_output=True, text=True).stdout.split()]
    os.kill(int((state / "pids" / "slurmctld.pid").read_text()), 9)  # the controller dies
    subprocess.run(["bash", str(STOP), str(state)], env=env, capture_output=True, timeout=300)

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        except OSError:
            return False

    left = [p for p in pids + stepd if alive(p)]
    assert not left, f"job processes still running after stop.sh: {left}"

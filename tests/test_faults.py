"""Fault injection, second pass (issue 22): a damaged adapter, NaN values, misspelt config keys,
a replaced reference video, wrong-typed manifest cells, rebuild hints, damaged Parquet tables
and the permissions of adapter files. Each test injects the fault and checks it is named."""

from __future__ import annotations

import copy
import os
import shutil

import pytest
import torch

from motionmatcher.customization.lora import add_lora, load_adapter, lora_config, save_adapter
import motionmatcher.files.tensor_files as tf
from motionmatcher.files.tensor_files import CorruptFileError, read_checked, write_checked


@pytest.fixture()
def unet(base):
    return copy.deepcopy(base.unet)


def _flip_exponent_bit(path, tensor_name=None):
    """Flip the top exponent bit of one fp32 value in the data section (the issue's fault):
    the header stays valid, the value becomes huge or tiny."""
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    import json

    header = json.loads(raw[8:8 + n])
    name = tensor_name or next(k for k in header if k != "__metadata__")
    start = 8 + n + header[name]["data_offsets"][0]
    raw[start + 3] ^= 0x40  # little-endian fp32: byte 3 holds the sign and the top exponent bits
    path.write_bytes(bytes(raw))


def _trained_adapter(unet, tmp_path):
    cfg = lora_config(rank=4, dropout=0.0, targets="all_transformer_linears")
    add_lora(unet, cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return save_adapter(unet, tmp_path / "adapter", cfg)


# ---- 1. adapters carry a content hash; no NaN is written or decoded -------------------------


def test_flipped_bit_in_an_adapter_is_refused_before_use(unet, base, tmp_path):
    from motionmatcher.customization.trained_weights import load_trained

    out = _trained_adapter(unet, tmp_path)
    weights = out / "adapter_model.safetensors"
    _flip_exponent_bit(weights)
    for load in (lambda u: load_adapter(u, out), lambda u: load_trained(u, out)):
        with pytest.raises(CorruptFileError, match="sha256") as e:
            load(copy.deepcopy(base.unet))
        assert str(weights) in str(e.value) and f"snakemake --force {weights}" in str(e.value)


def test_flipped_bit_in_a_trained_part_is_refused(base, tmp_path):
    """The `trainable:` parts format (MotionDirector, VMC) goes through the same check."""
    from motionmatcher.customization.training import TrainConfig, attach_trainable
    from motionmatcher.customization.trained_weights import load_trained, save_trained

    unet = copy.deepcopy(base.unet)
    cfg = TrainConfig.from_dict({"loss": "noise_prediction", "trainable": {
        "spatial": {"type": "lora", "targets": "spatial_self_attn_ff", "rank": 2},
        "qkv": {"type": "full", "targets": "temporal_attn_qkv"}}})
    _, spec = attach_trainable(unet, cfg)
    out = save_trained(unet, tmp_path / "adapter", spec)
    load_trained(copy.deepcopy(base.unet), out)  # intact: loads
    import json

    index = json.loads((out / "adapter_config.json").read_text())
    _flip_exponent_bit(out / "adapter_model.safetensors", "qkv/" + index["parts"]["qkv"]["tensors"][0])
    with pytest.raises(CorruptFileError, match="sha256"):
        load_trained(copy.deepcopy(base.unet), out, ["qkv"])


def test_non_finite_adapter_weights_are_not_saved(unet, tmp_path):
    cfg = lora_config(rank=4, dropout=0.0, targets="all_transformer_linears")
    add_lora(unet, cfg)
    with torch.no_grad():
        next(p for n, p in unet.named_parameters() if "lora_B" in n)[0, 0] = float("nan")
    with pytest.raises(tf.NonFiniteError, match=r"training of adapter 'motion' produced non-finite values "
                                             r"\(tensor '.*lora_B.*': 1 NaN and 0 Inf of \d+ values\)"):
        save_adapter(unet, tmp_path / "adapter", cfg)
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_nan_tensor_is_not_written_and_names_step_and_inputs(tmp_path):
    path = tmp_path / "inversion" / "m" / "v.safetensors"
    x = torch.zeros(1, 4, 2, 2, 2)
    x[0, 1, 0, 0, 0] = float("inf")
    x[0, 2, 1, 1, 1] = float("nan")
    adapter = tmp_path / "customize" / "adapter_model.safetensors"
    with pytest.raises(tf.NonFiniteError) as e:
        write_checked(path, {"inversion": x}, step="DDIM inversion (2 steps)", inputs=[adapter])
    msg = str(e.value)
    assert msg.startswith(f"{path}: DDIM inversion (2 steps) produced non-finite values (tensor 'inversion': "
                          "1 NaN and 1 Inf of 32 values)")
    assert f"snakemake --force {adapter}" in msg
    assert not path.exists()


def test_reader_refuses_a_file_holding_nan(tmp_path):
    """A NaN file written by an older version (or another program) is not used either."""
    from motionmatcher.files.tensor_files import content_hash, serialize
    from motionmatcher.files.atomic import write_bytes_atomic

    t = {"latents": torch.tensor([1.0, float("nan")])}
    path = tmp_path / "old.safetensors"
    write_bytes_atomic(path, serialize(t, {"content_sha256": content_hash(t), "shapes": {"latents": [2]}}))
    with pytest.raises(CorruptFileError, match=r"non-finite values \(tensor 'latents': 1 NaN"):
        read_checked(path)


def test_nan_latents_are_never_decoded_to_black_frames(base):
    """The issue's fault: a NaN inversion gave all-black samples that were scored. The sampler
    stops at the NaN latents, naming the manifest row and the step."""
    from motionmatcher.customization.sampler import SamplingConfig, sample_videos

    inversion = torch.full((1, 4, 2, 4, 4), float("nan"))
    cfg = SamplingConfig(num_steps=2, noise_prior=1.0, guidance_scale=1.0)
    with pytest.raises(tf.NonFiniteError, match=r"sampling \(manifest row 3 \(zoom\), 2 denoising steps\) produced "
                                             r"non-finite values \(tensor 'latents': 128 NaN"):
        sample_videos(base, ["a ball"], [0], n_frames=2, height=32, width=32, cfg=cfg, inversion_latents=inversion,
                      row_labels=["manifest row 3 (zoom)"], progress=False)


def test_vae_decode_refuses_non_finite_frames(base):
    from motionmatcher.backbones.latents import decode_latents

    z = torch.zeros(1, 4, 2, 4, 4)
    z[0, 0, 1] = float("inf")
    with pytest.raises(tf.NonFiniteError, match=r"VAE decode \(frames 0-1\)"):
        decode_latents(base.vae, z)
    assert decode_latents(base.vae, torch.zeros(1, 4, 2, 4, 4)).shape == (1, 2, 32, 32, 3)


def test_output_naming_wraps_the_step_error(tmp_path):
    with pytest.raises(tf.NonFiniteError) as e:
        with tf.NonFiniteError.naming("results/samples/m/v/samples.parquet", ["a.safetensors", None]):
            raise tf.NonFiniteError(None, "sampling (row 1)", "tensor 'latents': 1 NaN and 0 Inf of 4 values")
    assert str(e.value).startswith("results/samples/m/v/samples.parquet: sampling (row 1) produced")
    assert "snakemake --force a.safetensors`" in str(e.value)


# ---- 5. rebuild hints: a target that rebuilds, relative to where the file is now -------------


def test_hint_names_the_rule_output_relative_to_the_working_directory(tmp_path, monkeypatch):
    """A sample's frames file lies in the rule's `videos/` folder: the hint names the rule's
    table. In a copied results folder it names the copy, relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "exp1" / "results" / "samples" / "m" / "v"
    frames = first / "videos" / "p00_s0.safetensors"
    write_checked(frames, {"frames": torch.zeros(2, 4, 4, 3, dtype=torch.uint8)},
                  rebuild_target=first / "samples.parquet")
    shutil.copytree(tmp_path / "exp1", tmp_path / "exp2")
    copy_ = tmp_path / "exp2" / "results" / "samples" / "m" / "v" / "videos" / "p00_s0.safetensors"
    raw = bytearray(copy_.read_bytes())
    raw[-1] ^= 0x01
    copy_.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError) as e:
        read_checked(copy_)
    assert e.value.rebuild.startswith("snakemake --force exp2/results/samples/m/v/samples.parquet ")
    monkeypatch.chdir(tmp_path / "exp2")
    with pytest.raises(CorruptFileError) as e:
        read_checked("results/samples/m/v/videos/p00_s0.safetensors")
    assert e.value.rebuild.startswith("snakemake --force results/samples/m/v/samples.parquet ")


def test_hint_of_an_older_file_uses_where_it_is_now(tmp_path, monkeypatch):
    """Files written before `rebuild_target` recorded the absolute path they were first
    written at; the hint is computed from the path read instead."""
    from motionmatcher.files.tensor_files import content_hash, serialize
    from motionmatcher.files.atomic import write_bytes_atomic

    monkeypatch.chdir(tmp_path)
    t = {"x": torch.ones(2)}
    (tmp_path / "r").mkdir()
    write_bytes_atomic(tmp_path / "r" / "x.safetensors", serialize(t, {
        "content_sha256": "0" * 64, "shapes": {"x": [2]},
        "rebuild": "snakemake --force /elsewhere/r/x.safetensors   (then rerun your snakemake command)"}))
    with pytest.raises(CorruptFileError) as e:
        read_checked(tmp_path / "r" / "x.safetensors")
    assert e.value.rebuild.startswith("snakemake --force r/x.safetensors ")
    assert content_hash(t)  # (the recorded hash above is wrong on purpose)


# ---- 7. adapter files get the umask's permissions ------------------------------------------


def test_adapter_files_respect_the_umask(unet, base, tmp_path):
    from motionmatcher.customization.training import TrainConfig, attach_trainable
    from motionmatcher.customization.trained_weights import save_trained

    old = os.umask(0o022)
    try:
        out = _trained_adapter(unet, tmp_path)
        u2 = copy.deepcopy(base.unet)
        _, spec = attach_trainable(u2, TrainConfig.from_dict({"loss": "noise_prediction", "trainable": {
            "temporal": {"type": "lora", "targets": "temporal_attn_ff", "rank": 2}}}))
        parts = save_trained(u2, tmp_path / "parts", spec)
    finally:
        os.umask(old)
    for folder in (out, parts):
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            assert oct((folder / name).stat().st_mode & 0o777) == oct(0o644), (folder, name)


# ---- 4. manifest cells of the wrong type join the row-by-row report ------------------------


def test_wrong_typed_manifest_cells_are_reported_with_row_and_column(tmp_path):
    from motionmatcher.toy.ball_clips import render_clip
    from motionmatcher.files.manifest import ManifestError, load_manifest
    from motionmatcher.files.video import write_mp4

    write_mp4(render_clip("zoom", n_frames=12, size=(32, 32)), tmp_path / "a.mp4", fps=8)
    write_mp4(render_clip("circle", n_frames=12, size=(32, 32)), tmp_path / "b.mp4", fps=8)
    csv = tmp_path / "m.csv"
    csv.write_text("video_id,video_path,caption,prompt,start_frame,frame_step\n"
                   "a,a.mp4,a ball,a car,abc,1\n"
                   "b,b.mp4,a ball,a car,0,1.5\n"
                   "c,missing.mp4,a ball,,0,1\n")
    with pytest.raises(ManifestError) as e:
        load_manifest(csv, n_frames=4)
    assert e.value.problems == [
        "row 1 (line 2), column start_frame: 'abc' is not a whole number",
        "row 2 (line 3), column frame_step: '1.5' is not a whole number",
        "row 3 (line 4), column prompt: must not be empty",
        f"row 3 (line 4), column video_path: file does not exist: {tmp_path / 'missing.mp4'}",
    ]


# ---- 2. unknown config keys are rejected at every level, with the nearest known key ----------


def _demo_config():
    import yaml

    from workflow_helpers import REPO

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.__setitem__("trainig", {"steps": 2}),
     "trainig: unknown key (did you mean 'training'?"),
    (lambda c: c["training"].__setitem__("stpes", 2),
     "training.stpes: unknown key (did you mean 'steps'?"),
    (lambda c: c["methods"]["motionmatcher"]["train"].__setitem__("stpes", 2),
     "methods.motionmatcher.train.stpes: unknown key (did you mean 'steps'?"),
    (lambda c: c["sampling"].__setitem__("num_step", 2),
     "sampling.num_step: unknown key (did you mean 'num_steps'?"),
    (lambda c: c["methods"]["vmc"]["sample"].__setitem__("noise_prio", 0.5),
     "methods.vmc.sample.noise_prio: unknown key (did you mean 'noise_prior'?"),
    (lambda c: c["methods"]["motiondirector"].__setitem__("sampel", {}),
     "methods.motiondirector.sampel: unknown key (did you mean 'sample'?"),
    (lambda c: c["methods"]["dmt"]["guidance"].__setitem__("optimisation_steps", 3),
     "methods.dmt.guidance.optimisation_steps: unknown key (did you mean 'optimization_steps'?"),
    (lambda c: c["methods"]["motionclone"]["guidance"].__setitem__("rank", 3),
     "methods.motionclone.guidance.rank: unknown key (did you mean 'rank_k'?"),
    (lambda c: c["methods"]["motiondirector"]["train"]["trainable"]["temporal"].__setitem__("rnak", 3),
     "methods.motiondirector.train.trainable.temporal.rnak: unknown key (did you mean 'rank'?"),
    (lambda c: c["methods"]["motionmatcher"]["train"]["loss_kwargs"].__setitem__("tsa_wieght", 1.0),
     "methods.motionmatcher.train.loss_kwargs.tsa_wieght: loss 'motion_matching' (method motionmatcher) takes no "
     "such option (did you mean 'tsa_weight'?"),
    (lambda c: c["methods"]["ddpm_lora"]["train"].__setitem__("loss", "noise_predictoin"),
     "methods.ddpm_lora.train.loss: unknown loss 'noise_predictoin' (did you mean 'noise_prediction'?"),
    (lambda c: c["metrics"]["clip"].__setitem__("modle", "x"),
     "metrics.clip.modle: unknown key (did you mean 'model'?"),
])
def test_misspelt_key_is_named_with_the_nearest_known_one(edit, message):
    from motionmatcher.files.config_keys import config_key_problems

    cfg = _demo_config()
    assert config_key_problems(cfg) == []
    edit(cfg)
    problems = config_key_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_number_yaml_reads_as_text_shows_the_spelling_that_is_a_number():
    import yaml

    from motionmatcher.files.config_keys import config_key_problems, yaml_number

    cfg = _demo_config()
    cfg["methods"]["vmc"]["train"].update(yaml.safe_load("lr: 1e-4\nsteps: '30'"))
    cfg["sampling"].update(yaml.safe_load("guidance_scale: 2e+1"))
    assert cfg["methods"]["vmc"]["train"]["lr"] == "1e-4"  # PyYAML: no dot -> text
    problems = config_key_problems(cfg)
    assert sorted(problems) == sorted([
        "methods.vmc.train.lr: '1e-4' is a string to YAML, not a number (YAML reads a number with an exponent "
        "only with a dot and a signed exponent); write 1.0e-4",
        "methods.vmc.train.steps: '30' is a string, not a number: quoted in YAML, or nested in --config "
        "(Snakemake passes `--config 'key={sub: 30}'` on as text); write 30 unquoted in a YAML file "
        "(a second --configfile)",
        "sampling.guidance_scale: '2e+1' is a string to YAML, not a number (YAML reads a number with an exponent "
        "only with a dot and a signed exponent); write 20.0",
    ])
    for x in (1e-4, 5e-4, 2.5e5, 0.01, 7.0):  # each suggestion reads back as the same float
        assert yaml.safe_load(f"v: {yaml_number(x)}")["v"] == x


def test_loss_keywords_read_from_source_match_the_functions():
    import inspect

    from motionmatcher.files.config_keys import LOOP_KEYWORDS, loss_keywords
    from motionmatcher.methods.registry import LOSSES

    assert set(loss_keywords()) == set(LOSSES)
    for name, fn in LOSSES.items():
        assert loss_keywords()[name] == [p.name for p in inspect.signature(fn).parameters.values()
                                         if p.kind is p.KEYWORD_ONLY and p.name not in LOOP_KEYWORDS]


@pytest.fixture(scope="module")
def one_video(tmp_path_factory):
    """A one-video manifest (a 20-frame toy clip, 32 px)."""
    from motionmatcher.toy.ball_clips import render_clip
    from motionmatcher.files.video import write_mp4

    d = tmp_path_factory.mktemp("one_video")
    write_mp4(render_clip("zoom", n_frames=20, size=(32, 32)), d / "zoom.mp4", fps=8)
    (d / "m.csv").write_text("video_id,video_path,caption,prompt\nzoom,zoom.mp4,a ball,a car\n")
    return d


def test_dry_run_refuses_misspelt_keys_before_any_job(one_video, tmp_path):
    import yaml

    from workflow_helpers import run_snakemake, write_small_config

    cfg = write_small_config(tmp_path / "c.yaml", one_video / "m.csv", run_methods=["base"])
    data = yaml.safe_load(cfg.read_text())
    data["trainig"] = {"steps": 2}
    data["sampling"]["num_step"] = 2
    data["methods"]["motionmatcher"]["train"]["stpes"] = 2
    cfg.write_text(yaml.safe_dump(data))
    res = run_snakemake(tmp_path, cfg, "-n")
    assert res.returncode != 0
    out = res.stderr + res.stdout
    assert "3 problem(s)" in out
    for line in ("trainig: unknown key (did you mean 'training'?", "sampling.num_step: unknown key (did you mean "
                 "'num_steps'?", "methods.motionmatcher.train.stpes: unknown key (did you mean 'steps'?"):
        assert line in out, out[-3000:]


# ---- 3. a replaced reference video is noticed, even when older --------------------------------


def test_identity_record_changes_time_only_when_the_content_changes(tmp_path, monkeypatch):
    import hashlib

    from motionmatcher.files import video_identity as vi

    video, record = tmp_path / "ref.mp4", tmp_path / "id" / "ref.json"
    video.write_bytes(b"first clip")
    os.utime(video, ns=(1_000_000_000_000, 1_000_000_000_000))
    rec = vi.record_video_identity(video, record)
    assert rec["sha256"] == hashlib.sha256(b"first clip").hexdigest() and rec["size"] == 10
    assert record.stat().st_mtime_ns == 1_000_000_000_000  # first record: the video's time

    def no_hashing(path, chunk=0):
        raise AssertionError("hashed although path, size and time are unchanged")

    with monkeypatch.context() as m:  # cached by path / size / mtime
        m.setattr(vi, "file_sha256", no_hashing)
        assert vi.record_video_identity(video, record) == rec

    os.utime(video, ns=(2_000_000_000_000, 2_000_000_000_000))  # touched: same content
    assert vi.record_video_identity(video, record)["mtime_ns"] == 2_000_000_000_000
    assert record.stat().st_mtime_ns == 1_000_000_000_000

    moved = tmp_path / "moved" / "ref.mp4"  # a moved project folder: same content and time
    moved.parent.mkdir()
    shutil.copy2(video, moved)
    assert vi.record_video_identity(moved, record)["video_path"] == str(moved)
    assert record.stat().st_mtime_ns == 1_000_000_000_000

    video.write_bytes(b"other clip")  # replaced, same size, an older time (cp -p)
    os.utime(video, ns=(500_000_000_000, 500_000_000_000))
    rec = vi.record_video_identity(video, record)
    assert rec["sha256"] == hashlib.sha256(b"other clip").hexdigest()
    assert record.stat().st_mtime_ns > 2_000_000_000_000  # rewritten now: newer than any output


def test_replaced_older_reference_reruns_preprocess(one_video, tmp_path):
    """The issue's fault: `cp -p other.mp4 ref.mp4` (older timestamp, same name) said
    "Nothing to be done"."""
    from motionmatcher.toy.ball_clips import render_clip
    from motionmatcher.files.video import write_mp4
    from workflow_helpers import run_snakemake, write_small_config

    shutil.copy(one_video / "zoom.mp4", tmp_path / "zoom.mp4")
    (tmp_path / "m.csv").write_text((one_video / "m.csv").read_text())
    write_mp4(render_clip("circle", n_frames=20, size=(32, 32)), tmp_path / "other.mp4", fps=8)
    os.utime(tmp_path / "other.mp4", (1_000_000_000, 1_000_000_000))  # 2001: older than anything
    cfg = write_small_config(tmp_path / "c.yaml", tmp_path / "m.csv", run_methods=["base"])
    target = "results/preprocess/zoom/frames.safetensors"
    res = run_snakemake(tmp_path, cfg, "--keep-going", target)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Nothing to be done" in (r := run_snakemake(tmp_path, cfg, "-n", target)).stdout + r.stderr
    shutil.copy2(tmp_path / "other.mp4", tmp_path / "zoom.mp4")  # cp -p
    res = run_snakemake(tmp_path, cfg, "-n", target)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "preprocess" in res.stdout and "Nothing to be done" not in res.stdout + res.stderr, res.stdout[-3000:]


# ---- 6. damaged Parquet tables: named with a rebuild hint, and repaired by a rerun ----------


def _write_samples_table(path):
    import pandas as pd

    from motionmatcher.files.table_schemas import SAMPLES, write_table

    row = {n: None for n in SAMPLES.names}
    row.update(video_id="zoom", method="base", prompt_id="p00", prompt="a car", manifest_row=1, seed=0)
    write_table(pd.DataFrame([row]), SAMPLES, path)


def test_truncated_table_is_named_with_its_rebuild_command(tmp_path, monkeypatch):
    from motionmatcher.files.table_schemas import SAMPLES, read_table

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "results" / "samples" / "base" / "zoom" / "samples.parquet"
    _write_samples_table(path)
    assert list(read_table(path, SAMPLES)["prompt_id"]) == ["p00"]
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CorruptFileError) as e:
        read_table(path, SAMPLES)
    assert str(e.value).startswith(f"{path}: not a readable Parquet table")
    assert e.value.rebuild.startswith("snakemake --force results/samples/base/zoom/samples.parquet ")
    path.unlink()
    with pytest.raises(CorruptFileError, match="file is missing"):
        read_table(path)


def test_workflow_scripts_read_tables_through_the_checked_reader():
    """A rule script reading Parquet with pandas directly would fail with pyarrow's "magic bytes
    not found" and no hint (the issue's fault)."""
    from workflow_helpers import REPO

    direct = [f.name for f in (REPO / "workflow_scripts").glob("*.py")
              if "read_parquet(" in f.read_text() or "pq.read_table(" in f.read_text()]
    assert direct == []


def test_verify_finds_damage_and_deletes_the_outputs_that_rebuild_it(tmp_path, monkeypatch, capsys):
    from helpers import save_tensors
    from motionmatcher.results.verify import main

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results" / "samples" / "base" / "zoom"
    _write_samples_table(run / "samples.parquet")
    frames = run / "videos" / "p00_s0.safetensors"
    write_checked(frames, {"frames": torch.zeros(2, 4, 4, 3, dtype=torch.uint8)}, rebuild_target=run / "samples.parquet")
    table = tmp_path / "results" / "metrics" / "base" / "zoom.parquet"
    _write_samples_table(table)
    lat = tmp_path / "resources" / "latents" / "tiny" / "zoom.safetensors"
    write_checked(lat, {"latents": torch.ones(1, 4, 2, 2, 2)})
    save_tensors({"w": torch.ones(2)}, tmp_path / "resources" / "other" / "weights.safetensors")  # not ours
    assert main(["results", "resources"]) == 0

    raw = bytearray(frames.read_bytes())
    raw[-1] ^= 0x01
    frames.write_bytes(bytes(raw))  # a sample's frames: rebuilt by rule sample's table
    table.write_bytes(table.read_bytes()[:100])  # truncated table
    lat.write_bytes(lat.read_bytes()[:-8])  # truncated latents
    frames2 = run / "videos" / "p00_s1.safetensors"  # unreadable: no recorded target
    frames2.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["results", "resources"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    pairs = {lines[i].split(": ")[1]: lines[i + 1].split("rebuilt by: ")[1]
             for i in range(len(lines) - 1) if lines[i].startswith("damaged: ")}
    assert pairs == {str(d.relative_to(tmp_path)): str(t.relative_to(tmp_path)) for d, t in (
        (frames, run / "samples.parquet"), (frames2, run / "samples.parquet"), (table, table), (lat, lat))}
    assert main(["--delete", "results", "resources"]) == 0
    assert not (run / "samples.parquet").exists() and not table.exists() and not lat.exists()
    assert (tmp_path / "resources" / "other" / "weights.safetensors").exists()



def test_an_instruction_of_its_own_is_kept(tmp_path):
    """Training checkpoints are not rule outputs: their hint stays the writer's instruction."""
    path = tmp_path / "step-000002" / "trainable.safetensors"
    write_checked(path, {"w": torch.ones(2)}, rebuild="delete resources/checkpoints/x to start training over")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError) as e:
        read_checked(path)
    assert e.value.rebuild == "delete resources/checkpoints/x to start training over"

"""The whole DAG on the tiny DiT backbones (`model: wan-tiny`, `model: cogvideox-tiny`), CPU,
at test size: one 9-frame clip (3 latent frames) with one target prompt, 2 training /
sampling / inversion steps, the methods that run on a DiT (the CA / TSA ablations are the
same loss with one weight 0: tests/test_backbones.py trains it)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from motionmatcher.toy.ball_clips import write_demo_dataset
from helpers import load_tensors, tensor_metadata
from workflow_helpers import run_snakemake, write_small_config

pytestmark = pytest.mark.pipeline

METHODS = ["base", "motionmatcher", "ddpm_lora"]


def _config(workdir: Path, model: str, **over) -> Path:
    write_demo_dataset(workdir / "demo", n_frames=20, size=(80, 64))
    import yaml

    manifest = pd.read_csv(workdir / "demo" / "manifest.csv")
    manifest[manifest["video_id"] == "zoom"].head(1).to_csv(workdir / "demo" / "manifest.csv", index=False)

    cfg = write_small_config(workdir / "cfg.yaml", workdir / "demo" / "manifest.csv", n_frames=9, steps=2,
                             checkpoint_every=1, model=model, run_methods=METHODS, **over)
    data = yaml.safe_load(cfg.read_text())
    data["training"]["lora"]["targets"] = "motionmatcher"  # the DiT's own set (the helper's is a UNet set)
    data["backbone_sampling"] = {b: {**s, "num_steps": 2} for b, s in data["backbone_sampling"].items()}
    cfg.write_text(yaml.safe_dump(data))
    return cfg


@pytest.mark.parametrize("model, backbone, transformer", [
    ("wan-tiny", "wan", "WanTransformer3DModel"),
    ("cogvideox-tiny", "cogvideox", "CogVideoXTransformer3DModel"),
])
def test_whole_dag_on_a_dit(tmp_path, model, backbone, transformer):
    cfg = _config(tmp_path, model)
    res = run_snakemake(tmp_path, cfg, timeout=1200)
    assert res.returncode == 0, res.stderr[-6000:]
    r = tmp_path / "results"
    lat = tmp_path / "resources" / "latents" / model / "zoom.safetensors"
    # 9 frames of 64x64 -> (1, 4, 3, 16, 16): the 3-D VAE's 4k+1 -> k+1 and 4x spatial compression
    assert tuple(load_tensors(lat)["latents"].shape) == (1, 4, 3, 16, 16)
    assert tensor_metadata(lat)["model_identity"].startswith(f"{model}-")
    index = (tmp_path / "resources" / "models" / model / "model_index.json").read_text()
    assert transformer in index
    assert set(pd.read_parquet(r / "tables" / "samples.parquet")["method"]) == set(METHODS)  # metrics of all
    samples = pd.concat([pd.read_parquet(r / "samples" / m / "zoom" / "samples.parquet") for m in METHODS])
    # the backbone's own guidance default (config backbone_sampling), not `sampling:`'s 12
    assert set(samples["guidance_scale"]) == {{"wan": 5.0, "cogvideox": 6.0}[backbone]}
    assert set(samples["num_steps"]) == {2}
    for method in METHODS[1:]:
        log = pd.read_parquet(r / "customize" / method / "zoom" / "train_log.parquet")
        assert len(log) == 2 and log["loss"].notna().all()
    summary = (r / "tables" / "summary.md").read_text()
    assert f"backbone {backbone} (model {model})" in summary.splitlines()[0]


def test_dit_refuses_unet_methods_before_any_job(tmp_path):
    # (every UNet method against every backbone: tests/test_backbones.py; here the workflow's check)
    for method in ("motiondirector", "motionclone"):
        cfg = _config(tmp_path, "wan-tiny", )
        import yaml

        data = yaml.safe_load(cfg.read_text())
        data["run_methods"] = ["base", method]
        cfg.write_text(yaml.safe_dump(data))
        res = run_snakemake(tmp_path, cfg, "-n")
        out = res.stdout + res.stderr
        assert res.returncode != 0
        assert f"method {method!r}" in out and "wan backbone" in out, out[-3000:]


def test_dit_refuses_a_frame_count_the_vae_cannot_encode(tmp_path):
    cfg = _config(tmp_path, "cogvideox-tiny")
    import yaml

    data = yaml.safe_load(cfg.read_text())
    data["video"]["n_frames"] = 8
    cfg.write_text(yaml.safe_dump(data))
    res = run_snakemake(tmp_path, cfg, "-n")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "video.n_frames = 8" in out and "4k+1" in out and "use 5 or 9" in out, out[-3000:]


def test_dit_lists_every_refusal_at_once(tmp_path):
    """A wrong frame count and four UNet-only methods: one run names all five, not the first."""
    import yaml

    cfg = _config(tmp_path, "wan-tiny")
    data = yaml.safe_load(cfg.read_text())
    data["video"]["n_frames"] = 8
    data["run_methods"] = ["base", "motiondirector", "vmc", "dmt", "motionclone"]
    cfg.write_text(yaml.safe_dump(data))
    res = run_snakemake(tmp_path, cfg, "-n")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "video.n_frames = 8" in out, out[-3000:]
    for method in ("motiondirector", "vmc", "dmt", "motionclone"):
        assert f"method {method!r}" in out, (method, out[-3000:])
    assert "method 'base'" not in out

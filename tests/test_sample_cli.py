"""``python -m motionmatcher.customization.sample_cli``: sizes from the inversion, mismatches refused."""

from __future__ import annotations

import pytest
import torch

from motionmatcher.customization import sample_cli
from motionmatcher.files.tensor_files import write_checked
from motionmatcher.files.video import read_mp4


@pytest.fixture()
def inversion(tmp_path, base):
    """An 8-frame inversion of a 32x32 video (latents 32/s x 32/s, s the VAE's scale factor)."""
    s = base.vae_scale_factor
    z = torch.randn(1, base.unet.config.in_channels, 8, 32 // s, 32 // s, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "inv.safetensors"
    write_checked(path, {"inversion": z}, model_identity=base.identity)
    return path


def test_sizes_default_to_the_inversion_and_mismatches_name_the_fix(base, inversion):
    h = 32 // base.vae_scale_factor
    z = torch.zeros(1, 4, 8, h, h)
    assert sample_cli.video_size_of(base, z, inversion, None, None, None) == (8, 32, 32)
    assert sample_cli.video_size_of(base, z, inversion, 8, 32, None) == (8, 32, 32)
    assert sample_cli.video_size_of(base, None, None, None, None, None) == (16, 384, 384)
    msg = sample_cli.video_size_of(base, z, inversion, 16, None, 64)
    assert msg == (f"{inversion}: latents of 8 frames at {h}x{h}: --frames 16 does not match the inversion (8 would); "
                   "--width 64 does not match the inversion (32 would): omit the option to take the inversion's size")


def test_cli_samples_at_the_inversions_size_and_refuses_a_mismatch(tiny_model_dir, base, inversion, tmp_path, capsys):
    common = ["--model", str(tiny_model_dir), "--inversion", str(inversion), "--prompt", "a ball rolls",
              "--num-steps", "2", "--device", "cpu", "--dtype", "fp32"]
    with pytest.raises(SystemExit) as e:
        sample_cli.main(common + ["--frames", "16", "--out", str(tmp_path / "bad")])
    assert e.value.code == 2
    assert "--frames 16 does not match the inversion (8 would)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    sample_cli.main(common + ["--out", str(tmp_path / "ok")])
    frames = read_mp4(tmp_path / "ok" / "00_s0.mp4")
    assert frames.shape[:3] == (8, 32, 32)

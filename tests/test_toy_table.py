"""benchmarks/toy_table.py: the per-family table and the claim's reading, on a hand-made table."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import toy_table  # noqa: E402

VIDEOS = ("00_line_red_triangle", "01_circle_cw_green_circle", "08_line_blue_square_leak",
          "09_circle_cw_red_square_leak")
# per-video trajectory error (each video: two samples whose mean is this)
TRAJ = {"base": (0.4, 0.3, 0.5, 0.6), "motionmatcher": (0.1, 0.1, 0.2, 0.3), "ddpm_lora": (0.2, 0.2, 0.3, 0.4)}
LEAK = {"base": (0.0, 0.0), "motionmatcher": (0.01, 0.02), "ddpm_lora": (0.05, 0.07)}


def _samples() -> pd.DataFrame:
    rows = []
    for m, errs in TRAJ.items():
        for i, (v, e) in enumerate(zip(VIDEOS, errs)):
            leak = LEAK[m][i - 2] if v.endswith("_leak") else np.nan
            for d in (-0.05, 0.05):  # two samples around the video's mean
                rows.append(dict(method=m, video_id=v, trajectory_error=e + d, background_leakage=leak))
    return pd.DataFrame(rows)


def test_family_is_read_from_the_clip_id():
    assert toy_table.family("01_circle_cw_green_circle") == "circle_cw"
    assert toy_table.family("02_circle_ccw_blue_square") == "circle_ccw"
    assert toy_table.family("08_line_blue_square_leak") == "line"
    assert toy_table.family("clip") == "?"


def test_family_table_means_and_ratios():
    lines = toy_table.family_table(_samples()).splitlines()
    assert lines[0] == "| family | setting | n videos | base | motionmatcher | ddpm_lora |"
    rows = {tuple(c.strip() for c in l.strip("|").split("|")[:2]): l for l in lines[2:]}
    # circle_cw plain: base 0.3, motionmatcher 0.1 (0.33x), ddpm_lora 0.2 (0.67x)
    assert rows[("circle_cw", "plain")] == "| circle_cw | plain | 1 | 0.300 | 0.100 (0.33x) | 0.200 (0.67x) |"
    assert rows[("line", "leak")] == "| line | leak | 1 | 0.500 | 0.200 (0.40x) | 0.300 (0.60x) |"
    assert len(rows) == 4


def test_reading_against_base_and_ddpm_lora():
    base, ddpm = toy_table.reading(_samples())
    # vs base: differences -0.3, -0.2, -0.3, -0.3: mean -0.275, sd 0.05, t(3) = 3.182
    h = 3.182 * 0.05 / 2
    assert base == (f"motionmatcher beats base by >= 2x in trajectory error: yes (ratio {0.7 / 1.8:.2f}, "
                    f"paired difference {-0.275:+.3f} [{-0.275 - h:+.3f}, {-0.275 + h:+.3f}], 4 videos)")
    # vs DDPM-LoRA: trajectory -0.1 on every video (CI [-0.1, -0.1]); leakage -0.04, -0.05 on the two
    # leak-prone videos: mean -0.045, sd 0.00707, t(1) = 12.706 -> CI crosses 0 -> not shown
    h2 = 12.706 * np.std([-0.04, -0.05], ddof=1) / np.sqrt(2)
    assert ddpm.startswith("motionmatcher beats ddpm_lora in trajectory error at lower leakage: no ")
    assert f"background_leakage {-0.045:+.3f} [{-0.045 - h2:+.3f}, {-0.045 + h2:+.3f}] (2 videos)" in ddpm
    assert "trajectory -0.100 [-0.100, -0.100], 4 videos" in ddpm


def test_reading_says_no_when_the_ratio_is_above_half():
    s = _samples()
    # +0.15: ratio 1.3/1.8 = 0.72 while the paired CI stays below 0 (mean -0.125, upper end -0.045)
    s.loc[s["method"] == "motionmatcher", "trajectory_error"] += 0.15
    line = toy_table.reading(s)[0]
    assert line.startswith("motionmatcher beats base by >= 2x in trajectory error: no (ratio 0.72,")
    assert "[-0.205, -0.045]" in line


@pytest.mark.parametrize("missing", ["base", "ddpm_lora"])
def test_reading_skips_an_absent_reference_method(missing):
    s = _samples()
    lines = toy_table.reading(s[s["method"] != missing])
    assert len(lines) == 1 and (missing not in lines[0].split(" in ")[0])


def test_setting_restricts_the_reading_to_its_references(capsys, tmp_path):
    """--setting plain: the paired CI is over the two plain videos only (by hand: base 0.4, 0.3;
    motionmatcher 0.1, 0.1 -> differences -0.3, -0.2: mean -0.25, sd 0.0707, t(1) = 12.706)."""
    path = tmp_path / "samples.parquet"
    s = _samples()
    s.assign(**{c: np.arange(len(s), dtype=float) for c in ("motion_discrepancy", "motion_fidelity", "clip_t")}
             ).to_parquet(path)
    assert toy_table.main([str(path), "--setting", "plain"]) == 0
    out = capsys.readouterr().out
    h = 12.706 * np.std([-0.3, -0.2], ddof=1) / np.sqrt(2)
    assert (f"motionmatcher: trajectory error / base = {0.2 / 0.7:.2f} "
            f"(paired difference {-0.25:+.3f} [{-0.25 - h:+.3f}, {-0.25 + h:+.3f}], 2 videos)") in out
    assert "| leak |" not in out and "| plain | 1 |" in out
    assert [toy_table.setting(v) for v in VIDEOS] == ["plain", "plain", "leak", "leak"]


def _runs():
    a = pd.DataFrame({"method": ["base", "base", "motionmatcher"], "video_id": ["v", "w", "v"],
                      "prompt": ["p"] * 3, "seed": [0] * 3, "trajectory_error": [0.2, 0.4, 0.1],
                      "background_leakage": [np.nan] * 3, "frames_path": ["a/1", "a/2", "a/3"]})
    b = pd.DataFrame({"method": ["base", "w2e8"], "video_id": ["v", "v"], "prompt": ["p"] * 2,
                      "seed": [0] * 2, "trajectory_error": [0.2, 0.05],
                      "background_leakage": [np.nan] * 2, "frames_path": ["b/1", "b/2"]})
    return a, b


def test_combine_keeps_a_reproduced_sample_once():
    a, b = _runs()
    got = toy_table.combine({"a.parquet": a, "b.parquet": b})
    assert sorted(zip(got["method"], got["video_id"])) == [("base", "v"), ("base", "w"),
                                                          ("motionmatcher", "v"), ("w2e8", "v")]
    assert got.loc[got["method"] == "base", "trajectory_error"].tolist() == [0.2, 0.4]


def test_combine_refuses_a_sample_that_differs():
    a, b = _runs()
    b.loc[0, "trajectory_error"] = 0.3
    with pytest.raises(ValueError, match=r"a.parquet and b.parquet: sample .*'base'.* differs in 'trajectory_error'"):
        toy_table.combine({"a.parquet": a, "b.parquet": b})


def test_combine_tolerates_float_level_differences_and_timings_but_not_a_missing_value():
    a, b = _runs()
    a["metrics_seconds"], b["metrics_seconds"] = 1.0, 2.0
    b.loc[0, "trajectory_error"] = 0.2 * (1 + 0.5 * toy_table.RTOL)  # within tolerance
    assert len(toy_table.combine({"a.parquet": a, "b.parquet": b})) == 4
    b.loc[0, "background_leakage"] = 0.0  # NaN in a, a value in b
    with pytest.raises(ValueError, match="differs in 'background_leakage'"):
        toy_table.combine({"a.parquet": a, "b.parquet": b})


def test_video_table_means_and_ratios():
    out = toy_table.video_table(_samples()).splitlines()
    # video 3 (08_line_blue_square_leak): base 0.5, motionmatcher 0.2, ddpm_lora 0.3
    assert out[0] == "| reference | base | motionmatcher | ddpm_lora |"
    row = [l for l in out if l.startswith("| 08_line_blue_square_leak |")][0]
    assert row == f"| 08_line_blue_square_leak | 0.500 | 0.200 ({0.2 / 0.5:.2f}x) | 0.300 ({0.3 / 0.5:.2f}x) |"
    assert len(out) == 2 + len(VIDEOS)


def test_a_motionmatcher_variant_is_read_and_paired_with_motionmatcher(capsys, tmp_path):
    """A variant (motionmatcher_w2e8 = motionmatcher - 0.05 on every sample) gets the claim's
    reading and its paired difference to motionmatcher: -0.05, CI of zero width."""
    s = _samples()
    v = s[s["method"] == "motionmatcher"].assign(method="motionmatcher_w2e8")
    v["trajectory_error"] -= 0.05
    s = pd.concat([s, v], ignore_index=True)
    path = tmp_path / "samples.parquet"
    s.assign(**{c: 0.0 for c in ("motion_discrepancy", "motion_fidelity", "clip_t")}).to_parquet(path)
    assert toy_table.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "motionmatcher_w2e8 beats ddpm_lora in trajectory error at lower leakage" in out
    assert "motionmatcher_w2e8 - motionmatcher: trajectory error paired difference -0.050 [-0.050, -0.050], 4 videos" in out

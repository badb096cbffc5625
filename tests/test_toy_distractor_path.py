"""benchmarks/toy_distractor_path.py: the path errors and the per-method table, by hand."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from motionmatcher.metrics.groundtruth import path_error

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import toy_distractor_path  # noqa: E402


def test_path_error_is_the_mean_distance_over_the_frame_size():
    c = np.array([[0.0, 0.0], [3.0, 4.0]])
    p = np.array([[0.0, 0.0], [0.0, 0.0]])
    assert path_error(c, p, 10) == (0.0 + 5.0) / 2 / 10


def test_report_means_ratios_and_paired_difference():
    # two videos; base 0.2 / 0.4 to the distractor, motionmatcher 0.1 / 0.2: differences -0.1, -0.2
    rows = [("base", "a", 0.3, 0.2), ("base", "b", 0.1, 0.4),
            ("motionmatcher", "a", 0.3, 0.1), ("motionmatcher", "b", 0.3, 0.2)]
    scored = pd.DataFrame(rows, columns=["method", "video_id", "to_object", "to_distractor"])
    out = toy_distractor_path.report(scored, {"a": 0.3, "b": 0.5}).splitlines()
    h = 12.706 * np.std([-0.1, -0.2], ddof=1) / np.sqrt(2)
    assert out[2] == "| base | 2 | 0.200 | 1.00 | 0.300 | 1.00 |  |"
    assert out[3] == (f"| motionmatcher | 2 | 0.300 | 1.50 | 0.150 | 0.50 | "
                      f"{-0.15:+.3f} [{-0.15 - h:+.3f}, {-0.15 + h:+.3f}] |")
    assert out[-1].startswith("Reference: the object's and the distractor's paths lie 0.400 apart")


def test_travel_is_the_summed_step_length_over_the_frame_size():
    p = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 10.0]])
    assert toy_distractor_path.travel(p, 10) == (5.0 + 6.0) / 10


def test_per_video_row_has_families_travel_distance_and_means():
    gt = {"centroid": [[0.0, 0.0], [0.0, 0.0]], "distractor_centroid": [[6.0, 8.0], [6.0, 4.0]],
          "frame_size": 10, "spec": {"objects": [{"trajectory": "recede"}]},
          "appearance": {"distractor": {"trajectory": "circle_ccw"}}}
    rows = [("base", "v", 0.1, 0.5), ("base", "v", 0.3, 0.7), ("motionmatcher", "v", 0.4, 0.2)]
    scored = pd.DataFrame(rows, columns=["method", "video_id", "to_object", "to_distractor"])
    out = toy_distractor_path.per_video(scored, {"v": gt}).splitlines()
    # travel: object 0, distractor |(0,-4)| / 10 = 0.4; apart: (10 + sqrt(52)) / 2 / 10
    apart = (10 + np.sqrt(52)) / 2 / 10
    assert out[2] == (f"| v | recede, 0.00 | circle_ccw, 0.40 | {apart:.3f} | "
                      "0.200 / 0.600 | 0.400 / 0.200 |")
    # the object does not travel (0 < 0.5 * 0.4): v is in the first group, the second is empty
    assert out[-2] == "| distractor carries the motion | 1 | 0.200 / 0.600 | 0.400 / 0.200 (2.00x) |"
    assert out[-1] == "| object moves | 0 | - | - |"

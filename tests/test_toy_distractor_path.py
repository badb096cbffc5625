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

"""What MTBench's evaluation tracks on real masks, and what LK makes of it.

For every video folder of an MTBench split (e.g. DeT's ``data/`` examples: ``git clone
https://github.com/Shi-qingyu/DeT``, then pass ``DeT/data``), prints the first-frame mask's box
(official slicing), how many of CoTracker's 50x50 grid points fall in it (the points
``evaluation.py`` tracks, plus the 6x6 support grid), and, for the weight-free LK tracker on the
original clip, the number of zero vectors in those tracks and the clip's score against itself
(NaN whenever there is a zero vector, as MTBench's formula; 1 otherwise).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/mtbench_grid.py /path/to/DeT/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from motionmatcher.metrics import make_tracker
from motionmatcher.metrics.mtbench import (
    box_mask,
    count_zero_steps,
    mtbench_motion_fidelity,
    read_first_frame_mask,
    track_mtbench,
)
from motionmatcher.metrics.mtbench import mtbench_rows, mtbench_setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="an MTBench split (or the folder of the splits)")
    args = parser.parse_args()
    tracker = make_tracker("lk")
    cfg = {"reference": "mtbench", "root": args.root, "grid_size": 50}
    print("video | frames | size | box rows x cols | grid points in box | LK zero vectors | LK self-score")
    seen = set()
    for row in mtbench_rows(args.root):
        if row["video_id"] in seen:
            continue
        seen.add(row["video_id"])
        setup = mtbench_setup(cfg, row["video_id"], row["video_path"], (0, 0))
        box = box_mask(read_first_frame_mask(setup.mask_path))
        rows, cols = np.nonzero(box)
        tracks = track_mtbench(tracker, setup.frames, setup)
        score = mtbench_motion_fidelity(tracks, tracks)
        t, h, w = setup.frames.shape[:3]
        print(f"{row['video_id']} | {t} | {w}x{h} | {rows.min()}-{rows.max()} x {cols.min()}-{cols.max()} | "
              f"{len(setup.points)} | {count_zero_steps(tracks)} of {tracks.shape[0] * tracks.shape[1]} | "
              f"{score:.4f}")


if __name__ == "__main__":
    main()

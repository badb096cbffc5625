"""What the leakage columns can show at most on the toy model: the leak-prone references of
``--set appearance`` scored (against their first target prompt) after the H.264 round trip the
pipeline reads them through, and after the toy VAE's encode -> decode (no diffusion: what any
method that reproduced the reference's latents exactly would give). Also the plain references'
VAE round trip as a check of the VAE itself (the primary's colour found).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/toy_leak_ceiling.py --model models/toy_t2v
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/toy_t2v")
    ap.add_argument("--set", dest="which", default="appearance")
    a = ap.parse_args(argv)

    import pandas as pd

    from motionmatcher.backbones.latents import decode_latents, encode_video
    from motionmatcher.backbones.models import load_t2v_model
    from motionmatcher.files.video import read_mp4
    from motionmatcher.metrics import groundtruth as G
    from motionmatcher.toy import clips, detector

    vae = load_t2v_model(a.model).vae
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = pd.read_csv(clips.write_clips(tmp, a.which))
        for vid, grp in manifest.groupby("video_id", sort=True):
            video = Path(tmp) / grp.video_path.iloc[0]
            prompt = grp.prompt.iloc[0]
            gt = G.load_ground_truth(video, 8, (32, 32))
            mp4 = read_mp4(video)
            recon = decode_latents(vae, encode_video(vae, mp4))[0]
            row = dict(video_id=vid, leak=vid.endswith("_leak"),
                       vae_primary_found=float(detector.colour_areas(recon)[gt["colour"]] >= 3.0))
            for name, frames in (("mp4", mp4), ("vae", recon)):
                m = G.score_sample(frames, prompt, gt)
                row[f"{name}_background"] = m["background_leakage"]
                row[f"{name}_distractor"] = m["distractor_leakage"]
            rows.append(row)
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.round(3).to_string(index=False))
    leak = df[df.leak]
    print(f"\nleak-prone references (n = {len(leak)}), mean [min, max]:")
    for c in ("mp4_background", "mp4_distractor", "vae_background", "vae_distractor"):
        print(f"  {c}: {leak[c].mean():.3f} [{leak[c].min():.3f}, {leak[c].max():.3f}]")
    print(f"primary colour found after the VAE round trip: plain {df[~df.leak].vae_primary_found.mean():.2f}, "
          f"leak-prone {leak.vae_primary_found.mean():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

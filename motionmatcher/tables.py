"""Parquet tables with explicit pyarrow schemas."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

VIDEOS = pa.schema([
    ("video_id", pa.string()),
    ("video_path", pa.string()),
    ("caption", pa.string()),
    ("n_prompts", pa.int32()),
    ("prompts", pa.list_(pa.string())),
    ("start_frame", pa.int32()),
    ("frame_step", pa.int32()),
    ("frame_indices", pa.list_(pa.int32())),
    ("source_fps", pa.float64()),
    ("source_width", pa.int32()),
    ("source_height", pa.int32()),
    ("source_num_frames", pa.int32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("n_frames", pa.int32()),
    ("frames_path", pa.string()),
    ("preview_path", pa.string()),
    ("latents_path", pa.string()),
    ("inversion_path", pa.string()),
])

SAMPLES = pa.schema([
    ("video_id", pa.string()),
    ("method", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt", pa.string()),
    ("manifest_row", pa.int32()),
    ("seed", pa.int64()),
    ("num_steps", pa.int32()),
    ("guidance_scale", pa.float64()),
    ("negative_prompt", pa.string()),
    ("noise_prior", pa.float64()),
    ("lora_min_timestep", pa.int32()),
    ("lora_scale", pa.float64()),
    ("adapter_path", pa.string()),
    ("video_path", pa.string()),
    ("frames_path", pa.string()),
    ("seconds", pa.float64()),
    ("model_identity", pa.string()),
])


def write_table(frame: pd.DataFrame, schema: pa.Schema, path: str | os.PathLike) -> None:
    """Write ``frame`` with exactly ``schema``'s columns and types (atomic)."""
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise ValueError(f"{path}: table lacks columns {missing}")
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)

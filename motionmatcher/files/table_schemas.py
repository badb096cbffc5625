"""Parquet tables with explicit pyarrow schemas, written atomically (:func:`write_table`) and
read back checked (:func:`read_table`): a truncated, deleted or foreign file raises a
:class:`~motionmatcher.files.tensor_files.CorruptFileError` naming the file and the command that
rebuilds it, instead of pyarrow's "magic bytes not found"."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_write

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
    # the manifest row's object words (null without them) and whether MotionClone guided the
    # sample with its location-aware masks (False: any other method, or MotionClone's global form)
    ("caption_object", pa.string()),
    ("prompt_object", pa.string()),
    ("semantic_masks", pa.bool_()),
])


# One row per sample of the `metrics` stage (results/metrics/{video}.parquet, every method) and of
# results/tables/samples.parquet (their concatenation). image_reward is null when no ImageReward
# checkpoint is configured; motion_fidelity is null when undefined.
METRICS = pa.schema([
    ("video_id", pa.string()),
    ("method", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt", pa.string()),
    ("manifest_row", pa.int32()),
    ("seed", pa.int64()),
    ("video_path", pa.string()),
    ("frames_path", pa.string()),
    ("clip_t", pa.float64()),
    ("frame_consistency", pa.float64()),
    ("image_reward", pa.float64()),
    ("motion_discrepancy", pa.float64()),
    ("motion_fidelity", pa.float64()),
    ("mtbench_fidelity", pa.float64()),
    # the definition of each number: variants (motionmatcher.metrics.motion), tracker, grid and
    # short SHA-256 fingerprints of the weights (image_reward_weights_sha256 null without it)
    ("discrepancy_variant", pa.string()),
    ("fidelity_variant", pa.string()),
    ("tracker", pa.string()),
    ("grid_size", pa.int32()),
    ("tracker_weights_sha256", pa.string()),
    ("clip_model", pa.string()),
    ("clip_weights", pa.string()),
    ("clip_weights_sha256", pa.string()),
    ("image_reward_weights_sha256", pa.string()),
    # MTBench score definition (null unless metrics.mtbench.enabled): "<reference>:cosine" or
    # "<reference>:cosine+frechet<K>" (reference clip | mtbench); the reference tracks: which clip,
    # tracker and grid (motionmatcher.metrics.mtbench.reference_tracks_label)
    ("mtbench_variant", pa.string()),
    ("mtbench_reference_tracks", pa.string()),
    ("n_frames", pa.int32()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("metrics_seconds", pa.float64()),
    # toy-world ground truth (motionmatcher.metrics.groundtruth); null without a sidecar
    ("trajectory_error", pa.float64()),
    ("appearance_leakage", pa.float64()),
    ("text_alignment", pa.float64()),
    ("shape_alignment", pa.float64()),
    # unprompted appearance of a leak-prone reference (toy.world.add_appearance); null otherwise
    ("background_leakage", pa.float64()),
    ("distractor_leakage", pa.float64()),
    ("model_identity", pa.string()),
    ("config_hash", pa.string()),
    ("code_version", pa.string()),
])

# One row per reference video (results/metrics_reference/{video}.parquet): the reference
# clip scored against its own caption, the scale of the sample numbers.
REFERENCE = pa.schema([
    ("video_id", pa.string()),
    ("caption", pa.string()),
    ("frames_path", pa.string()),
    ("clip_t", pa.float64()),
    ("frame_consistency", pa.float64()),
    ("image_reward", pa.float64()),
    ("clip_model", pa.string()),
    ("clip_weights", pa.string()),
    ("clip_weights_sha256", pa.string()),
    ("image_reward_weights_sha256", pa.string()),
    ("n_frames", pa.int32()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("config_hash", pa.string()),
    ("code_version", pa.string()),
])

# results/tables/summary.parquet: level "method" rows (video_id null) followed by level "video"
# rows (one per method x video). For each metric M: M_mean, M_std (sample std, ddof=1; null if
# fewer than 2 values) and M_n (non-null values) over the row's samples (descriptive).
# reference_clip_t: mean CLIP-T of the group's reference videos vs their captions.
SUMMARY_METRICS = ("clip_t", "frame_consistency", "image_reward", "motion_discrepancy", "motion_fidelity",
                   "mtbench_fidelity", "trajectory_error", "appearance_leakage", "text_alignment",
                   "background_leakage", "distractor_leakage")
SUMMARY = pa.schema(
    [
        ("level", pa.string()),
        ("method", pa.string()),
        ("video_id", pa.string()),
        ("n_samples", pa.int64()),
        ("n_videos", pa.int64()),
    ]
    + [(f"{m}_{stat}", pa.int64() if stat == "n" else pa.float64())
       for m in SUMMARY_METRICS for stat in ("mean", "std", "n")]
    + [("reference_clip_t", pa.float64())]
    # 95% confidence interval (t distribution, n - 1 degrees of freedom; null for n < 2) over
    # the unit named in ci_unit: "video" on method rows (per-video means; M_ci_mean is their
    # mean, M_ci_n the number of videos), "sample" on video rows. Paired differences (this
    # method - `paired_reference`): cell differences averaged per video, interval over videos
    # on method rows (M_diff_n = videos), over cells on video rows (M_diff_n = cells); null / 0
    # for the reference method itself or without common cells.
    + [("ci_unit", pa.string())]
    + [(f"{m}_{stat}", pa.int64() if stat == "ci_n" else pa.float64())
       for m in SUMMARY_METRICS for stat in ("ci_mean", "ci_low", "ci_high", "ci_n")]
    + [("paired_reference", pa.string())]
    + [(f"{m}_{stat}", pa.int64() if stat == "diff_n" else pa.float64())
       for m in SUMMARY_METRICS for stat in ("diff_mean", "diff_ci_low", "diff_ci_high", "diff_n")]
)


def write_table(frame: pd.DataFrame, schema: pa.Schema, path: str | os.PathLike) -> None:
    """Write ``frame`` with exactly ``schema``'s columns and types (atomic)."""
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise ValueError(f"{path}: table lacks columns {missing}")
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    atomic_write(path, ".parquet", lambda tmp: pq.write_table(table, tmp))


def read_table(path: str | os.PathLike, schema: pa.Schema | None = None,
               columns: list[str] | None = None) -> pd.DataFrame:
    """Read a table written by :func:`write_table` (or any rule's Parquet output) as a frame.

    A missing or unreadable file (truncated, overwritten, not Parquet), or one without a column
    of ``schema``, raises :class:`~motionmatcher.files.tensor_files.CorruptFileError` with
    ``snakemake --force <path>`` (relative to the working directory)."""
    return read_arrow_table(path, schema, columns).to_pandas()


def read_arrow_table(path: str | os.PathLike, schema: pa.Schema | None = None,
                     columns: list[str] | None = None) -> pa.Table:
    """:func:`read_table` as a ``pyarrow.Table`` (same checks, same errors)."""
    from motionmatcher.files.tensor_files import CorruptFileError, rebuild_command

    path = Path(path)
    hint = rebuild_command(path)
    if not path.is_file():
        raise CorruptFileError(path, "file is missing", hint)
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise CorruptFileError(path, f"not a readable Parquet table ({e})", hint) from None
    if schema is not None:
        missing = [n for n in schema.names if n not in table.column_names]
        if missing:
            raise CorruptFileError(path, f"lacks columns {missing} (written by another version?)", hint)
    return table

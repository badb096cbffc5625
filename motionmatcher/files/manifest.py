"""Loading and validating the manifest CSV of reference videos and target prompts.

One row per (reference video, target prompt). Every problem in the file is collected and
reported in one :class:`ManifestError` naming the row, the column and the reason, before any
job of the workflow runs.
"""

from __future__ import annotations

import json
import numbers as numbers_
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from jsonschema import Draft202012Validator

from .atomic import write_json

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schemas" / "manifest.schema.yaml"
REQUIRED = ("video_id", "video_path", "caption", "prompt")
OVERRIDES = ("start_frame", "frame_step")
#: optional object words of a row, MotionClone's location-aware masks (official ``obj_pairs``):
#: column -> the column it must be a word of
OBJECT_COLUMNS = {"caption_object": "caption", "prompt_object": "prompt"}


class ManifestError(ValueError):
    """A manifest with one or more bad rows; the message lists all of them."""

    def __init__(self, path, problems: list[str]):
        self.path = Path(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"manifest {path}: {len(problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a reference video are used: ``start + i * step`` for i < n_frames."""

    n_frames: int
    start_frame: int = 0
    frame_step: int = 1

    @property
    def last_index(self) -> int:
        return self.start_frame + (self.n_frames - 1) * self.frame_step


def _load_schema() -> dict:
    with open(SCHEMA) as f:
        return yaml.safe_load(f)


def _coerce(value):
    """CSV cells arrive as strings; integers in override columns are parsed for the schema."""
    if isinstance(value, str):
        s = value.strip()
        if s.lstrip("-").isdigit():
            return int(s)
    return value


def load_manifest(
    path: str | os.PathLike,
    n_frames: int,
    start_frame: int = 0,
    frame_step: int = 1,
    check_videos: bool = True,
    probe_cache: str | os.PathLike | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """Read and validate a manifest, returning one row per (video, prompt).

    The returned frame has the manifest's columns plus ``video_path`` resolved to an absolute
    path, ``start_frame``/``frame_step`` filled from the defaults, ``row`` (1-based data row
    number, as a spreadsheet shows it counting the header as line 1: ``line = row + 1``),
    ``prompt_idx`` (0-based index of the prompt within its video) and ``prompt_id``.

    Checks: no column outside the schema (a misspelt override), no exact duplicate rows, the
    JSON schema (required columns, id characters, non-empty caption and prompt, integer
    overrides), ids unique ignoring case, one file / caption / override set per
    ``video_id``, the optional object words (``caption_object`` and ``prompt_object``: both or
    neither per row, each one word of the row's caption / prompt, ignoring case), one
    ``difficulty`` (MTBench's split, optional) per ``video_id`` and, when
    ``check_videos``, that each file exists, decodes and has enough frames. Empty object cells
    are absent (NaN in the returned frame); the columns are only there when the file has them.

    Videos are probed by ``workers`` threads (default: up to 8); with ``probe_cache`` (a JSON
    file), a probe is kept per (path, size, mtime) so a rerun decodes only new or changed files.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, [f"file does not exist: {path}"])
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # pandas raises many kinds for malformed CSV
        raise ManifestError(path, [f"cannot parse CSV: {e}"]) from e
    problems: list[str] = []
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(path, [f"missing column(s): {', '.join(missing)} (have: {', '.join(df.columns)})"])
    if df.empty:
        raise ManifestError(path, ["no rows"])
    known = list(_load_schema().get("properties", {}))
    unknown = [c for c in df.columns if c not in known]
    if unknown:  # a misspelt override would otherwise be ignored silently
        problems.append(f"unknown column(s): {', '.join(unknown)} (known: {', '.join(known)})")
    first_seen: dict[tuple, int] = {}
    for i, values in enumerate(df.itertuples(index=False, name=None)):
        if values in first_seen:
            problems.append(f"rows {first_seen[values]} and {i + 1} (lines {first_seen[values] + 1} and "
                            f"{i + 2}): duplicate rows (the same sample would be made and counted twice)")
        else:
            first_seen[values] = i + 1

    validator = Draft202012Validator(_load_schema())
    records = []
    for i, raw in enumerate(df.to_dict("records")):
        rec = {k: _coerce(v) if k in OVERRIDES else v for k, v in raw.items() if not (k in OVERRIDES and v == "")}
        for k in OBJECT_COLUMNS:
            if k in rec:
                rec[k] = str(rec[k]).strip()
                if not rec[k]:
                    del rec[k]
        for err in validator.iter_errors(rec):
            col = err.path[0] if err.path else (err.validator_value[0] if err.validator == "required" else "?")
            problems.append(f"row {i + 1} (line {i + 2}), column {col}: {_describe(err)}")
        problems += _check_object_words(rec, i + 1)
        rec.setdefault("start_frame", start_frame)
        rec.setdefault("frame_step", frame_step)
        vp = str(rec.get("video_path", ""))
        rec["video_path"] = str((path.parent / vp).resolve()) if vp else ""
        rec["row"] = i + 1
        records.append(rec)

    out = pd.DataFrame.from_records(records)
    ids = out.drop_duplicates("video_id")
    for _, group in ids.groupby(ids["video_id"].astype(str).str.lower(), sort=False):
        if len(group) > 1:  # one output folder on case-insensitive file systems
            rows = ", ".join(str(r) for r in out[out["video_id"].isin(group["video_id"])]["row"])
            problems.append(f"rows {rows}, column video_id: ids {', '.join(repr(v) for v in group['video_id'])} "
                            "differ only in case (they collide on case-insensitive file systems)")
    to_probe = []
    for vid, group in out.groupby("video_id", sort=False):
        first = group.iloc[0]
        for col in ("video_path", "caption", "start_frame", "frame_step", "difficulty"):
            if col not in group:
                continue
            values = group[col].astype(str).unique()
            if len(values) > 1:
                rows = ", ".join(str(r) for r in group["row"])
                what = "files" if col == "video_path" else f"values of {col}"
                problems.append(
                    f"rows {rows}, column {col}: video_id {vid!r} points at {len(values)} different "
                    f"{what}: {', '.join(values)}"
                )
        ints = all(isinstance(first[c], numbers_.Integral) for c in OVERRIDES)  # a bad cell: reported above
        if check_videos and first["video_path"] and ints:
            to_probe.append(first)
    if to_probe:
        problems += _check_videos(to_probe, n_frames, probe_cache, workers)

    if problems:
        raise ManifestError(path, problems)
    out["start_frame"] = out["start_frame"].astype(int)
    out["frame_step"] = out["frame_step"].astype(int)
    out["prompt_idx"] = out.groupby("video_id", sort=False).cumcount()
    out["prompt_id"] = [f"p{i:02d}" for i in out["prompt_idx"]]
    return out


def _check_object_words(rec: dict, row: int) -> list[str]:
    """Both object words or neither; each one word of its text column (case-insensitive)."""
    where = f"row {row} (line {row + 1})"
    given = [k for k in OBJECT_COLUMNS if k in rec]
    if len(given) == 1:
        other = next(k for k in OBJECT_COLUMNS if k not in rec)
        return [f"{where}, column {other}: missing value ({given[0]} is {rec[given[0]]!r}; "
                "give both object words or neither)"]
    problems = []
    for k in given:
        word, text_col = rec[k], OBJECT_COLUMNS[k]
        text = rec.get(text_col)
        if not isinstance(word, str):
            continue  # the schema reported it
        if re.search(r"\s", word):
            problems.append(f"{where}, column {k}: {word!r} must be one word (the mask follows "
                            "its first token)")
        elif isinstance(text, str) and not re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text,
                                                     re.IGNORECASE):
            problems.append(f"{where}, column {k}: {word!r} is not a word of the {text_col} "
                            f"{text!r}")
    return problems


def object_words(row) -> dict:
    """A manifest row's object words as the sampler takes them: ``{"caption_object": …,
    "prompt_object": …}`` when the row has both, else ``{}``."""
    out = {k: row.get(k) for k in OBJECT_COLUMNS}
    if all(isinstance(v, str) and v.strip() for v in out.values()):
        return {k: v.strip() for k, v in out.items()}
    return {}


def _describe(err) -> str:
    if err.validator == "pattern" and err.schema.get("pattern") == "\\S":
        return "must not be empty"
    if err.validator == "pattern":
        return f"{err.instance!r} may contain only letters, digits, '_' and '-'"
    if err.validator == "required":
        return "missing value"
    if err.validator == "type" and err.validator_value == "integer":
        return f"{err.instance!r} is not a whole number"
    return err.message


def _probe(path: str) -> dict:
    """``{"info": probe_video(path)}`` or ``{"error": message}``."""
    from motionmatcher.files.video import VideoError, probe_video

    try:
        return {"info": probe_video(path)}
    except VideoError as e:
        return {"error": str(e)}


def _check_videos(rows: list, n_frames: int, cache_path, workers: int | None) -> list[str]:
    """Problems of the videos of ``rows`` (in row order), probing in parallel what the cache
    (``{path: {size, mtime_ns, info | error}}``) does not hold for the file as it is now."""
    cache = {}
    if cache_path is not None and Path(cache_path).is_file():
        try:
            cache = json.loads(Path(cache_path).read_text())
        except (OSError, ValueError):
            cache = {}  # a damaged cache is only a lost speed-up
    stats, todo = {}, []
    for row in rows:
        p = str(row["video_path"])
        try:
            st = os.stat(p)
        except OSError:
            continue
        stats[p] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        hit = cache.get(p)
        if not (hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns):
            todo.append(p)
    if todo:
        todo = list(dict.fromkeys(todo))
        with ThreadPoolExecutor(max_workers=workers or min(8, len(todo))) as pool:
            for p, result in zip(todo, pool.map(_probe, todo)):
                cache[p] = {**stats[p], **result}
        if cache_path is not None:
            write_json(cache_path, cache)
    problems = []
    for row in rows:
        problems += _check_video(row, n_frames, cache.get(str(row["video_path"])))
    return problems


def _check_video(row, n_frames: int, probed: dict | None = None) -> list[str]:
    where = f"row {row['row']} (line {row['row'] + 1}), column video_path"
    p = Path(row["video_path"])
    if not p.is_file():
        return [f"{where}: file does not exist: {p}"]
    if probed is None:
        probed = _probe(str(p))
    if "error" in probed:
        return [f"{where}: {probed['error']}"]
    info = probed["info"]
    sampling = FrameSampling(n_frames, int(row["start_frame"]), int(row["frame_step"]))
    if sampling.last_index >= info["num_frames"]:
        return [
            f"{where}: {p} has {info['num_frames']} frames; {n_frames} frames from "
            f"start_frame {sampling.start_frame} every {sampling.frame_step} need frame index "
            f"{sampling.last_index}"
        ]
    return []


def videos(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per reference video (the first manifest row of each ``video_id``)."""
    return manifest.drop_duplicates("video_id").set_index("video_id", drop=False)

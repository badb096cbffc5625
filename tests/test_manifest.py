"""Manifest validation: every bad case gives its message, all listed at once, before any job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from motionmatcher.toy.ball_clips import render_clip
from motionmatcher.files.manifest import ManifestError, load_manifest
from motionmatcher.files.video import write_mp4

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clips")
    write_mp4(render_clip("left_to_right", n_frames=20, size=(64, 48)), d / "a.mp4", fps=8)
    write_mp4(render_clip("circle", n_frames=20, size=(64, 48)), d / "b.mp4", fps=8)
    write_mp4(render_clip("zoom", n_frames=4, size=(64, 48)), d / "short.mp4", fps=8)
    (d / "garbage.mp4").write_bytes(b"\x00not a video" * 100)
    return d


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def problems_of(path, **kw) -> list[str]:
    with pytest.raises(ManifestError) as err:
        load_manifest(path, **{"n_frames": 8, **kw})
    return err.value.problems


def test_good_manifest_resolves_paths_and_numbers_prompts(clips):
    m = write_csv(clips / "good.csv", """
video_id,video_path,caption,prompt
a,a.mp4,A ball moves right.,A dog runs right.
a,a.mp4,A ball moves right.,A car drives right.
b,{abs},A ball circles.,A bird circles.
""".format(abs=clips / "b.mp4"))
    df = load_manifest(m, n_frames=8)
    assert list(df["video_id"]) == ["a", "a", "b"]
    assert list(df["prompt_id"]) == ["p00", "p01", "p00"]
    assert list(df["row"]) == [1, 2, 3]
    assert Path(df["video_path"][0]) == (clips / "a.mp4").resolve()
    assert Path(df["video_path"][2]) == (clips / "b.mp4").resolve()
    assert set(df["start_frame"]) == {0} and set(df["frame_step"]) == {1}


def test_every_bad_row_is_reported_at_once(clips):
    m = write_csv(clips / "bad.csv", """
video_id,video_path,caption,prompt,frame_step
a,a.mp4,A ball.,A dog.,
bad id!,a.mp4,A ball.,A dog.,
c,missing.mp4,A ball.,A dog.,
d,garbage.mp4,A ball.,A dog.,
e,short.mp4,A ball.,A dog.,
f,b.mp4,   ,A dog.,
g,b.mp4,A ball.,,
a,b.mp4,A ball.,A cat.,
h,b.mp4,A ball.,A dog.,0
""")
    problems = problems_of(m)
    text = "\n".join(problems)
    assert "row 2 (line 3), column video_id: 'bad id!' may contain only letters" in text
    assert "row 3 (line 4), column video_path: file does not exist" in text and "missing.mp4" in text
    assert "row 4 (line 5), column video_path:" in text and "garbage.mp4" in text
    assert "row 5 (line 6), column video_path:" in text and "short.mp4 has 4 frames" in text
    assert "need frame index 7" in text
    assert "row 6 (line 7), column caption: must not be empty" in text
    assert "row 7 (line 8), column prompt: must not be empty" in text
    assert "rows 1, 8, column video_path: video_id 'a' points at 2 different files" in text
    assert "row 9 (line 10), column frame_step: 0 is less than the minimum of 1" in text
    assert len(problems) == 8, problems


def test_missing_column_and_missing_file(clips):
    m = write_csv(clips / "nocol.csv", "video_id,video_path,caption\na,a.mp4,A ball.")
    (p,) = problems_of(m)
    assert "missing column(s): prompt" in p
    (p,) = problems_of(clips / "nope.csv")
    assert "file does not exist" in p


def test_overrides_apply_per_video_and_must_agree(clips):
    m = write_csv(clips / "ovr.csv", """
video_id,video_path,caption,prompt,start_frame,frame_step
a,a.mp4,A ball.,A dog.,2,1
a,a.mp4,A ball.,A cat.,2,1
b,b.mp4,A ball.,A dog.,,
""")
    df = load_manifest(m, n_frames=8, frame_step=1)
    assert list(df["start_frame"]) == [2, 2, 0]
    # 20 frames: start 0 step 3 needs index 21 -> too short for b, while a (start 2, step 1) fits.
    problems = problems_of(m, frame_step=3)
    assert len(problems) == 1 and "row 3" in problems[0] and "need frame index 21" in problems[0]
    m2 = write_csv(clips / "ovr2.csv", """
video_id,video_path,caption,prompt,start_frame
a,a.mp4,A ball.,A dog.,0
a,a.mp4,A ball.,A cat.,1
""")
    (p,) = problems_of(m2)
    assert "rows 1, 2, column start_frame: video_id 'a' points at 2 different values of start_frame" in p


def test_snakemake_fails_before_any_job_with_the_full_message(clips, tmp_path):
    m = write_csv(clips / "bad2.csv", """
video_id,video_path,caption,prompt
a,missing.mp4,A ball.,A dog.
b c,a.mp4,A ball.,
""")
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "1",
         "--directory", str(tmp_path), "--config", f"manifest={m}"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "3 problem(s)" in out
    assert "column video_path: file does not exist" in out
    assert "column video_id: 'b c'" in out and "column prompt: must not be empty" in out
    assert not (tmp_path / "results").exists()


def test_misspelt_column_is_an_error_listing_it(clips):
    m = write_csv(clips / "typo.csv", """
video_id,video_path,caption,prompt,start_frames,Notes
a,a.mp4,A ball.,A dog.,2,x
""")
    problems = problems_of(m)
    assert any("unknown column(s): start_frames, Notes" in p for p in problems), problems
    assert any("start_frame" in p and "frame_step" in p for p in problems), "lists the known columns"


def test_exact_duplicate_rows_are_an_error_naming_both(clips):
    m = write_csv(clips / "dup.csv", """
video_id,video_path,caption,prompt
a,a.mp4,A ball.,A dog.
a,a.mp4,A ball.,A cat.
a,a.mp4,A ball.,A dog.
""")
    problems = problems_of(m)
    assert any("rows 1 and 3" in p and "duplicate" in p for p in problems), problems


def test_ids_differing_only_in_case_are_an_error(clips):
    m = write_csv(clips / "case.csv", """
video_id,video_path,caption,prompt
Bear,a.mp4,A ball.,A dog.
bear,b.mp4,A ball circles.,A cat.
""")
    problems = problems_of(m)
    assert any("'Bear'" in p and "'bear'" in p and "case" in p and "rows 1, 2" in p for p in problems), problems


def test_object_words_are_optional_and_checked_against_caption_and_prompt(clips):
    from motionmatcher.files.manifest import object_words

    m = write_csv(clips / "objects.csv", """
video_id,video_path,caption,prompt,caption_object,prompt_object
a,a.mp4,"Fox, moves its head.",A cat moves its head in the bedroom.,fox,Cat
a,a.mp4,"Fox, moves its head.",A camera pans right.,,
b,b.mp4,An armadillo circles.,A dog circles.,  Armadillo ,dog
""")
    df = load_manifest(m, n_frames=8)
    assert [object_words(r) for _, r in df.iterrows()] == [
        {"caption_object": "fox", "prompt_object": "Cat"}, {},
        {"caption_object": "Armadillo", "prompt_object": "dog"}]  # stripped; case kept
    # without the columns the frame has none (the sample rule's params stay as they were)
    plain = load_manifest(write_csv(clips / "noobj.csv", """
video_id,video_path,caption,prompt
a,a.mp4,A ball.,A dog.
"""), n_frames=8)
    assert "caption_object" not in plain and object_words(plain.iloc[0]) == {}


def test_bad_object_words_name_file_row_and_column(clips):
    m = write_csv(clips / "badobj.csv", """
video_id,video_path,caption,prompt,caption_object,prompt_object
a,a.mp4,A fox moves.,A cat moves.,fox,
a,a.mp4,A fox moves.,A dog moves.,,dog
a,a.mp4,A fox moves.,A bird flies.,wolf,bird
a,a.mp4,A fox moves.,Two cats play.,fox,cat
a,a.mp4,A fox moves.,A red panda sits.,fox,red panda
""")
    with pytest.raises(ManifestError) as err:
        load_manifest(m, n_frames=8)
    assert str(m) in str(err.value)
    problems = err.value.problems
    text = "\n".join(problems)
    assert "row 1 (line 2), column prompt_object: missing value (caption_object is 'fox'" in text
    assert "row 2 (line 3), column caption_object: missing value (prompt_object is 'dog'" in text
    assert "row 3 (line 4), column caption_object: 'wolf' is not a word of the caption 'A fox moves.'" in text
    # a word inside another word ('cats') is not the word
    assert "row 4 (line 5), column prompt_object: 'cat' is not a word of the prompt 'Two cats play.'" in text
    assert "row 5 (line 6), column prompt_object: 'red panda' must be one word" in text
    assert len(problems) == 5, problems

"""Report: the "Browse" folder -- index.html (every video, searchable and sortable, linking to
its page), methods/<method>.html (per method: every video's metrics and contact sheet) and
videos/<video>/ (per reference video: the reference and every method's samples playing side by
side, each method's contact sheet; the files hard-linked, not copied). One job whatever the
number of videos (issue 21: was one report_video_page job per video); the pages are built from
the aggregated per-sample table."""
from pathlib import Path

from motionmatcher.files.atomic import atomic_directory, write_text_atomic
from motionmatcher.files.table_schemas import read_table
from motionmatcher.results.report import (browse_index_html, browse_rows, method_page_html, setup_report_script,
                                          write_video_page)

log = setup_report_script(snakemake)
p = snakemake.params
out = Path(snakemake.output.browse)
methods = list(p.methods)
rows = browse_rows(read_table(snakemake.input.summary), {v: {"caption": c} for v, c in p.captions.items()}, methods)
samples = read_table(snakemake.input.samples)
by_video = dict(tuple(samples.groupby("video_id", sort=False)))
shown = 0
with atomic_directory(out) as tmp:  # the folder appears complete or not at all
    write_text_atomic(tmp / "index.html", browse_index_html(rows, methods, p.descriptions))
    for m in methods:
        write_text_atomic(tmp / "methods" / f"{m}.html", method_page_html(rows, m, p.descriptions.get(m, "")))
    for video, caption in p.captions.items():
        sheets = {m: p.layout["sheet"].format(method=m, video=video) for m in methods}
        shown += write_video_page(tmp / "videos" / video, video, caption, p.layout["reference"].format(video=video),
                                  by_video.get(video, samples.iloc[:0]), sheets, methods, p.descriptions,
                                  p.max_samples_per_method)
log.info("%d videos x %d methods, %d samples on the video pages -> %s", len(p.captions), len(methods), shown, out)

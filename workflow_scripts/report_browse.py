"""Report: the "Browse" folder -- index.html (every video, searchable and sortable, linking to
its page), methods/<method>.html (per method: every video's metrics and contact sheet) and
videos/<video>/ (the per-video pages, hard-linked: no copy of the mp4s)."""
from pathlib import Path

from motionmatcher.files.atomic import atomic_directory, write_text_atomic
from motionmatcher.files.table_schemas import read_table
from motionmatcher.results.report import (browse_index_html, browse_rows, link_tree, method_page_html,
                                          setup_report_script)

log = setup_report_script(snakemake)
p = snakemake.params
out = Path(snakemake.output.browse)
methods = list(p.methods)
rows = browse_rows(read_table(snakemake.input.summary), {v: {"caption": c} for v, c in p.captions.items()}, methods)
linked = 0
with atomic_directory(out) as tmp:  # the folder appears complete or not at all
    write_text_atomic(tmp / "index.html", browse_index_html(rows, methods, p.descriptions))
    for m in methods:
        write_text_atomic(tmp / "methods" / f"{m}.html", method_page_html(rows, m, p.descriptions.get(m, "")))
    for page in snakemake.input.pages:
        linked += link_tree(page, tmp / "videos" / Path(page).name)
log.info("%d videos x %d methods, %d files linked -> %s", len(p.captions), len(methods), linked, out)

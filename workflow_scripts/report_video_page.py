"""Report: one folder per reference video -- index.html with the reference and every method's
samples playing side by side, each method's contact sheet (sheets/<method>.png; was one
report_contact_sheet job per (method, video)), and the mp4 files it plays."""
import shutil

from motionmatcher.files.atomic import atomic_directory, write_text_atomic
from motionmatcher.files.table_schemas import read_table
from motionmatcher.results.report import setup_report_script, video_page_html

log = setup_report_script(snakemake)
p = snakemake.params
out = snakemake.output.page
cells = []
limit = p.max_samples_per_method
with atomic_directory(out) as tmp:  # the folder appears complete or not at all
    shutil.copyfile(snakemake.input.reference, tmp / "reference.mp4")
    for method, table in zip(p.methods, snakemake.input.metrics):
        rows = read_table(table).sort_values(["prompt_id", "seed"])
        if limit:
            rows = rows.head(int(limit))
        (tmp / method).mkdir()
        for row in rows.to_dict("records"):
            name = f"{method}/{row['prompt_id']}_s{int(row['seed'])}.mp4"
            shutil.copyfile(row["video_path"], tmp / name)
            cells.append({**row, "method": method, "src": name})
    (tmp / "sheets").mkdir()
    sheets = {}
    for method, sheet in zip(p.methods, snakemake.input.sheets):
        shutil.copyfile(sheet, tmp / "sheets" / f"{method}.png")
        sheets[method] = f"sheets/{method}.png"
    write_text_atomic(tmp / "index.html", video_page_html(snakemake.wildcards.video, p.caption, "reference.mp4",
                                                          cells, list(p.methods), p.descriptions, sheets))
log.info("%d samples of %d methods -> %s", len(cells), len(p.methods), out)

"""What the pipeline reports once samples are scored: the result tables built from the
per-sample metrics (:mod:`.summary_tables`: the paper's Table 1, per-video rows, confidence
intervals, paired differences), the Snakemake report's pages and plots (:mod:`.report`) and the
check that finds damaged outputs so they are rebuilt (:mod:`.verify`). Pure pandas / pyarrow /
matplotlib: nothing here imports torch's models. A new table, column of a summary, plot or page
belongs here; a new metric belongs in :mod:`motionmatcher.metrics`.
"""

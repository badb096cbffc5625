"""What every workflow job does around its actual work, on a workstation or a cluster.

The first call of each rule script (:mod:`.rule_script`: the rule's log file, its threads, a GPU
slot); one GPU per job on a workstation (:mod:`.gpu_slots`); the lower-memory settings a job
retried after a CUDA out-of-memory runs with (:mod:`.memory_levels`); and the provenance a job
records (:mod:`.provenance`: code version, library versions, config hashes). A change to how jobs
are placed, retried, logged or recorded belongs here, not in the science.
"""

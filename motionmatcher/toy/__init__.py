"""The toy text-to-video world: a procedural generator with exact ground-truth motion
(:mod:`.world`), its reference clips for the demo and the benchmark (:mod:`.clips`), a
colour-segmentation detector for that ground truth (:mod:`.detector`), the small model pretrained
on it (:mod:`.pretrain`), a one-process efficacy check on it (:mod:`.efficacy`) and the rolling-ball
clips of any size the tests use as references (:mod:`.ball_clips`). Everything
that exists only so the pipeline can be run and checked end to end without real data or real
weights belongs here; nothing in the pipeline proper depends on it except the ground-truth
metrics (:mod:`motionmatcher.metrics.groundtruth`)."""

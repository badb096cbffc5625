"""The toy text-to-video world: a procedural generator with exact ground-truth motion, a
colour-segmentation detector for that ground truth, and the small model pretrained on it."""

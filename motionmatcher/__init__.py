"""MotionMatcher: motion customization of text-to-video diffusion models, as a Snakemake pipeline.

The package is a set of rooms; the name of each says which changes belong in it (its
``__init__`` says more). From the bottom up:

``files``          the files read and written: formats, checks, the one atomic writer
``jobs``           around each workflow job: rule-script setup, GPU slots, memory retries, provenance
``backbones``      the text-to-video architectures (Zeroscope, Wan, CogVideoX), model loading, VAEs
``customization``  the paper's machinery shared by all methods: attention capture, motion features,
                   LoRA, diffusion arithmetic, inversion, guidance hooks, the one training loop and
                   the one sampler
``methods``        one module per method (a loss or a guidance), their registry and config
``metrics``        scoring samples: trackers, motion/CLIP/ImageReward scores, MTBench, the stage
``results``        summary tables, the Snakemake report, finding damaged outputs
``toy``            the procedural toy world and its small model, to run everything without real data

No module imports another in a circle, counting imports inside functions
(``tests/test_package_layout.py``). The workflow (``Snakefile``, ``rules/``,
``workflow_scripts/``) calls the public functions of these modules.
"""

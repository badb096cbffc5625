"""The paper's machinery, shared by every method: how a text-to-video model is customized to a
reference motion and sampled afterwards.

Attention capture (:mod:`.attention`) and MotionMatcher's motion features built on it
(:mod:`.motion_features`); LoRA adapters (:mod:`.lora`) and the saved form of what a method
trained (:mod:`.trained_weights`); the diffusion arithmetic the losses share (:mod:`.diffusion`);
gradient checkpointing (:mod:`.checkpointing`); DDIM inversion, the noise prior
(:mod:`.inversion`); the hooks of a training-free guidance (:mod:`.guidance`); the one training
loop (:mod:`.training`) and the one sampler (:mod:`.sampler`, with a command line outside the
workflow in :mod:`.sample_cli`). A change to what all methods do belongs here; a change to one
method belongs in :mod:`motionmatcher.methods`, to one model architecture in
:mod:`motionmatcher.backbones`.
"""

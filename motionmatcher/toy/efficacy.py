"""Efficacy check on the toy model, in one process: does customization move a sample's
trajectory toward the reference's?

For one reference clip of the toy benchmark set: VAE latents and their DDIM inversion (the
pipeline's noise prior), then samples of a target prompt (another colour and shape) from the
base model and from the model customized with a method (default MotionMatcher), same seeds,
scored with the ground-truth trajectory error (:mod:`motionmatcher.metrics.groundtruth`).
The same library functions as the pipeline (``encode_video``, ``ddim_inversion``, ``train``,
``sample_videos``), without Snakemake, so it runs in CI.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from ..customization.inversion import ddim_inversion
from ..backbones.latents import encode_video
from ..metrics.groundtruth import score_sample, unprompted_calibration
from ..customization.sampler import SamplingConfig, sample_videos
from ..customization.training import TrainConfig, train
from ..methods.motionmatcher import MotionLossWeights
from . import clips, world


@dataclass
class EfficacyResult:
    base: list[dict]
    customized: list[dict]
    reference: np.ndarray
    base_frames: list[np.ndarray]
    customized_frames: list[np.ndarray]

    @staticmethod
    def _mean(rows, key):
        return float(np.nanmean([r[key] for r in rows]))

    @property
    def base_error(self) -> float:
        return self._mean(self.base, "trajectory_error")

    @property
    def customized_error(self) -> float:
        return self._mean(self.customized, "trajectory_error")


def reference_clip(index: int = 0, which: str = "benchmark", seed: int = 0):
    """(frames, ground truth dict for score_sample, caption, target prompt) of a set's clip."""
    _, spec, prompts = clips.reference(which, index, seed)
    frames, gt = world.render_clip(spec)
    prompt = prompts[0]
    g = dict(colour=spec.primary.colour, shape=spec.primary.shape, centroid=gt["centroid"], size=spec.size)
    if spec.appearance is not None:
        g.update(unprompted_calibration(spec))
    return frames, g, gt["caption"], prompt


#: The customization budget of the toy benchmark (``config/toy_benchmark.yaml``): the paper's 400
#: steps, lr 10x the official 5e-4 for this small model, rank 8, the official LoRA targets.
DEFAULT_STEPS, DEFAULT_LR = 400, 5e-3


def default_train_config(loss: str = "motion_matching", steps: int = DEFAULT_STEPS,
                         lr: float = DEFAULT_LR, ca_weight: float = MotionLossWeights.ca_weight,
                         tsa_weight: float = MotionLossWeights.tsa_weight) -> TrainConfig:
    """The toy benchmark's training settings for ``loss`` (MotionMatcher: t ~ U[500, T), maps at
    full latent resolution, the official loss weights unless given; others: t ~ U[0, T))."""
    mm = loss == "motion_matching"
    return TrainConfig(
        loss=loss, steps=steps, lr=lr, min_timestep=500 if mm else 0, checkpoint_every=10**6,
        lora={"rank": 8, "dropout": 0.1, "targets": "motionmatcher"},
        loss_kwargs=dict(ca_weight=ca_weight, tsa_weight=tsa_weight, spatial_scale_factor=1,
                         temporal_scale_factor=1, num_denoise_steps=1) if mm else {})


def run(model, *, index: int = 0, seeds=(0, 1), train_cfg: TrainConfig | None = None,
        sampling: SamplingConfig | None = None, inversion_steps: int = 20, seed: int = 0,
        invert_with_method: bool = True) -> EfficacyResult:
    """Base vs customized samples of one reference; the model's UNet is customized in place.

    ``invert_with_method``: the customized samples' noise prior is the reference inverted with
    the customized UNet (adapter at every timestep, as the pipeline's default
    ``inversion.with_method``); False: the base model's inversion, as for the base samples.
    """
    frames, gt, caption, prompt = reference_clip(index)
    train_cfg = train_cfg or default_train_config()
    sampling = sampling or SamplingConfig(num_steps=20, guidance_scale=7.5, noise_prior=0.3, batch_size=2)
    latents = encode_video(model.vae, frames)
    empty = model.encode_prompt([""])
    inv = ddim_inversion(model.unet, model.scheduler_config, latents, empty, inversion_steps,
                         progress=False)["latents"].float()
    n, s = frames.shape[0], frames.shape[1]
    kw = dict(n_frames=n, height=s, width=s, cfg=sampling, inversion_latents=inv, progress=False)
    seeds = list(seeds)
    base = sample_videos(model, [prompt] * len(seeds), seeds, **kw)
    with tempfile.TemporaryDirectory() as ck:
        train(model, latents, caption, train_cfg, seed=seed, checkpoint_dir=ck, progress=False)
    if invert_with_method:
        kw["inversion_latents"] = ddim_inversion(model.unet, model.scheduler_config, latents, empty,
                                                 inversion_steps, progress=False)["latents"].float()
    cust = sample_videos(model, [prompt] * len(seeds), seeds, has_adapter=True, **kw)
    return EfficacyResult(
        base=[score_sample(r["frames"], prompt, gt) for r in base],
        customized=[score_sample(r["frames"], prompt, gt) for r in cust],
        reference=frames,
        base_frames=[r["frames"] for r in base],
        customized_frames=[r["frames"] for r in cust],
    )

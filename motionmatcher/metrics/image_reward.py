"""Optional ImageReward metric (Xu et al., NeurIPS 2023), averaged over frames.

``IR(video, prompt) = 1/T * sum_t ImageReward(prompt, frame_t)``

Needs the PyPI package ``image-reward`` (import name ``ImageReward``) and a
local ``ImageReward.pt`` checkpoint. ImageReward additionally needs its BLIP
``med_config.json`` (pass ``med_config``; otherwise the package looks in / downloads
to ``~/.cache/ImageReward``) and the ``bert-base-uncased`` tokenizer in the
Hugging Face cache.

Rules of :func:`load_image_reward`:

* no checkpoint configured -> ``None`` (INFO log); the caller writes a null column;
* checkpoint (or ``med_config``) configured but the file is missing ->
  :class:`~motionmatcher.metrics.MetricUnavailable` naming the path, since
  the user asked for the metric;
* checkpoint configured but the ``ImageReward`` package is not importable ->
  ``None`` with a WARNING (the metric was requested but cannot run);
* the package fails to load the files -> ``MetricUnavailable``.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from . import MetricUnavailable

logger = logging.getLogger(__name__)

__all__ = ["ImageRewardScorer", "load_image_reward"]


class ImageRewardScorer:
    """Wraps a loaded ImageReward model; :meth:`score` averages over frames."""

    def __init__(self, model: Any, device: str = "cpu") -> None:
        self.model = model
        self.device = device

    def score(self, frames: np.ndarray, prompt: str) -> float:
        """Mean ImageReward score of the frames ``(T, H, W, 3)`` uint8 for ``prompt``."""
        import torch
        from PIL import Image

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
        with torch.no_grad():
            rewards = self.model.score(prompt, images)
        values = np.atleast_1d(np.asarray(rewards, dtype=np.float64)).ravel()
        if values.size != len(images):
            raise RuntimeError(f"ImageReward returned {values.size} scores for {len(images)} frames")
        return float(values.mean())


def load_image_reward(
    checkpoint: str | Path | None,
    med_config: str | Path | None = None,
    device: str = "cpu",
) -> ImageRewardScorer | None:
    """Load ImageReward from a local checkpoint, or return ``None`` if not configured.

    See the module docstring for the exact rules. ``ImageReward.load`` is
    called as ``ImageReward.load(checkpoint, device=device, med_config=med_config)``
    (it uses ``torch.load`` on the checkpoint internally).
    """
    if checkpoint is None or str(checkpoint).strip() == "":
        logger.info("ImageReward: no checkpoint configured (metrics.image_reward.checkpoint); skipping")
        return None
    ckpt = Path(checkpoint).expanduser()
    if not ckpt.is_file():
        raise MetricUnavailable(
            f"ImageReward checkpoint not found: {str(ckpt)!r}. Download ImageReward.pt from "
            "https://huggingface.co/THUDM/ImageReward and set metrics.image_reward.checkpoint to it, "
            "or unset it to skip the metric."
        )
    if med_config is not None and str(med_config).strip() != "":
        med = Path(med_config).expanduser()
        if not med.is_file():
            raise MetricUnavailable(
                f"ImageReward med_config not found: {str(med)!r}. Download med_config.json from "
                "https://huggingface.co/THUDM/ImageReward and set metrics.image_reward.med_config to it."
            )
        med_config = str(med)
    else:
        med_config = None
    try:
        reward_pkg = importlib.import_module("ImageReward")
    except ImportError as exc:
        logger.warning(
            "ImageReward: checkpoint %s is configured but the 'ImageReward' package is not importable "
            "(%s); install it with `pip install image-reward`. Skipping the metric.",
            ckpt, exc,
        )
        return None
    try:
        model = reward_pkg.load(str(ckpt), device=device, med_config=med_config)
    except Exception as exc:
        raise MetricUnavailable(
            f"ImageReward failed to load {str(ckpt)!r} (med_config={med_config!r}): {type(exc).__name__}: {exc}. "
            "It also needs med_config.json (metrics.image_reward.med_config) and the 'bert-base-uncased' "
            "tokenizer in the Hugging Face cache."
        ) from exc
    if hasattr(model, "eval"):
        model.eval()
    logger.info("ImageReward loaded from %s on %s", ckpt, device)
    return ImageRewardScorer(model, device=device)

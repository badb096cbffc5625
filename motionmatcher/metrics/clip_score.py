"""CLIP-based video metrics: CLIP-T (text alignment) and frame consistency.

Both follow the MotionMatcher evaluation (``evaluations/clip_scores.py``):
frame-wise cosine similarities of CLIP embeddings, averaged over the frames.
The math lives in :func:`clip_t_from_embeddings` and
:func:`frame_consistency_from_embeddings`; :class:`ClipScorer` only produces
embeddings with an ``open_clip`` model and its own eval preprocessing
(resize shortest side + centre crop + normalise, bicubic for CLIP models).

Weights cannot be downloaded at run time by default (``allow_download`` is
off unless ``HF_HUB_OFFLINE`` is explicitly set to a false value), so a
missing model raises :class:`~motionmatcher.metrics.MetricUnavailable`
explaining how to provide it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from .unavailable import MetricUnavailable

logger = logging.getLogger(__name__)

__all__ = ["ClipScorer", "clip_t_from_embeddings", "frame_consistency_from_embeddings"]


def _as_unit_rows(emb: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float64 copy of ``emb`` as ``(K, D)`` with each row scaled to unit L2 norm."""
    if isinstance(emb, torch.Tensor):
        emb = emb.detach().to("cpu", torch.float64).numpy()
    arr = np.atleast_2d(np.asarray(emb, dtype=np.float64))
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be (K, D), got shape {arr.shape}")
    norm = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError("zero embedding vector; cosine similarity undefined")
    return arr / norm


def clip_t_from_embeddings(image_emb: torch.Tensor | np.ndarray, text_emb: torch.Tensor | np.ndarray) -> float:
    """CLIP-T: mean over frames of the cosine between each frame and the prompt.

    ``CLIP-T = 1/T * sum_t cos(e_img(t), e_txt)``, with ``cos(a, b) = a.b / (|a| |b|)``.

    Args:
        image_emb: ``(T, D)`` frame embeddings (any norm).
        text_emb: ``(D,)`` or ``(1, D)`` prompt embedding (any norm).
    """
    img = _as_unit_rows(image_emb)
    txt = _as_unit_rows(text_emb)
    if txt.shape[0] != 1:
        raise ValueError(f"expected a single text embedding, got {txt.shape[0]}")
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"embedding dims differ: {img.shape[1]} vs {txt.shape[1]}")
    return float((img @ txt[0]).mean())


def frame_consistency_from_embeddings(image_emb: torch.Tensor | np.ndarray) -> float:
    """Frame consistency: mean cosine between consecutive frames' embeddings.

    ``FC = 1/(T-1) * sum_{t=1}^{T-1} cos(e_img(t-1), e_img(t))``. Needs ``T >= 2``.
    """
    img = _as_unit_rows(image_emb)
    if img.shape[0] < 2:
        raise ValueError("frame consistency needs at least 2 frames")
    return float(np.einsum("td,td->t", img[:-1], img[1:]).mean())


def _frames_to_pil(frames: np.ndarray) -> list[Image.Image]:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("no frames")
    return [Image.fromarray(np.ascontiguousarray(f)) for f in frames]


def _env_allows_download() -> bool:
    """Downloads are allowed only if HF_HUB_OFFLINE is explicitly set to a false value."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        return False
    return value.strip().lower() in ("0", "false", "no", "off", "")


@contextlib.contextmanager
def _hf_offline() -> Iterator[None]:
    """Force Hugging Face Hub offline mode for the duration of the block.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once at import time, so both the
    environment variable (if unset) and the already-imported constant are set,
    and restored afterwards.
    """
    try:
        from huggingface_hub import constants as hf_constants
    except ImportError:  # pragma: no cover - open_clip then downloads via URL only
        hf_constants = None
    env_was_set = "HF_HUB_OFFLINE" in os.environ
    if not env_was_set:
        os.environ["HF_HUB_OFFLINE"] = "1"
    old_const = getattr(hf_constants, "HF_HUB_OFFLINE", None)
    if hf_constants is not None:
        hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if not env_was_set:
            os.environ.pop("HF_HUB_OFFLINE", None)
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = old_const


class ClipScorer:
    """Embeds frames and prompts with an ``open_clip`` model and scores videos.

    Weight source, first match wins:

    1. ``checkpoint``: a local ``open_clip_pytorch_model.bin`` / ``.safetensors``
       / state-dict file, passed to open_clip as ``pretrained=<path>``. A
       configured path that does not exist raises ``MetricUnavailable``.
    2. ``random_init_seed``: deterministic random weights (``torch.manual_seed``
       in a forked RNG, then ``pretrained=None``). For tests and CPU demos only:
       the numbers are meaningless as quality scores.
    3. the ``pretrained`` tag (e.g. ``"openai"``), resolved from the local open_clip
       / Hugging Face cache. Without network (the default here: no download is
       attempted unless ``allow_download`` is true) missing weights raise
       ``MetricUnavailable`` with instructions.

    In all three cases the architecture and preprocessing come from the
    ``(model_name, pretrained)`` pair: e.g. OpenAI weights need QuickGELU, which
    open_clip 3.x does *not* enable for ``"ViT-B-32"`` on its own, so it is
    forced here whenever the tag's config asks for it; the tag's mean / std /
    interpolation / resize mode are applied to checkpoint and random-init
    models too. Pass ``pretrained=None`` with a checkpoint of an unlisted model.

    Args:
        model_name: open_clip architecture name (``open_clip.list_models()``); an
            ``hf-hub:`` / ``local-dir:`` name is passed through (open_clip then ignores
            ``pretrained`` and the checkpoint argument is not needed).
        pretrained: open_clip pretrained tag naming the weights (also describes
            what a ``checkpoint`` file contains).
        checkpoint: local weight file; overrides the tag as the weight source.
        device: torch device for inference.
        random_init_seed: build deterministic random weights instead of loading.
        batch_size: frames per forward pass.
        cache_dir: open_clip / HF cache directory (default: the HF cache).
        allow_download: allow network downloads of the tag's weights; ``None``
            means "only if ``HF_HUB_OFFLINE`` is explicitly set false".
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        checkpoint: str | Path | None = None,
        device: str = "cpu",
        random_init_seed: int | None = None,
        batch_size: int = 32,
        cache_dir: str | Path | None = None,
        allow_download: bool | None = None,
    ) -> None:
        if ":" not in model_name and model_name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model_name!r} (see open_clip.list_models())")
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))

        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
        kwargs = dict(
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            image_mean=tag_cfg.get("mean"),
            image_std=tag_cfg.get("std"),
            image_interpolation=tag_cfg.get("interpolation"),
            image_resize_mode=tag_cfg.get("resize_mode"),
            cache_dir=str(cache_dir) if cache_dir is not None else None,
        )

        if checkpoint is not None and str(checkpoint) != "":
            path = Path(checkpoint).expanduser()
            if not path.is_file():
                raise MetricUnavailable(
                    f"CLIP checkpoint not found: {str(path)!r} (metrics.clip.checkpoint). "
                    + self._how_to_provide(tag_cfg)
                )
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(path), **kwargs)
            except Exception as exc:
                raise MetricUnavailable(
                    f"could not load CLIP checkpoint {str(path)!r} into {model_name!r}: {exc}"
                ) from exc
            self.weights = f"checkpoint:{path}"
        elif random_init_seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(random_init_seed))
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None, **kwargs)
            self.weights = f"random_init:{int(random_init_seed)}"
            logger.warning("ClipScorer uses RANDOM weights (seed %d): scores are not meaningful", random_init_seed)
        else:
            if not pretrained and ":" not in model_name:
                raise ValueError("need a checkpoint, a random_init_seed or a pretrained tag")
            if allow_download is None:
                allow_download = _env_allows_download()
            ctx = contextlib.nullcontext() if allow_download else _hf_offline()
            try:
                with ctx:
                    model, _, preprocess = open_clip.create_model_and_transforms(
                        model_name, pretrained=pretrained, **kwargs
                    )
            except Exception as exc:
                raise MetricUnavailable(
                    f"CLIP weights for model {model_name!r} (pretrained={pretrained!r}) are not available "
                    f"locally{'' if allow_download else ' and downloads are disabled'} ({type(exc).__name__}: {exc}). "
                    + self._how_to_provide(tag_cfg)
                ) from exc
            self.weights = f"pretrained:{pretrained}"

        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        logger.info("ClipScorer: %s (%s) on %s", model_name, self.weights, self.device)

    def _how_to_provide(self, tag_cfg: dict) -> str:
        hub = tag_cfg.get("hf_hub", "") if tag_cfg else ""
        where = f" (e.g. from https://huggingface.co/{hub.rstrip('/')})" if hub else ""
        return (
            "To provide CLIP weights, either set `metrics.clip.checkpoint: "
            f"/path/to/open_clip_pytorch_model.bin|.safetensors`{where}, or pre-populate the Hugging Face "
            "cache on a machine with internet with `python -c \"import open_clip; "
            f"open_clip.create_model_and_transforms('{self.model_name}', pretrained='{self.pretrained}')\"` "
            "and copy ~/.cache/huggingface (or point HF_HOME at it)."
        )

    @torch.inference_mode()
    def image_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        """L2-normalised image embeddings ``(T, D)`` (float32, CPU) of uint8 ``(T, H, W, 3)`` frames."""
        images = _frames_to_pil(frames)
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[start : start + self.batch_size]])
            feats = self.model.encode_image(batch.to(self.device))
            out.append(F.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``(K, D)`` (float32, CPU)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("no texts")
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[start : start + self.batch_size]).to(self.device)
            feats = self.model.encode_text(tokens)
            out.append(F.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(out)

    def score(self, frames: np.ndarray, prompt: str) -> dict[str, float]:
        """Both metrics from one pass: ``{"clip_t": ..., "frame_consistency": ...}``.

        ``frame_consistency`` is NaN for a single-frame video.
        """
        img = self.image_embeddings(frames)
        txt = self.text_embeddings([prompt])
        fc = frame_consistency_from_embeddings(img) if img.shape[0] >= 2 else float("nan")
        return {"clip_t": clip_t_from_embeddings(img, txt), "frame_consistency": fc}

    def clip_t(self, frames: np.ndarray, prompt: str) -> float:
        """CLIP-T of a video and its prompt (see :func:`clip_t_from_embeddings`)."""
        return clip_t_from_embeddings(self.image_embeddings(frames), self.text_embeddings([prompt]))

    def frame_consistency(self, frames: np.ndarray) -> float:
        """Frame consistency of a video (see :func:`frame_consistency_from_embeddings`)."""
        return frame_consistency_from_embeddings(self.image_embeddings(frames))

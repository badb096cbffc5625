"""ImageReward (Xu et al., NeurIPS 2023) on transformers' BLIP modules, averaged over frames.

``IR(video, prompt) = 1/T * sum_t r(prompt, frame_t)`` with the ImageReward score of one image::

    e_img = ViT(frame)                                   (BLIP vision encoder, all tokens)
    h     = BERT_xattn(tokens(prompt) | e_img)[CLS]      (BLIP text encoder, cross-attending)
    r     = (MLP(h) - 0.16717362830052426) / 1.0333394966054072

The official package (``image-reward`` 1.5) cannot be installed next to our dependencies (it
pins ``timm==0.6.13``, imports OpenAI's ``clip`` without declaring it and uses helpers
transformers 5 removed), so the architecture is rebuilt here from well-kept parts:
``transformers``' ``BlipVisionModel`` (BLIP's ViT: fused ``qkv``, pre-norm blocks, final norm,
LayerNorm eps 1e-6) and ``BlipTextModel`` (BLIP's ``med.py`` BERT with a cross-attention in every
layer, run bidirectionally), plus the 5-layer linear head. The official ``ImageReward.pt`` is
read with ``torch.load(weights_only=True)`` (or a ``.safetensors`` conversion of it) and mapped
key by key (:func:`map_official_state_dict`); every tensor must be used and every needed one
present. The text encoder's sizes come from the official ``med_config.json``
(``metrics.image_reward.med_config``), the vision encoder's from the checkpoint's shapes
(``embed_dim``, ``depth``, patch and image size; 64-dim heads as in BLIP), the tokenizer is
``bert-base-uncased`` plus BLIP's ``[DEC]`` / ``[ENC]`` tokens, prompts padded / truncated to
35 tokens, images resized (bicubic) and centre-cropped to the ViT's size and normalised with
CLIP's mean and std, all as in ``ImageReward.py``.

Rules of :func:`load_image_reward`: no checkpoint configured -> ``None`` (null column, INFO
log); a configured checkpoint that cannot be used (file, ``med_config`` or tokenizer missing,
wrong layout) -> :class:`~motionmatcher.metrics.MetricUnavailable` naming the config key.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers.models.blip.modeling_blip import BlipVisionModel
from transformers.models.blip.modeling_blip_text import BlipTextModel

from .unavailable import MetricUnavailable

logger = logging.getLogger(__name__)

__all__ = ["ImageRewardScorer", "ImageRewardModel", "load_image_reward", "map_official_state_dict",
           "REWARD_MEAN", "REWARD_STD"]

#: normalisation of the raw head output (``ImageReward.mean`` / ``.std`` of the official model)
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_MAX_TOKENS = 35
_HEAD_DIM = 64  # BLIP's ViT-B (768 / 12) and ViT-L (1024 / 16)
_KEY = "metrics.image_reward"

# official key (regex) -> ours; vision keys go to ``visual_encoder.``, text to ``text_encoder.``
_VISION_MAP = (
    (r"cls_token", "embeddings.class_embedding"),
    (r"pos_embed", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layer_norm1.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.\1.self_attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.projection.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layer_norm2.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"encoder.layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"post_layernorm.\1"),
)
# tensors of the official checkpoint that scoring does not use (contrastive projections, a buffer)
_UNUSED = re.compile(r"blip\.(vision_proj|text_proj)\.(weight|bias)|blip\.text_encoder\.embeddings\.position_ids")


def map_official_state_dict(state: dict) -> dict:
    """Rename the tensors of an official ``ImageReward.pt`` to :class:`ImageRewardModel`'s keys.

    * ``blip.visual_encoder.*`` (BLIP ``vit.py``) -> ``visual_encoder.*`` (``BlipVisionModel``),
      per the table ``_VISION_MAP`` (e.g. ``blocks.3.attn.proj`` -> ``encoder.layers.3.self_attn.projection``);
    * ``blip.text_encoder.*`` (BLIP ``med.py`` ``BertModel``) -> ``text_encoder.*``
      (``BlipTextModel``: same names);
    * ``mlp.layers.{i}.*`` -> ``mlp.{i}.*`` (same ``Sequential`` positions, dropouts included);
    * ``blip.vision_proj``, ``blip.text_proj``, ``...position_ids``: not used for scoring, dropped.

    Raises:
        KeyError: a tensor that none of the rules maps (listing them).
    """
    out, unknown = {}, []
    for key, tensor in state.items():
        if _UNUSED.fullmatch(key):
            continue
        if key.startswith("blip.visual_encoder."):
            rest = key[len("blip.visual_encoder."):]
            for pattern, target in _VISION_MAP:
                if re.fullmatch(pattern, rest):
                    out["visual_encoder." + re.sub(pattern, target, rest)] = tensor
                    break
            else:
                unknown.append(key)
        elif key.startswith("blip.text_encoder."):
            out["text_encoder." + key[len("blip.text_encoder."):]] = tensor
        elif re.fullmatch(r"mlp\.layers\.\d+\.(weight|bias)", key):
            out["mlp." + key[len("mlp.layers."):]] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"{len(unknown)} tensor(s) not in the ImageReward layout: {unknown[:8]}")
    return out


def _load_tensors(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise ValueError("not a state dict of tensors")
    return state


def _build_model(state: dict, med: dict):
    """An :class:`ImageRewardModel` whose sizes come from ``med`` (text) and ``state`` (vision)."""
    from transformers import BlipTextConfig, BlipVisionConfig

    cls = state["visual_encoder.embeddings.class_embedding"]
    patch = state["visual_encoder.embeddings.patch_embedding.weight"]
    n_pos = state["visual_encoder.embeddings.position_embedding"].shape[1]
    width, patch_size = int(cls.shape[-1]), int(patch.shape[-1])
    grid = int(round((n_pos - 1) ** 0.5))
    if grid * grid != n_pos - 1:
        raise ValueError(f"position embedding of {n_pos} tokens is not a square grid + [CLS]")
    depth = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("visual_encoder.encoder.layers."))
    mlp_width = int(state["visual_encoder.encoder.layers.0.mlp.fc1.weight"].shape[0])
    vision = BlipVisionConfig(
        hidden_size=width, intermediate_size=mlp_width, num_hidden_layers=depth,
        num_attention_heads=width // _HEAD_DIM, image_size=grid * patch_size, patch_size=patch_size,
        layer_norm_eps=1e-6, hidden_act="gelu", attention_dropout=0.0,
    )
    text = BlipTextConfig(
        vocab_size=int(med["vocab_size"]), hidden_size=int(med["hidden_size"]),
        encoder_hidden_size=width, intermediate_size=int(med["intermediate_size"]),
        num_hidden_layers=int(med["num_hidden_layers"]), num_attention_heads=int(med["num_attention_heads"]),
        max_position_embeddings=int(med["max_position_embeddings"]), hidden_act=med.get("hidden_act", "gelu"),
        layer_norm_eps=float(med.get("layer_norm_eps", 1e-12)), pad_token_id=int(med.get("pad_token_id", 0)),
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, is_decoder=True,
    )
    return ImageRewardModel(vision, text)


class ImageRewardModel(nn.Module):
    """BLIP ViT + cross-attending BERT + linear head (the official ``ImageReward`` module)."""

    def __init__(self, vision_config, text_config) -> None:
        super().__init__()
        self.visual_encoder = BlipVisionModel(vision_config)
        self.text_encoder = BlipTextModel(text_config, add_pooling_layer=False)
        hidden = text_config.hidden_size
        # the official MLP(768): Linear layers interleaved with dropouts, no activation
        self.mlp = nn.Sequential(
            nn.Linear(hidden, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )
        self.image_size = vision_config.image_size

    def forward(self, pixel_values, input_ids, attention_mask):
        """Normalised rewards ``(B,)`` of images ``(B, 3, S, S)`` and token ids ``(B, L)``."""
        image_embeds = self.visual_encoder(pixel_values=pixel_values).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        out = self.text_encoder(
            input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_atts,
        )
        features = out.last_hidden_state[:, 0, :].float()
        return ((self.mlp(features) - REWARD_MEAN) / REWARD_STD).squeeze(-1)


def _load_tokenizer(tokenizer: str | Path | None):
    """``bert-base-uncased`` + BLIP's ``[DEC]`` (bos) and ``[ENC]`` tokens, from a local directory /
    ``vocab.txt`` (``metrics.image_reward.tokenizer``) or, if unset, the local Hugging Face cache."""
    from transformers import BertTokenizer

    try:
        if tokenizer is not None and str(tokenizer).strip():
            path = Path(tokenizer).expanduser()
            vocab_file = path / "vocab.txt" if path.is_dir() else path
            if not vocab_file.is_file():
                raise FileNotFoundError(f"{str(vocab_file)!r} does not exist")
            # the vocabulary as an explicit {wordpiece: id} (one per line, in order): transformers 4
            # and 5 read a vocab_file argument differently
            words = vocab_file.read_text(encoding="utf-8").split("\n")
            if words and words[-1] == "":
                words.pop()
            vocab = {w.rstrip("\r"): i for i, w in enumerate(words)}
            tok = BertTokenizer(vocab=vocab, do_lower_case=True)
        else:
            tok = BertTokenizer.from_pretrained("bert-base-uncased", local_files_only=True)
    except Exception as exc:
        raise MetricUnavailable(
            f"ImageReward needs the bert-base-uncased tokenizer: set {_KEY}.tokenizer to a local directory "
            "with its vocab.txt (or to the vocab.txt itself), or put bert-base-uncased in the Hugging Face "
            f"cache ({type(exc).__name__}: {exc})"
        ) from exc
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


class ImageRewardScorer:
    """A loaded ImageReward model; :meth:`score` averages over frames.

    Attributes: ``weights_sha256`` (short SHA-256 of the checkpoint file), ``device``.
    """

    def __init__(self, model, tokenizer, device: str = "cpu", weights_sha256: str = "unknown",
                 batch_size: int = 16) -> None:
        from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.weights_sha256 = weights_sha256
        self.batch_size = int(batch_size)
        size = int(model.image_size)
        self._preprocess = Compose([
            Resize(size, interpolation=InterpolationMode.BICUBIC), CenterCrop(size), ToTensor(),
            Normalize(_CLIP_MEAN, _CLIP_STD),
        ])

    def frame_scores(self, frames: np.ndarray, prompt: str) -> np.ndarray:
        """ImageReward of each frame ``(T, H, W, 3)`` uint8 for ``prompt``: ``(T,)`` float64."""
        from PIL import Image

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        text = self.tokenizer(prompt, padding="max_length", truncation=True, max_length=_MAX_TOKENS,
                              return_tensors="pt")
        scores = []
        with torch.no_grad():
            for start in range(0, frames.shape[0], self.batch_size):
                chunk = frames[start:start + self.batch_size]
                pixels = torch.stack([self._preprocess(Image.fromarray(np.ascontiguousarray(f))) for f in chunk])
                n = pixels.shape[0]
                rewards = self.model(
                    pixels.to(self.device), text.input_ids.expand(n, -1).to(self.device),
                    text.attention_mask.expand(n, -1).to(self.device),
                )
                scores.append(rewards.double().cpu().numpy())
        return np.concatenate(scores)

    def score(self, frames: np.ndarray, prompt: str) -> float:
        """Mean ImageReward of the frames ``(T, H, W, 3)`` uint8 for ``prompt``."""
        return float(self.frame_scores(frames, prompt).mean())


def load_image_reward(
    checkpoint: str | Path | None,
    med_config: str | Path | None = None,
    device: str = "cpu",
    tokenizer: str | Path | None = None,
) -> ImageRewardScorer | None:
    """Load ImageReward from a local official checkpoint, or return ``None`` if not configured.

    Args:
        checkpoint: ``ImageReward.pt`` (official layout; read with ``weights_only=True``) or a
            ``.safetensors`` file with the same keys (``metrics.image_reward.checkpoint``).
        med_config: the official ``med_config.json`` (``metrics.image_reward.med_config``).
        tokenizer: bert-base-uncased directory / ``vocab.txt`` (``metrics.image_reward.tokenizer``);
            ``None`` reads the local Hugging Face cache.

    Raises:
        MetricUnavailable: naming the config key, whenever a configured checkpoint cannot be used.
    """
    if checkpoint is None or str(checkpoint).strip() == "":
        logger.info("ImageReward: no checkpoint configured (%s.checkpoint); the column is null", _KEY)
        return None
    from .provenance import file_sha256

    ckpt = Path(checkpoint).expanduser()
    if not ckpt.is_file():
        raise MetricUnavailable(
            f"ImageReward checkpoint not found: {str(ckpt)!r} ({_KEY}.checkpoint). Download ImageReward.pt from "
            f"https://huggingface.co/THUDM/ImageReward and set {_KEY}.checkpoint to it, or set it to null to "
            "skip the metric."
        )
    if med_config is None or str(med_config).strip() == "":
        raise MetricUnavailable(
            f"{_KEY}.checkpoint is set but {_KEY}.med_config is not: download med_config.json from "
            f"https://huggingface.co/THUDM/ImageReward and set {_KEY}.med_config to it."
        )
    med_path = Path(med_config).expanduser()
    try:
        med = json.loads(med_path.read_text())
    except (OSError, ValueError) as exc:
        raise MetricUnavailable(f"{_KEY}.med_config {str(med_path)!r} cannot be read: {exc}") from exc
    try:
        state = map_official_state_dict(_load_tensors(ckpt))
        model = _build_model(state, med)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise KeyError(f"missing {missing[:8]}, unexpected {unexpected[:8]}")
    except Exception as exc:
        raise MetricUnavailable(
            f"{_KEY}.checkpoint {str(ckpt)!r} is not an ImageReward checkpoint in the official layout "
            f"(with {_KEY}.med_config {str(med_path)!r}): {type(exc).__name__}: {exc}"
        ) from exc
    scorer = ImageRewardScorer(model, _load_tokenizer(tokenizer), device=str(device),
                               weights_sha256=file_sha256(ckpt))
    logger.info("ImageReward loaded from %s (sha256 %s) on %s", ckpt, scorer.weights_sha256, device)
    return scorer

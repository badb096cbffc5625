"""Loading a diffusers-format text-to-video model, and the embedded tiny model.

A model directory has the layout of Zeroscope v2 576w on the Hugging Face hub::

    model_index.json  unet/  vae/  text_encoder/  tokenizer/  scheduler/

:func:`load_t2v_model` loads any such directory. ``model: tiny`` in the config builds a
small, seeded model with Zeroscope's module structure (``UNet3DConditionModel`` with
``CrossAttnDownBlock3D``/``TransformerTemporalModel``, ``AutoencoderKL``, a CLIP text encoder
with the real CLIP BPE tokenizer, a DDIM scheduler), writes it once with
:func:`write_tiny_model` and from then on loads it through :func:`load_t2v_model` like any
real model.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

TINY_MODEL_VERSION = 1
REQUIRED_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

# Zeroscope v2 576w's scheduler (scheduler/scheduler_config.json on the hub).
ZEROSCOPE_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)

# Zeroscope v2 576w's UNet (unet/config.json): used for benchmarks with random weights.
ZEROSCOPE_UNET = dict(
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
    up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    norm_num_groups=32,
    cross_attention_dim=1024,
    attention_head_dim=64,
)

TINY_UNET = dict(
    ZEROSCOPE_UNET,
    block_out_channels=(32, 32, 64, 64),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=32,
    attention_head_dim=4,
)

TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 16, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    scaling_factor=0.18215,
)

TINY_TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=32,
    hidden_act="gelu",
)


@dataclass
class T2VModel:
    """The components of a text-to-video latent diffusion model, on one device."""

    unet: "diffusers.UNet3DConditionModel"  # noqa: F821
    vae: "diffusers.AutoencoderKL"  # noqa: F821
    text_encoder: "transformers.CLIPTextModel"  # noqa: F821
    tokenizer: "transformers.CLIPTokenizer"  # noqa: F821
    scheduler_config: dict
    identity: str
    path: Path

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def ddim_scheduler(self):
        """A fresh :class:`~diffusers.DDIMScheduler` with the model's scheduler config."""
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.scheduler_config)

    def ddpm_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.scheduler_config)

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], *, warn_context: str = "") -> torch.Tensor:
        """CLIP text embeddings (last hidden state), shape (len(prompts), 77, D).

        Prompts longer than the encoder's context are truncated with a warning that names
        ``warn_context`` (e.g. the manifest row).
        """
        tok = self.tokenizer
        max_len = tok.model_max_length
        for p in prompts:
            n = len(tok(p, truncation=False).input_ids)
            if n > max_len:
                log.warning(
                    "%sprompt has %d tokens, more than the text encoder's %d: truncated: %r",
                    f"{warn_context}: " if warn_context else "",
                    n,
                    max_len,
                    p,
                )
        ids = tok(
            prompts, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
        ).input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids)[0]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available (respecting ``CUDA_VISIBLE_DEVICES``), else CPU.

    Raises:
        RuntimeError: ``cuda`` asked for where torch sees no GPU (a CPU machine running
            ``config/paper.yaml``, or a job without a GPU), naming the config key, before
            any model loads -- not torch's error at the first tensor moved.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"config device: {device}, but torch sees no CUDA GPU here (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!s}, torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}). On a CPU machine run with --config device=cpu (or device: auto); "
            "on a cluster, check that the job asked for a GPU (docs/slurm.md)")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it, fp16 on older GPUs, fp32 on CPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def check_model_dir(path: str | os.PathLike) -> Path:
    """Raise a clear error if ``path`` is not a diffusers-format text-to-video directory."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model directory {path} does not exist. Set `model:` in the config to `tiny` or to a "
            "local diffusers-format text-to-video model (e.g. a snapshot of "
            "cerspense/zeroscope_v2_576w)."
        )
    missing = [s for s in REQUIRED_SUBFOLDERS if not (path / s).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"model directory {path} lacks the subfolder(s) {', '.join(missing)}; expected "
            f"{', '.join(s + '/' for s in REQUIRED_SUBFOLDERS)} (diffusers layout)."
        )
    return path


def model_identity(path: str | os.PathLike) -> str:
    """A short, stable identity of a model directory: name + hash of configs and weight sizes.

    Hashing gigabytes of weights on every load would be slow, so the identity covers every
    JSON/text config file in full and each weight file's name and size.
    """
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        h.update(rel.encode())
        if f.suffix in (".json", ".txt"):
            h.update(f.read_bytes())
        else:
            h.update(str(f.stat().st_size).encode())
    return f"{path.name}-{h.hexdigest()[:12]}"


def load_t2v_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> T2VModel:
    """Load a diffusers-format text-to-video model directory (tiny or real) onto ``device``.

    Weights stay frozen (``requires_grad_(False)``) and the modules in eval mode; training code
    attaches and unfreezes what it trains.
    """
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = check_model_dir(path)
    device = torch.device(device)
    unet = UNet3DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype)
    vae = AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype)
    text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", torch_dtype=dtype)
    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer")
    with open(path / "scheduler" / "scheduler_config.json") as f:
        scheduler_config = json.load(f)
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False).eval().to(device)
    return T2VModel(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=scheduler_config,
        identity=model_identity(path),
        path=path,
    )


@lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[str, int], list[str]]:
    """CLIP's BPE vocabulary and merges, rebuilt from the file open_clip ships.

    Same construction as CLIP's ``SimpleTokenizer``: 256 byte symbols, the same with ``</w>``,
    one token per merge, then the two special tokens: 49408 tokens in all.
    """
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, merges


def _write_tokenizer(out: Path) -> None:
    """Write the CLIP tokenizer in both layouts: vocab.json + merges.txt (as Zeroscope ships it)
    and tokenizer.json (what current transformers saves)."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe()
    out.mkdir(parents=True, exist_ok=True)
    tok = CLIPTokenizer(
        vocab=dict(vocab), merges=[tuple(m.split()) for m in merges], model_max_length=77
    )
    tok.save_pretrained(out)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def build_tiny_components(seed: int = 0):
    """The tiny model's (unet, vae, text_encoder), deterministically initialised from ``seed``."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet3DConditionModel(**TINY_UNET)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**TINY_VAE)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_ENCODER))
    return unet, vae, text_encoder


def write_tiny_model(out: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny model as a diffusers-format directory (atomically; no-op if present)."""
    from diffusers import DDIMScheduler

    from .tiny import write_atomically

    def build(tmp: Path) -> None:
        unet, vae, text_encoder = build_tiny_components(seed)
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
        text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        _write_tokenizer(tmp / "tokenizer")
        DDIMScheduler(**ZEROSCOPE_SCHEDULER).save_pretrained(tmp / "scheduler")
        (tmp / "model_index.json").write_text(
            json.dumps(
                {
                    "_class_name": "TextToVideoSDPipeline",
                    "scheduler": ["diffusers", "DDIMScheduler"],
                    "text_encoder": ["transformers", "CLIPTextModel"],
                    "tokenizer": ["transformers", "CLIPTokenizer"],
                    "unet": ["diffusers", "UNet3DConditionModel"],
                    "vae": ["diffusers", "AutoencoderKL"],
                },
                indent=2,
            )
        )

    out = write_atomically(out, {"tiny_model_version": TINY_MODEL_VERSION, "seed": seed}, build)
    log.info("tiny model in %s", out)
    return out


def zeroscope_unet_random(seed: int = 0):
    """A UNet with Zeroscope v2 576w's architecture and random weights (for benchmarks)."""
    from diffusers import UNet3DConditionModel

    torch.manual_seed(seed)
    return UNet3DConditionModel(**ZEROSCOPE_UNET)

"""Writing the seeded tiny DiT models (``wan-tiny``, ``cogvideox-tiny``) as diffusers
directories, loaded afterwards through :func:`motionmatcher.backbones.load_model` like real
ones.

Their tokenizer is a ``tokenizers`` fast tokenizer (``sentencepiece``, which the real T5/UMT5
tokenizers' ``spiece.model`` needs, is not installed): SentencePiece-style ``▁`` word marks,
one token per character of printable ASCII, ``</s>`` appended, ``<pad>`` = 0 -- the T5 ids of
pad/eos/unk, so the encoders' embedding conventions hold.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..files.atomic import atomic_directory

TINY_DIT_VERSION = 1


def write_tokenizer(out: Path, max_length: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    chars = ["▁"] + [chr(c) for c in range(33, 127)]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", vocab["</s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=max_length)
    fast.save_pretrained(out)


def write_atomically(out: str | os.PathLike, stamp: dict, build) -> Path:
    """``build(tmp_dir)`` writes a seeded tiny model (any backbone's); the directory appears at
    ``out`` only when complete (:func:`motionmatcher.files.atomic.atomic_directory`), with the
    ``tiny_model.json`` ``stamp``. A no-op if ``out`` holds a model with the same stamp."""
    out = Path(out)
    if (out / "tiny_model.json").exists() and json.loads((out / "tiny_model.json").read_text()) == stamp:
        return out
    with atomic_directory(out) as tmp:
        build(tmp)
        (tmp / "tiny_model.json").write_text(json.dumps(stamp))
    return out


def write_index(tmp: Path, pipeline, transformer, vae, text_encoder, scheduler) -> None:
    (tmp / "model_index.json").write_text(json.dumps({
        "_class_name": pipeline,
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", text_encoder],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "transformer": ["diffusers", transformer],
        "vae": ["diffusers", vae],
    }, indent=2))

"""ImageReward on transformers' BLIP modules (motionmatcher.metrics.image_reward).

A small random checkpoint is written in the official ``ImageReward.pt`` layout (the key names of
THUDM/ImageReward's ``ImageReward`` module: ``blip.visual_encoder.*`` from BLIP's ``vit.py``,
``blip.text_encoder.*`` from ``med.py``, ``mlp.layers.*``), with a matching ``med_config.json`` and
a tiny ``vocab.txt``, then loaded and scored through the metrics stage. Equality with the
official package on a full-size random checkpoint is checked outside the test suite (docs/metrics.md).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from motionmatcher.toy.ball_clips import render_clip
from motionmatcher.metrics.evaluate import evaluate_samples, load_scorers
from motionmatcher.metrics import MetricUnavailable, make_tracker
from motionmatcher.metrics.image_reward import REWARD_STD, load_image_reward, map_official_state_dict

WIDTH, DEPTH, PATCH, IMAGE = 64, 2, 16, 32   # ViT: 64-dim (1 head of 64), 2 blocks, 2x2 patches
TEXT, TEXT_LAYERS, VOCAB = 32, 2, 40
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "ball", "rolling", "dog", "cat", "to",
         "the", "right", "left", "from", "blue", "sky"]


def official_state(seed: int = 0) -> dict:
    """Random tensors under the official ImageReward.pt names and shapes."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    sd = {"blip.visual_encoder.cls_token": r(1, 1, WIDTH),
          "blip.visual_encoder.pos_embed": r(1, (IMAGE // PATCH) ** 2 + 1, WIDTH),
          "blip.visual_encoder.patch_embed.proj.weight": r(WIDTH, 3, PATCH, PATCH),
          "blip.visual_encoder.patch_embed.proj.bias": r(WIDTH)}
    for i in range(DEPTH):
        b = f"blip.visual_encoder.blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(WIDTH), b + "norm1.bias": r(WIDTH),
                   b + "attn.qkv.weight": r(3 * WIDTH, WIDTH), b + "attn.qkv.bias": r(3 * WIDTH),
                   b + "attn.proj.weight": r(WIDTH, WIDTH), b + "attn.proj.bias": r(WIDTH),
                   b + "norm2.weight": 1 + r(WIDTH), b + "norm2.bias": r(WIDTH),
                   b + "mlp.fc1.weight": r(4 * WIDTH, WIDTH), b + "mlp.fc1.bias": r(4 * WIDTH),
                   b + "mlp.fc2.weight": r(WIDTH, 4 * WIDTH), b + "mlp.fc2.bias": r(WIDTH)})
    sd.update({"blip.visual_encoder.norm.weight": 1 + r(WIDTH), "blip.visual_encoder.norm.bias": r(WIDTH)})
    t = "blip.text_encoder."
    sd.update({t + "embeddings.word_embeddings.weight": r(VOCAB, TEXT),
               t + "embeddings.position_embeddings.weight": r(64, TEXT),
               t + "embeddings.LayerNorm.weight": 1 + r(TEXT), t + "embeddings.LayerNorm.bias": r(TEXT),
               t + "embeddings.position_ids": torch.arange(64)[None]})
    for i in range(TEXT_LAYERS):
        lay = f"{t}encoder.layer.{i}."
        for att, kv in (("attention", TEXT), ("crossattention", WIDTH)):
            sd.update({f"{lay}{att}.self.query.weight": r(TEXT, TEXT), f"{lay}{att}.self.query.bias": r(TEXT),
                       f"{lay}{att}.self.key.weight": r(TEXT, kv), f"{lay}{att}.self.key.bias": r(TEXT),
                       f"{lay}{att}.self.value.weight": r(TEXT, kv), f"{lay}{att}.self.value.bias": r(TEXT),
                       f"{lay}{att}.output.dense.weight": r(TEXT, TEXT), f"{lay}{att}.output.dense.bias": r(TEXT),
                       f"{lay}{att}.output.LayerNorm.weight": 1 + r(TEXT), f"{lay}{att}.output.LayerNorm.bias": r(TEXT)})
        sd.update({lay + "intermediate.dense.weight": r(2 * TEXT, TEXT), lay + "intermediate.dense.bias": r(2 * TEXT),
                   lay + "output.dense.weight": r(TEXT, 2 * TEXT), lay + "output.dense.bias": r(TEXT),
                   lay + "output.LayerNorm.weight": 1 + r(TEXT), lay + "output.LayerNorm.bias": r(TEXT)})
    sd.update({"blip.vision_proj.weight": r(16, WIDTH), "blip.vision_proj.bias": r(16),
               "blip.text_proj.weight": r(16, TEXT), "blip.text_proj.bias": r(16)})
    for i, (n_in, n_out) in zip((0, 2, 4, 6, 7), ((TEXT, 1024), (1024, 128), (128, 64), (64, 16), (16, 1))):
        sd[f"mlp.layers.{i}.weight"] = r(n_out, n_in)
        sd[f"mlp.layers.{i}.bias"] = r(n_out)
    return sd


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ir")
    torch.save(official_state(), d / "ImageReward.pt")
    (d / "med_config.json").write_text(json.dumps({
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": TEXT, "initializer_range": 0.02, "intermediate_size": 2 * TEXT,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "bert", "num_attention_heads": 2,
        "num_hidden_layers": TEXT_LAYERS, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": VOCAB,
        "encoder_width": 768, "add_cross_attention": True}))
    (d / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    return d


def _load(files, checkpoint="ImageReward.pt"):
    return load_image_reward(files / checkpoint, files / "med_config.json", tokenizer=files / "vocab.txt")


def test_tokenizer_uses_the_vocabulary(files):
    """bert-base-uncased's wordpieces from the configured vocab.txt (lower-cased), [CLS] ... [SEP],
    then BLIP's [DEC] and [ENC] appended after the vocabulary."""
    tok = _load(files).tokenizer
    ids = tok("A red Ball rolling, to the right", padding="max_length", truncation=True, max_length=12).input_ids
    assert ids == [2, 5, 6, 7, 8, 1, 11, 12, 13, 3, 0, 0]  # "," is not in the tiny vocabulary: [UNK]
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [len(WORDS), len(WORDS) + 1]


def test_official_layout_is_mapped_completely(files):
    scorer = _load(files)
    assert len(scorer.weights_sha256) == 16
    frames = render_clip("left_to_right", n_frames=3, size=(48, 40), seed=0)
    per_frame = scorer.frame_scores(frames, "a red ball rolling to the right")
    assert per_frame.shape == (3,) and np.isfinite(per_frame).all() and np.ptp(per_frame) > 0
    assert scorer.score(frames, "a red ball rolling to the right") == pytest.approx(per_frame.mean())
    # the prompt matters (cross-attending text encoder), and so do the vision weights
    assert scorer.score(frames, "a blue sky") != pytest.approx(per_frame.mean(), abs=1e-6)
    # known answer through the head: +d on the last bias moves every score by d / std
    sd = official_state()
    sd["mlp.layers.7.bias"] = sd["mlp.layers.7.bias"] + 0.5
    torch.save(sd, files / "shifted.pt")
    shifted = _load(files, "shifted.pt").frame_scores(frames, "a red ball rolling to the right")
    np.testing.assert_allclose(shifted - per_frame, 0.5 / REWARD_STD, rtol=1e-5)
    sd = official_state()
    sd["blip.visual_encoder.blocks.1.attn.proj.weight"] = sd["blip.visual_encoder.blocks.1.attn.proj.weight"] * 3
    torch.save(sd, files / "vision.pt")
    other = _load(files, "vision.pt").frame_scores(frames, "a red ball rolling to the right")
    assert np.abs(other - per_frame).max() > 1e-4


def test_bad_layouts_and_missing_files_name_the_config_key(files):
    sd = official_state()
    sd["blip.visual_encoder.blocks.0.attn.extra.weight"] = torch.zeros(2)
    with pytest.raises(KeyError, match="attn.extra"):
        map_official_state_dict(sd)
    torch.save(sd, files / "extra.pt")
    with pytest.raises(MetricUnavailable, match=r"metrics\.image_reward\.checkpoint .*extra\.pt"):
        _load(files, "extra.pt")
    sd = official_state()
    del sd["mlp.layers.4.weight"]
    torch.save(sd, files / "short.pt")
    with pytest.raises(MetricUnavailable, match=r"mlp\.4\.weight"):
        _load(files, "short.pt")
    torch.save({"net": MetricUnavailable("pickled object")}, files / "pickled.pt")  # never unpickled
    with pytest.raises(MetricUnavailable, match=r"pickled\.pt"):
        _load(files, "pickled.pt")
    with pytest.raises(MetricUnavailable, match=r"metrics\.image_reward\.checkpoint"):
        load_image_reward(files / "missing.pt", files / "med_config.json")
    with pytest.raises(MetricUnavailable, match=r"metrics\.image_reward\.med_config"):
        load_image_reward(files / "ImageReward.pt", None)
    with pytest.raises(MetricUnavailable, match=r"metrics\.image_reward\.tokenizer"):
        load_image_reward(files / "ImageReward.pt", files / "med_config.json", tokenizer=files / "nope")
    assert load_image_reward(None) is None


def test_image_reward_scores_a_video_through_the_metrics_stage(files, tmp_path):
    from test_metrics_stage import PROMPT, sample_rows

    cfg = {"clip": {"model": "ViT-B-32", "pretrained": "openai", "random_init_seed": 0},
           "tracker": "lk", "grid_size": 4,
           "image_reward": {"checkpoint": str(files / "ImageReward.pt"),
                            "med_config": str(files / "med_config.json"), "tokenizer": str(files / "vocab.txt")}}
    scorer, image_reward, tracker = load_scorers(cfg)
    clip = render_clip("left_to_right", n_frames=3, size=(64, 64), seed=0)
    out = evaluate_samples(sample_rows(tmp_path, {"identity": clip}), clip, scorer, tracker, 4,
                           image_reward=image_reward)
    assert out["image_reward"].notna().all()
    assert out.iloc[0]["image_reward"] == pytest.approx(image_reward.score(clip, PROMPT))
    assert out.iloc[0]["image_reward_weights_sha256"] == image_reward.weights_sha256
    assert make_tracker("lk").name == out.iloc[0]["tracker"]

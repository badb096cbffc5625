"""Tests for motionmatcher.metrics.clip_score and .image_reward (no weights needed)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from motionmatcher.metrics import MetricUnavailable
from motionmatcher.metrics.clip_score import (
    ClipScorer,
    clip_t_from_embeddings,
    frame_consistency_from_embeddings,
)
from motionmatcher.metrics.image_reward import load_image_reward

# ---------------------------------------------------------------- pure math


def test_clip_t_hand_made_embeddings():
    text = np.array([2.0, 0.0, 0.0])  # not unit norm on purpose
    frames = np.array([
        [1.0, 0.0, 0.0],   # cos 1
        [0.0, 5.0, 0.0],   # cos 0
        [1.0, 1.0, 0.0],   # cos 1/sqrt(2)
        [-2.0, 0.0, 0.0],  # cos -1
    ])
    expected = (1 + 0 + 2 ** -0.5 - 1) / 4
    assert clip_t_from_embeddings(frames, text) == pytest.approx(expected)
    assert clip_t_from_embeddings(torch.tensor(frames), torch.tensor(text)[None]) == pytest.approx(expected)
    with pytest.raises(ValueError):
        clip_t_from_embeddings(frames, np.stack([text, text]))


def test_frame_consistency_hand_made_embeddings():
    emb = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 3.0], [0.0, -1.0]])
    # consecutive cosines: 1/sqrt2, 1/sqrt2, -1
    assert frame_consistency_from_embeddings(emb) == pytest.approx((2 * 2 ** -0.5 - 1) / 3)
    assert frame_consistency_from_embeddings(np.ones((5, 4))) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        frame_consistency_from_embeddings(emb[:1])


# ---------------------------------------------------------------- random-init model


@pytest.fixture(scope="module")
def scorer() -> ClipScorer:
    return ClipScorer("ViT-B-32", pretrained="openai", random_init_seed=0, batch_size=3)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(4, 64, 80, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def frame_embeddings(scorer, frames) -> torch.Tensor:
    return scorer.image_embeddings(frames)  # batch_size=3: batches of 3 + 1


# OpenAI CLIP's normalisation (open_clip's OPENAI_DATASET_MEAN/STD), written out here
OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])


@pytest.fixture(scope="module")
def square() -> np.ndarray:
    """224² frames (resize and centre crop are identities), red strong, blue weak: RGB ≠ BGR."""
    rng = np.random.default_rng(1)
    f = rng.integers(0, 256, size=(3, 224, 224, 3)).astype(np.float64)
    f *= np.array([1.0, 0.6, 0.2])
    return f.astype(np.uint8)


def image_embeddings_by_hand(model, frames: np.ndarray) -> torch.Tensor:
    """x = (RGB/255 − mean)/std, channels first, through the model's image tower, L2-normalised."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = (x - OPENAI_MEAN[:, None, None]) / OPENAI_STD[:, None, None]
    with torch.no_grad():
        return torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1)


def text_embeddings_by_hand(model, texts) -> torch.Tensor:
    import open_clip

    with torch.no_grad():
        tokens = open_clip.get_tokenizer("ViT-B-32")(list(texts))
        return torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)


def test_frames_enter_clip_as_rgb_with_the_openai_normalisation(scorer, square):
    expected = image_embeddings_by_hand(scorer.model, square)
    torch.testing.assert_close(scorer.image_embeddings(square), expected, atol=1e-5, rtol=1e-5)
    # the channel order matters for these frames (a BGR pipeline is far from the RGB one)
    bgr = image_embeddings_by_hand(scorer.model, np.ascontiguousarray(square[..., ::-1]))
    assert float((bgr - expected).abs().max()) > 1e-2


def test_scores_are_the_formulas_on_embeddings_computed_by_hand(scorer, square):
    img = image_embeddings_by_hand(scorer.model, square)
    txt = text_embeddings_by_hand(scorer.model, ["a bear walking on rocks"])[0]
    scores = scorer.score(square, "a bear walking on rocks")
    # CLIP-T: mean over frames of cos(frame, prompt); frame consistency: mean cos of neighbours
    clip_t = sum(float(img[i] @ txt) for i in range(3)) / 3
    consistency = (float(img[0] @ img[1]) + float(img[1] @ img[2])) / 2
    assert scores["clip_t"] == pytest.approx(clip_t, abs=1e-5)
    assert scores["frame_consistency"] == pytest.approx(consistency, abs=1e-5)


def test_random_init_end_to_end(scorer, frames, frame_embeddings):
    img = frame_embeddings
    assert img.shape == (4, 512)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(4))
    txt = scorer.text_embeddings(["a bear walking on rocks", "a drone flyover"])
    assert txt.shape == (2, 512)
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(2))

    scores = scorer.score(frames, "a bear walking on rocks")
    assert set(scores) == {"clip_t", "frame_consistency"}
    for value in scores.values():
        assert np.isfinite(value) and -1.0 <= value <= 1.0
    # score() is exactly the math applied to this scorer's embeddings of these inputs
    assert scores["clip_t"] == pytest.approx(float((img @ txt[0]).mean()), abs=1e-5)
    assert scores["frame_consistency"] == pytest.approx(float((img[:-1] * img[1:]).sum(-1).mean()), abs=1e-5)
    assert scores["frame_consistency"] < 1.0 - 1e-4
    assert scorer.clip_t(frames[:2], "a drone flyover") == pytest.approx(float((img[:2] @ txt[1]).mean()), abs=1e-5)


def test_batching_and_frame_order(scorer, frames, frame_embeddings):
    # reversed order with batches of 3 + 1: every frame must keep its own embedding
    reversed_emb = scorer.image_embeddings(np.ascontiguousarray(frames[::-1]))
    torch.testing.assert_close(reversed_emb, frame_embeddings.flip(0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(frame_embeddings[0], frame_embeddings[1], atol=1e-3)


def test_identical_frames_are_perfectly_consistent(scorer, frames):
    still = np.repeat(frames[:1], 3, axis=0)
    assert scorer.frame_consistency(still) == pytest.approx(1.0, abs=1e-5)


def test_random_init_is_deterministic_and_matches_openai_arch(scorer):
    other = ClipScorer("ViT-B-32", pretrained="openai", random_init_seed=0)
    for (name, p_other), (_, p_ref) in zip(other.model.state_dict().items(), scorer.model.state_dict().items()):
        assert torch.equal(p_other, p_ref), name
    # OpenAI weights were trained with QuickGELU; the architecture must follow the tag
    act = scorer.model.visual.transformer.resblocks[0].mlp.gelu
    assert type(act).__name__ == "QuickGELU"


def test_score_uses_given_frames_and_prompt(scorer, frames, monkeypatch):
    # inject embeddings: frame embedding depends on its mean colour, text on the prompt
    calls = {}

    def fake_images(fr):
        calls["frames"] = fr
        return torch.stack([torch.tensor([1.0, float(f.mean() > 127), 0.0]) for f in fr])

    def fake_texts(texts):
        calls["texts"] = list(texts)
        return torch.tensor([[1.0, 0.0, 0.0]]) if texts == ["left"] else torch.tensor([[0.0, 1.0, 0.0]])

    monkeypatch.setattr(scorer, "image_embeddings", fake_images)
    monkeypatch.setattr(scorer, "text_embeddings", fake_texts)
    video = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    video[2:] = 255  # frames 0,1 -> (1,0,0); frames 2,3 -> (1,1,0)
    s = 2 ** -0.5
    out = scorer.score(video, "left")
    assert calls["texts"] == ["left"] and calls["frames"] is video
    assert out["clip_t"] == pytest.approx((1 + 1 + s + s) / 4)
    assert out["frame_consistency"] == pytest.approx((1 + s + 1) / 3)
    assert scorer.score(video, "right")["clip_t"] == pytest.approx((0 + 0 + s + s) / 4)


# ---------------------------------------------------------------- missing weights


def test_missing_pretrained_weights_explain_how_to_provide(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants as hf_constants

    before = hf_constants.HF_HUB_OFFLINE
    with pytest.raises(MetricUnavailable) as info:
        ClipScorer("ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=tmp_path)
    message = str(info.value)
    assert "metrics.clip.checkpoint" in message
    assert "create_model_and_transforms('ViT-B-32', pretrained='laion2b_s34b_b79k')" in message
    assert hf_constants.HF_HUB_OFFLINE == before  # offline patch is restored


def test_checkpoint_file_is_passed_to_open_clip(tmp_path, monkeypatch, scorer):
    # loading a real 600 MB state dict is checked by hand; here: the arguments open_clip receives
    import open_clip

    ckpt = tmp_path / "open_clip_pytorch_model.safetensors"
    ckpt.write_bytes(b"")
    seen = {}

    def fake_create(model_name, pretrained=None, **kwargs):
        seen.update(model_name=model_name, pretrained=pretrained, **kwargs)
        return scorer.model, None, scorer.preprocess

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    loaded = ClipScorer("ViT-B-32", pretrained="openai", checkpoint=ckpt)
    assert seen["model_name"] == "ViT-B-32" and seen["pretrained"] == str(ckpt)
    assert seen["force_quick_gelu"] is True  # openai weights need QuickGELU
    assert loaded.weights == f"checkpoint:{ckpt}"


def test_missing_checkpoint_file_names_the_path(tmp_path):
    missing = tmp_path / "open_clip_pytorch_model.bin"
    with pytest.raises(MetricUnavailable, match="open_clip_pytorch_model.bin"):
        ClipScorer(checkpoint=missing)


# ---------------------------------------------------------------- ImageReward


def test_image_reward_not_configured_is_none(caplog):
    with caplog.at_level("INFO", logger="motionmatcher.metrics.image_reward"):
        assert load_image_reward(None) is None
        assert load_image_reward("") is None
    assert "no checkpoint" in caplog.text


def test_image_reward_missing_checkpoint_raises(tmp_path):
    with pytest.raises(MetricUnavailable, match="nope.pt"):
        load_image_reward(tmp_path / "nope.pt")


def test_configured_image_reward_that_cannot_run_is_an_error(tmp_path):
    """A configured checkpoint never yields a silent null column: an unreadable file or a missing
    med_config raises, naming the config key (the old code returned None when the package was
    missing)."""
    ckpt = tmp_path / "ImageReward.pt"
    ckpt.write_bytes(b"")
    with pytest.raises(MetricUnavailable, match=r"metrics\.image_reward\.med_config"):
        load_image_reward(ckpt)
    med = tmp_path / "med_config.json"
    med.write_text("{}")
    with pytest.raises(MetricUnavailable, match=r"metrics\.image_reward\.checkpoint .*ImageReward\.pt"):
        load_image_reward(ckpt, med)

"""Shared fixtures: the embedded tiny model, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # tiny tensors: one thread is as fast and never oversubscribes

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = REPO.parent / "shared" / "reference_videos"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from motionmatcher.backbones.models import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture()
def tiny_model(tiny_model_dir):
    """A freshly loaded tiny model (function scope: tests may attach adapters to it)."""
    from motionmatcher.backbones.models import load_t2v_model

    return load_t2v_model(tiny_model_dir)


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    """The tiny model shared by a test module (tests deep-copy what they modify)."""
    from motionmatcher.backbones.models import load_t2v_model

    return load_t2v_model(tiny_model_dir)

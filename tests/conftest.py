"""Shared fixtures: a tiny randomly initialised Llama that uses the default drafter's tokenizer."""

import os
from pathlib import Path

import pytest
import torch

from tiny import build_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(ROOT / ".cache" / "hf"))
os.environ.setdefault("HYBRID_CACHE", str(ROOT / ".cache" / "hybrid"))


@pytest.fixture(scope="session")
def default_tokenizer():
    from transformers import AutoTokenizer

    from hybrid.models import DEFAULT_DRAFTER, resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(DEFAULT_DRAFTER))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_tokenizer):
    """A tiny random Llama saved as a Hugging Face folder with the default tokenizer (loadable by name)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = build_tiny_llama(len(default_tokenizer))
    model.generation_config.eos_token_id = default_tokenizer.eos_token_id
    model.config.eos_token_id = default_tokenizer.eos_token_id
    model.save_pretrained(folder)
    default_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny_model(tiny_model_dir):
    from hybrid.models import load_causal_lm

    return load_causal_lm(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_refiner_dir(tmp_path_factory, tiny_model_dir):
    """A tiny random refiner for the tiny model (LoRA B randomised so that it differs from the base)."""
    from hybrid.models import load_causal_lm
    from hybrid.refiner import Refiner

    model, _ = load_causal_lm(str(tiny_model_dir))
    refiner = Refiner.create(model, str(tiny_model_dir), lora_r=4, lora_alpha=8)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in refiner.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    folder = tmp_path_factory.mktemp("tiny-refiner") / "refiner"
    refiner.save(folder)
    return folder


@pytest.fixture()
def tiny_pipeline(tiny_model_dir, tiny_refiner_dir):
    from hybrid.pipeline import HybridPipeline

    return HybridPipeline.from_pretrained(draft_model=str(tiny_model_dir), refiner=str(tiny_refiner_dir))

"""Tiny randomly initialised models and recipe overrides that several test modules share."""

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "tiny.yaml"
PROMPT = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
PROMPT_MASK = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])


def tiny_overrides(model_dir, out, steps=4):
    return [f"model.base={model_dir}", f"train.output_dir={out}", f"train.steps={steps}", "train.save_every=2", "train.eval_every=100"]


def build_tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def make_refiner(vocab=100, seed=0, layers=0):
    """`layers`: bidirectional_layers (0 = all; 1 = only the top layer of the 2-layer tiny model)."""
    from hybrid.refiner import Refiner

    base = build_tiny_llama(vocab, seed=seed)
    refiner = Refiner.create(base, "tiny", lora_r=4, lora_alpha=8, bidirectional_layers=layers)
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # LoRA B starts at zero: give it values so the adapter matters in these tests
        for name, param in refiner.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
        refiner.mask_embedding.normal_(0, 0.5)
        if refiner.mask_marker is not None:
            refiner.mask_marker.normal_(0, 0.5)
    return base, refiner.eval()

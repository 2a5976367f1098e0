"""Linear layers on prepacked oneDNN weights: the same outputs as nn.Linear to float32 rounding, plain weights freed
where no other module shares them, inference only, and undone exactly."""

import pytest
import torch

from hybrid.drafting.packed_weights import can_pack, is_packed, pack_linears, unpack_linears

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


def test_packed_model_computes_what_the_plain_one_does(tiny_model):
    model, _ = tiny_model
    ids = torch.randint(0, 1000, (2, 9))
    plain = _logits(model, ids)
    weights = {name: p.clone() for name, p in model.named_parameters()}
    count = pack_linears(model)
    layers = model.config.num_hidden_layers
    assert count == 7 * layers + 1 and is_packed(model)  # q, k, v, o, gate, up, down in each layer, and the LM head
    packed = _logits(model, ids)
    assert torch.allclose(packed, plain, atol=1e-4, rtol=1e-4)
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, weights["model.layers.0.mlp.up_proj.weight"])
    assert model.model.layers[0].mlp.up_proj.weight.stride() == (0, 0)  # freed: a stand-in of the same shape
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied: kept
    assert unpack_linears(model) == count and not is_packed(model)
    for name, p in model.named_parameters():
        assert torch.equal(p, weights[name]), name
    assert torch.equal(_logits(model, ids), plain)


def test_a_packed_layer_refuses_training_and_bfloat16_is_left_alone(tiny_model):
    model, _ = tiny_model
    pack_linears(model)
    layer = model.model.layers[0].mlp.up_proj
    with pytest.raises(RuntimeError, match="inference only"):
        layer(torch.randn(1, layer.in_features, requires_grad=True))
    assert not can_pack(torch.nn.Linear(4, 4).to(torch.bfloat16))
    assert pack_linears(torch.nn.Linear(4, 4).to(torch.bfloat16)) == 0


def test_pipelines_pack_by_default_and_lora_stays_plain(tiny_model_dir, tiny_refiner_dir):
    from hybrid.pipeline import HybridPipeline

    packed = HybridPipeline.from_pretrained(draft_model=str(tiny_model_dir), refiner=str(tiny_refiner_dir))
    plain = HybridPipeline.from_pretrained(draft_model=str(tiny_model_dir), refiner=str(tiny_refiner_dir), pack_weights=False)
    assert is_packed(packed.drafter.model) and not is_packed(plain.drafter.model)
    lora = [m for name, m in packed.drafter.model.named_modules() if "lora_" in name and isinstance(m, torch.nn.Linear)]
    assert lora and not any(hasattr(m, "_packed_weight") for m in lora)
    a = packed("The history of Rome", max_new_tokens=12, refine_steps=2, seed=0)
    b = plain("The history of Rome", max_new_tokens=12, refine_steps=2, seed=0)
    assert a.draft_token_ids == b.draft_token_ids  # a random tiny model has no near-ties in 12 tokens


def test_an_untied_lm_head_keeps_its_plain_weight():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    head = model.lm_head.weight.clone()
    pack_linears(model)
    assert torch.equal(model.lm_head.weight, head)  # the refiner's shortlist scoring reads its rows
    assert model.model.layers[0].mlp.up_proj.weight.stride() == (0, 0)


def test_weights_written_in_place_after_a_mapped_load_survive_packing(tiny_model_dir):
    from hybrid.models import load_causal_lm

    model, _ = load_causal_lm(str(tiny_model_dir))  # transformers maps the safetensors file
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)  # e.g. other weights loaded into the model in place
    written = model.model.embed_tokens.weight.clone()
    pack_linears(model)  # hands back mapped pages of the tied embedding only where the file still holds them
    assert torch.equal(model.model.embed_tokens.weight, written)

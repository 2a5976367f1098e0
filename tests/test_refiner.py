"""The Refiner backbone: attention pattern, prefix cache, shared weights, save/load and refusals."""

import pytest
import torch

from conftest import build_tiny_llama
from hybrid.errors import HybridError
from hybrid.refiner import WEIGHTS_NAME, Refiner


def make_refiner(vocab=100, seed=0):
    base = build_tiny_llama(vocab, seed=seed)
    refiner = Refiner.create(base, "tiny", lora_r=4, lora_alpha=8)
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # LoRA B starts at zero: give it values so the adapter matters in these tests
        for name, param in refiner.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
        refiner.mask_embedding.normal_(0, 0.5)
    return base, refiner.eval()


PROMPT = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
PROMPT_MASK = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])


def canvas_for(refiner):
    m = refiner.mask_token_id
    return torch.tensor([[20, m, 22, 23], [30, 31, m, m]])


def test_prefix_cache_matches_full_forward():
    _, refiner = make_refiner()
    canvas = canvas_for(refiner)
    with torch.no_grad():
        full = refiner(PROMPT, PROMPT_MASK, canvas)
        state = refiner.encode_prompt(PROMPT, PROMPT_MASK)
        cached = refiner.canvas_logits(state, canvas)
        cached_again = refiner.canvas_logits(state, canvas)  # the cache must be back to the prompt only
    assert torch.allclose(full, cached, atol=1e-5)
    assert torch.equal(cached, cached_again)


def test_canvas_is_bidirectional_and_prompt_is_not_affected():
    _, refiner = make_refiner()
    canvas = canvas_for(refiner)
    changed = canvas.clone()
    changed[:, -1] = 50
    with torch.no_grad():
        before = refiner(PROMPT, PROMPT_MASK, canvas)
        after = refiner(PROMPT, PROMPT_MASK, changed)
    assert (before[:, 1] - after[:, 1]).abs().max() > 1e-4  # an early slot sees a later token
    assert torch.equal(before[:, 0], after[:, 0])  # slot 0 is predicted by the prompt's last position


def test_left_padding_does_not_change_logits():
    _, refiner = make_refiner()
    canvas = canvas_for(refiner)
    with torch.no_grad():
        padded = refiner(PROMPT, PROMPT_MASK, canvas)[:1]
        unpadded = refiner(PROMPT[:1, 2:], PROMPT_MASK[:1, 2:], canvas[:1])
    assert torch.allclose(padded, unpadded, atol=1e-5)


def test_adapter_disabled_is_the_plain_base_model():
    reference = build_tiny_llama(100, seed=0)
    base, refiner = make_refiner()
    with torch.no_grad():
        plain = reference(PROMPT).logits
        with refiner.adapter_disabled():
            shared = base(PROMPT).logits
        adapted = base(PROMPT).logits
    assert torch.allclose(plain, shared, atol=1e-5)
    assert not torch.allclose(plain, adapted, atol=1e-3)


def test_save_load_roundtrip(tmp_path):
    _, refiner = make_refiner()
    refiner.save(tmp_path / "r")
    loaded = Refiner.load(tmp_path / "r", build_tiny_llama(100, seed=0)).eval()
    canvas = canvas_for(refiner)
    with torch.no_grad():
        assert torch.allclose(refiner(PROMPT, PROMPT_MASK, canvas), loaded(PROMPT, PROMPT_MASK, canvas), atol=1e-5)


def test_save_replaces_existing_checkpoint(tmp_path):
    _, refiner = make_refiner()
    refiner.save(tmp_path / "r")
    refiner.save(tmp_path / "r")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_other_base_model_refused(tmp_path):
    _, refiner = make_refiner()
    refiner.save(tmp_path / "r")
    with pytest.raises(HybridError, match="trained for base model"):
        Refiner.load(tmp_path / "r", build_tiny_llama(100, seed=5))
    with pytest.raises(HybridError, match="trained for base model"):
        Refiner.load(tmp_path / "r", build_tiny_llama(120, seed=0))


def test_truncated_checkpoint_refused(tmp_path):
    _, refiner = make_refiner()
    refiner.save(tmp_path / "r")
    weights = tmp_path / "r" / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(HybridError, match="corrupt or truncated"):
        Refiner.load(tmp_path / "r", build_tiny_llama(100, seed=0))


def test_missing_or_broken_config_refused(tmp_path):
    with pytest.raises(HybridError, match="does not exist"):
        Refiner.load(tmp_path / "nowhere", build_tiny_llama(100))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HybridError, match="not a hybrid refiner"):
        Refiner.load(tmp_path / "empty", build_tiny_llama(100))
    _, refiner = make_refiner()
    refiner.save(tmp_path / "r")
    (tmp_path / "r" / "refiner_config.json").write_text("{ not json")
    with pytest.raises(HybridError, match="corrupt"):
        Refiner.load(tmp_path / "r", build_tiny_llama(100))


def test_needed_slots_get_the_same_logits():
    _, refiner = make_refiner()
    canvas = canvas_for(refiner)
    need = canvas == refiner.mask_token_id
    with torch.no_grad():
        state = refiner.encode_prompt(PROMPT, PROMPT_MASK)
        full = refiner.canvas_logits(state, canvas)
        partial = refiner.canvas_logits(state, canvas, need)
    assert torch.allclose(full[need], partial[need], atol=1e-5)
    assert torch.equal(partial[:, 0], full[:, 0])


def test_reused_canvas_cache_is_exact_when_the_canvas_did_not_change():
    _, refiner = make_refiner()
    refiner.cache_refresh = 4
    canvas = canvas_for(refiner)
    need = canvas == refiner.mask_token_id
    with torch.no_grad():
        state = refiner.encode_prompt(PROMPT, PROMPT_MASK)
        full = refiner.canvas_logits(state, canvas, need)
        assert state.canvas_keys is not None and state.passes_since_refresh == 1
        partial = refiner.canvas_logits(state, canvas, need)
        assert state.passes_since_refresh == 2
        assert state.cache.get_seq_length() == PROMPT.shape[1]
    assert torch.allclose(full[need], partial[need], atol=1e-5)


def test_reused_canvas_cache_refreshes_and_stays_close():
    _, refiner = make_refiner()
    canvas = canvas_for(refiner)
    need = canvas == refiner.mask_token_id
    changed = canvas.clone()
    changed[0, 0], changed[1, 0] = 40, 41  # a visible token changes: the reused entries are now stale
    with torch.no_grad():
        exact_state = refiner.encode_prompt(PROMPT, PROMPT_MASK)
        exact = refiner.canvas_logits(exact_state, changed, need)
        refiner.cache_refresh = 2
        state = refiner.encode_prompt(PROMPT, PROMPT_MASK)
        refiner.canvas_logits(state, canvas, need)
        stale = refiner.canvas_logits(state, changed, need)
        refreshed = refiner.canvas_logits(state, changed, need)  # the third pass is a full one again
    assert not torch.allclose(exact[need], stale[need], atol=1e-4)
    assert torch.allclose(exact[need], refreshed[need], atol=1e-5)

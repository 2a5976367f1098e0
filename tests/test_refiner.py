"""The Refiner backbone: attention pattern, prefix cache, shared weights, save/load and refusals."""

import pytest
import torch

from hybrid.errors import HybridError
from hybrid.refiner import WEIGHTS_NAME, Refiner
from tiny import PROMPT, PROMPT_MASK, build_tiny_llama, make_refiner


BOTH_MODES = pytest.mark.parametrize("layers", [0, 1], ids=["all-bidirectional", "top-layer-bidirectional"])


def canvas_for(refiner):
    m = refiner.mask_token_id
    return torch.tensor([[20, m, 22, 23], [30, 31, m, m]])


@pytest.mark.parametrize("both_ways", [True, False])
def test_cached_pass_masks_are_the_training_masks_canvas_rows(both_ways):
    """One builder serves the training pass (prompt and canvas as queries) and the cached passes (canvas queries only,
    in any order of cached keys): the prompt never sees the canvas, padding is never seen."""
    from hybrid.refiner.masks import attention_mask

    prompt_len, length = PROMPT.shape[1], 5
    slots = torch.arange(length)
    full = attention_mask(PROMPT_MASK, torch.arange(-prompt_len, length), slots, both_ways)
    assert full.shape == (2, 1, prompt_len + length, prompt_len + length)
    padding = torch.cat([~PROMPT_MASK.bool(), torch.zeros(2, length, dtype=torch.bool)], dim=1)
    assert not full[:, :, :prompt_len, prompt_len:].any() and not full.transpose(1, 3)[padding].any()
    assert bool(full[0, 0, prompt_len, -1]) == both_ways  # slot 0 sees the last slot only both ways
    assert torch.equal(attention_mask(PROMPT_MASK, slots, slots, both_ways), full[:, :, prompt_len:])
    reordered = torch.tensor([0, 2, 4, 1, 3])  # kept keys first, then the recomputed ones (the approximate cache)
    queries = torch.tensor([1, 3])
    cached = attention_mask(PROMPT_MASK, queries, reordered, both_ways)
    expected = full[:, :, prompt_len + queries][..., torch.cat([torch.arange(prompt_len), prompt_len + reordered])]
    assert torch.equal(cached, expected)


@BOTH_MODES
def test_prefix_cache_matches_full_forward(layers):
    _, refiner = make_refiner(layers=layers)
    canvas = canvas_for(refiner)
    with torch.no_grad():
        full = refiner(PROMPT, PROMPT_MASK, canvas).logits
        state = refiner.encode_prompt(PROMPT, PROMPT_MASK)
        cached = refiner.canvas_logits(state, canvas)
        cached_again = refiner.canvas_logits(state, canvas)  # the cache must be back to the prompt only
    assert torch.allclose(full, cached, atol=1e-5)
    assert torch.equal(cached, cached_again)


@BOTH_MODES
def test_canvas_is_bidirectional_and_prompt_is_not_affected(layers):
    _, refiner = make_refiner(layers=layers)
    canvas = canvas_for(refiner)
    changed = canvas.clone()
    changed[:, -1] = 50
    with torch.no_grad():
        before = refiner(PROMPT, PROMPT_MASK, canvas).logits
        after = refiner(PROMPT, PROMPT_MASK, changed).logits
    assert (before[:, 1] - after[:, 1]).abs().max() > 1e-4  # an early slot sees a later token
    assert torch.equal(before[:, 0], after[:, 0])  # slot 0 is predicted by the prompt's last position


@BOTH_MODES
def test_left_padding_does_not_change_logits(layers):
    _, refiner = make_refiner(layers=layers)
    canvas = canvas_for(refiner)
    with torch.no_grad():
        padded = refiner(PROMPT, PROMPT_MASK, canvas).logits[:1]
        unpadded = refiner(PROMPT[:1, 2:], PROMPT_MASK[:1, 2:], canvas[:1]).logits
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


@BOTH_MODES
def test_save_load_roundtrip(tmp_path, layers):
    _, refiner = make_refiner(layers=layers)
    refiner.save(tmp_path / "r")
    loaded = Refiner.load(tmp_path / "r", build_tiny_llama(100, seed=0)).eval()
    canvas = canvas_for(refiner)
    with torch.no_grad():
        assert torch.allclose(refiner(PROMPT, PROMPT_MASK, canvas).logits, loaded(PROMPT, PROMPT_MASK, canvas).logits, atol=1e-5)


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


@BOTH_MODES
def test_needed_slots_get_the_same_logits(layers):
    _, refiner = make_refiner(layers=layers)
    canvas = canvas_for(refiner)
    need = canvas == refiner.mask_token_id
    with torch.no_grad():
        state = refiner.encode_prompt(PROMPT, PROMPT_MASK)
        full = refiner.canvas_logits(state, canvas)
        partial = refiner.canvas_logits(state, canvas, need)
    assert torch.allclose(full[need], partial[need], atol=1e-5)
    assert torch.equal(partial[:, 0], full[:, 0])


@BOTH_MODES
@pytest.mark.parametrize("cache_refresh", [0, 4])
def test_needed_logits_are_the_needed_rows_of_the_canvas_logits(layers, cache_refresh):
    """The packed path returns exactly `canvas_logits(...)[need]`, slot 0 (the prompt's prediction) included, on a
    first pass and on the next one (which, with cache_refresh, recomputes only the needed positions)."""
    _, refiner = make_refiner(layers=layers)
    refiner.cache_refresh = cache_refresh
    canvas = canvas_for(refiner)
    need = canvas == refiner.mask_token_id
    need[0, 0] = need[1, 3] = True
    with torch.no_grad():
        state, packed_state = refiner.encode_prompt(PROMPT, PROMPT_MASK), refiner.encode_prompt(PROMPT, PROMPT_MASK)
        for _ in range(2):
            full = refiner.canvas_logits(state, canvas, need)
            packed = refiner.needed_logits(packed_state, canvas, need)
            # equal to float rounding: one head call over the packed rows, another over the canvas, may sum in another
            # order on some CPUs' kernels (bitwise equal on earlier build machines, not on this AMD EPYC one)
            assert packed.shape == (int(need.sum()), full.shape[-1]) and torch.allclose(packed, full[need], atol=1e-6, rtol=0)


@BOTH_MODES
def test_reused_canvas_cache_is_exact_when_the_canvas_did_not_change(layers):
    _, refiner = make_refiner(layers=layers)
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


@BOTH_MODES
def test_reused_canvas_cache_refreshes_and_stays_close(layers):
    _, refiner = make_refiner(layers=layers)
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


def _first_layer_outputs(refiner, canvas):
    captured = []
    layer = refiner.model.get_base_model().model.layers[0]
    handle = layer.register_forward_hook(lambda module, args, output: captured.append(output.detach().clone()))
    try:
        with torch.no_grad():
            refiner(PROMPT, PROMPT_MASK, canvas)
    finally:
        handle.remove()
    return captured[0]


@pytest.mark.parametrize("layers,lower_sees_future", [(0, True), (1, False)])
def test_lower_layers_stay_causal_when_only_the_top_is_bidirectional(layers, lower_sees_future):
    _, refiner = make_refiner(layers=layers)
    canvas = canvas_for(refiner)
    changed = canvas.clone()
    changed[:, -1] = 50
    before, after = _first_layer_outputs(refiner, canvas), _first_layer_outputs(refiner, changed)
    earlier = slice(PROMPT.shape[1], PROMPT.shape[1] + canvas.shape[1] - 1)  # canvas positions before the change
    moved = (before[:, earlier] - after[:, earlier]).abs().max() > 1e-5
    assert bool(moved) is lower_sees_future
    with torch.no_grad():  # the top layer still sees the whole canvas
        assert (refiner(PROMPT, PROMPT_MASK, canvas).logits[:, 1] - refiner(PROMPT, PROMPT_MASK, changed).logits[:, 1]).abs().max() > 1e-4


def test_partial_refiner_trains_only_the_top_layers():
    _, refiner = make_refiner(layers=1)
    trainable = [name for name, p in refiner.named_parameters() if p.requires_grad]
    assert "mask_marker" in trainable and "mask_embedding" not in trainable
    lora = [name for name in trainable if "lora_" in name]
    assert lora and all(".layers.1." in name for name in lora)
    assert set(refiner.trainable_state()) >= {"mask_marker", "mask_embedding"}


def test_partial_checkpoint_does_not_load_as_a_full_one(tmp_path):
    _, partial = make_refiner(layers=1)
    _, full = make_refiner(layers=0)
    with pytest.raises(HybridError, match="LoRA layout"):
        full.load_tensors(partial.trainable_state())


def test_a_refiner_loads_laid_out_anew(tmp_path):
    """Fewer bidirectional layers: the kept layers keep their LoRA, the others lose it and turn causal; more: the new
    layers start as the base layer (LoRA B zero). The mask embedding carries over, a marker appears where needed."""
    _, full = make_refiner(layers=0)
    full.save(tmp_path / "full")
    saved = full.trainable_state()
    narrow = Refiner.load(tmp_path / "full", build_tiny_llama(100, seed=0), bidirectional_layers=1).eval()
    assert narrow.config.bidirectional_layers == 1 and narrow.first_bidirectional == 1
    state = narrow.trainable_state()
    top = {k for k in saved if ".layers.1." in k}
    assert top and all(torch.equal(state[k], saved[k]) for k in top)
    assert not any(".layers.0." in k for k in state)
    assert torch.equal(state["mask_embedding"], saved["mask_embedding"]) and not state["mask_marker"].any()
    narrow.save(tmp_path / "narrow")
    wide = Refiner.load(tmp_path / "narrow", build_tiny_llama(100, seed=0), bidirectional_layers=0).eval()
    fresh = {k: v for k, v in wide.trainable_state().items() if ".layers.0." in k}
    assert fresh and all(not v.any() for k, v in fresh.items() if "lora_B" in k)
    assert wide.mask_marker is None
    # without the argument a refiner loads in its saved layout
    again = Refiner.load(tmp_path / "narrow", build_tiny_llama(100, seed=0)).eval()
    assert again.config.bidirectional_layers == 1 and torch.equal(again.trainable_state()["mask_marker"], state["mask_marker"])


def test_bidirectional_layers_beyond_the_model_refused():
    with pytest.raises(HybridError, match="bidirectional_layers"):
        Refiner.create(build_tiny_llama(100), "tiny", bidirectional_layers=3)


def test_a_saved_refiner_is_a_peft_adapter_naming_the_real_base(tiny_model, tmp_path):
    from peft import PeftConfig, PeftModel
    from safetensors.torch import load_file

    from hybrid.refiner import ADAPTER_WEIGHTS_NAME, WEIGHTS_NAME, Refiner

    model, _ = tiny_model
    refiner = Refiner.create(model, "smollm2-135m", lora_r=4, lora_alpha=8)
    refiner.save(tmp_path / "r")
    config = PeftConfig.from_pretrained(str(tmp_path / "r"))
    assert config.base_model_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct" and config.r == 4
    ours, lora = load_file(str(tmp_path / "r" / WEIGHTS_NAME)), load_file(str(tmp_path / "r" / ADAPTER_WEIGHTS_NAME))
    assert "mask_embedding" in ours and not any("lora" in k for k in ours) and all("lora" in k for k in lora)
    plain = build_tiny_llama(model.config.vocab_size)
    peft_model = PeftModel.from_pretrained(plain, str(tmp_path / "r"))  # peft reads the LoRA weights as its own
    assert sum("lora_A" in n for n, _ in peft_model.named_parameters()) == len([k for k in lora if "lora_A" in k])


def test_a_refiner_saved_before_the_peft_layout_still_loads(tiny_model, tmp_path):
    from safetensors.torch import save_file

    from hybrid.refiner import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, WEIGHTS_NAME, Refiner

    model, _ = tiny_model
    refiner = Refiner.create(model, "tiny", lora_r=4, lora_alpha=8)
    folder = tmp_path / "old"
    refiner.save(folder)
    save_file(refiner.trainable_state(), str(folder / WEIGHTS_NAME))  # the old layout: everything in one file
    (folder / ADAPTER_WEIGHTS_NAME).unlink()
    (folder / ADAPTER_CONFIG_NAME).unlink()
    again = Refiner.load(folder, model)
    assert all(torch.equal(a, b) for a, b in zip(again.trainable_state().values(), refiner.trainable_state().values()))


def test_push_to_hub_uploads_a_peft_folder_with_a_model_card(tiny_model, monkeypatch):
    import huggingface_hub
    import yaml

    from hybrid.refiner import Refiner

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=False, exist_ok=False):
            uploaded["repo"] = repo_id

        def upload_folder(self, repo_id, folder_path, commit_message):
            from pathlib import Path

            uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            uploaded["card"] = (Path(folder_path) / "README.md").read_text()
            return "https://huggingface.co/user/r/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model, _ = tiny_model
    url = Refiner.create(model, "smollm2-135m", lora_r=4, lora_alpha=8).push_to_hub("user/r")
    assert url.endswith("/commit/1") and uploaded["repo"] == "user/r"
    assert {"adapter_config.json", "adapter_model.safetensors", "refiner.safetensors", "refiner_config.json", "README.md"} <= set(uploaded["files"])
    meta = yaml.safe_load(uploaded["card"].split("---\n")[1])
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["library_name"] == "peft"


def test_a_hub_id_offline_is_one_clear_error(monkeypatch):
    from hybrid.refiner import resolve_refiner

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HybridError, match="could not give it"):
        resolve_refiner("nobody-here/no-such-refiner")


def test_from_pretrained_takes_a_shipped_name_or_a_folder(tiny_model, tmp_path):
    from hybrid.refiner import Refiner

    model, _ = tiny_model
    Refiner.create(model, "tiny", lora_r=4, lora_alpha=8).save(tmp_path / "r")
    assert Refiner.from_pretrained(str(tmp_path / "r"), model).mask_token_id == model.get_input_embeddings().weight.shape[0]


def test_the_four_layer_refiner_is_the_default_and_the_eight_layer_one_is_shipped_by_name():
    import json

    from hybrid.refiner.location import resolve_refiner

    folder = resolve_refiner(None)
    assert folder == resolve_refiner("general-4-layers") == resolve_refiner("default")
    config = json.loads((folder / "refiner_config.json").read_text())
    assert config["bidirectional_layers"] == 4 and config["detection_head"]
    general = json.loads((resolve_refiner("general") / "refiner_config.json").read_text())
    assert general["bidirectional_layers"] == 8

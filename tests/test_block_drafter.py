"""The block drafter (hybrid.drafting.block_drafter): its training view equals its drafting view, its proposals never
change the draft, it saves and loads, and its recipe trains and writes a model card, on tiny random models."""

import json
import random

import pytest
import torch
from click.testing import CliRunner

from hybrid.cli import cli
from hybrid.config import DraftConfig
from hybrid.drafting.block_drafter import BlockDrafter, BlockProposals
from hybrid.drafting.block_training import Sequence, anchor_batch, block_loss, teacher_forced
from hybrid.drafting.drafter import Drafter
from hybrid.errors import HybridError
from tiny import ROOT

RECIPE = str(ROOT / "recipes" / "block-drafter.yaml")


@pytest.fixture()
def drafter64(tiny_model):
    model, tokenizer = tiny_model
    return Drafter(model.to(torch.float64), tokenizer)


def _block_drafter(drafter, layers=1, block=4, seed=0, reads="entering", slot_embeddings=False, t0_layers=0, lora_rank=0):
    torch.manual_seed(seed)
    block_drafter = BlockDrafter.create(drafter.model, "tiny", layers=layers, block=block, reads=reads, slot_embeddings=slot_embeddings,
                                        t0_layers=t0_layers, lora_rank=lora_rank)
    with torch.no_grad():  # away from the identity map and the copied weights, so that a mix-up would show
        for p in block_drafter.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return block_drafter.eval()


@pytest.mark.parametrize("speculate", ["diffusion", "both"])
def test_block_drafter_proposals_never_change_the_draft(drafter64, speculate):
    drafter64.block_drafter = _block_drafter(drafter64)
    prompt = "one two three one two three one two three"
    settings = dict(max_new_tokens=24, ignore_eos=True, keep_distributions=True)
    if speculate == "diffusion":  # the whole block every pass, so that many proposals are checked
        source = BlockProposals(drafter64.block_drafter, min_probability=0.0)
        spec = drafter64.generate(prompt, DraftConfig(speculate="off", **settings), source=source)
        assert spec.token_ids.tolist() == drafter64.generate(prompt, DraftConfig(speculate="off", **settings)).token_ids.tolist()
        assert spec.speculation.proposed >= 20
    plain = drafter64.generate(prompt, DraftConfig(speculate="off", **settings))
    spec = drafter64.generate(prompt, DraftConfig(speculate=speculate, **settings))
    assert spec.token_ids.tolist() == plain.token_ids.tolist()
    assert torch.allclose(spec.distributions, plain.distributions, atol=1e-6)
    assert spec.speculation.source == speculate and (speculate == "diffusion" or spec.speculation.proposed > 0)


def test_the_gate_proposes_only_what_the_block_drafter_is_sure_of(drafter64):
    block_drafter = _block_drafter(drafter64)
    prompt = "one two three one two three one two three"
    config = DraftConfig(max_new_tokens=12, ignore_eos=True, speculate="off")
    sure = drafter64.generate(prompt, config, source=BlockProposals(block_drafter, min_probability=1.0))
    every = drafter64.generate(prompt, config, source=BlockProposals(block_drafter, min_probability=0.0))
    assert sure.speculation.proposed == 0 and sure.speculation.passes == 11  # nothing is that sure: plain passes
    assert every.speculation.proposed >= every.speculation.passes * 1 and every.token_ids.tolist() == sure.token_ids.tolist()


@pytest.mark.parametrize("reads, slot_embeddings, t0_layers, lora_rank", [("entering", False, 0, 0), ("final", False, 0, 0),
                                                                          ("both", False, 0, 0), ("entering", True, 0, 0),
                                                                          ("both", True, 1, 0), ("entering", False, 1, 2)])
def test_training_view_equals_drafting_view(drafter64, reads, slot_embeddings, t0_layers, lora_rank):
    """The logits a training batch computes for an anchor (keys, values and states cut from one pass over the whole
    sequence) equal those of the block drafter's pass in drafting (keys and values from the drafter's cache before the
    anchor, states from its latest pass), whichever states it reads, with one mask embedding or one per slot, with t0
    embedded or run through the drafter's first layer."""
    from transformers import DynamicCache

    from hybrid.drafting.block_sequences import with_states

    block_drafter = _block_drafter(drafter64, layers=2 - t0_layers, block=4, reads=reads, slot_embeddings=slot_embeddings,
                                   t0_layers=t0_layers, lora_rank=lora_rank)
    model = drafter64.model
    ids = torch.tensor([[5, 17, 42, 8, 99, 23, 7, 61, 12, 30]])
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=True).past_key_values
    states = []
    hook = model.model.layers[block_drafter.first].register_forward_pre_hook(lambda m, a, k: states.append(a[0] if a else k["hidden_states"]),
                                                                             with_kwargs=True)
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=True).past_key_values
    hook.remove()
    context = [(full.layers[i].keys[0, :, :-1], full.layers[i].values[0, :, :-1], states[0][0, :-1]) for i in range(block_drafter.first, 2)]
    sequence = with_states(drafter64, [Sequence(ids[0], 3, context)], final="final" in block_drafter.reads, lower=t0_layers,
                           progress=False)[0]
    assert sequence.states(block_drafter.reads).shape == (9, len(block_drafter.reads) * model.config.hidden_size)
    rng = random.Random(0)
    tokens, before, positions, targets, ctx, mask = anchor_batch([sequence], 1, 4, rng, block_drafter.reads, lower=t0_layers > 0)
    anchor = int(positions[0, 0])
    with torch.no_grad():
        trained = block_drafter(block_drafter.block_inputs(tokens, before).flatten(1, 2), positions, ctx, mask)[0]
        cache = DynamicCache(config=model.config)
        model(input_ids=ids[:, :anchor], use_cache=True, past_key_values=cache)  # as a verify pass leaves it
        drafted = block_drafter.propose(cache, int(ids[0, anchor]), anchor, 4)
    assert trained.argmax(-1).tolist() == drafted
    if t0_layers:  # t0 through the drafter's first layer, from its cache, as the whole pass read it there
        lifted = block_drafter.lifted(ids[:, anchor : anchor + 1], torch.tensor([[anchor]]), cache)[0, 0]
        assert torch.allclose(lifted, sequence.lower[anchor].to(lifted.dtype)) and cache.get_seq_length() == anchor
    with torch.no_grad():  # a shorter block reads the first slots' embeddings (slots see each other: other proposals)
        assert len(block_drafter.propose(cache, int(ids[0, anchor]), anchor, 2)) == 2
    assert [int(t) for t in targets[0] if t >= 0] == ids[0, anchor + 1 : anchor + 5].tolist()


def test_plain_text_targets_are_what_greedy_drafting_writes(drafter64):
    """Read once, a text gives each block slot the token greedy drafting writes there, as long as the text so far is
    what greedy drafting wrote; then no target. Its keys, values and states are the ones a self-distilled sequence
    holds."""
    model = drafter64.model
    with torch.no_grad():
        greedy = model.generate(input_ids=torch.tensor([[5, 17, 42, 8]]), max_new_tokens=12, do_sample=False, min_new_tokens=12,
                                pad_token_id=0)[0].tolist()
    on_path = teacher_forced(drafter64, [greedy], first_layer=1, start=3, progress=False)[0]
    assert on_path.greedy[3:-1].tolist() == greedy[4:]  # the drafter's choice after each position of its own text
    for anchor in range(3, 12):
        assert on_path.targets(anchor, 4).tolist() == greedy[anchor + 1 : anchor + 5]
    off = list(greedy)
    off[8] = (greedy[8] + 1) % 50  # the text leaves the greedy path at position 8
    left = teacher_forced(drafter64, [off], first_layer=1, start=3, progress=False)[0]
    assert left.targets(5, 4).tolist() == greedy[6:9] + [-100]  # 6, 7 and 8 (greedy's own token there), then nothing
    assert left.targets(8, 4).tolist()[0] == int(left.greedy[8])  # slot 0 always has its target
    with torch.no_grad():
        cache = model(input_ids=torch.tensor([greedy]), use_cache=True).past_key_values
    assert torch.allclose(on_path.context[-1][0].double(), cache.layers[1].keys[0, :, :-1])
    batch = anchor_batch([left, on_path], 3, 4, random.Random(0))
    assert batch[3].shape == (2, 12) and (batch[3] >= 0).any()


def test_a_training_step_lowers_the_loss(drafter64):
    block_drafter = _block_drafter(drafter64, layers=1, block=4).train()
    drafter64.model.requires_grad_(False)
    ids = torch.tensor([5, 17, 42, 8, 99, 23, 7, 61, 12, 30, 5, 17, 42, 8])
    states = []
    hook = drafter64.model.model.layers[1].register_forward_pre_hook(lambda m, a, k: states.append(a[0] if a else k["hidden_states"]),
                                                                     with_kwargs=True)
    with torch.no_grad():
        full = drafter64.model(input_ids=ids[None], use_cache=True).past_key_values
    hook.remove()
    sequence = Sequence(ids, 2, [(full.layers[1].keys[0, :, :-1], full.layers[1].values[0, :, :-1], states[0][0, :-1])])
    batch = anchor_batch([sequence], 6, 4, random.Random(0))
    optimizer = torch.optim.SGD(block_drafter.parameters(), lr=0.05)
    before, _ = block_loss(block_drafter, batch, 0.8)
    for _ in range(5):
        loss, _ = block_loss(block_drafter, batch, 0.8)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after, accuracy = block_loss(block_drafter, batch, 0.8)
    assert float(after) < float(before) and accuracy.shape == (4,)
    assert all(p.grad is None for p in drafter64.model.parameters())  # the drafter stays frozen


def test_a_shortlist_proposes_the_same_tokens_where_it_holds_them(drafter64, tmp_path):
    """A read-out over a shortlist proposes what the full read-out does when the shortlist holds those tokens, in any
    order; it saves its token ids, not the LM head's rows, and rebuilds them on load."""
    from safetensors.torch import load_file
    from transformers import DynamicCache

    block_drafter = _block_drafter(drafter64, layers=1, block=4)
    model, ids = drafter64.model, torch.tensor([[5, 17, 42, 8, 99, 23, 7, 61]])

    def proposals(bd):
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=ids[:, :6], use_cache=True, past_key_values=cache)
        return bd.propose(cache, int(ids[0, 6]), 6, 4)

    full = proposals(block_drafter)
    order = torch.randperm(model.config.vocab_size, generator=torch.Generator().manual_seed(0)).tolist()
    others = [t for t in order if t not in full]
    block_drafter.set_shortlist(torch.tensor(others[:10] + sorted(set(full))))
    assert proposals(block_drafter) == full
    block_drafter.save(tmp_path / "bd")
    loaded = BlockDrafter.load(tmp_path / "bd", model)
    assert loaded.config.shortlist == 10 + len(set(full)) and proposals(loaded) == full
    assert torch.equal(loaded.short_head.weight, block_drafter.short_head.weight)
    assert not any(name.startswith("short_head") for name in load_file(str(tmp_path / "bd" / "block_drafter.safetensors")))
    block_drafter.set_shortlist(torch.tensor(others[:10]))  # none of them: other tokens
    assert all(t in others[:10] for t in proposals(block_drafter))


def test_save_load_and_bad_folders(drafter64, tmp_path):
    block_drafter = _block_drafter(drafter64, reads="both", slot_embeddings=True)
    block_drafter.save(tmp_path / "bd")
    loaded = BlockDrafter.load(tmp_path / "bd", drafter64.model)
    assert loaded.reads == ("entering", "final") and loaded.mask_embedding.shape == (3, drafter64.model.config.hidden_size)
    for (name, a), (_, b) in zip(block_drafter.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(HybridError, match="is not a block drafter"):
        BlockDrafter.load(tmp_path, drafter64.model)
    (tmp_path / "bd" / "block_drafter_config.json").write_text("{not json")
    with pytest.raises(HybridError, match="cannot read the block drafter"):
        BlockDrafter.load(tmp_path / "bd", drafter64.model)


def test_with_lora_only_the_adapters_train_and_only_they_are_saved(drafter64, tmp_path):
    """LoRA'd copies: the copies keep the drafter's weights, frozen; a block drafter saves its adapters, input map and
    mask embedding, and loading rebuilds the frozen copies from the drafter, so it proposes what it did."""
    from safetensors.torch import load_file
    from transformers import DynamicCache

    block_drafter = _block_drafter(drafter64, lora_rank=2)  # noise on every weight, the frozen copies' too
    trainable = {name for name, p in block_drafter.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name.startswith(("in_map", "mask_embedding")) for name in trainable)
    assert any(name.startswith("in_map") for name in trainable)
    with torch.no_grad():  # the frozen copies back to the drafter's own weights, as a loaded one rebuilds them
        for name, p in block_drafter.named_parameters():
            if ".base_layer." in name:
                layer = name.split(".")[1]
                own = name.split(".", 2)[2].replace(".base_layer", "")
                p.copy_(drafter64.model.model.layers[block_drafter.first + int(layer)].get_parameter(own))
    block_drafter.save(tmp_path / "bd")
    stored = load_file(str(tmp_path / "bd" / "block_drafter.safetensors"))
    assert stored and not any(".base_layer." in name for name in stored) and any("lora_B" in name for name in stored)
    loaded = BlockDrafter.load(tmp_path / "bd", drafter64.model, merge=False)
    assert loaded.config.lora_rank == 2
    for name, value in block_drafter.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    merged = BlockDrafter.load(tmp_path / "bd", drafter64.model)  # LoRA folded into the copies: plain linear layers again
    assert merged.merged == 7 and not any("lora_" in name for name in merged.state_dict())
    model, ids = drafter64.model, torch.tensor([[5, 17, 42, 8, 99, 23, 7]])

    def proposals(bd):
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=ids[:, :6], use_cache=True, past_key_values=cache)
        return bd.propose(cache, int(ids[0, 6]), 6, 4)

    assert proposals(loaded) == proposals(block_drafter) == proposals(merged) and len(proposals(loaded)) == 4
    with pytest.raises(HybridError, match="load it with merge=False"):
        merged.save(tmp_path / "again")


def test_saved_in_bfloat16_it_loads_the_rounded_weights(drafter64, tmp_path):
    from safetensors.torch import load_file

    block_drafter = _block_drafter(drafter64)
    block_drafter.set_shortlist(torch.arange(40, 8, -1))
    block_drafter.save(tmp_path / "bd", dtype=torch.bfloat16)
    stored = load_file(str(tmp_path / "bd" / "block_drafter.safetensors"))
    assert stored["shortlist_ids"].dtype == torch.long and stored["shortlist_ids"].tolist() == list(range(40, 8, -1))
    assert all(t.dtype == torch.bfloat16 for k, t in stored.items() if k != "shortlist_ids")
    loaded = BlockDrafter.load(tmp_path / "bd", drafter64.model)
    assert loaded.mask_embedding.dtype == torch.float64  # cast to the drafter's dtype
    for name, value in block_drafter.state_dict().items():
        if name in stored:
            assert torch.equal(loaded.state_dict()[name], value.to(torch.bfloat16).to(value.dtype)), name
    assert not torch.equal(loaded.mask_embedding, block_drafter.mask_embedding)  # rounded, not the float64 weights


def test_a_block_drafter_loads_onto_a_packed_drafter(tiny_model, tmp_path):
    from hybrid.drafting.packed_weights import is_packed

    model, tokenizer = tiny_model
    plain = Drafter(model, tokenizer)
    _block_drafter(plain).save(tmp_path / "bd")
    reference = BlockDrafter.load(tmp_path / "bd", plain.model)
    plain.pack_weights()
    loaded = BlockDrafter.load(tmp_path / "bd", plain.model)  # its copies of the packed layers get plain weights back
    for (name, a), (_, b) in zip(reference.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    plain.block_drafter = loaded
    assert plain.pack_weights() > 0 and is_packed(loaded)
    draft = plain.generate("one two three one two three", DraftConfig(max_new_tokens=16, speculate="diffusion"))
    assert draft.token_ids[0].tolist() == plain.generate("one two three one two three", DraftConfig(max_new_tokens=16, speculate="off")).token_ids[0].tolist()


def test_diffusion_without_a_block_drafter_is_one_clear_error(drafter64):
    with pytest.raises(HybridError, match="needs a block drafter"):
        drafter64.generate("one two", DraftConfig(max_new_tokens=4, speculate="diffusion"))


def test_both_takes_lookup_where_it_matches_else_the_block_drafter(drafter64):
    from hybrid.drafting.proposals import EitherProposals, LookupProposals, Proposal

    class Block:
        def get_candidates(self, context, limit, cache=None):
            return Proposal([7] * limit)

    class Unsure:
        def get_candidates(self, context, limit, cache=None):
            return Proposal([])

    both = EitherProposals(LookupProposals(block=3), Block())
    assert both.get_candidates([1, 2, 3, 1, 2], 3).tokens == [3, 1, 2]  # the 2-gram "1 2" matched
    assert both.get_candidates([1, 2, 3, 4], 3).tokens == [7, 7, 7]
    chain = EitherProposals(LookupProposals(block=3), Unsure(), Block())  # a source that proposes nothing passes the turn on
    assert chain.get_candidates([1, 2, 3, 4], 3).tokens == [7, 7, 7] and isinstance(chain.last, Block)
    assert EitherProposals(Unsure()).get_candidates([1, 2], 3).tokens == []


@pytest.mark.parametrize("reads, t0_layers, lora_rank", [("entering", 0, 0), ("both", 1, 0), ("entering", 0, 2)])
def test_recipe_trains_and_writes_a_model_card(tiny_model_dir, tmp_path, reads, t0_layers, lora_rank):
    out = tmp_path / "bd"
    args = ["finetune", RECIPE, f"block_drafter.base={tiny_model_dir}", "block_drafter.prompts=4", f"block_drafter.reads={reads}",
            f"block_drafter.t0_layers={t0_layers}", f"block_drafter.lora_rank={lora_rank}",
            "block_drafter.max_new_tokens=8", "block_drafter.steps=2", "block_drafter.eval_every=1", "block_drafter.eval_prompts=1",
            "block_drafter.eval_tokens=6", "block_drafter.layers=1", "block_drafter.block=4", "block_drafter.text_tokens=96",
            "block_drafter.text_length=32", "block_drafter.shortlist=40", "--output", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [p["step"] for p in summary["learning_curve"]] == [0, 1, 2] and summary["distilled_tokens"] > 0
    assert summary["text_tokens"] == 3 * (32 - 16) and summary["text_windows"] == 3  # anchors after 16 tokens of context
    assert "| 2 |" in (out / "README.md").read_text() and "only the 40 tokens" in (out / "README.md").read_text()
    assert ("LoRA of rank 2" in (out / "README.md").read_text()) == (lora_rank == 2)
    assert len(summary["shortlisted_validation"]["kept_per_slot"]) == 4  # validated once more with the shortlist
    generated = CliRunner().invoke(cli, ["generate", "one two three", "--draft-model", str(tiny_model_dir), "--refine-steps", "0",
                                         "--max-new-tokens", "6", "--speculate", "diffusion", "--block-drafter", str(out), "--json"])
    assert generated.exit_code == 0, generated.output
    assert json.loads(generated.output)["speculation"]["source"] == "diffusion"
    prompts, results = tmp_path / "prompts.jsonl", tmp_path / "results.jsonl"  # a file of prompts, one at a time
    prompts.write_text('{"prompt": "one two three"}\n{"prompt": "four five"}\n')
    filed = CliRunner().invoke(cli, ["generate", "--input", str(prompts), "--output", str(results), "--batch-size", "1",
                                     "--draft-model", str(tiny_model_dir), "--refine-steps", "0", "--max-new-tokens", "6",
                                     "--speculate", "diffusion", "--block-drafter", str(out)])
    assert filed.exit_code == 0, filed.output
    assert [json.loads(line)["speculation"]["source"] for line in results.read_text().splitlines()] == ["diffusion"] * 2


def test_recipe_refuses_an_unknown_key():
    result = CliRunner().invoke(cli, ["finetune", RECIPE, "block_drafter.stepz=3"])
    assert result.exit_code == 2 and "unknown recipe key 'stepz'" in result.output
    result = CliRunner().invoke(cli, ["finetune", RECIPE, "block_drafter.reads=last"])
    assert result.exit_code == 2 and "block_drafter.reads must be one of entering, final, both" in result.output

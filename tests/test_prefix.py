"""The selector's shortcuts change no number: layers skipped below the hook, retain prompts a
cut cannot reach left unmeasured."""

import torch
from codecut.codebook import Ablation, attach
from codecut.probes.plan import Family, ablations_of
from codecut.probes.selector.attribution import probe_facts, relation_values
from codecut.probes.selector.cache import answer_targets
from codecut.probes.selector.config import SelectConfig
from codecut.probes.selector.prefix import Prefix, _entering, hook_layer
from codecut.probes.selector.search import _Search, select


def last_logits(model, prompts):
    batch = model.tokenize(prompts)
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"])
    return logits[torch.arange(len(prompts)), batch["last"]]


def test_hook_layer_names():
    assert hook_layer("blocks.11.hook_out") == 11
    assert hook_layer("blocks.3.hook_resid_post") == 3
    assert hook_layer("blocks.3.attn.hook_z") is None


def test_prefix_logits_are_the_full_forwards_with_a_cut_in_place(world, world_bottleneck):
    model, w = world
    prompts = [f.prompt for f in w.facts()[:12]] + ["A much longer prompt, padded less."]
    cut = Ablation(list(range(0, 1024, 7)), mode="clamp", c=8.0)
    with attach(model, world_bottleneck) as handle:
        prefix = Prefix(model, world_bottleneck.hook, prompts)
        assert prefix.layer == 2 and prefix.hidden is not None
        clean = last_logits(model, prompts)
        handle.ablations.append(cut)
        full = last_logits(model, prompts)
        with torch.no_grad():
            part = prefix.logits()
            rows = prefix.rows(torch.tensor([1, 12])).logits()
    assert (full - clean).abs().max() > 1.0  # the cut changes the logits: the check can fail
    torch.testing.assert_close(part, full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rows, full[[1, 12]], atol=1e-4, rtol=1e-4)


def test_the_prefix_runs_by_length_and_gives_the_one_batch_stream(world, world_bottleneck):
    """The stream entering the hook's layer, run by groups of similar length, is the one batch
    of every prompt's at each prompt's own positions (padding aside)."""
    model, w = world
    long = "Here is a long sentence, " * 6 + w.facts()[0].prompt
    prompts = [f.prompt for f in w.facts()[:6]] + [long]
    prefix = Prefix(model, world_bottleneck.hook, prompts)
    assert len(prefix.groups()) > 1  # the long prompt runs apart: the check can fail
    with torch.no_grad():
        one = _entering(model, prefix.layer, prefix.batch)
    for i, last in enumerate(prefix.batch["last"].tolist()):
        torch.testing.assert_close(prefix.hidden[i, : last + 1], one[i, : last + 1])


def test_a_trial_measures_what_a_full_measurement_does(world, world_bottleneck):
    """The retain accuracy of a trial, which re-runs only the prompts a cut reaches, equals the
    accuracy of every prompt it judges measured with the cut in place: for an unconditional
    cut, every retain prompt (paraphrases of other facts included)."""
    model, w = world
    facts = w.facts()
    fact, retain = facts[0], facts[1:40]
    forget = probe_facts([fact], relation_values(facts), fallback=[])
    keep = probe_facts(retain, relation_values(facts), fallback=[])
    with attach(model, world_bottleneck) as handle:
        late = torch.zeros(len(forget.prompts), dtype=torch.bool)  # no formats asked
        search = _Search(model, handle, fact, forget, late, keep, SelectConfig())
        judged = search.judged[False]
        codes = torch.topk(judged.fired.sum(0).float(), 6).indices.tolist()
        family = Family("clamp", 8.0, False)
        trial = search.trial(family, codes, ~late, [])
        handle.ablations[:] = ablations_of(family, codes, [])
        _, ok = search.model.answer_scores(keep.prompts, keep.answers)
        handle.ablations.clear()
    assert search.reached(family, codes, []).any()
    assert len(judged.ok) == len(keep.prompts) > len(retain)  # paraphrases too
    assert ok.float().mean().item() < judged.base  # the cut costs something
    assert trial.retain_accuracy == ok.float().mean().item()
    assert torch.equal(answer_targets(model, keep.answers), judged.targets)


def test_a_search_out_of_time_returns_an_unsuccessful_selection(world, world_bottleneck):
    """With no time left the selector says so (success False, no codes) instead of failing."""
    model, w = world
    facts = w.facts()
    selection = select(
        model, world_bottleneck, facts[0], facts[1:20], facts, SelectConfig(max_seconds=0.0)
    )
    assert not selection.success and selection.codes == [] and selection.ablations == []


def test_next_token_logprobs_unembed_each_prompts_last_position_only(world):
    """`unembed_last` hands the unembedding one position per row: the log-probabilities are
    the full forward's at each prompt's last position, whatever the padding, and in the
    prompts' order though they run by length (a long one in the middle, batches of 2)."""
    model, w = world
    plain = [f.prompt for f in w.facts()[:6]]
    prompts = plain[:3] + ["A much longer prompt, padded less than the others."] + plain[3:]
    full = last_logits(model, prompts).float().log_softmax(-1)
    torch.testing.assert_close(model.next_token_logprobs(prompts), full, atol=1e-5, rtol=1e-5)
    by_two = model.next_token_logprobs(prompts, batch_size=2)
    torch.testing.assert_close(by_two, full, atol=1e-5, rtol=1e-5)

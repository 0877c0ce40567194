"""Cuts in two bottlenecks at different layers: where the first cannot remove a fact, the
second searches with the first's cut in place; one plan holds both, applies and saves both."""

import time
from dataclasses import replace

import pytest
import torch
from codecut.codebook import load_bottleneck
from codecut.probes.evaluate import fact_accuracy, summary
from codecut.probes.plan import Cut
from codecut.probes.selector import unlearn as unlearn_module
from codecut.probes.selector.cache import RetainCache
from codecut.probes.selector.retain import default_retain

from codecut import apply, evaluate, load_plan, unlearn
from codecut.core.errors import BadInput

LATER = "blocks.3.hook_out"


@pytest.fixture(scope="module")
def target(world):
    """The fact test_unlearn forgets in seed 0 (the first colour the model answers on every
    template, from the fourth subject on), with the world's facts as the pool."""
    model, w = world
    facts = w.facts("all")
    colours = {f.subject: f for f in facts if f.relation == "color"}
    fact = next(colours[s] for s in w.subjects[3:] if fact_accuracy(model, [colours[s]]) == 1)
    return fact, facts


def hooked(model) -> set[str]:
    """The hook points with a hook on them (a point's aliases, e.g. hook_resid_post, aside)."""
    points = {id(p) for p in model.hook_dict.values() if p._forward_hooks}
    return {name for name, p in model.hook_dict.items() if id(p) in points and "hook_out" in name}


def test_a_fact_the_first_bottleneck_removes_needs_no_later_cut(
    world, world_bottleneck, later_bottleneck, target
):
    model, _ = world
    fact, facts = target
    alone = unlearn(model, world_bottleneck, [fact], pool=facts)
    both = unlearn(model, [world_bottleneck, later_bottleneck], [fact], pool=facts)
    assert alone.results.facts[0].selection.success
    assert both.later == [] and both.results.facts[0].later == {}
    assert both.ablations == alone.ablations


def test_when_no_bottleneck_removes_it_the_error_gives_each_ones_reason(
    world, world_bottleneck, later_bottleneck, target, monkeypatch
):
    model, _ = world
    fact, facts = target
    real = unlearn_module.select

    def neither(model, bottleneck, *args, **kwargs):
        if bottleneck is world_bottleneck:
            raise BadInput("no code could be cut (as if)")
        return replace(real(model, bottleneck, *args, **kwargs), success=False)

    monkeypatch.setattr(unlearn_module, "select", neither)
    with pytest.raises(BadInput) as e:
        unlearn(model, [world_bottleneck, later_bottleneck], [fact], pool=facts)
    first, later = str(e.value).split("; ")
    assert first == "blocks.2.hook_out: no code could be cut (as if)"
    assert later.startswith(f"{LATER}: its best cut (") and later.endswith("left the answer")


def test_the_second_bottleneck_removes_what_the_first_cannot(
    world, world_bottleneck, later_bottleneck, target, monkeypatch, tmp_path
):
    model, _ = world
    fact, facts = target
    real = unlearn_module.select

    def first_cannot(model, bottleneck, *args, **kwargs):
        if bottleneck is world_bottleneck:
            raise BadInput("no code could be cut (as if)")
        return real(model, bottleneck, *args, **kwargs)

    monkeypatch.setattr(unlearn_module, "select", first_cannot)
    weights = {k: v.clone() for k, v in model.hf.state_dict().items()}
    plan = unlearn(model, [world_bottleneck, later_bottleneck], [fact], pool=facts)
    assert plan.ablations == [] and [c.hook for c in plan.later] == [LATER]
    result = plan.results.facts[0]
    assert not result.selection.codes and result.last is result.later[LATER]
    assert result.last.success and not result.after.correct
    before, after = plan.results.retain
    assert after["accuracy"] >= before["accuracy"] - 0.05, (before, after)
    # measured again only where a cut reaches, as measuring every retain prompt gives
    full = summary(evaluate(model, default_retain(model, [fact], facts), plan=plan))
    assert (after["accuracy"], after["paraphrase_accuracy"]) == (
        full["accuracy"],
        full["paraphrase_accuracy"],
    )
    assert hooked(model) == set()
    with apply(model, plan):
        assert hooked(model) == {"blocks.2.hook_out", LATER}
        assert fact_accuracy(model, [fact]) == 0
    assert hooked(model) == set()
    assert all(torch.equal(v, weights[k]) for k, v in model.hf.state_dict().items())
    # Saved beside its later bottleneck, the plan loads it from there and acts the same.
    later_bottleneck.save(tmp_path / "bn3")
    plan.later[0].bottleneck = load_bottleneck(tmp_path / "bn3")
    plan.later[0].bottleneck_source = str(tmp_path / "bn3")
    plan.save(tmp_path / "plan.json")
    again = load_plan(tmp_path / "plan.json")
    assert again.later[0].bottleneck_source == str(tmp_path / "bn3")
    assert again.results.facts[0].later[LATER] == result.later[LATER]
    with apply(model, again, bottleneck=world_bottleneck):
        assert fact_accuracy(model, [fact]) == 0


def test_a_later_cut_for_another_bottleneck_leaves_no_hook(
    world, world_bottleneck, later_bottleneck
):
    model, w = world
    plan = unlearn_module.UnlearnPlan(
        world_bottleneck.content_hash, "", world_bottleneck.hook, [], w.facts()[:1],
        bottleneck=world_bottleneck,
    )  # fmt: skip
    plan.later = [Cut("0" * 16, "", LATER, [], later_bottleneck)]
    with pytest.raises(BadInput, match="made for bottleneck 0000000000000000"):
        apply(model, plan)
    assert hooked(model) == set()


def test_one_bottleneck_per_hook(world, world_bottleneck, target):
    model, _ = world
    fact, facts = target
    with pytest.raises(BadInput, match="one bottleneck per hook"):
        unlearn(model, [world_bottleneck, world_bottleneck], [fact], pool=facts)


def test_the_later_retain_prompts_are_measured_as_time_allows(world, later_bottleneck, target):
    """Within a time budget a later search starts only with its retain prompts measured; they
    are measured a chunk at a time until the deadline, and kept (the next request finds them)."""
    model, _ = world
    fact, facts = target
    keys = [(f.prompt, f.answer) for f in facts if f.subject != fact.subject][:40]
    cache = RetainCache()
    unlearn_module._measure_as_time_allows(model, later_bottleneck, cache, keys, 0.0)
    assert cache.missing(keys) == keys  # past the deadline: nothing measured
    unlearn_module._measure_as_time_allows(
        model, later_bottleneck, cache, keys, time.monotonic() + 600
    )
    assert cache.missing(keys) == []
    assert hooked(model) == set()

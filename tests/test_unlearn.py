"""Zero-shot unlearning on the synthetic world: one association goes, its neighbours stay."""

from types import SimpleNamespace

import pytest
import torch
from codecut.probes.evaluate import fact_accuracy, summary
from codecut.probes.selector.config import FORMATS, SHOTS, SelectConfig
from codecut.probes.selector.retain import default_retain, in_formats
from codecut.probes.selector.search import _forget_probe, _Search

from codecut import Fact, apply, evaluate, load_plan, unlearn
from codecut.core.errors import BadInput

# The unlearning properties must hold for any reasonable training run, not one lucky seed: each
# committed world has other names, other facts and its own bottleneck. The selector over many
# freshly trained worlds is a benchmark (benchmarks/worlds.py), not a unit test.
WORLDS = ["world-0", "world-1", "world-2"]


@pytest.fixture(scope="module", params=WORLDS)
def forgotten(request, world_fixtures):
    """Forget one subject's favourite colour, the world's facts with all their templates as the
    pool. The subject: the first, from the fourth by name on (Findar in seed 0), whose colour
    the world model answers on every template, as the checks below need."""
    model, w, bottlenecks = world_fixtures(request.param)
    bn = bottlenecks["blocks.2.hook_out"]
    facts = w.facts("all")
    colours = {f.subject: f for f in facts if f.relation == "color"}
    target = next(colours[s] for s in w.subjects[3:] if fact_accuracy(model, [colours[s]]) == 1)
    weights = {k: v.clone() for k, v in model.hf.state_dict().items()}
    plan = unlearn(model, bn, [target], pool=facts)
    return model, facts, target, plan, weights


def test_forgets_the_association_and_keeps_its_neighbours(forgotten):
    model, facts, target, plan, _ = forgotten
    same_subject = [f for f in facts if f.subject == target.subject and f is not target]
    same_relation = [f for f in facts if f.relation == target.relation and f is not target]
    before = [fact_accuracy(model, fs) for fs in ([target], same_subject, same_relation)]
    with apply(model, plan):
        after = [fact_accuracy(model, fs) for fs in ([target], same_subject, same_relation)]
    assert before[0] >= 0.95
    assert after[0] <= 0.05, after
    assert after[1] >= 0.95 * before[1], (before, after)
    assert after[2] >= 0.95 * before[2], (before, after)
    report = plan.results.facts[0]
    assert report.selection.success and not report.after.correct
    assert plan.ablations and all(a.when for a in plan.ablations)  # a conditional cut


def test_weights_untouched_and_saved_plan_acts_the_same(forgotten, tmp_path):
    model, _, target, plan, weights = forgotten
    assert all(torch.equal(v, weights[k]) for k, v in model.hf.state_dict().items())
    table = evaluate(model, [target], plan=plan)
    assert not table["correct"].any() and table["paraphrase_accuracy"].iloc[0] == 0
    plan.save(tmp_path / "plan.json")
    again = load_plan(tmp_path / "plan.json")
    with apply(model, again, bottleneck=plan.bottleneck):
        p_loaded, _ = model.answer_scores(target.prompts, [target.answer] * len(target.prompts))
    with apply(model, plan):
        p_made, _ = model.answer_scores(target.prompts, [target.answer] * len(target.prompts))
    assert torch.equal(p_loaded, p_made)


def test_results_are_what_measuring_every_retain_prompt_gives(forgotten):
    """The plan's results take the retain prompts' clean answers from the search and measure
    again only those a cut can reach: the same as measuring every prompt with the plan."""
    model, facts, target, plan, _ = forgotten
    full = summary(evaluate(model, default_retain(model, [target], facts), plan=plan))
    before, after = plan.results.retain
    assert after["n_facts"] == full["n_facts"] and after["n_paraphrases"] == full["n_paraphrases"]
    assert after["accuracy"] == full["accuracy"]
    assert after["paraphrase_accuracy"] == full["paraphrase_accuracy"]
    assert before["accuracy"] == full["accuracy_before"]
    assert after["mean_p_answer"] == pytest.approx(full["mean_p_answer"], abs=1e-4)


def test_results_keep_the_neighbours_in_the_formats_as_measuring_them_gives(forgotten, tmp_path):
    """The plan's results also hold the other subjects' retain facts asked in the selector's
    formats (as the search asks them, `in_formats`), before and after the plan: what measuring
    every such prompt with the plan gives; the plan file keeps them."""
    model, facts, target, plan, _ = forgotten
    retain = default_retain(model, [target], facts)
    asked = in_formats(model, target, retain, facts, FORMATS, SHOTS)
    full = summary(evaluate(model, asked, plan=plan))
    before, after = plan.results.formats
    assert after["n_facts"] == len(asked) > 0
    assert after["accuracy"] == full["accuracy"] and before["accuracy"] == full["accuracy_before"]
    plan.save(tmp_path / "plan.json")
    assert load_plan(tmp_path / "plan.json").results.formats == plan.results.formats


def test_bad_input(world, world_bottleneck):
    model, w = world
    with pytest.raises(ValueError, match="forget set is empty"):
        unlearn(model, world_bottleneck, [])
    with pytest.raises(TypeError, match="codecut.Fact"):
        unlearn(model, world_bottleneck, [{"prompt": "Darfin lives in the city of"}])
    fact = w.facts()[0]
    wrong = next(v for v in w.relations[fact.relation][0] if v != fact.answer)
    unknown = Fact(fact.subject, fact.relation, fact.prompt, wrong)
    with pytest.raises(ValueError, match="does not know"):
        unlearn(model, world_bottleneck, [unknown], pool=w.facts())


def test_a_request_beyond_the_budget_says_what_stops_it(world_fixtures):
    """Seed 0's world as another processor trained it: Findar's colour (teal, shared by 9 of 24
    subjects) rides on codes that every other teal subject needs too. Condition sets that mark
    Findar apart are found (16 unrelated facts per relation in the default retain set; with 4,
    none was), but no code tried, under them or without them, moves the answer: the error
    says so, and what to try."""
    model, w, bottlenecks = world_fixtures("world-0-other-cpu")
    facts = w.facts("all")
    target = next(f for f in facts if f.subject == "Findar" and f.relation == "color")
    with pytest.raises(BadInput, match=r"within the retain budget \(0.02\): no code it tried") as e:
        unlearn(model, bottlenecks["blocks.2.hook_out"], [target], pool=facts)
    assert "moves the answer; try a bottleneck at another layer" in str(e.value)
    # With no room for a condition set (condition_rate 0), the error says that too.
    with pytest.raises(BadInput, match=r"within the retain budget \(0.02\): no condition set") as e:
        unlearn(
            model, bottlenecks["blocks.2.hook_out"], [target], pool=facts,
            config=SelectConfig(condition_rate=0.0),
        )  # fmt: skip
    assert "condition_rate" in str(e.value) and "another layer" in str(e.value)


def test_a_relation_and_subject_the_pool_does_not_hold(world, world_bottleneck):
    """Nothing in the pool shares the fact's subject or relation: the wrong answers come from
    the model itself, the default retain set holds the pool's unrelated facts (an empty one
    crashed with an IndexError), and the fact is forgotten."""
    model, w = world
    facts = w.facts()
    target = next(f for f in facts if f.subject == w.subjects[3] and f.relation == "color")
    others = [f for f in facts if f.relation != "color" and f.subject != target.subject][:24]
    plan = unlearn(model, world_bottleneck, [target], pool=[target, *others])
    assert plan.results.retain.before["n_facts"] > 0
    assert plan.results.facts[0].selection.success and not plan.results.facts[0].after.correct


def test_the_formats_asked_lose_the_answer_too(world, world_bottleneck):
    """By default the selector asks `FORMATS` too (the fact's prompts in those formats, where
    the clean model answers them), once the fact's prompts and paraphrases have lost the answer.
    A selection that says `formats_lost` has taken it from every one of them; one that succeeds
    without it kept its first stage's cut. Of the first three colour facts a plan is made for,
    one takes the formats (the world's colours are hard: most requests fail)."""
    model, w = world
    facts = w.facts("all")
    colours = [f for f in facts if f.relation == "color" and f.subject in w.subjects[3:]]
    made = []
    for target in colours:
        try:
            plan = unlearn(model, world_bottleneck, [target], pool=facts)
        except BadInput:  # no code within the retain budget
            continue
        probe, late = _forget_probe(model, target, facts, FORMATS)
        formats = [p for p, x in zip(probe.prompts, late.tolist()) if x]
        assert formats and all(p in probe.prompts for p in target.prompts)
        _, clean = model.answer_scores(formats, [target.answer] * len(formats))
        formats = [p for p, ok in zip(formats, clean.tolist()) if ok]  # those the search asks
        with apply(model, plan):
            _, still = model.answer_scores(formats, [target.answer] * len(formats))
        selection = plan.results.facts[0].selection
        assert selection.success or not selection.formats_lost
        made.append((selection.formats_lost, bool(still.any())))
        if len(made) == 3:
            break
    assert all(not still for lost, still in made if lost)
    assert any(lost for lost, _ in made), made


def test_the_refusal_names_the_budget_its_cheapest_code_needs():
    """Where every code that moved the answer cost too much, the error gives the cheapest one's
    cost rounded up to a budget the user can pass, or says it took the subject's other facts.
    (A search on the worlds reaches this rarely: with no budget at all and no condition sets,
    the first six colours of seed 0 still find a costless cut.)"""
    fact = Fact("Findar", "color", "Findar's favourite colour is", "teal")
    search = SimpleNamespace(config=SelectConfig(), cheapest=(False, 0.041, 17), conditions=[[3]])
    text = _Search.refusal(search, fact)
    assert "within the retain budget (0.02)" in text and "(code 17) alone costs 0.041" in text
    assert "raise the budget to 0.05 or more" in text and "--retain-budget" in text
    search.cheapest = (True, 0.0, 9)
    assert "the cheapest: code 9) also takes the answer of another fact about its subject" in (
        _Search.refusal(search, fact)
    )

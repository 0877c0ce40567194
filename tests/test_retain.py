"""The default retain set and the forget probe's formats, on the synthetic world."""

from collections import Counter

import pytest
import torch
from codecut.codebook import attach
from codecut.probes.formats import variant_prompts
from codecut.probes.selector.attribution import Probe, probe_facts, relation_values
from codecut.probes.selector.cache import Judged, RetainCache, relation_index
from codecut.probes.selector.config import ALL_FORMATS, FAMILIES, FORMATS, SHOTS, SelectConfig
from codecut.probes.selector.retain import UNRELATED_PER_RELATION, default_retain, in_formats
from codecut.probes.selector.search import _forget_probe, _holds, _Search
from codecut.probes.selector.unlearn import _default_retain_by_subject


def findar(w):
    facts = w.facts("all")
    return facts, next(f for f in facts if f.subject == w.subjects[3] and f.relation == "color")


def known(model, facts):
    _, ok = model.answer_scores([f.prompt for f in facts], [f.answer for f in facts])
    return [f for f, k in zip(facts, ok.tolist()) if k]


def test_near_facts_and_a_few_unrelated_ones(world):
    model, w = world
    facts, target = findar(w)
    retain = default_retain(model, [target], facts)
    others = [f for f in facts if f is not target]
    near = [f for f in known(model, others) if target.subject == f.subject or f.relation == "color"]
    assert near and all(f in retain for f in near)
    assert all(f is not target for f in retain) and known(model, retain) == retain
    unrelated = Counter(f.relation for f in retain if f not in near)
    assert unrelated == _unrelated(model, others, target)
    assert set(unrelated) == {r for r in w.relations if r != "color"}


def _unrelated(model, facts, target) -> Counter:
    """Per relation but the target's, how many facts of other subjects the default retain set
    holds: UNRELATED_PER_RELATION, or all the model knows where it knows fewer."""
    counts = Counter(
        f.relation
        for f in known(model, facts)
        if f.relation != target.relation and f.subject != target.subject
    )
    return Counter({r: min(n, UNRELATED_PER_RELATION) for r, n in counts.items()})


def test_a_relation_and_subject_the_pool_does_not_hold(world):
    """Nothing near: the pool's unrelated facts guard the cut (the world model knows none of
    the shipped English example facts, so they add nothing here)."""
    model, w = world
    facts, target = findar(w)
    others = [f for f in facts if f.relation != "color" and f.subject != target.subject]
    retain = default_retain(model, [target], [target, *others])
    assert retain and all(f in others for f in retain) and known(model, retain) == retain
    assert Counter(f.relation for f in retain) == _unrelated(model, others, target)
    assert set(Counter(f.relation for f in retain)) == {r for r in w.relations if r != "color"}


def test_a_joint_request_checks_each_subject_against_the_others_forget_facts(world):
    """One plan of many facts: a subject's cuts are checked against the neighbours of every
    forget fact and against the other subjects' forget facts too (as their single plans
    would be), never against its own; so no cut may take a whole relation because the
    relation's other facts are to be forgotten as well."""
    model, w = world
    facts = w.facts("all")
    colours = known(model, [f for f in facts if f.relation == "color"])
    first = [f for f in facts if f.subject == colours[0].subject and f.relation != "color"]
    forget = colours[:3] + known(model, first)[:1]
    by_subject = _default_retain_by_subject(model, forget, facts)
    everyone = default_retain(model, forget, facts)
    assert list(by_subject) == list(dict.fromkeys(f.subject for f in forget))
    for subject, retain in by_subject.items():
        keys = {(f.subject, f.relation) for f in retain}
        mine = {(f.subject, f.relation) for f in forget if f.subject == subject}
        relations = {r for _, r in mine}
        theirs = {(f.subject, f.relation) for f in forget if f.subject != subject}
        theirs = {(s, r) for s, r in theirs if r in relations}  # near: of its relations
        assert theirs  # the other subjects' colours
        assert not keys & mine and theirs <= keys
        assert {(f.subject, f.relation) for f in everyone} <= keys


def test_nothing_known_is_an_error(world):
    model, w = world
    _, target = findar(w)
    with pytest.raises(ValueError, match="no retain set could be built"):
        default_retain(model, [target], [])


def test_the_neighbours_are_asked_in_the_formats_too(world):
    """Other subjects' retain facts in the forget probe's formats, where a condition set must
    not hold: never about the forget subject, never showing it (as a shot or a context
    sentence), never a prompt the retain set asks already; the few-shot form of each
    neighbour of the same relation among them, as the attack card asks it."""
    model, w = world
    facts, target = findar(w)
    retain = default_retain(model, [target], facts)
    asked = in_formats(model, target, retain, facts, FORMATS, SHOTS)
    assert all(f.subject != target.subject and target.subject not in f.prompt for f in asked)
    assert not {p for f in retain for p in f.prompts} & {f.prompt for f in asked}
    others = [f for f in retain if f.subject != target.subject]
    assert {(f.subject, f.relation) for f in asked} <= {(f.subject, f.relation) for f in others}
    shown = [g for g in facts if g.subject != target.subject]
    few_shot = {
        variant_prompts(model, f, [g for g in shown if g is not f], "few-shot", SHOTS)[0]
        for f in others
        if f.relation == target.relation
    }
    assert few_shot and few_shot <= {f.prompt for f in asked}


def test_forget_probe_asks_the_facts_prompts_in_the_formats_the_model_answers(
    world, world_bottleneck
):
    """The attack card's formats of each of the fact's prompts join the must-lose prompts,
    marked for the search's second stage, which asks those the clean model answers; generated
    paraphrases stay outside (within the search's slack)."""
    model, w = world
    facts, target = findar(w)
    probe, late = _forget_probe(model, target, facts, formats=ALL_FORMATS)
    must = [p for p, m in zip(probe.prompts, probe.main.tolist()) if m]
    formats = [p for p in must if p not in target.prompts]
    assert must[: len(target.prompts)] == target.prompts
    assert formats == [p for p, x in zip(probe.prompts, late.tolist()) if x]
    others = [f for f in facts if f is not target]
    few_shot = variant_prompts(model, target, others, "few-shot", 3)
    assert few_shot[0] in formats  # the world model answers the main prompt after other facts
    assert all(any(p.endswith(q) for q in target.prompts) for p in formats)
    # The search asks those the model answers, the others not at all: one it cannot answer
    # added to them goes, and nothing else does.
    unanswerable = "the weather today is"
    extended = Probe(
        [*probe.prompts, unanswerable],
        [*probe.answers, target.answer],
        [*probe.anti, probe.anti[0]],
        torch.cat([probe.main, torch.tensor([True])]),
    )
    _, answered = model.answer_scores(
        [*formats, unanswerable], [target.answer] * (len(formats) + 1)
    )
    assert answered[:-1].any() and not answered[-1]
    keep = probe_facts([f for f in facts if f is not target][:5], relation_values(facts), [])
    with attach(model, world_bottleneck) as handle:
        search = _Search(
            model, handle, target, extended, torch.cat([late, torch.tensor([True])]), keep,
            SelectConfig(),
        )  # fmt: skip
    asked = [p for p, x in zip(search.forget.prompts, search.late.tolist()) if x]
    assert asked == [p for p, ok in zip(formats, answered.tolist()) if ok]
    assert [p for p in search.forget.prompts if p not in asked] == [
        p for p in probe.prompts if p not in formats
    ]
    generated = [p for p, m in zip(probe.prompts, probe.main.tolist()) if not m]
    assert generated and all(p.startswith("people say that") for p in generated)


def test_a_cut_is_judged_on_the_neighbours_formats_where_it_can_act(world, world_bottleneck):
    """The search's retain prompts: a conditional cut is judged on the neighbours' prompts in
    the formats wherever one of its condition sets holds there (the only places it can act), an
    unconditional one on those of the forget fact's own relation that the model answers (it
    acts everywhere; measuring every format made one search six times slower)."""
    model, w = world
    facts, target = findar(w)
    retain = default_retain(model, [target], facts)
    asked = in_formats(model, target, retain, facts, FORMATS, SHOTS)
    forget, late = _forget_probe(model, target, facts, formats=FORMATS)
    keep = probe_facts(retain + asked, relation_values(facts), fallback=[])
    formatted = torch.arange(len(keep.prompts)) >= len(keep.prompts) - len(asked)
    relation = relation_index(retain + asked, first=target.relation)
    cache = RetainCache()
    with attach(model, world_bottleneck) as handle:
        search = _Search(
            model, handle, target, forget, late, keep, SelectConfig(), shared=cache,
            formatted=formatted, relation=relation,
        )  # fmt: skip
    fired = cache.get(keep.prompts, keep.answers).fired
    holds = _holds(search.conditions + search.more, fired)
    same = torch.tensor([target.subject in p for p in keep.prompts])
    assert search.conditions and asked
    assert len(search.judged[True].ok) == int((same | holds | (keep.main & ~formatted)).sum())
    kin = formatted & (relation == 0) & cache.get(keep.prompts, keep.answers).ok
    assert kin.any() and (formatted & ~kin).any()
    assert len(search.judged[False].ok) == int((~formatted | kin).sum())
    # Each prompt is judged with its own fact's relation (the budget holds per relation).
    assert torch.equal(search.judged[False].relation, relation[~formatted | kin])


def test_the_retain_budget_holds_for_each_relation_alone(world, world_bottleneck):
    """A cut that takes one of a relation's few prompts is too costly even when the mean over
    every retain prompt, most of them another relation's, stays within the budget."""
    n = 4
    relation = torch.tensor([0] * 96 + [1] * n)  # 96 prompts of one relation, 4 of another
    ok = torch.ones(100, dtype=torch.bool)
    judged = Judged(None, relation, torch.zeros(100, 1), torch.zeros(100), relation, ok, 1.0)
    after = ok.clone()
    after[-1] = False  # one prompt of the small relation lost: 1% of all, 25% of its own
    assert judged.worst_drop(after) == pytest.approx(1 / n)
    after[:3] = False  # and three of the large one's: 3 / 96 of it
    assert judged.worst_drop(after) == pytest.approx(1 / n)
    assert judged.worst_drop(ok) == 0.0

    model, w = world
    facts, target = findar(w)
    forget, late = _forget_probe(model, target, facts)
    retain = default_retain(model, [target], facts)
    keep = probe_facts(retain, relation_values(facts), fallback=[])
    with attach(model, world_bottleneck) as handle:
        search = _Search(model, handle, target, forget, late, keep, SelectConfig())
    base = search.judged[False].base
    unconditional = next(f for f in FAMILIES if not f.conditional)
    mean_ok = search.clean._replace(retain_accuracy=base - 0.01)  # within the mean's budget
    assert not search.costly(unconditional, mean_ok)
    assert search.costly(unconditional, mean_ok._replace(relation_drop=0.25))
    assert not search.costly(unconditional, mean_ok._replace(relation_drop=0.02))
    assert search.costly(unconditional, mean_ok._replace(retain_accuracy=base - 0.03))

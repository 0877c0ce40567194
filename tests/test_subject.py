"""Forgetting a whole subject: its facts are found in the pool and by asking the model, cut in
one plan, and every other subject keeps its facts. On the committed world-0 fixture (its
weights are fixed, so what the model answers is too)."""

import pytest
from codecut.probes.selector.subject import subject_facts

import codecut
from codecut.cli import main
from codecut.core.errors import BadInput

SUBJECT = "Darfin"


@pytest.fixture(scope="module")
def split(world):
    _, w = world
    facts = w.facts("all")
    return [f for f in facts if f.subject == SUBJECT], [f for f in facts if f.subject != SUBJECT]


def test_the_subjects_facts_are_found_by_asking_the_model(world, split):
    model, _ = world
    own, others = split
    found = subject_facts(model, SUBJECT, others)  # the pool holds none of its facts
    truth = {f.relation: f.answer for f in own}
    assert {f.relation: f.answer for f in found} == truth
    assert all(f.subject == SUBJECT and f.paraphrases for f in found)
    # Given in the pool, its own facts are used as they are.
    assert subject_facts(model, SUBJECT, [*own, *others]) == own
    assert subject_facts(model, "Nobody-Here", []) == []


def test_forgetting_a_subject_cuts_every_relation_and_keeps_the_others(
    world, world_bottleneck, later_bottleneck, split
):
    model, _ = world
    own, others = split
    plan = codecut.unlearn(
        model, [world_bottleneck, later_bottleneck], forget_subject=SUBJECT, pool=others
    )
    assert {f.prompt for f in plan.facts} == {f.prompt for f in own}
    gone = [not r.after.correct and r.after.paraphrase_accuracy <= 0.2 for r in plan.results.facts]
    assert sum(gone) >= len(own) - 1  # the bar of test_unlearn: at most one stalls
    kept = codecut.evaluate(model, others, plan=plan)
    assert kept["correct"].mean() >= 0.97  # other subjects, same relations and answers included


def test_a_subject_request_is_checked_before_the_model_runs(world_bottleneck, split):
    own, _ = split
    with pytest.raises(BadInput, match="not both"):
        codecut.unlearn(object(), world_bottleneck, own, forget_subject=SUBJECT)
    with pytest.raises(BadInput, match="must be a subject's name"):
        codecut.unlearn(object(), world_bottleneck, forget_subject=" ")


def test_a_subject_the_model_knows_nothing_about_is_one_line(world, world_bottleneck, split):
    model, _ = world
    _, others = split
    with pytest.raises(BadInput, match="answers no fact about 'Nobody-Here'"):
        codecut.unlearn(model, world_bottleneck, forget_subject="Nobody-Here", pool=others[:0])


def test_the_cli_takes_a_subject_or_facts_not_both(tmp_path, capsys):
    argv = ["unlearn", "--model", "m", "--out", str(tmp_path / "p.json")]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--forget", "f.jsonl", "--subject", "France"])
    assert e.value.code == 2
    assert "argument --subject: not allowed with argument --forget" in capsys.readouterr().err
    assert main([*argv, "--forget", "f.jsonl", "--facts", "g.jsonl", "--device", "cpu"]) == 2
    assert "--facts goes with --subject" in capsys.readouterr().err

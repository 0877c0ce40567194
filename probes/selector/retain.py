"""The default retain set: what a plan must keep when the user names nothing to keep.

A cut is judged by what it spares, so `unlearn` always measures some facts besides the forget
ones. Without the user's retain set it builds one from facts the model itself answers:

- near: the facts of the pool and of the shipped example facts about a forget fact's subject
  or of its relation. A cut that takes the subject ("everything about France") or the relation
  ("every capital") with it shows there first. For a relation and subject neither holds (a
  book's author) there are none.
- unrelated: a fixed number per relation (`UNRELATED_PER_RELATION`, pool first, in file
  order) of the other facts: a guard against a careless cut that reaches everything, and the
  only guard where nothing near is known. The search holds each relation to the retain budget
  alone, so each needs enough prompts for one lost answer to be a small share of them.

Only facts the model knows (its greedy answer on the main prompt) are kept; an error when none
is, since a plan measured against nothing cannot be trusted.

`in_formats` asks the retain facts of other subjects in the formats the forget fact's cut is
pushed to reach (question, chat, few-shot, helpful context), for the condition sets: judged on
plain prompts only, a condition was free to be a code of a format's wrapper, and a whole-subject
plan for Mexico, gated on a code of the newline token, took the chat answers of the other
countries' capitals (0.93 -> 0.00) while keeping every plain one.
"""

from __future__ import annotations

from dataclasses import replace

from codecut.probes.antisamples import in_vocabulary
from codecut.probes.formats import variant_prompts
from codecut.probes.selector.memo import answer_scores

from codecut.core.errors import BadInput
from codecut.core.facts import Fact, example_facts
from codecut.core.models import Model

# Unrelated facts per relation: enough to notice a cut that reaches every subject, few enough
# that measuring them costs little next to the near facts. With 4, Spain's plan cut 15 codes at
# layer 18 with no condition; the four currencies it was judged on kept their answers, 3 of the
# file's other currency prompts (52 in all) did not. 16 facts are about 56 prompts: one lost
# answer is within the 2% budget of their relation, two are not.
UNRELATED_PER_RELATION = 16


def default_retain(model: Model, forget: list[Fact], pool: list[Fact]) -> list[Fact]:
    """The near facts and `UNRELATED_PER_RELATION` unrelated ones of each relation, of `pool`
    and the example facts, each once, that the model knows; never a forget fact's own
    (subject, relation).

    Raises BadInput when the model knows none of them: give a retain set instead.
    """
    forget_keys = {(f.subject, f.relation) for f in forget}
    subjects, relations = {f.subject for f in forget}, {f.relation for f in forget}
    candidates: dict[tuple[str, str], Fact] = {}
    for f in [*pool, *example_facts()]:
        key = (f.subject, f.relation)
        if key not in forget_keys and in_vocabulary(model.tokenizer, f"{f.prompt} {f.answer}"):
            candidates.setdefault(key, f)
    near = [f for f in candidates.values() if f.subject in subjects or f.relation in relations]
    groups: dict[str, list[Fact]] = {}  # the other candidates, by relation, in order
    for f in candidates.values():
        if f.subject not in subjects and f.relation not in relations:
            groups.setdefault(f.relation, []).append(f)
    # Only the first few of each unrelated relation are scored, not the whole pool (224 country
    # facts took 5.8 s of a 21 s request); where too few of them are known, the rest of it.
    step = 2 * UNRELATED_PER_RELATION
    first = near + [f for g in groups.values() for f in g[:step]]
    known = {id(f) for f in _known(model, first)}
    rest = [
        f
        for g in groups.values()
        if sum(id(x) in known for x in g[:step]) < UNRELATED_PER_RELATION
        for f in g[step:]
    ]
    known |= {id(f) for f in _known(model, rest)}
    near = [f for f in near if id(f) in known]
    unrelated = [
        f
        for g in groups.values()
        for f in [x for x in g if id(x) in known][:UNRELATED_PER_RELATION]
    ]
    if not near and not unrelated:
        raise BadInput(
            "no retain set could be built: the model knows none of the pool's other facts nor "
            "the shipped example facts; pass retain= (facts the plan must keep)"
        )
    return near + unrelated


def _known(model: Model, facts: list[Fact]) -> list[Fact]:
    """The facts whose answer is the model's greedy next token on their main prompt."""
    if not facts:
        return []
    _, correct = answer_scores(model, [f.prompt for f in facts], [f.answer for f in facts])
    return [f for f, ok in zip(facts, correct.tolist()) if ok]


def in_formats(
    model: Model, forget: Fact, retain: list[Fact], pool: list[Fact], formats: tuple[str, ...],
    shots: int,
) -> list[Fact]:  # fmt: skip
    """The main prompts of `retain`'s facts about subjects other than `forget`'s, each asked in
    each of `formats` (`codecut.probes.formats`), as facts of their own, whether the model
    answers them or not: where a condition set must not hold. A few-shot or context sentence
    never shows the forget subject (a condition on it would hold there by right)."""
    shown = [g for g in pool if g.subject != forget.subject]
    asked: dict[str, Fact] = {}
    for f in retain:
        if f.subject == forget.subject:
            continue
        others = [g for g in shown if (g.subject, g.relation) != (f.subject, f.relation)]
        for v in formats:
            for q in variant_prompts(model, replace(f, paraphrases=[]), others, v, shots):
                if q not in asked and in_vocabulary(model.tokenizer, f"{q} {f.answer}"):
                    asked[q] = Fact(f.subject, f.relation, q, f.answer)
    return list(asked.values())

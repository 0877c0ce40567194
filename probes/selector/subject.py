"""What a model knows about one subject: the facts a whole-subject request forgets.

    facts = subject_facts(model, "France", pool)   # every relation the model answers for France

Two sources, each kept only where the model answers (the first token of " " + answer is its
greedy next token):
- the facts of `pool` about the subject;
- every other relation of `pool`, asked about the subject: another subject's prompt (and
  paraphrases) with that subject's name replaced by this one ("The capital of Belgium is" ->
  "The capital of France is"). The model's own greedy answer becomes the fact's answer, kept
  only when the model is confident (p >= CONFIDENT for its first token), so a guess is never
  made into a fact to forget; the paraphrases kept are those it answers the same way.
"""

from __future__ import annotations

import re

from codecut.core.facts import Fact
from codecut.core.models import Model

CONFIDENT = 0.5  # the first token's probability a found answer needs
ANSWER_TOKENS = 6  # greedy tokens read for a found answer; its first word is kept
# A confident first word that is one of these ("The currency of Japan is the ...") says nothing
# about the subject: no fact is made of it.
FUNCTION_WORDS = {"the", "a", "an", "of", "in", "on", "at", "to", "and", "or", "is", "was", "not"}


def subject_facts(model: Model, subject: str, pool: list[Fact]) -> list[Fact]:
    """The facts about `subject` the model answers: `pool`'s own, then one per other relation
    of `pool` found by asking (see the module docstring); at most one per relation."""
    own = {f.relation: f for f in pool if f.subject == subject}
    templates = {
        f.relation: f
        for f in pool
        if f.subject != subject and f.relation not in own and f.subject in f.prompt
    }
    asked = [_asked(t, subject) for t in templates.values()]
    found = [f for f in (_answered(model, f) for f in asked) if f is not None]
    mine = list(own.values())
    if mine:  # a found fact is answered already: its first token has p >= CONFIDENT > 1/2
        _, correct = model.answer_scores([f.prompt for f in mine], [f.answer for f in mine])
        mine = [f for f, ok in zip(mine, correct.tolist()) if ok]
    return [*mine, *found]


def _asked(template: Fact, subject: str) -> Fact:
    """`template`'s relation asked about `subject`; its answer ("?") is not known yet."""
    swap = re.compile(re.escape(template.subject))
    prompts = [swap.sub(subject, p) for p in template.prompts]
    return Fact(subject, template.relation, prompts[0], "?", prompts[1:])


def _answered(model: Model, asked: Fact) -> Fact | None:
    """`asked` with the model's confident greedy answer and the paraphrases that agree, or
    None."""
    p, token = model.next_token_logprobs(asked.prompts).exp().max(-1)
    first = int(token[0])
    if p[0] < CONFIDENT:
        return None
    words = model.generate(asked.prompt, max_new_tokens=ANSWER_TOKENS).split()
    answer = words[0].strip(".,;:!?\"'()") if words else ""  # the first word: what is judged
    if not answer[:1].isalnum() or answer.lower() in FUNCTION_WORDS:
        return None
    if model.answer_token(answer) != first:
        return None
    agree = [q for q, t in zip(asked.paraphrases, token[1:].tolist()) if t == first]
    return Fact(asked.subject, asked.relation, asked.prompt, answer, agree)

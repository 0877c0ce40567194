"""The indirect probe: the fact asked backwards, and needed as a step of another question.

A cut found on "The capital of France is" may hide Paris from that question and leave the
association usable (Patil et al., ICLR 2024: hidden-state and rephrasing attacks bring back
facts deleted by ROME). Two variants, built from a fact's prompts of the form
"<head> <subject> is|was|are [the|a|an]" ("The capital of France is"):

- reverse: the answer first, the subject asked for: "Paris is the capital of" -> France;
- multi-hop: a question about something else that goes through the fact. Through the subject:
  a fact about the same subject, the subject named by the attacked fact ("The official language
  of the one whose capital is Paris is" -> French; needs a head ending in "of"). Through the
  answer: a fact of the pool about the answer, the answer named by the attacked fact ("The river
  of the capital of France is" -> Seine). Only facts the clean model answers on their own prompt
  are composed, so a miss is the step's, not the other fact's.

Many models do not answer the reverse of what they know (the reversal curse). A reverse
question's answer is a subject, so guessing among the subjects the facts and the pool name
scores 1 / their number: the row's chance level, below which it is blind.
"""

from __future__ import annotations

import re

import torch
from codecut.probes.attacks.card import Row, measured, skipped
from codecut.probes.attacks.format import answer_metrics
from codecut.probes.attacks.states import States

from codecut.core.facts import Fact
from codecut.core.models import Model

VARIANTS = ("reverse", "multi-hop")
WHY_NOT = {
    "reverse": 'no prompt of the form "<head> <subject> is" to turn around',
    "multi-hop": "no known fact of the pool to compose with (same subject, or about the answer)",
}


def parts(prompt: str, subject: str) -> tuple[str, str, str] | None:
    """(head, verb, article) of "<head> <subject> <verb> [article]", or None for another form:
    ("The capital of", "is", "") for "The capital of France is"."""
    form = rf"(?P<head>.*\S)\s+{re.escape(subject)}\s+(?P<verb>is|was|are)(?:\s+(?P<art>the|an?))?"
    m = re.fullmatch(form, prompt)
    return (m["head"], m["verb"], m["art"] or "") if m else None


def reverse(fact: Fact) -> list[str]:
    """The fact's prompts turned around, the subject to come next: "Paris is the capital of"."""
    out = []
    for prompt in fact.prompts:
        if found := parts(prompt, fact.subject):
            head, verb, article = found
            text = f"{article} {fact.answer}".strip() + f" {verb} {lowered(head)}"
            out.append(text[0].upper() + text[1:] if prompt[0].isupper() else text)
    return list(dict.fromkeys(out))


def multi_hop(fact: Fact, known: list[Fact]) -> list[tuple[str, str]]:
    """(prompt, answer) pairs of questions about `known` facts that need `fact` as a step."""
    forms = [found for p in fact.prompts if (found := parts(p, fact.subject))]
    out = []
    of = next(((h, v) for h, v, _ in forms if h.endswith(" of")), None)
    for g in known:
        if of and g.subject == fact.subject and g.relation != fact.relation:
            head, verb = of
            noun = re.sub(r"^(the|a|an)\s+", "", head[: -len(" of")], flags=re.IGNORECASE)
            named = f"the one whose {noun} {verb} {fact.answer}"  # the subject, by this fact
        elif forms and g.subject == fact.answer:
            named = f"{lowered(forms[0][0])} {fact.subject}"  # the answer, by this fact
        else:
            continue
        for prompt in g.prompts:
            if found := parts(prompt, g.subject):
                head, verb, article = found
                out.append((f"{head} {named} {verb} {article}".rstrip(), g.answer))
    return list(dict.fromkeys(out))


def lowered(text: str) -> str:
    """`text` with its first letter in lower case ("The capital of" -> "the capital of")."""
    return text[:1].lower() + text[1:]


@torch.no_grad()
def probe(
    model: Model, groups: dict[str, list[Fact]], others: list[Fact], states: States
) -> list[Row]:
    """A row per variant, group and metric: the reverse questions answered with the subject,
    and the multi-hop questions with the other fact's answer."""
    # pool facts that a multi-hop question may go through: answered by the clean model
    near = {f.subject for fs in groups.values() for f in fs}
    near |= {f.answer for fs in groups.values() for f in fs}
    candidates = [g for g in others if g.subject in near]
    known = []
    if candidates:
        _, ok = model.answer_scores([g.prompt for g in candidates], [g.answer for g in candidates])
        known = [g for g, yes in zip(candidates, ok) if yes]
    subjects = {f.subject for f in others} | {f.subject for fs in groups.values() for f in fs}
    chance = {"reverse": 1 / len(subjects), "multi-hop": None}
    rows = []
    for group, facts in groups.items():
        asked = {
            "reverse": [(q, f.subject) for f in facts for q in reverse(f)],
            "multi-hop": [qa for f in facts for qa in multi_hop(f, known)],
        }
        for variant in VARIANTS:
            if not asked[variant]:
                rows.append(skipped("indirect", variant, group, WHY_NOT[variant]))
                continue
            prompts, answers = map(list, zip(*asked[variant]))
            by_state = states.measure(model, answer_metrics, prompts, answers)
            rows += measured(
                "indirect", variant, group, len(prompts), by_state, chance=chance[variant]
            )
    return rows

"""Does a forgotten prompt read like ignorance? What the unlearned model writes after it, beside
what the same model writes about a subject it cannot know.

A cut can hide the answer and leave damage in its place (the demo's plan once continued "The
capital of France is" with " the capital the government states that the capital"): the fact
is gone from the next token, but nobody would mistake the text for a model that never learned
it. For each fact's main prompt, the greedy continuation (`new_tokens`) is sorted into

- answer: it still contains the answer (as a word, case ignored);
- plausible: it starts with another answer of the fact's relation (from `pool`): a wrong guess
  of the right kind, what a model that does not know the fact tends to write;
- other: neither;

and scored for how natural it reads: its mean next-token loss under the clean model given the
prompt (nats per token; gibberish scores high). The reference is the clean model itself on the
same prompts with the subject replaced by a made-up name (`UNKNOWN`): what ignorance looks like
for this model, sorted and scored the same way.

In the attack card (`probe`), the forgotten facts' reading is two rows: "greedy", its
`plausible` share and `loss` on the clean model and with the plan, and "made-up subject", the
reference, on the clean model alone. The loss is always judged by the card's model with no plan
(a model judging its own greedy text finds it likely however it reads); for the card of a
fine-tuned model, that model is its own judge, so compare its loss with its own made-up row.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from typing import NamedTuple

import torch
from codecut.probes.attacks.card import Row, measured
from codecut.probes.attacks.generation import contains, continuations
from codecut.probes.attacks.states import States
from codecut.probes.plan import UnlearnPlan, apply

from codecut.core.facts import Fact
from codecut.core.models import Model

UNKNOWN = "Veltrania"  # a made-up subject no model knows facts about
NEW_TOKENS = 8


class Reading(NamedTuple):
    """How a set of continuations reads, each a share of the prompts but `loss`."""

    answer: float  # still contains the answer
    plausible: float  # starts with another answer of the relation
    other: float  # neither
    loss: float  # mean next-token loss under the clean model, nats per token


class Ignorance(NamedTuple):
    """The unlearned model's continuations of the forgotten prompts, and the reference."""

    unlearned: Reading  # the facts' prompts, unlearned
    unknown: Reading  # the clean model, the same prompts about a made-up subject
    examples: list[tuple[str, str, str]]  # (prompt, unlearned continuation, unknown continuation)


def ignorance(
    clean: Model,
    unlearned: Model | UnlearnPlan,
    facts: list[Fact],
    pool: list[Fact],
    new_tokens: int = NEW_TOKENS,
) -> Ignorance:
    """Read the continuations of `facts`' main prompts: `unlearned` is a plan (applied to
    `clean` while it writes) or a model (a fine-tuned one); `pool` gives each relation's other
    answers."""
    prompts = [f.prompt for f in facts]
    if isinstance(unlearned, UnlearnPlan):
        model, state = clean, apply(clean, unlearned)
    else:
        model, state = unlearned, nullcontext()
    with state:
        written = _greedy(model, prompts, new_tokens)
    made_up, reference = _made_up(clean, facts, new_tokens)
    return Ignorance(
        unlearned=_read(clean, facts, prompts, written, pool),
        unknown=_read(clean, facts, made_up, reference, pool),
        examples=list(zip(prompts, written, reference)),
    )


def probe(
    model: Model,
    groups: dict[str, list[Fact]],
    pool: list[Fact],
    states: States,
    new_tokens: int = NEW_TOKENS,
) -> list[Row]:
    """The card's rows for the forgotten facts' main prompts (see the module docstring): metrics
    `plausible` (share) and `loss` (nats per token), for "greedy" on the clean model and with
    the plan, for "made-up subject" on the clean model. The bare bottleneck is left out, as in
    the generation probe."""
    facts = groups["forget"]
    prompts = [f.prompt for f in facts]
    names = [s for s in states.names if s != "bottleneck"]
    written = states.measure(model, _greedy, prompts, new_tokens, names=names)
    made_up, reference = _made_up(model, facts, new_tokens)
    readings = {
        "greedy": {s: _read(model, facts, prompts, w, pool) for s, w in written.items()},
        "made-up subject": {"clean": _read(model, facts, made_up, reference, pool)},
    }
    return [
        row
        for variant, by_state in readings.items()
        for row in measured(
            "ignorance",
            variant,
            "forget",
            len(facts),
            {s: {"plausible": r.plausible, "loss": r.loss} for s, r in by_state.items()},
        )
    ]


def _greedy(model: Model, prompts: list[str], new_tokens: int) -> list[str]:
    return [c[0] for c in continuations(model, prompts, new_tokens)]


def _made_up(clean: Model, facts: list[Fact], new_tokens: int) -> tuple[list[str], list[str]]:
    """The facts' main prompts about `UNKNOWN`, and the clean model's greedy continuations."""
    made_up = [f.prompt.replace(f.subject, UNKNOWN) for f in facts]
    return made_up, _greedy(clean, made_up, new_tokens)


def _read(
    clean: Model, facts: list[Fact], prompts: list[str], texts: list[str], pool: list[Fact]
) -> Reading:
    kinds = [_kind(f, t, pool) for f, t in zip(facts, texts)]
    share = {k: kinds.count(k) / len(kinds) for k in ("answer", "plausible", "other")}
    return Reading(**share, loss=_loss(clean, prompts, texts))


def _kind(fact: Fact, text: str, pool: list[Fact]) -> str:
    if contains(text, fact.answer):
        return "answer"
    others = {g.answer for g in pool if g.relation == fact.relation and g.answer != fact.answer}
    start = text.strip()
    if any(re.match(rf"{re.escape(a)}(?!\w)", start, re.IGNORECASE) for a in others):
        return "plausible"
    return "other"


@torch.no_grad()
def _loss(clean: Model, prompts: list[str], texts: list[str]) -> float:
    """Mean next-token loss of each text after its prompt, under the clean model, over every
    token of the texts (nats per token)."""
    tok, total, count = clean.tokenizer, 0.0, 0
    for prompt, text in zip(prompts, texts):
        head = tok(prompt)["input_ids"]
        tail = tok(text, add_special_tokens=False)["input_ids"]
        if not tail:
            continue
        ids = torch.tensor([head + tail], device=clean.device)
        with clean.eval_mode():
            logp = clean(ids, torch.ones_like(ids))[0, :-1].float().log_softmax(-1)
        picked = logp[len(head) - 1 :].gather(-1, ids[0, len(head) :, None])
        total -= picked.sum().item()
        count += len(tail)
    return total / count if count else float("nan")

"""Code attribution: how much each code of an attached bottleneck pushes a prompt's true answer
against its wrong ones.

With the bottleneck attached (error term kept, so the model is unchanged while we measure), for
a prompt p with true answer y and wrong answers a (other values of the relation), and a code c
with value v_c at a position:

    attr_p(c) = sum over the positions where c is active of
                v_c * d/dv_c [ log P(y | p) - mean_a log P(a | p) ]

gradient x activation of the answer's margin over the anti-answers at the predicting (last)
position. Every position counts, not only the predicting one: later layers read the answer from
the subject's and the relation's positions too, so a cut at the last one alone leaves it there.
For a cut under condition sets (`sets`), only the positions where one of them holds count: the
cut cannot act elsewhere. Counted everywhere, a few-shot prompt's codes were ranked by what they
do in its shots, where a cut under the subject's condition never reaches, and the search tried
them one after another with nothing moving (Spain's language at layer 18, 30 trials).

    probe = probe_facts(facts, relation_values(facts), fallback=["..."])
    scores = attributions(model, handle, probe)       # handle: an Attachment of the bottleneck
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from codecut.codebook import Attachment
from codecut.codebook.attach import condition_holds
from codecut.probes.selector.prefix import Prefix

from codecut.core.facts import Fact
from codecut.core.models import Model

NEVER = 1 << 30  # "first position" of a code that did not fire


@dataclass
class Probe:
    """Prompts and answers measured together (forget or retain), with their anti-answers.

    Attributes:
        prompts: the texts whose next token is scored.
        answers: the true answer of each prompt.
        anti: per prompt, the wrong answers to contrast the true one with.
        main: bool per prompt, True for a fact's own prompt (not a paraphrase); None when the
            probe does not say.
    """

    prompts: list[str]
    answers: list[str]
    anti: list[list[str]]
    main: torch.Tensor | None = None

    def subset(self, rows: list[int]) -> Probe:
        """The prompts at `rows`, with their answers, anti-answers and `main` flags."""
        return Probe(
            [self.prompts[i] for i in rows],
            [self.answers[i] for i in rows],
            [self.anti[i] for i in rows],
            None if self.main is None else self.main[rows],
        )

    def scores(self, model: Model) -> tuple[torch.Tensor, torch.Tensor]:
        """(p of the true answer, whether it is the greedy next token) per prompt."""
        return model.answer_scores(self.prompts, self.answers)


def relation_values(facts: list[Fact]) -> dict[str, list[str]]:
    """Relation -> the distinct answers `facts` give it, sorted."""
    values: dict[str, set[str]] = {}
    for f in facts:
        values.setdefault(f.relation, set()).add(f.answer)
    return {r: sorted(v) for r, v in values.items()}


def probe_facts(facts: list[Fact], values: dict[str, list[str]], fallback: list[str]) -> Probe:
    """Every prompt of every fact, contrasted with the other answers of its relation in `values`
    (or with `fallback` when its relation has no other answer); `main` marks each fact's own
    prompt."""
    prompts, answers, anti, main = [], [], [], []
    for f in facts:
        wrong = [v for v in values.get(f.relation, []) if v != f.answer] or fallback
        for j, p in enumerate(f.prompts):
            prompts.append(p)
            answers.append(f.answer)
            anti.append(wrong)
            main.append(j == 0)
    return Probe(prompts, answers, anti, torch.tensor(main, dtype=torch.bool))


class Attributions(NamedTuple):
    """What one attribution pass measured, per prompt of the probe."""

    scores: torch.Tensor  # [P, n] attr_p(c), summed over the positions where c is active
    first: torch.Tensor  # [P, n] first context position (before the last) where c fired; NEVER
    last: torch.Tensor  # [P] the predicting position
    fired: torch.Tensor  # [P, n] bool: c fired at some position up to the last (a cut of c can
    #                      change the prompt's answer only then)


def attributions(
    model: Model,
    handle: Attachment,
    probe: Probe,
    prefix: Prefix | None = None,
    sets: list[list[int]] | None = None,
) -> Attributions:
    """Attribute each prompt's answer margin to the codes of the attached bottleneck (a
    forward and a backward pass per group of prompts of similar length; the ablations
    installed in `handle` act as usual, so this also measures what is left to cut). `prefix`,
    the probe's prompts with their residual stream below the hook, saves the layers below it.
    `sets`: count only the positions where one of these condition sets holds (None: all)."""
    n = handle.bottleneck.n_codes
    prefix = prefix or Prefix(model, "", probe.prompts)  # no hook layer: the whole forward
    P = len(probe.prompts)
    scores, first = torch.zeros(P, n), torch.full((P, n), NEVER, dtype=torch.long)
    fired = torch.zeros(P, n, dtype=torch.bool)
    for rows, sub in prefix.groups():
        part = _attribute(model, handle, probe.subset(rows.tolist()), sub, sets)
        scores[rows], first[rows], fired[rows] = part.scores, part.first, part.fired
    return Attributions(scores, first, prefix.batch["last"], fired)


def _attribute(
    model: Model,
    handle: Attachment,
    probe: Probe,
    prefix: Prefix,
    sets: list[list[int]] | None = None,
) -> Attributions:
    """`attributions` for prompts run in one batch."""
    n = handle.bottleneck.n_codes
    batch = prefix.batch
    rows = torch.arange(len(probe.prompts))
    with torch.enable_grad():
        logp = prefix.batch_logits().float().log_softmax(-1)
        codes = handle.codes
        true = torch.tensor([model.answer_token(a) for a in probe.answers])
        anti = torch.stack(
            [
                logp[i, [model.answer_token(a) for a in wrong]].mean()
                for i, wrong in enumerate(probe.anti)
            ]
        )
        objective = (logp[rows, true] - anti).sum()
        (grad,) = torch.autograd.grad(objective, codes.values)
    contrib = (grad * codes.values).detach()
    where = handle.active
    if sets is not None:
        fired = (codes.values.detach() > 0) & where[..., None]
        holds = torch.zeros_like(where)
        for when in sets:
            holds |= condition_holds(when, codes.indices, fired)
        where = where & holds
    active = where[..., None].expand_as(contrib)
    scores = torch.zeros(len(rows), n).scatter_add_(
        1, codes.indices.flatten(1), (contrib * active).flatten(1)
    )
    first = first_fired(handle, batch["last"])
    return Attributions(scores, first, batch["last"], fired_codes(handle, batch["last"]))


def first_fired(handle: Attachment, last: torch.Tensor) -> torch.Tensor:
    """long [B, n]: the first context position (before each sequence's `last`) where each code
    fired in the attached bottleneck's most recent forward; NEVER where it did not."""
    codes, n = handle.codes, handle.bottleneck.n_codes
    rows = torch.arange(len(last))
    pos = torch.arange(codes.indices.shape[1])[None, :, None].expand_as(codes.indices)
    context = handle.active & (pos[..., 0] < last[:, None])
    on = (codes.values.detach() > 0) & context[..., None]
    first = torch.full((len(rows) * n,), NEVER, dtype=torch.long)
    flat = (rows[:, None, None] * n + codes.indices)[on]
    first.scatter_reduce_(0, flat, pos[on], reduce="amin")
    return first.view(len(rows), n)


def fired_codes(handle: Attachment, last: torch.Tensor) -> torch.Tensor:
    """bool [B, n]: the codes that fired, in the attached bottleneck's most recent forward, at
    some position up to each sequence's `last` (a cut of a code can change that sequence's
    prediction at `last` only then)."""
    codes = handle.codes
    position = torch.arange(codes.indices.shape[1])
    upto = handle.active & (position[None] <= last[:, None])
    on = (codes.values.detach() > 0) & upto[..., None]
    rows = torch.arange(len(last))[:, None, None].expand_as(codes.indices)
    fired = torch.zeros(len(last), handle.bottleneck.n_codes, dtype=torch.bool)
    fired[rows[on], codes.indices[on]] = True
    return fired

"""The format probe: the fact asked in each format of `codecut.probes.formats` (plain,
question, chat, few-shot, misleading, helpful), and the answer's accuracy and probability there.
"""

from __future__ import annotations

import torch
from codecut.probes.attacks.card import Row, measured, skipped
from codecut.probes.attacks.states import States
from codecut.probes.formats import VARIANTS, WHY_NOT, variant_prompts

from codecut.core.facts import Fact
from codecut.core.models import Model


def answer_metrics(model: Model, prompts: list[str], answers: list[str]) -> dict[str, float]:
    """accuracy (the answer is the greedy next token) and p_answer (its mean probability)."""
    p, correct = model.answer_scores(prompts, answers)
    return {"accuracy": correct.float().mean().item(), "p_answer": p.mean().item()}


@torch.no_grad()
def probe(
    model: Model,
    groups: dict[str, list[Fact]],
    others: list[Fact],
    states: States,
    shots: int,
) -> list[Row]:
    """A row per variant, group and metric."""
    rows = []
    for variant in VARIANTS:
        for group, facts in groups.items():
            asked = [
                (q, f.answer)
                for f in facts
                for q in variant_prompts(model, f, others, variant, shots)
            ]
            if not asked:
                rows.append(skipped("format", variant, group, WHY_NOT[variant]))
                continue
            prompts, answers = map(list, zip(*asked))
            by_state = states.measure(model, answer_metrics, prompts, answers)
            rows += measured("format", variant, group, len(prompts), by_state)
    return rows

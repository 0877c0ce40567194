"""The hook-removed probe: the deployed model with its plan's hook taken off, the weights alone.

A plan is a hook in the forward pass; whoever holds the weights can run the model without it.
This row says what they get, so a plan is never read as a removal. The plan column is measured
on the model after the plan was applied and its hook removed (not copied from the clean
column); without a plan (a fine-tuned or baked model directory) the card's `clean` holds the
model's own numbers, which are its weights alone.
"""

from __future__ import annotations

import torch
from codecut.probes.attacks.card import Row, measured
from codecut.probes.attacks.format import answer_metrics
from codecut.probes.attacks.states import States
from codecut.probes.evaluate import prompts_and_answers

from codecut.core.facts import Fact
from codecut.core.models import Model


@torch.no_grad()
def probe(model: Model, groups: dict[str, list[Fact]], states: States) -> list[Row]:
    """A row per group and metric: every prompt's accuracy on the weights alone."""
    rows = []
    for group, facts in groups.items():
        prompts, answers = prompts_and_answers(facts)
        by_state = {"clean": answer_metrics(model, prompts, answers)}
        if states.plan is not None:
            with states.enter(model, "plan") as deployed:
                deployed.remove()  # what an attacker with the weights does first
                by_state["plan"] = answer_metrics(model, prompts, answers)
        rows += measured("hook removed", "weights alone", group, len(prompts), by_state)
    return rows

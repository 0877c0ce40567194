"""What an attack reports: a row per probe, variant, fact group and metric, one number per state."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd
from codecut.probes.attacks.states import STATES

from codecut.facts import Fact

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PRESENCE = {"accuracy", "found"}  # metrics that are the fraction of prompts showing the fact
GROUPS = ("forget", "same subject", "same relation", "unrelated")  # the fact groups, in order


class Row(NamedTuple):
    """One number of the card on each state of the model (None: not measured in that state).

    Attributes:
        probe: format, indirect, generation, probing, relearning, quantisation or fluency.
        variant: how the probe asked (question, few-shot, reverse, greedy, int8, ...).
        group: forget (the facts attacked); same subject, same relation or unrelated (facts
            a plan must keep: `GROUPS`); or text (fluency).
        metric: accuracy (fraction of prompts whose greedy next token is the answer's first),
            p_answer (that token's mean probability), found (fraction of continuations that
            contain the answer) or loss (mean next-token loss, nats per token); a linear
            probe's accuracy and p_answer are its pick among the relation's answers.
        n: how many prompts (or texts, or continuations) the number is over; 0 when skipped.
        clean, bottleneck, plan: the number on the clean model, with the bare bottleneck
            attached, and with the plan applied.
        skipped: why the probe did not run ("" when it did).
        chance: what guessing scores (a linear probe's 1 / candidates); None: about 0.
    """

    probe: str
    variant: str
    group: str
    metric: str
    n: int
    clean: float | None = None
    bottleneck: float | None = None
    plan: float | None = None
    skipped: str = ""
    chance: float | None = None

    @property
    def blind(self) -> bool:
        """The clean model does not show the fact this way either (it scores no better than
        chance), so a low number with the plan says nothing about whether it is gone."""
        return (
            self.metric in PRESENCE and self.clean is not None and self.clean <= (self.chance or 0)
        )

    @property
    def note(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        if not self.blind:
            return ""
        if self.chance:
            return f"blind: on the clean model no better than chance ({self.chance:.3g})"
        return "blind: the clean model fails this probe too"


def measured(
    probe: str,
    variant: str,
    group: str,
    n: int,
    by_state: dict[str, dict[str, float]],
    chance: float | None = None,
) -> list[Row]:
    """A row per metric from `{state: {metric: value}}`."""
    metrics = next(iter(by_state.values()))
    values = {m: [by_state.get(s, {}).get(m) for s in STATES] for m in metrics}
    return [Row(probe, variant, group, m, n, *values[m], chance=chance) for m in metrics]


def skipped(probe: str, variant: str, group: str, reason: str) -> Row:
    return Row(probe, variant, group, metric="", n=0, skipped=reason)


@dataclass
class AttackCard:
    """The report card of one unlearning result under attack.

    Attributes:
        model: the model's name.
        facts: the facts attacked (group "forget").
        groups: the facts kept as a reference, by group (same subject, same relation,
            unrelated; a group with no fact is left out).
        codes: the plan's cut codes; None without a plan.
        config: the settings the probes ran with (`AttackConfig` as a dict).
        rows: the numbers, in probe order.
        seconds: how long the attack took.
    """

    model: str
    facts: list[Fact]
    groups: dict[str, list[Fact]]
    codes: list[int] | None
    config: dict[str, Any]
    rows: list[Row]
    seconds: float

    @property
    def neighbours(self) -> list[Fact]:
        """Every reference fact, of all groups."""
        return [f for fs in self.groups.values() for f in fs]

    def row(self, probe: str, variant: str, group: str = "forget", metric: str = "accuracy") -> Row:
        """The row of a probe and variant; a skipped one whatever `metric` is asked."""
        for r in self.rows:
            if (r.probe, r.variant, r.group) == (probe, variant, group) and (
                r.metric == metric or r.skipped
            ):
                return r
        raise KeyError(f"no row {probe}/{variant}/{group}/{metric} in this card")

    def table(self) -> pd.DataFrame:
        """The rows as a DataFrame, with a `note` column (skipped, or blind)."""
        table = pd.DataFrame(self.rows, columns=Row._fields)
        table["note"] = [r.note for r in self.rows]
        return table.drop(columns="skipped")

    def to_dict(self) -> dict[str, Any]:
        """One JSON-ready object (`codecut attack --json`); NaN becomes None."""
        return {
            "model": self.model,
            "facts": [asdict(f) for f in self.facts],
            "groups": {g: [asdict(f) for f in fs] for g, fs in self.groups.items()},
            "codes": self.codes,
            "config": self.config,
            "rows": [
                {**{k: _plain(v) for k, v in r._asdict().items()}, "blind": r.blind}
                for r in self.rows
            ],
            "seconds": self.seconds,
        }

    def plot(self, path: str | os.PathLike | None = None) -> Figure:
        """Bars of the clean and plan numbers per probe, one panel per fact group; written as a
        PNG to `path` when given. The Figure shows itself in a notebook."""
        from codecut.probes.attacks.plots import card_figure  # plots.py imports this module

        return card_figure(self, path)


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value

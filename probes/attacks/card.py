"""What an attack reports: a row per probe, variant, fact group and metric, one number per state,
and the card drawn as bars (`AttackCard.plot`)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from codecut.probes.attacks.figures import InlineFigure, save
from codecut.probes.attacks.states import STATES

from codecut.core.facts import Fact

PRESENCE = {"accuracy", "found"}  # metrics that are the fraction of prompts showing the fact
GROUPS = ("forget", "same subject", "same relation", "unrelated")  # the fact groups, in order


class Row(NamedTuple):
    """One number of the card on each state of the model (None: not measured in that state).

    Attributes:
        probe: format, indirect, generation, ignorance, probing, relearning, hook removed,
            quantisation or fluency.
        variant: how the probe asked (question, few-shot, reverse, greedy, int8, ...).
        group: forget (the facts attacked); same subject, same relation or unrelated (facts
            a plan must keep: `GROUPS`); or text (fluency).
        metric: accuracy (fraction of prompts whose greedy next token is the answer's first),
            p_answer (that token's mean probability), found (fraction of continuations that
            contain the answer), plausible (fraction of continuations that start with
            another answer of the relation) or loss (mean next-token loss, nats per token); a
            linear probe's accuracy and p_answer are its pick among the relation's answers.
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
    def back(self) -> float | None:
        """The share of the clean number the plan leaves, above chance: 0 is gone, 1 is all
        there (for relearning: against the clean model tuned the same way). None for a metric
        that is not a presence, a blind or skipped row, or one without a plan."""
        if self.metric not in PRESENCE or self.blind or self.clean is None or self.plan is None:
            return None
        chance = self.chance or 0
        return (self.plan - chance) / (self.clean - chance)

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
        table["back"] = [r.back for r in self.rows]
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
                {
                    **{k: _plain(v) for k, v in r._asdict().items()},
                    "blind": r.blind,
                    "back": _plain(r.back),
                }
                for r in self.rows
            ],
            "seconds": self.seconds,
        }

    def plot(self, path: str | os.PathLike | None = None) -> InlineFigure:
        """Bars of the clean and plan numbers per probe, one panel per fact group; written as a
        PNG to `path` when given. The Figure shows itself in a notebook."""
        return card_figure(self, path)


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def card_figure(card: AttackCard, path: str | os.PathLike | None = None) -> InlineFigure:
    """A panel per fact group (forget, same subject, same relation, unrelated); in each, a bar per probe and variant for the
    clean model and one with the plan (the fraction of prompts showing the fact: accuracy or
    found). Skipped rows are left out, blind ones say so, and a dotted mark is chance."""
    rows = [r for r in card.rows if r.metric in PRESENCE and not r.skipped]
    panels = [(g, [r for r in rows if r.group == g]) for g in GROUPS]
    panels = [(g, rs) for g, rs in panels if rs]
    states = ["clean", "plan"] if any(r.plan is not None for r in rows) else ["clean"]
    height = 0.8 / len(states)
    figure = InlineFigure(figsize=(8, 1.5 + 0.3 * len(rows)), layout="constrained")
    axes = figure.subplots(
        len(panels), 1, squeeze=False, height_ratios=[len(rs) for _, rs in panels]
    )
    for ax, (group, rs) in zip(axes[:, 0], panels):
        y = np.arange(len(rs))
        for i, state in enumerate(states):
            values = np.array([getattr(r, state) for r in rs], dtype=float)
            bars = ax.barh(y + (i - (len(states) - 1) / 2) * height, values, height, label=state)
            ax.bar_label(bars, fmt="%.2f", padding=2, fontsize="x-small")
        for j, r in enumerate(rs):
            if r.chance:
                ax.vlines(r.chance, j - 0.45, j + 0.45, colors="black", linestyles=":")
        labels = [f"{r.probe}: {r.variant}" + (" (blind)" if r.blind else "") for r in rs]
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_title(group, loc="left")
    axes[0, 0].legend(loc="lower right", fontsize="small")
    axes[-1, 0].set_xlabel("fraction of prompts (or continuations) that show the fact")
    for ax in axes[:, 0]:
        ax.set_xlim(0, 1.08)  # room for the labels of full bars
    figure.suptitle(title(card))
    if path is not None:
        save(figure, path)
    return figure


def title(card: AttackCard) -> str:
    """The model, the facts attacked and the fluency loss."""
    facts = "; ".join(f"{f.prompt} {f.answer}" for f in card.facts[:2])
    more = f" (+{len(card.facts) - 2} more)" if len(card.facts) > 2 else ""
    fluency = next((r for r in card.rows if r.probe == "fluency" and not r.skipped), None)
    loss = ""
    if fluency is not None:
        loss = f"\nfluency loss: clean {fluency.clean:.3f}"
        loss += f", plan {fluency.plan:.3f}" if fluency.plan is not None else ""
    return f"{card.model}: {facts}{more}{loss}"

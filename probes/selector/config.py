"""The selector's options: the cut families it tries, the formats it asks, its config
(`SelectConfig`), and what one trial of the search measured (`Trial`). The search itself is in
`search.py`; what it chose for a fact (`Selection`, `Family`) is part of the plan file format,
in `codecut.probes.plan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from codecut.probes.plan import Family

from codecut.core.errors import BadInput, BadOption, check_whole

# Tried in order, gentlest first.
FAMILIES = (
    Family("clamp", 2.0, True),
    Family("clamp", 4.0, True),
    Family("clamp", 8.0, True),
    Family("clamp", 4.0, False),
)
# The formats of the attack card's format probe that the forget probe can ask the fact's
# prompts in, and how many facts the few-shot prefix shows (the attack card's default).
ALL_FORMATS = ("question", "chat", "few-shot", "misleading", "helpful")
# The formats the forget probe asks by default, in the search's second stage. Asked from the
# start, as must-lose prompts like the fact's own, they cost the demo's request (France ->
# Paris) its cut: no family succeeded in 3.4 minutes, its paraphrases kept the answer.
# "misleading" is left to the attack card.
FORMATS = ("question", "chat", "few-shot", "helpful")
SHOTS = 3

# For bottlenecks without the codes' typical activations (e.g. a foreign sae-lens SAE): clamp
# needs them.
ZERO_FAMILIES = (Family("zero", 1.0, True), Family("zero", 1.0, False))


@dataclass(frozen=True)
class SelectConfig:
    """The selector's options; the defaults are the ones measured in docs and benchmarks.

    Attributes:
        max_codes: most codes one cut may hold.
        max_trials: most candidate codes tried per family.
        retain_budget: largest drop of retain accuracy (during selection) a code may cost, over
            every retain prompt and over each relation's alone.
        p_threshold: the answer counts as gone below this probability (and not greedy).
        slack: fraction of the generated paraphrases allowed to keep the answer (the fact's own
            prompts may keep none).
        penalty: the weight of the retain attribution in a code's score.
        condition_rate: the largest fraction of other subjects' retain prompts the condition
            sets may hold in, all sets together.
        condition_candidates: codes (those reaching the most positions) that condition sets
            are built from as singles and pairs. Keep it wide: a subject named late in the
            prompt ("The official language of Italy is") has codes that reach few positions,
            and with 100 candidates they were crowded out by generic early codes.
        condition_triple_candidates: codes combined three at a time.
        patience: a family ends after this many candidate codes in a row were skipped (over
            the retain budget, or moving nothing). Stalled families were most of a request's
            time: on the demo's request the gentlest family held the answer on the same 3
            forget prompts through its last 11 trials. 4 was too few there: the clamp-8
            family then stopped one code short of success (it succeeds with 8).
        format_patience: `patience` in the search's second stage (the formats), where a trial
            costs three times as much (long few-shot prompts): on the demo's request its
            second stage stalled at 5 format prompts for 12 trials, 20 s.
        min_gain: a kept code must take a forget prompt off the answer or lower the answer's
            mean probability by this much, or its mean log-odds by `min_log_odds`.
        min_log_odds: see `min_gain` (nats).
        formats: the formats of the fact's prompts (`ALL_FORMATS`) that must lose the
            answer too, once the fact's prompts and paraphrases have (`Selection.formats_lost`
            says whether they did); () asks none.
        max_seconds: the time budget per fact (None: no limit); `unlearn` counts its own setup
            in the first fact's. The search does not start a step that would run past it, going
            by the last step's time; then the best cut found so far is returned, with `success`
            False unless it already succeeded. The measuring of the plan's results comes after
            it (under a second on the country facts). None by default, in the API and the
            command line alike, so that a plan depends on its inputs alone, not on the
            machine's speed.
    """

    max_codes: int = 16
    max_trials: int = 40
    retain_budget: float = 0.02
    p_threshold: float = 0.05
    slack: float = 0.1
    penalty: float = 1.0
    condition_rate: float = 0.05
    condition_candidates: int = 1000
    condition_triple_candidates: int = 64
    formats: tuple[str, ...] = FORMATS
    max_seconds: float | None = None
    patience: int = 8
    format_patience: int = 4
    min_gain: float = 0.005
    min_log_odds: float = 0.1

    def __post_init__(self) -> None:
        """Refuse options the search cannot use, naming the field, when the config is made."""
        counts = {
            "max_codes": 1,
            "max_trials": 1,
            "patience": 1,
            "format_patience": 1,
            "condition_candidates": 0,
            "condition_triple_candidates": 0,
        }  # name: least
        shares = ("retain_budget", "p_threshold", "slack", "condition_rate")
        amounts = ("penalty", "min_gain", "min_log_odds")
        for name, least in counts.items():
            check_whole(f"SelectConfig.{name}", getattr(self, name), least)
        for name in shares:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise BadOption(
                    f"SelectConfig.{name} must be a share in [0, 1], got {value!r}",
                    f"SelectConfig.{name}",
                )
        for name in amounts:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
                raise BadOption(
                    f"SelectConfig.{name} must be a finite number >= 0, got {value!r}",
                    f"SelectConfig.{name}",
                )
        unknown = set(self.formats) - set(ALL_FORMATS)
        if unknown:
            raise BadInput(
                f"SelectConfig.formats: unknown {sorted(unknown)}; known: {', '.join(ALL_FORMATS)}"
            )
        seconds = self.max_seconds
        if seconds is not None and not (
            isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0
        ):
            raise BadOption(
                f"SelectConfig.max_seconds must be None or seconds >= 0, got {seconds!r}",
                "SelectConfig.max_seconds",
            )


class Trial(NamedTuple):
    """What one set of cuts did during the search."""

    gone: bool  # the answer is gone from the forget prompts (see `SelectConfig.slack`)
    forget_accuracy: float  # greedy accuracy on the forget prompts
    retain_accuracy: float  # greedy accuracy on the retain prompts the cut can reach
    relation_drop: float  # the largest drop of one relation's accuracy there (`worst_drop`)
    held: torch.Tensor  # bool per forget prompt: still answered, or p >= p_threshold
    p_answer: float  # the answer's mean probability over the forget prompts
    log_odds: float  # the answer's mean log-odds over them: it moves where p is saturated
    subject_lost: bool  # a retain prompt about the fact's subject lost its answer

"""The selector's options and what it reports: the cut families, the formats it asks, its
config (`SelectConfig`), and the types of its results (`Selection`, `Trial`). The search
itself is in `search.py`; the plan file format (`plan.py`) and the rest of the library import
these types from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from codecut.codebook import Ablation

from codecut.errors import BadInput


class Family(NamedTuple):
    """How a cut acts: `Ablation` mode and clamp strength, and whether it is conditional (one
    ablation per condition set) or acts everywhere."""

    mode: str
    c: float
    conditional: bool


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

# The command line's time budget per fact (`SelectConfig.max_seconds`).
CLI_MAX_SECONDS = 60.0

# For bottlenecks without the codes' typical activations (e.g. a foreign sae-lens SAE): clamp
# needs them.
ZERO_FAMILIES = (Family("zero", 1.0, True), Family("zero", 1.0, False))


@dataclass(frozen=True)
class SelectConfig:
    """The selector's options; the defaults are the ones measured in docs and benchmarks.

    Attributes:
        max_codes: most codes one cut may hold.
        max_trials: most candidate codes tried per family.
        retain_budget: largest drop of retain accuracy (during selection) a code may cost.
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
            it (under a second on the country facts). None by
            default so that a plan depends on its inputs alone, not on the machine's speed;
            `codecut unlearn` sets `CLI_MAX_SECONDS`.
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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise BadInput(
                    f"SelectConfig.{name} must be a whole number >= {least}, got {value!r}"
                )
        for name in shares:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise BadInput(f"SelectConfig.{name} must be a share in [0, 1], got {value!r}")
        for name in amounts:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
                raise BadInput(f"SelectConfig.{name} must be a finite number >= 0, got {value!r}")
        unknown = set(self.formats) - set(ALL_FORMATS)
        if unknown:
            raise BadInput(
                f"SelectConfig.formats: unknown {sorted(unknown)}; known: {', '.join(ALL_FORMATS)}"
            )
        seconds = self.max_seconds
        if seconds is not None and not (
            isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0
        ):
            raise BadInput(
                f"SelectConfig.max_seconds must be None or seconds >= 0, got {seconds!r}"
            )


@dataclass(frozen=True)
class Selection:
    """What the search chose for one fact.

    Attributes:
        family: the cut's mode, clamp strength and whether it is conditional.
        codes: the codes cut.
        condition_codes: the condition sets the cut acts under (empty for an unconditional cut).
        success: the answer is gone from the forget prompts (see the module docstring).
        forget_accuracy: greedy accuracy on the forget prompts with the cut, during selection.
        retain_accuracy: greedy accuracy on the retain prompts the cut can reach, with it.
        formats_lost: the formats asked (`SelectConfig.formats`, where the model answers them)
            lose the answer too; False where only the fact's prompts and paraphrases do, or none
            was asked.
    """

    family: Family
    codes: list[int]
    condition_codes: list[list[int]]
    success: bool
    forget_accuracy: float
    retain_accuracy: float
    formats_lost: bool = False

    @property
    def ablations(self) -> list[Ablation]:
        """The cut as ablations: one per condition set, or one acting everywhere."""
        return ablations_of(self.family, self.codes, self.condition_codes)

    def to_dict(self) -> dict[str, Any]:
        """The plan file's "selection" object (keys as plan files have always had them)."""
        return {
            **self.family._asdict(),
            "codes": self.codes,
            "success": self.success,
            "forget_accuracy": self.forget_accuracy,
            "retain_accuracy": self.retain_accuracy,
            "condition_codes": self.condition_codes,
            "formats_lost": self.formats_lost,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selection:
        return cls(
            family=Family(d["mode"], d["c"], d["conditional"]),
            codes=d["codes"],
            condition_codes=d["condition_codes"],
            success=d["success"],
            forget_accuracy=d["forget_accuracy"],
            retain_accuracy=d["retain_accuracy"],
            formats_lost=d.get("formats_lost", False),  # plan files before the key: not asked
        )


class Trial(NamedTuple):
    """What one set of cuts did during the search."""

    gone: bool  # the answer is gone from the forget prompts (see `SelectConfig.slack`)
    forget_accuracy: float  # greedy accuracy on the forget prompts
    retain_accuracy: float  # greedy accuracy on the retain prompts the cut can reach
    held: torch.Tensor  # bool per forget prompt: still answered, or p >= p_threshold
    p_answer: float  # the answer's mean probability over the forget prompts
    log_odds: float  # the answer's mean log-odds over them: it moves where p is saturated
    subject_lost: bool  # a retain prompt about the fact's subject lost its answer


def ablations_of(family: Family, codes: list[int], conditions: list[list[int]]) -> list[Ablation]:
    """A cut of `codes` in `family` as ablations: one per condition set, or one everywhere."""
    if not codes:
        return []
    if family.conditional:
        return [Ablation(codes, mode=family.mode, c=family.c, when=when) for when in conditions]
    return [Ablation(codes, mode=family.mode, c=family.c)]

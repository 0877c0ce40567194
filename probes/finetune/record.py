"""What a fine-tuning run reports: the unlearned model and the record of the run (the model
directory's card holds the record as JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from codecut.probes.finetune.config import FinetuneConfig

from codecut.core.facts import Fact
from codecut.core.models import Model


class BeforeAfter(NamedTuple):
    """One number on the model before fine-tuning and after."""

    before: float
    after: float


@dataclass
class FinetuneRecord:
    """What a run did (the model directory's card holds it as JSON).

    Attributes:
        config: the method and every hyper-parameter, defaults filled in.
        source: the name of the model it started from.
        facts: the forget facts.
        n_retain: how many retain facts it kept in view.
        steps_run: optimizer steps taken (<= config.steps).
        stopped_early: whether it reached its target (no forget prompt answered; for bake, also
            every retain prompt answered where the plan answers it), at its last step or before.
        seconds: wall time of the whole call (copy, fixed parts, steps, measurements).
        forget_accuracy: share of the forget facts' prompts (and paraphrases) answered.
        forget_p: mean probability of the answer's first token on those prompts.
        retain_accuracy: share of the retain facts' prompts answered; None without retain facts.
        losses: the loss at each step, before that step's update.
    """

    config: FinetuneConfig
    source: str
    facts: list[Fact]
    n_retain: int
    steps_run: int
    stopped_early: bool
    seconds: float
    forget_accuracy: BeforeAfter
    forget_p: BeforeAfter
    retain_accuracy: BeforeAfter | None
    losses: list[float]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("forget_accuracy", "forget_p", "retain_accuracy"):
            value = getattr(self, key)
            out[key] = value._asdict() if value is not None else None
        return out


@dataclass
class FinetuneResult:
    """The unlearned model and the record of the run."""

    model: Model
    record: FinetuneRecord

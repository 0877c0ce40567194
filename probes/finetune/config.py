"""A fine-tuning request's hyper-parameters (`FinetuneConfig`, checked when made) and the
request's own checks (`finetune_config`), both before any model is loaded or copied."""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from codecut.probes import params as params_
from codecut.probes.finetune.losses import FROM_RUN, METHODS, NEEDS_RETAIN, check_options
from codecut.probes.plan import UnlearnPlan

from codecut.core.errors import BadInput, BadOption, BadType, check_whole, is_whole
from codecut.core.facts import Fact

STEPS = 100  # at most; a run stops early once the forget answer is gone
LR = 1e-5
MIN_STEPS = 5  # before an early stop (or every step, when fewer): one lucky step does not end it
# The CLI flag of each argument the command line sets, for the messages.
CLI_NAMES = {
    "method": "--method", "retain": "--retain", "plan": "--plan", "params": "--params",
    "steps": "--steps", "lr": "--lr", "batch_size": "--batch-size", "save_dir": "--out",
    "noise": "--noise", "texts": "--texts",
}  # fmt: skip
# `bake --robust` (UNDO): what it sets unless given, chosen on the world (docs/finetune.md):
# at noise 0.3 relearning brought the fact back as after a plain bake, at 0.6 it did not; a
# student stopped as soon as it copied the plan on the retain facts (27 steps) knew 44% of the
# held-out facts, after 100 steps 85%. So it runs at least `min_steps` (at most `steps`).
ROBUST = {"noise": 0.6, "texts": 64, "steps": 300, "lr": 1e-4, "min_steps": 100}


@dataclass(frozen=True)
class FinetuneConfig:
    """What a run does: the method and its hyper-parameters (recorded in the model's card).
    Checked when made: a value the run cannot use is a `BadOption` naming the field.

    Attributes:
        method: one of `METHODS`.
        params: which weights change ("all", "last:N", "mlp:A-B", "lora[:R]"; see
            `codecut.probes.params`); None until a run resolves it ("all", or RMU's MLPs).
        steps: the most optimizer steps (Adam); fewer when the forget answers go.
        lr: Adam's learning rate.
        min_steps: steps to run before an early stop (None: MIN_STEPS, or `steps` when fewer).
        seed: RMU's random direction, the anti-samples' wrong answers, LoRA's start and the
            mini-batches' order.
        batch_size: at most this many sequences of each set a step; None: full batch.
        options: the method's own hyper-parameters; its defaults are filled in (`losses`
            names them).
    """

    method: str = "npo"
    params: str | None = None
    steps: int = STEPS
    lr: float = LR
    min_steps: int | None = None
    seed: int = 0
    batch_size: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BadOption(
                f"unknown method {self.method!r}; known methods: {', '.join(METHODS)}", "method"
            )
        known = method_options(self.method)
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            raise BadInput(
                f"method {self.method} has no option {', '.join(unknown)}; its options: "
                f"{', '.join(known) or 'none'}"
            )
        check_options(self.method, self.options)
        check_whole("steps", self.steps, 1)
        if self.min_steps is None:  # frozen: the default is set once, here
            object.__setattr__(self, "min_steps", min(MIN_STEPS, self.steps))
        if not (is_whole(self.min_steps, 0) and self.min_steps <= self.steps):
            raise BadOption(f"min_steps must be a whole number from 0 to steps ({self.steps})")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise BadOption(f"lr must be > 0, got {self.lr!r}", "lr")
        if self.batch_size is not None:
            check_whole("batch_size", self.batch_size, 1)
        if self.params is not None:
            kind, _, _ = params_.parse(self.params)
            if self.options.get("noise") and kind == "lora":
                raise BadOption(
                    "noise moves the trained weights toward noise: train full weights "
                    "(params all, last:N or mlp:A-B), not LoRA adapters",
                    "params",
                )
        object.__setattr__(self, "options", {**known, **self.options})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def method_options(method: str) -> dict[str, Any]:
    """The method's hyper-parameters and their defaults."""
    signature = inspect.signature(METHODS[method])
    return {
        name: p.default
        for name, p in signature.parameters.items()
        if p.kind is p.KEYWORD_ONLY and name not in FROM_RUN
    }


def finetune_config(
    forget: list[Fact],
    retain: list[Fact] | None = None,
    method: str = "npo",
    *,
    plan: UnlearnPlan | None = None,
    save_dir: str | os.PathLike | None = None,
    **settings,
) -> FinetuneConfig:
    """Check a request (`finetune_unlearn`'s arguments but the model) and return its config; a
    hopeless one is a one-line error before anything is loaded, copied or written. `settings`
    are `FinetuneConfig`'s fields and the method's own options; other arguments of
    `finetune_unlearn` (bottleneck, inplace) are passed over."""
    if not forget:
        raise BadInput("nothing to forget: the forget set is empty")
    for arg, facts in (("forget", forget), ("retain", retain or [])):
        if isinstance(facts, Fact) or not all(isinstance(f, Fact) for f in facts):
            raise BadType(
                f"{arg} must be a list of codecut.Fact (read a JSONL file with codecut.load_facts)"
            )
    config = _config(method, settings)
    if method in NEEDS_RETAIN and not retain:
        raise BadOption(
            f"method {method} needs retain facts (its loss keeps them)", "method", "retain"
        )
    if method == "bake" and plan is None:
        raise BadOption(
            "method bake needs a plan to make permanent (codecut.unlearn makes one)",
            "method",
            "plan",
        )
    if method != "bake" and plan is not None:
        raise BadOption(f"a plan is for method bake only, not {method}", "plan", "method")
    if plan is not None and not isinstance(plan, UnlearnPlan):
        raise BadType(f"plan must be an UnlearnPlan, got {type(plan).__name__}")
    if save_dir is not None and Path(save_dir).exists():
        if not Path(save_dir).is_dir() or any(Path(save_dir).iterdir()):
            raise BadOption(
                f"save_dir {save_dir} exists and is not empty; choose a new directory", "save_dir"
            )
    return config


# `finetune_unlearn`'s arguments that are neither config fields nor method options.
RUN_ARGUMENTS = ("bottleneck", "inplace")


def _config(method: str, settings: dict[str, Any]) -> FinetuneConfig:
    """The FinetuneConfig of `method` with `settings`: its fields, the rest the method's options."""
    own = {f.name for f in fields(FinetuneConfig)} - {"method", "options"}
    given = {k: v for k, v in settings.items() if k in own}
    options = {k: v for k, v in settings.items() if k not in own and k not in RUN_ARGUMENTS}
    return FinetuneConfig(method, **given, options=options)

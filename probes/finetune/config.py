"""A fine-tuning request's hyper-parameters, checked before any model is loaded or copied."""

from __future__ import annotations

import inspect
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codecut.probes.finetune import params as params_
from codecut.probes.finetune.losses import FROM_RUN, METHODS, NEEDS_RETAIN, check_options
from codecut.probes.plan import UnlearnPlan

from codecut.errors import BadInput, BadType
from codecut.facts import Fact

STEPS = 100  # at most; a run stops early once the forget answer is gone
LR = 1e-5
MIN_STEPS = 5  # before an early stop (or every step, when fewer): one lucky step does not end it
# The CLI flag of each argument `finetune_config` checks, for its messages.
CLI_NAMES = {
    "method": "--method", "retain": "--retain", "plan": "--plan", "params": "--params",
    "steps": "--steps", "lr": "--lr", "batch_size": "--batch-size", "save_dir": "--out",
}  # fmt: skip


@dataclass(frozen=True)
class FinetuneConfig:
    """What a run does: the method and its hyper-parameters (recorded in the model's card).

    `params` is None until a run resolves it ("all", or RMU's MLPs); `batch_size` None is
    full batch; `options` are the method's own hyper-parameters with its defaults filled in
    (`losses` names them)."""

    method: str
    params: str | None
    steps: int
    lr: float
    min_steps: int
    seed: int
    batch_size: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

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
    params: str | None = None,
    steps: int = STEPS,
    lr: float = LR,
    min_steps: int | None = None,
    plan: UnlearnPlan | None = None,
    bottleneck=None,
    inplace: bool = False,
    seed: int = 0,
    save_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
    names: dict[str, str] | None = None,
    **options,
) -> FinetuneConfig:
    """Check a request (the arguments of `finetune_unlearn` but the model) and return its
    config; a hopeless one is a one-line error before anything is loaded, copied or written.
    `names` maps arguments to what the user typed (`CLI_NAMES` for the command line)."""

    def name(arg: str) -> str:
        return (names or {}).get(arg, arg)

    if method not in METHODS:
        raise BadInput(f"unknown {name('method')} {method!r}; known methods: {', '.join(METHODS)}")
    if not forget:
        raise BadInput("nothing to forget: the forget set is empty")
    for arg, facts in (("forget", forget), ("retain", retain or [])):
        if isinstance(facts, Fact) or not all(isinstance(f, Fact) for f in facts):
            raise BadType(
                f"{arg} must be a list of codecut.Fact (read a JSONL file with codecut.load_facts)"
            )
    if method in NEEDS_RETAIN and not retain:
        raise BadInput(
            f"{name('method')} {method} needs {name('retain')} facts (its loss keeps them)"
        )
    if method == "bake" and plan is None:
        raise BadInput(
            f"{name('method')} bake needs a {name('plan')} to make permanent "
            "(codecut.unlearn makes one)"
        )
    if method != "bake" and plan is not None:
        raise BadInput(f"a {name('plan')} is for {name('method')} bake only, not {method}")
    if plan is not None and not isinstance(plan, UnlearnPlan):
        raise BadType(f"plan must be an UnlearnPlan, got {type(plan).__name__}")
    known = method_options(method)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BadInput(
            f"method {method} has no option {', '.join(unknown)}; its options: "
            f"{', '.join(known) or 'none'}"
        )
    check_options(method, options)
    if not (isinstance(steps, int) and steps >= 1):
        raise BadInput(f"{name('steps')} must be a whole number >= 1, got {steps!r}")
    if min_steps is None:
        min_steps = min(MIN_STEPS, steps)
    if not (isinstance(min_steps, int) and 0 <= min_steps <= steps):
        raise BadInput(f"min_steps must be a whole number from 0 to steps ({steps})")
    if not lr > 0:
        raise BadInput(f"{name('lr')} must be > 0, got {lr!r}")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise BadInput(f"{name('batch_size')} must be a whole number >= 1, got {batch_size!r}")
    if params is not None:
        params_.parse(params, name("params"))
    if save_dir is not None and Path(save_dir).exists():
        if not Path(save_dir).is_dir() or any(Path(save_dir).iterdir()):
            raise BadInput(
                f"{name('save_dir')} {save_dir} exists and is not empty; choose a new directory"
            )
    return FinetuneConfig(
        method, params, steps, lr, min_steps, seed, batch_size, {**known, **options}
    )

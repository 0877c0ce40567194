"""The model states an attack card compares: clean, the bare bottleneck, and the plan applied."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

from codecut.codebook import Bottleneck, attach
from codecut.probes.plan import UnlearnPlan, apply

from codecut.core.models import Model

STATES = ("clean", "bottleneck", "plan")
T = TypeVar("T")


@dataclass(frozen=True)
class States:
    """Which states there are and how to enter each.

    The bare bottleneck keeps the error term, so it should change nothing: its column checks
    that the attachment alone is not what a plan's numbers show.
    """

    bottleneck: Bottleneck | None = None  # with a plan: the plan's bottleneck
    plan: UnlearnPlan | None = None

    @property
    def names(self) -> list[str]:
        there = (True, self.bottleneck is not None, self.plan is not None)
        return [name for name, ok in zip(STATES, there) if ok]

    def enter(
        self, model: Model, name: str, bottleneck: Bottleneck | None = None
    ) -> AbstractContextManager:
        """`model` in state `name`; `bottleneck` replaces the states' own (a copy, say)."""
        bn = bottleneck or self.bottleneck
        if name == "clean":
            return nullcontext()
        if name == "bottleneck":
            return attach(model, bn)
        return apply(model, self.plan, bottleneck=bn)

    def measure(
        self, model: Model, fn: Callable[..., T], *args, names: list[str] | None = None
    ) -> dict[str, T]:
        """`fn(model, *args)` in each state of `names` (default: every state there is)."""
        out = {}
        for name in names or self.names:
            with self.enter(model, name):
                out[name] = fn(model, *args)
        return out

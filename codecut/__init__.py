"""codecut: make a language model forget one association by cutting codes out of a sparse bottleneck.

`import codecut` is cheap and changes nothing in the process (no environment variable is set):
each public name below is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> the module that defines it
_EXPORTS = {
    "Ablation": "codecut.codebook.ablation",
    "AttackCard": "codecut.probes.attacks",
    "Bottleneck": "codecut.codebook.bottleneck",
    "load_bottleneck": "codecut.codebook.bottleneck",
    "Fact": "codecut.core.facts",
    "load_facts": "codecut.core.facts",
    "save_facts": "codecut.core.facts",
    "Model": "codecut.core.models",
    "load_model": "codecut.core.models",
    "UnlearnPlan": "codecut.probes.plan",
    "load_plan": "codecut.probes.plan",
    "attach": "codecut.api",
    "attack": "codecut.api",
    "apply": "codecut.api",
    "evaluate": "codecut.api",
    "finetune_unlearn": "codecut.api",
    "train_bottleneck": "codecut.api",
    "unlearn": "codecut.api",
}
_SUBPACKAGES = ("codebook", "kernels", "probes")

__all__ = [
    "Ablation",
    "AttackCard",
    "Bottleneck",
    "Fact",
    "Model",
    "UnlearnPlan",
    "apply",
    "attach",
    "attack",
    "codebook",
    "evaluate",
    "finetune_unlearn",
    "kernels",
    "load_bottleneck",
    "load_facts",
    "load_model",
    "load_plan",
    "probes",
    "save_facts",
    "train_bottleneck",
    "unlearn",
]  # _EXPORTS and _SUBPACKAGES (a test checks they agree)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from codecut import codebook, kernels, probes
    from codecut.api import (
        apply,
        attach,
        attack,
        evaluate,
        finetune_unlearn,
        train_bottleneck,
        unlearn,
    )
    from codecut.codebook.ablation import Ablation
    from codecut.codebook.bottleneck import Bottleneck, load_bottleneck
    from codecut.core.facts import Fact, load_facts, save_facts
    from codecut.core.models import Model, load_model
    from codecut.probes.attacks import AttackCard
    from codecut.probes.plan import UnlearnPlan, load_plan


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"codecut.{name}")
    else:
        raise AttributeError(f"module 'codecut' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

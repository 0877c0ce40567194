"""codecut: make a language model forget one association by cutting codes out of a sparse bottleneck."""

import os

# codecut never reaches a model hub: set before transformers is first imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Leaf modules first: probes and codebook import them while this package is initialising.
from codecut import probes  # noqa: E402, I001
from codecut.codebook import Ablation, Bottleneck, attach, load_bottleneck, train_bottleneck  # noqa: E402
from codecut.facts import Fact, load_facts, save_facts  # noqa: E402
from codecut.models import Model, load_model  # noqa: E402
from codecut.probes.evaluate import evaluate  # noqa: E402
from codecut.probes.plan import UnlearnPlan, apply, load_plan  # noqa: E402
from codecut.probes.selector import unlearn  # noqa: E402

__all__ = [
    "Ablation",
    "Bottleneck",
    "UnlearnPlan",
    "apply",
    "Fact",
    "Model",
    "attach",
    "evaluate",
    "load_bottleneck",
    "load_facts",
    "load_model",
    "load_plan",
    "probes",
    "save_facts",
    "train_bottleneck",
    "unlearn",
]

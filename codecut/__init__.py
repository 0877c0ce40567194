"""codecut: make a language model forget one association by cutting codes out of a sparse bottleneck."""

import os

# codecut never reaches a model hub: set before transformers is first imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from codecut.facts import Fact, load_facts, save_facts  # noqa: E402
from codecut.models import Model, load_model  # noqa: E402

__all__ = ["Fact", "Model", "load_facts", "load_model", "save_facts"]

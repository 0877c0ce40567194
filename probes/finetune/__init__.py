"""Fine-tuning mode: unlearning by changing the weights, and a plan made permanent.

    result = finetune_unlearn(model, forget, retain, method="npo", save_dir="unlearned/")
    result.model, result.record

One idea per file: data.py (the token sequences), losses.py (one function per method, each
loss written out with its paper), config.py (a request's
checks and hyper-parameters), run.py (the loop, early stop, the record), save.py (the model
directory and its card).
"""

from codecut.probes.finetune.config import FinetuneConfig, finetune_config
from codecut.probes.finetune.losses import METHODS
from codecut.probes.finetune.run import (
    BeforeAfter,
    FinetuneRecord,
    FinetuneResult,
    finetune_unlearn,
)

__all__ = [
    "METHODS",
    "BeforeAfter",
    "FinetuneConfig",
    "FinetuneRecord",
    "FinetuneResult",
    "finetune_config",
    "finetune_unlearn",
]

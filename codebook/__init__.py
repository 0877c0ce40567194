"""codecut.codebook: sparse bottlenecks in the residual stream.

Bottleneck kinds (bottleneck.py; their config and content hash: config.py), putting one into a model (attach.py), cutting codes inside it
(ablation.py), training (train.py: TrainConfig, the loop, checkpoints; with activations.py, the
collection in memory and to disk, corpus.py, the texts, and metrics.py, code statistics, FVU
and CE) and the sae-lens file format (saefile.py).

sae-lens is imported only when needed (it takes seconds); call `register_with_sae_lens()` before
`sae_lens.SAE.load_from_disk` on a codebook-kind directory in a process that has not saved or
loaded one through codecut yet.
"""

from codecut.codebook.ablation import Ablation
from codecut.codebook.attach import Attachment, attach
from codecut.codebook.bottleneck import Bottleneck, Codes, load_bottleneck
from codecut.codebook.config import BottleneckConfig
from codecut.codebook.saefile import BottleneckFileError, register_with_sae_lens, save_bottleneck
from codecut.codebook.train import TrainConfig, train_bottleneck

__all__ = [
    "Ablation",
    "Attachment",
    "Bottleneck",
    "BottleneckConfig",
    "BottleneckFileError",
    "Codes",
    "TrainConfig",
    "attach",
    "load_bottleneck",
    "register_with_sae_lens",
    "save_bottleneck",
    "train_bottleneck",
]

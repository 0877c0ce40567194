"""What defines a bottleneck apart from its weights (`BottleneckConfig`), the tensors that config
implies, and the content hash over them. Both the bottleneck (bottleneck.py) and its file format
(saefile.py) build on this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from codecut.core.errors import BadInput

KINDS = ("topk", "codebook", "relu", "jumprelu")
DENSE_KINDS = ("relu", "jumprelu")  # every code with a positive activation is active


@dataclass
class BottleneckConfig:
    """What defines a bottleneck, apart from its weights.

    Attributes:
        kind: one of KINDS.
        d_in: width of the activation it reads (the model's d_model at `hook`).
        n_codes: number of codes n.
        k: active codes per position (topk and codebook); None for relu/jumprelu.
        hook: the model hook it was trained at ("blocks.12.hook_out").
        model: the model it was trained on (registry name, path or class name).
        apply_b_dec_to_input: subtract b_dec before encoding (sae-lens convention; topk uses it).
        norm_limit: positions whose activation norm exceeds this are passed through unchanged
            (they were left out of training: 5x the median norm); None disables the check.
        extra: training command, metrics and anything else recorded with the weights.
    """

    kind: str
    d_in: int
    n_codes: int
    k: int | None = None
    hook: str = ""
    model: str = ""
    apply_b_dec_to_input: bool = True
    norm_limit: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise BadInput(f"unknown bottleneck kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind in ("topk", "codebook") and not (self.k and 0 < self.k <= self.n_codes):
            raise BadInput(f"{self.kind} needs 0 < k <= n_codes, got k={self.k}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shapes(cfg: BottleneckConfig) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """The weights' shapes by name (W_enc [d_in, n], b_enc [n], W_dec [n, d_in], b_dec [d_in],
    threshold [n] for jumprelu) and the per-code statistics' (fire_rate [n], act_mean [n])."""
    d, n = cfg.d_in, cfg.n_codes
    weights = {"W_enc": (d, n), "b_enc": (n,), "W_dec": (n, d), "b_dec": (d,)}
    if cfg.kind == "jumprelu":
        weights["threshold"] = (n,)
    return weights, {"fire_rate": (n,), "act_mean": (n,)}


def content_hash(cfg: BottleneckConfig, state: dict[str, torch.Tensor]) -> str:
    """16 hex digits over the kind, k and every tensor (as float32), so a plan made for one
    bottleneck can refuse another; saving in bf16 and loading back gives the same hash."""
    h = hashlib.sha256(f"{cfg.kind}:{cfg.k}:{cfg.d_in}:{cfg.n_codes}".encode())
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

"""Fused encode + top-k: ``top-k(x @ W_enc + b_enc)`` per row without the dense ``[B, n]`` matrix.

``topk_encode_ref`` is the plain-torch reference (CPU path, test oracle). The Triton path tiles
the codes: each program multiplies a block of rows by one tile of ``W_enc`` at a time and merges
the tile into a running top-k held in registers, so only ``[B, k]`` ever reaches memory.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F


class TopK(NamedTuple):
    """The k largest pre-activations of each row, sorted descending, and their code indices."""

    values: torch.Tensor
    indices: torch.Tensor


def topk_encode_ref(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor | None, k: int, cosine: bool = False
) -> TopK:
    """Reference: dense scores then ``torch.topk``. Computes in ``W_enc``'s dtype."""
    x = x.to(W_enc.dtype)
    if cosine:
        x, W_enc = F.normalize(x, dim=-1), F.normalize(W_enc, dim=0)
    pre = x @ W_enc
    if b_enc is not None:
        pre = pre + b_enc.to(W_enc.dtype)
    values, indices = pre.topk(k, dim=-1, sorted=True)
    return TopK(values, indices)

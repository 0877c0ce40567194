"""Sparse decode: ``y[b] = sum_j values[b, j] * W_dec[indices[b, j]] + b_dec``.

``sparse_decode_ref`` is the plain-torch reference (CPU path, test oracle). The Triton path
gathers only the k used rows of ``W_dec`` per token and accumulates them in fp32.
"""

import torch
import torch.nn.functional as F


def sparse_decode_ref(
    indices: torch.Tensor, values: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor | None
) -> torch.Tensor:
    """Reference: ``F.embedding_bag`` in fp32 (it never builds ``[B, k, d]``), cast to W's dtype."""
    lead, k = indices.shape[:-1], indices.shape[-1]
    y = F.embedding_bag(
        indices.reshape(-1, k),
        W_dec.float(),
        per_sample_weights=values.reshape(-1, k).float(),
        mode="sum",
    )
    if b_dec is not None:
        y = y + b_dec.float()
    return y.to(W_dec.dtype).reshape(*lead, W_dec.shape[1])

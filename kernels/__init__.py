"""codecut.kernels: fused encode + top-k and sparse decode (Triton on CUDA, torch elsewhere)."""

from .dispatch import backend, sparse_decode, topk_encode
from .sparse_decode import sparse_decode_ref
from .topk_encode import TopK, topk_encode_ref

__all__ = [
    "TopK",
    "backend",
    "sparse_decode",
    "sparse_decode_ref",
    "topk_encode",
    "topk_encode_ref",
]

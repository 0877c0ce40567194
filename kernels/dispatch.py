"""Public entry points: validate arguments, then run the Triton kernel or the torch reference."""

import os

import torch

from codecut.core.errors import BadInput, CodecutError

from .gather_triton import sparse_decode_triton
from .reference import TopK, sparse_decode_ref, topk_encode_ref
from .topk_triton import INTERPRETED, TRITON_MAX_K, topk_encode_triton

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class KernelChoiceError(CodecutError, RuntimeError):
    """`CODECUT_KERNELS` asks for kernels that cannot run here (the message says what to set)."""


def backend(device: torch.device | str) -> str:
    """Which implementation runs for tensors on ``device``: ``"triton"`` or ``"torch"``.

    CUDA tensors use Triton, everything else the torch reference. ``CODECUT_KERNELS=triton|torch``
    forces one; forcing Triton for CPU tensors works only under Triton's interpreter.
    """
    device = torch.device(device)
    forced = os.environ.get("CODECUT_KERNELS", "").strip().lower()
    if forced == "torch":
        return "torch"
    if forced == "triton":
        if device.type != "cuda" and not INTERPRETED:
            raise KernelChoiceError(
                f"CODECUT_KERNELS=triton with {device.type} tensors needs Triton's interpreter: "
                "set TRITON_INTERPRET=1 before triton and codecut.kernels are first imported, "
                "or unset CODECUT_KERNELS to use the torch reference"
            )
        return "triton"
    if forced:
        raise BadInput(f"CODECUT_KERNELS must be 'triton' or 'torch', got {forced!r}")
    return "triton" if device.type == "cuda" and torch.cuda.is_available() else "torch"


def _check_dtype(name: str, t: torch.Tensor) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")


def topk_encode(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor | None, k: int, cosine: bool = False
) -> TopK:
    """Top-k codes of ``x @ W_enc + b_enc`` per row of ``x`` (``[..., d]``), sorted descending.

    Returns ``TopK(values [..., k], indices [..., k] int64)``; values are raw pre-activations in
    ``W_enc``'s dtype (``x`` is cast to it). ``cosine=True`` scores with unit-norm ``x`` rows and
    unit-norm ``W_enc`` columns (codebook kind). Differentiable in ``x``, ``W_enc``, ``b_enc``.
    """
    if W_enc.ndim != 2 or x.ndim < 1 or x.shape[-1] != W_enc.shape[0]:
        raise ValueError(
            f"x [..., d] and W_enc [d, n] do not fit: {tuple(x.shape)}, {tuple(W_enc.shape)}"
        )
    n = W_enc.shape[1]
    _check_dtype("W_enc", W_enc)
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    if b_enc is not None and tuple(b_enc.shape) != (n,):
        raise ValueError(f"b_enc must have shape ({n},), got {tuple(b_enc.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, n={n}], got {k!r}")
    if x.device != W_enc.device:
        raise ValueError(f"x is on {x.device} but W_enc on {W_enc.device}")
    # The kernel keeps a running top-k in registers sized for k <= TRITON_MAX_K; a wider k (AuxK
    # over hundreds of dead codes, say) takes the reference, also on CUDA.
    if backend(x.device) == "triton" and k <= TRITON_MAX_K:
        return topk_encode_triton(x, W_enc, b_enc, k, cosine)
    return topk_encode_ref(x, W_enc, b_enc, k, cosine)


def sparse_decode(
    values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor | None
) -> torch.Tensor:
    """``y[..] = sum_j values[.., j] * W_dec[indices[.., j]] + b_dec``, accumulated in fp32.

    ``values`` and ``indices`` are ``[..., k]``, in ``TopK``'s order (``sparse_decode(*top, W_dec,
    b_dec)`` decodes a ``TopK``); indices must lie in ``[0, n)`` (not checked on GPU: checking
    would synchronise). Output ``[..., d]`` in ``W_dec``'s dtype. Differentiable in ``values``,
    ``W_dec``, ``b_dec``.
    """
    if W_dec.ndim != 2:
        raise ValueError(f"W_dec must be [n, d], got shape {tuple(W_dec.shape)}")
    _check_dtype("W_dec", W_dec)
    if not values.is_floating_point():
        raise ValueError(f"values must be a floating-point tensor, got {values.dtype}")
    if indices.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"indices must be int64 (or int32), got {indices.dtype}")
    if values.shape != indices.shape or values.ndim < 1:
        raise ValueError(
            f"values and indices must both be [..., k], got {tuple(values.shape)} "
            f"and {tuple(indices.shape)}"
        )
    if b_dec is not None and tuple(b_dec.shape) != (W_dec.shape[1],):
        raise ValueError(f"b_dec must have shape ({W_dec.shape[1]},), got {tuple(b_dec.shape)}")
    if not values.device == indices.device == W_dec.device:
        raise ValueError("values, indices and W_dec must be on one device")
    if backend(W_dec.device) == "triton":
        return sparse_decode_triton(values, indices, W_dec, b_dec)
    return sparse_decode_ref(values, indices, W_dec, b_dec)

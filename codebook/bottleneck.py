"""The sparse bottleneck: every activation is rewritten as k active codes out of n.

One class serves every kind, because they differ only in how codes are chosen:

    topk      linear encoder on (x - b_dec), top-k, ReLU; decoder rows unit-norm.
    codebook  codebook-features style: x scored against each code by cosine, top-k codes;
              the output is the codes' decoder rows (free norms) weighted by their (ReLU'd)
              cosine scores.
    relu      a sae-lens "standard" SAE (every positive pre-activation is active).
    jumprelu  a sae-lens JumpReLU SAE (active where the pre-activation exceeds its threshold).

The last two have no fixed k; `encode` returns as many slots as the busiest position needs,
zero-valued where a position has fewer. `choose_encode` picks how codes are computed: the fused
encode + top-k kernel (Triton on GPU, within the k it is built for), its torch reference, or,
for the dense-activation kinds, a plain matmul + activation that keeps the nonzero codes.
Decoding always goes through `codecut.kernels.sparse_decode`.

    bn = Bottleneck(BottleneckConfig(kind="topk", d_in=576, n_codes=8192, k=32))
    codes = bn.encode(x)          # Codes(values [..., k], indices [..., k])
    x_hat = bn.decode(codes)      # [..., d_in]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch
from codecut.codebook.config import DENSE_KINDS, KINDS, BottleneckConfig, content_hash, shapes
from codecut.codebook.saefile import BottleneckFileError, read, registry, save_bottleneck
from codecut.kernels import TRITON_MAX_K, backend, sparse_decode, topk_encode, topk_encode_ref
from torch import nn

from codecut.core.errors import NotFound


def choose_encode(kind: str, k: int | None, device: torch.device | str) -> str:
    """How `Bottleneck.encode` computes codes for `kind` with `k` candidates on `device`.

    "dense": relu/jumprelu, whose active set is not a top-k (a plain matmul + activation; the
    top-k kernel would need k = n_codes). "triton_topk": the fused kernel, for CUDA tensors (or
    `CODECUT_KERNELS=triton`) and k within what it is built for. "torch_topk": the reference,
    everywhere else.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown bottleneck kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind in DENSE_KINDS:
        return "dense"
    if k is not None and k <= TRITON_MAX_K and backend(device) == "triton":
        return "triton_topk"
    return "torch_topk"


class Codes(NamedTuple):
    """The active codes at each position, in `TopK`'s (values, indices) order.

    Attributes:
        values: [..., k], how strongly each is active (>= 0; 0 marks an unused slot). The decoder
            multiplies code `indices[..., j]`'s decoder row by `values[..., j]`; values keep their
            autograd graph, so gradients with respect to them give attributions.
        indices: int64 [..., k], which codes are active, sorted by pre-activation (highest first).
    """

    values: torch.Tensor
    indices: torch.Tensor


class Bottleneck(nn.Module):
    """A sparse bottleneck for one hook. See the module docstring for the kinds.

    Parameters: W_enc [d_in, n], b_enc [n], W_dec [n, d_in], b_dec [d_in] (+ threshold [n] for
    jumprelu). Buffers (used by clamp ablations; training sets them from
    `metrics.evaluate_bottleneck`'s `CodeStats`, and they are saved with the weights): fire_rate
    [n], the fraction of positions where each code is active; act_mean [n], its mean value where
    active (zeros until set: `has_stats` is then False).
    """

    def __init__(self, cfg: BottleneckConfig):
        super().__init__()
        self.cfg = cfg
        weights, stats = shapes(cfg)
        for name, shape in weights.items():
            setattr(self, name, nn.Parameter(torch.zeros(shape)))
        for name, shape in stats.items():
            self.register_buffer(name, torch.zeros(shape))
        self.source = ""  # the directory it was loaded from, for error messages

    # --- facts -------------------------------------------------------------------------------
    @property
    def hook(self) -> str:
        return self.cfg.hook

    @property
    def kind(self) -> str:
        return self.cfg.kind

    @property
    def n_codes(self) -> int:
        return self.cfg.n_codes

    @property
    def has_stats(self) -> bool:
        """Whether typical activations are known (training computes them; clamp needs them)."""
        return bool(self.fire_rate.any())

    @property
    def content_hash(self) -> str:
        """16 hex digits over the kind, k and every tensor (as float32), so a plan made for one
        bottleneck can refuse another; saving in bf16 and loading back gives the same hash."""
        return content_hash(self.cfg, self.state_dict())

    def __repr__(self) -> str:
        return (
            f"Bottleneck({self.cfg.kind}, d_in={self.cfg.d_in}, n_codes={self.cfg.n_codes}, "
            f"k={self.cfg.k}, hook={self.cfg.hook!r})"
        )

    # --- the computation -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor, k: int | None = None) -> Codes:
        """Codes for activations x [..., d_in].

        `k` asks topk/codebook kinds for more candidates than cfg.k (ranked), which the `next`
        ablation uses to replace a cut code with the next-best one.
        """
        x = x.to(self.W_enc.dtype)
        kind = self.cfg.kind
        k = k or self.cfg.k
        route = choose_encode(kind, k, x.device)
        if kind != "codebook" and self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        if route == "dense":
            return self._encode_dense(x)
        # Past the kernel's k, CUDA tensors take the reference (CPU ones the dispatcher, as ever).
        wide = route == "torch_topk" and backend(x.device) == "triton"
        run = topk_encode_ref if wide else topk_encode
        if kind == "codebook":
            out = run(x, self.W_enc, None, k, cosine=True)
        else:
            out = run(x, self.W_enc, self.b_enc, k)
        return Codes(out.values.relu(), out.indices)

    def _encode_dense(self, x: torch.Tensor) -> Codes:
        """relu/jumprelu: dense activations, then the active codes as sparse slots (sorted by
        value, as many as the busiest position needs; zero-valued where a position has fewer)."""
        pre = x @ self.W_enc + self.b_enc
        floor = self.threshold if self.cfg.kind == "jumprelu" else 0.0
        acts = torch.where(pre > floor, pre.relu(), torch.zeros_like(pre))
        # One host sync per call: the slot count sets the output's shape.
        slots = max(int((acts > 0).sum(-1).max()) if acts.numel() else 0, 1)
        values, indices = acts.topk(slots, dim=-1, sorted=True)
        return Codes(values, indices)

    def decode(self, codes: Codes) -> torch.Tensor:
        """The reconstruction [..., d_in] from codes."""
        return sparse_decode(
            codes.values.to(self.W_dec.dtype), codes.indices, self.W_dec, self.b_dec
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)): x as the bottleneck lets it through."""
        return self.decode(self.encode(x))

    # --- training helpers ----------------------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm (topk keeps them so: a code's value is then the size
        of its contribution; codebook rows keep their norms, since cosine values are <= 1)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    def save(self, path, dtype: torch.dtype | None = None) -> None:
        """Write the sae-lens directory layout (cfg.json + sae_weights.safetensors) atomically;
        `dtype` (e.g. torch.bfloat16) stores the weights in another precision."""
        save_bottleneck(self, path, dtype=dtype)


def load_bottleneck(
    spec: str | os.PathLike | Bottleneck, device: str | torch.device = "cpu"
) -> Bottleneck:
    """A Bottleneck from a shipped name ("smollm2-135m-instruct"), a codecut directory, or any
    sae-lens SAE directory (standard/ReLU, JumpReLU, TopK). Weights are held in float32."""
    if isinstance(spec, Bottleneck):
        return spec
    shipped = registry()
    if str(spec) in shipped:
        path = shipped[str(spec)]
    elif Path(spec).is_dir():
        path = Path(spec)
    else:
        names = ", ".join(shipped) or "none shipped"
        raise NotFound(f"no bottleneck {str(spec)!r}: not a directory nor a shipped name ({names})")
    stored = read(path)
    bn = Bottleneck(stored.cfg)
    bn.load_state_dict(stored.state, strict=False)
    if stored.content_hash and stored.content_hash != bn.content_hash:
        raise BottleneckFileError(
            f"{stored.weights_file} does not match the content hash in {stored.cfg_file} "
            f"({bn.content_hash} != {stored.content_hash}): the file was changed or damaged"
        )
    bn = bn.to(device)
    # A shipped bottleneck is recorded by its registry name (what a plan records, valid on any
    # install), any other by its directory (for error messages).
    bn.source = str(spec) if str(spec) in shipped else str(path)
    return bn

"""The one prepared GPU check (issue 30): ``python benchmarks/gpu.py --out DIR [--toy]``.

Made for a lent H200 with no network, only torch, triton, transformers, safetensors, einops,
peft, pandas, matplotlib and pytest, and codecut not installed: it runs from the repository root
of a copy of the working tree and imports codecut from there. Model weights cannot travel, so
models are transformers configs with random weights. Each measurement stands beside its
baseline, measured in the same run:

1. correctness: the cases of tests/test_kernels.py's interpreter tests (their draws fixed here),
   compiled, plus bf16 at a real size, against kernels/reference.py; a failing kernel is not timed;
2. kernels: sparse decode and fused encode + top-k against dense torch, ``F.embedding_bag`` and
   matmul + ``torch.topk``: time, GB/s as a share of a copy measured here, peak memory;
3. training: a TopK bottleneck's step (forward, backward, Adam), kernels against dense torch;
4. attached: a forward with ``codecut.codebook.attach`` (error term; and a plan's ablations)
   against the bare model;
5. a request's model work replayed: the forward and backward passes the demo's unlearn request
   made on the CPU (benchmarks/results/request_passes.json, from `profile_request.py --passes`),
   run on the random-weight models with the bottleneck attached: seconds per request.

It writes DIR/gpu.json and DIR/gpu.md after every section (a run cut off keeps what it measured)
and DIR/gpu.png at the end. A time guard skips what would run past ``--budget`` seconds (7.5
minutes); out-of-memory and errors are recorded, not fatal. ``--toy`` runs every section at tiny
sizes on the CPU (torch reference paths; section 1 under Triton's interpreter) in about a minute:
tests/test_gpu_script.py runs it, so the script never rots.
"""

from __future__ import annotations

import argparse
import gc
import importlib.abc
import importlib.util
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

T0 = time.monotonic()  # the time guard counts from here: imports and CUDA start-up included
ROOT = Path(__file__).resolve().parent.parent
# Triton chooses interpreter or compiler once, when first imported: the toy run interprets the
# kernels on the CPU, the full run must compile them. Dispatch is left to codecut's default.
os.environ["TRITON_INTERPRET"] = "1" if "--toy" in sys.argv[1:] else "0"
os.environ["CODECUT_KERNELS"] = ""

import pandas as pd  # noqa: E402 (after the environment Triton reads)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# pyproject maps these import names to folders; without an install, the same mapping by hand.
PACKAGES = {
    "codecut": "codecut",
    "codecut.codebook": "codebook",
    "codecut.kernels": "kernels",
    "codecut.probes": "probes",
}


class WorkingTree(importlib.abc.MetaPathFinder):
    """Finds codecut's packages in this working tree's folders, mapped as pyproject maps them.

    The repository root is never put on sys.path: its `kernels/` would then be a top-level
    package `kernels`, which transformers imports when it finds one."""

    def find_spec(self, name, path=None, target=None):
        folder = PACKAGES.get(name)
        if folder is None:
            return None
        where = ROOT / folder
        return importlib.util.spec_from_file_location(
            name, where / "__init__.py", submodule_search_locations=[str(where)]
        )


def use_working_tree() -> str:
    """Import codecut as installed, or else from this working tree; says which, and where."""
    how = "installed"
    try:
        import codecut.kernels  # noqa: F401
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("codecut"):
            raise  # triton or torch missing: nothing to work around
        for name in [m for m in sys.modules if m.split(".")[0] == "codecut"]:
            del sys.modules[name]
        sys.meta_path.insert(0, WorkingTree())
        how = "not installed: the working tree, by the import shim"
        import codecut.kernels  # noqa: F401
    import codecut

    return f"{Path(codecut.__file__).resolve().parent.parent} ({how})"


CODECUT_FROM = use_working_tree()

import transformers  # noqa: E402
import triton  # noqa: E402
from codecut.codebook import Ablation, Bottleneck, BottleneckConfig, attach  # noqa: E402
from codecut.kernels import TopK, backend, sparse_decode, topk_encode  # noqa: E402
from codecut.kernels.gather_triton import sparse_decode_triton  # noqa: E402
from codecut.kernels.reference import sparse_decode_ref, topk_encode_ref  # noqa: E402
from codecut.kernels.topk_triton import INTERPRETED, topk_encode_triton  # noqa: E402
from codecut.probes.selector.prefix import _from_layer  # noqa: E402

from codecut.core.io import atomic_file, markdown_table, write_text  # noqa: E402
from codecut.core.models import Model, decoder_layers  # noqa: E402

ENCODE, ENCODE_BWD = "topk_encode", "topk_encode backward"
DECODE, DECODE_BWD = "sparse_decode", "sparse_decode backward"
F32, BF16, FP16 = torch.float32, torch.bfloat16, torch.float16
TOL = {F32: (1e-5, 1e-5), BF16: (6e-2, 2e-2), FP16: (1e-2, 2e-3)}  # (atol, rtol), as the tests


# --- sizes ---------------------------------------------------------------------------------------
class ModelSpec(NamedTuple):
    """A random-weight Llama of some model's shape, with a bottleneck (d, n, k) at `hook`."""

    name: str
    config: dict
    bottleneck: tuple[int, int, int]
    hook: str


SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
               tie_word_embeddings=True)  # fmt: skip
# Gemma-2-2B's widths (hidden 2304, 26 layers, head_dim 256, vocab 256000) in Llama blocks.
TWO_B = dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
             num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=256000,
             tie_word_embeddings=True)  # fmt: skip
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512)  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """What one run measures, and how often."""

    device: torch.device
    dtype: torch.dtype  # kernels, models and bottlenecks (training adds fp32)
    shapes: tuple[tuple[int, int, int], ...]  # (d, n, k) of sections 2 and 3
    batches: tuple[int, ...]  # section 2's tokens per call
    train_batch: int
    real: tuple[int, int, int]  # section 1's bf16 case at a real size ...
    real_batches: tuple[int, ...]  # ... at these batches
    models: tuple[ModelSpec, ...]
    attach_batches: tuple[int, ...]
    seq: int
    replay_passes: int  # section 5 replays the request's first this many passes ...
    replay_rows: int  # ... with at most this many rows ...
    replay_tokens: int  # ... and tokens each
    reps: dict[str, tuple[int, int]]  # section -> (warm-up calls, timed calls)
    copy_bytes: int
    matmul: int


FULL = Sizes(
    device=torch.device("cuda"),
    dtype=BF16,
    shapes=((2304, 65536, 64), (4096, 65536, 64)),  # Gemma Scope's and Flash-SAE's
    batches=(1, 1024, 8192),
    train_batch=8192,
    real=(2304, 65536, 64),
    real_batches=(1, 1024),
    models=(
        ModelSpec("SmolLM2-135M shape", SMOLLM2, (576, 8192, 32), "blocks.12.hook_out"),
        ModelSpec("2B shape (Gemma-2-2B widths)", TWO_B, (2304, 65536, 64), "blocks.12.hook_out"),
    ),
    attach_batches=(1, 64),
    seq=128,
    replay_passes=10**6,  # all of them, as recorded
    replay_rows=10**6,
    replay_tokens=10**6,
    reps={"machine": (3, 10), "kernels": (3, 25), "training": (2, 5), "attached": (3, 10)},
    copy_bytes=2**30,
    matmul=8192,
)
TOY = Sizes(
    device=torch.device("cpu"),
    dtype=F32,
    shapes=((48, 1024, 16), (64, 1024, 16)),
    batches=(1, 16, 64),
    train_batch=64,
    real=(40, 128, 8),  # the interpreter takes ~30 s for a bf16 encode at n=1024
    real_batches=(1, 5),
    models=(ModelSpec("tiny Llama", TINY, (64, 512, 8), "blocks.1.hook_out"),),
    attach_batches=(1, 4),
    seq=16,
    replay_passes=12,
    replay_rows=4,
    replay_tokens=16,
    reps={"machine": (1, 3), "kernels": (1, 3), "training": (1, 2), "attached": (1, 2)},
    copy_bytes=2**22,
    matmul=256,
)


# --- timing, memory and the time guard -----------------------------------------------------------
class Timing(NamedTuple):
    ms: float  # median over the timed calls
    peak_mb: float | None  # device memory one call takes above what was allocated (None on CPU)


def timed(fn: Callable[[], object], device: torch.device, reps: tuple[int, int]) -> Timing:
    """Median time of `fn` (CUDA events on a GPU) after the warm-up calls; then its peak memory."""
    warmup, n = reps
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return Timing(statistics.median(times), None)
    torch.cuda.synchronize()
    events = [[torch.cuda.Event(enable_timing=True) for _ in range(2)] for _ in range(n)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    ms = statistics.median(start.elapsed_time(end) for start, end in events)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return Timing(ms, (torch.cuda.max_memory_allocated() - base) / 2**20)


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Guard:
    """Runs units of work within the time budget: a unit starts only while the time left exceeds
    the longest unit of its section so far plus a margin. Out-of-memory and errors become a
    status, so one failure does not lose the run (the traceback goes to stderr)."""

    MARGIN_S = 5.0

    def __init__(self, budget_s: float):
        self.end = T0 + budget_s
        self.longest: dict[str, float] = {}

    def run(self, section: str, what: str, fn: Callable[[], Any]) -> tuple[str, Any]:
        """(status, fn's result or None): "ok", "skipped: time", "out of memory", "error: ...".
        Each unit is named on stderr first, so a run that hangs shows where."""
        if self.end - time.monotonic() < self.longest.get(section, 0.0) + self.MARGIN_S:
            return "skipped: time", None
        t = time.monotonic()
        print(f"[{t - T0:5.0f} s] {section}: {what}", file=sys.stderr, flush=True)
        try:
            return "ok", fn()
        except torch.OutOfMemoryError:
            return "out of memory", None
        except Exception as e:
            traceback.print_exc()
            return f"error: {type(e).__name__}: {e}"[:300], None
        finally:
            self.longest[section] = max(self.longest.get(section, 0.0), time.monotonic() - t)
            free()


def rand(*shape: int, seed: int, device: torch.device, dtype=F32) -> torch.Tensor:
    """Seeded normal draws made on `device` (a 65536 x 4096 draw on the CPU takes seconds)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(*shape, generator=gen, device=device).to(dtype)


def randint(high: int, *shape: int, seed: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, high, shape, generator=gen, device=device)


def short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def ours(sizes: Sizes) -> str:
    """The name of codecut's rows: the implementation dispatch runs on this device."""
    return f"codecut ({backend(sizes.device)})"


def ceilings(sizes: Sizes) -> dict[str, float]:
    """A large device copy (GB/s, read + write) and a large matmul (TFLOP/s), timed here."""
    dev, reps = sizes.device, sizes.reps["machine"]
    src = torch.empty(sizes.copy_bytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy = timed(lambda: dst.copy_(src), dev, reps)
    a, b = (rand(sizes.matmul, sizes.matmul, seed=i, device=dev, dtype=sizes.dtype) for i in (0, 1))
    mm = timed(lambda: a @ b, dev, reps)
    return {
        "copy_gbps": 2 * sizes.copy_bytes / copy.ms / 1e6,
        "matmul_tflops": 2 * sizes.matmul**3 / mm.ms / 1e9,
    }


# --- 1. correctness -------------------------------------------------------------------------------
class Check(NamedTuple):
    """One kernel case against the reference: its largest differences and whether it passed."""

    op: str
    case: str
    max_abs: float
    max_rel: float  # max |difference| / max |reference|
    passed: bool
    status: str  # "ok", "mismatch", the invariant that broke, or why it did not run


def compare(pairs, tol: tuple[float, float]) -> tuple[float, float, str]:
    """(max abs difference, the same over the reference's largest value, "" or "mismatch")."""
    max_abs = max_rel = 0.0
    close = True
    for got, want in pairs:
        got, want = got.detach().float(), want.detach().float()
        if got.shape != want.shape:
            return math.inf, math.inf, "shape"
        if got.numel():
            diff = (got - want).abs().max().item()
            max_abs = max(max_abs, diff)
            max_rel = max(max_rel, diff / max(want.abs().max().item(), 1e-12))
            close &= torch.allclose(got, want, atol=tol[0], rtol=tol[1])
    return max_abs, max_rel, "" if close else "mismatch"


def dense_scores(x, W, b, cosine: bool) -> torch.Tensor:
    """fp32 scores of every code: what the kernel's selected values must equal."""
    x, W = x.float(), W.float()
    if cosine:
        x, W = F.normalize(x, dim=-1), F.normalize(W, dim=0)
    return x @ W + (b.float() if b is not None else 0)


def grads(fn, inputs: list[torch.Tensor], upstream: torch.Tensor):
    """fn's output and the gradients of its floating-point inputs for `upstream`."""
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*inputs)
    (out.values if isinstance(out, TopK) else out).backward(upstream)
    return out, [t.grad for t in inputs if t.is_floating_point()]


def check_encode(x, W, b, k: int, cosine: bool, tol) -> tuple[float, float, str]:
    """Tie-proof, as the tests: sorted values match the reference's, each index really scores
    its value, indices are in range and distinct within a row, values descend."""
    out, ref = topk_encode_triton(x, W, b, k, cosine), topk_encode_ref(x, W, b, k, cosine)
    n = W.shape[1]
    idx = out.indices.reshape(-1, k)
    invariants = {
        "dtype": out.values.dtype == W.dtype and out.indices.dtype == torch.int64,
        "index out of range": bool(((idx >= 0) & (idx < n)).all()),
        "an index repeats": bool((idx.sort(-1).values.diff(dim=-1) > 0).all()),
        "values not sorted": bool((out.values[..., :-1] >= out.values[..., 1:]).all()),
    }
    scored = dense_scores(x, W, b, cosine).reshape(-1, n).gather(-1, idx.clamp(0, n - 1))
    pairs = [(out.values, ref.values), (out.values, scored.reshape(out.values.shape))]
    max_abs, max_rel, problem = compare(pairs, tol)
    broken = [why for why, ok in invariants.items() if not ok]
    return max_abs, max_rel, ", ".join(broken) or problem


def check_encode_grads(x, W, b, k: int, cosine: bool, tol, gathered: bool):
    """Gradients in x, W, b against the reference's. `gathered` differentiates fp32 scores at the
    kernel's own indices instead (half precision may pick other near-tied codes)."""
    up = rand(*x.shape[:-1], k, seed=k, device=x.device, dtype=W.dtype)
    out, got = grads(lambda *t: topk_encode_triton(*t, k, cosine), [x, W, b], up)
    if gathered:
        scores = lambda *t: dense_scores(*t, cosine).gather(-1, out.indices)  # noqa: E731
        _, want = grads(scores, [x, W, b], up.float())
    else:
        _, want = grads(lambda *t: topk_encode_ref(*t, k, cosine), [x, W, b], up)
    return compare(zip(got, want), tol)


def check_decode(vals, idx, W, b, tol) -> tuple[float, float, str]:
    y = sparse_decode_triton(vals, idx, W, b)
    max_abs, max_rel, problem = compare([(y, sparse_decode_ref(vals, idx, W, b))], tol)
    return max_abs, max_rel, "dtype" if y.dtype != W.dtype else problem


def check_decode_grads(vals, idx, W, b, tol) -> tuple[float, float, str]:
    b = torch.zeros(W.shape[1], device=W.device, dtype=W.dtype) if b is None else b
    up = rand(*idx.shape[:-1], W.shape[1], seed=3, device=W.device, dtype=W.dtype)
    _, got = grads(sparse_decode_triton, [vals, idx, W, b], up)
    _, want = grads(sparse_decode_ref, [vals, idx, W, b], up)
    return compare(zip(got, want), tol)


def describe(dtype, B: int, d: int, n: int, k: int, layout: str, cosine: bool) -> str:
    words = [short(dtype), f"B={B} d={d} n={n} k={k}", f"{layout} x" if layout else ""]
    return " ".join(w for w in [*words, "cosine" if cosine else ""] if w)


def correctness_cases(sizes: Sizes) -> list[tuple[str, str, Callable[[], tuple]]]:
    """(op, case, check): the interpreter tests' cases (B=1, odd d, k=1, k=n, leading dims,
    strided inputs, exact ties, fp32/bf16/fp16; their hypothesis draws fixed) and a real size
    in bf16, built only when its check runs."""
    dev = sizes.device

    def r(*shape, seed, dtype=F32):
        return rand(*shape, seed=seed, device=dev, dtype=dtype)

    def x_of(B, d, layout, seed, dtype=F32):
        if layout == "transposed":
            return r(d, B, seed=seed, dtype=dtype).t()
        if layout == "strided":  # leading dim 2, every other column
            return r(2, B, 2 * d, seed=seed, dtype=dtype)[..., ::2]
        return r(B, d, seed=seed, dtype=dtype)

    cases = []
    for B, d, n, k, bias, cosine, layout, dt in [
        (1, 7, 5, 5, True, False, "", F32),  # B=1, k=n
        (3, 5, 64, 64, False, False, "", F32),  # k=n across code splits
        (20, 33, 64, 9, True, True, "transposed", F32),
        (5, 40, 50, 1, True, False, "strided", F32),  # k=1
        (13, 1, 17, 4, False, False, "", F32),  # d=1
        *[(1, 7, 5, 5, True, False, "", dt) for dt in (BF16, FP16)],
        *[(19, 33, 64, 4, True, True, "", dt) for dt in (BF16, FP16)],
    ]:
        seed = B + n
        x, W = x_of(B, d, layout, seed, dt), r(d, n, seed=seed + 1, dtype=dt)
        b = r(n, seed=seed + 2, dtype=dt) if bias else None
        name = describe(dt, B, d, n, k, layout, cosine)
        cases.append((ENCODE, name, lambda a=(x, W, b, k, cosine, TOL[dt]): check_encode(*a)))
    # Exact ties: small integers, duplicated columns and a row of zeros (every code ties).
    W = torch.randint(-2, 3, (6, 20), generator=torch.Generator().manual_seed(0)).float()
    W[:, 10:] = W[:, :10]
    x = torch.randint(-2, 3, (5, 6), generator=torch.Generator().manual_seed(1)).float()
    x[0] = 0
    for k in (1, 3, 20):
        a = (x.to(dev), W.to(dev), None, k, False, (0.0, 0.0))
        cases.append((ENCODE, f"float32 exact ties k={k}", lambda a=a: check_encode(*a)))
    for B, d, n, k, cosine, layout, dt in [
        (1, 3, 4, 4, False, "", F32),
        (20, 33, 64, 9, True, "transposed", F32),
        (5, 40, 50, 3, False, "strided", F32),
        *[(9, 17, 40, 3, False, "", dt) for dt in (BF16, FP16)],  # fp32 x, half W
    ]:
        seed = 7 * B + n
        x, W, b = x_of(B, d, layout, seed), r(d, n, seed=seed + 1, dtype=dt), r(n, seed=seed)
        a = (x, W, b.to(dt), k, cosine, TOL[dt], dt != F32)
        name = describe(dt, B, d, n, k, layout, cosine)
        cases.append((ENCODE_BWD, name, lambda a=a: check_encode_grads(*a)))
    for B, k, n, d, dt, vdt, bias in [
        (1, 1, 1, 1, F32, F32, False),
        (24, 8, 50, 70, F32, F32, True),
        (7, 3, 20, 33, BF16, F32, True),
        (7, 3, 20, 33, BF16, BF16, False),
        (5, 8, 40, 17, FP16, FP16, True),
    ]:
        seed = B * k + n
        idx = randint(n, 3, B, 2 * k, seed=seed, device=dev)[..., ::2]  # leading dims, strided
        vals, W = r(3, B, k, seed=seed, dtype=vdt), r(n, d, seed=seed + 1, dtype=dt)
        a = (vals, idx, W, r(d, seed=seed + 2, dtype=dt) if bias else None, TOL[dt])
        name = f"{short(dt)} [3, {B}] k={k} n={n} d={d}, {short(vdt)} values, strided indices"
        cases.append((DECODE, name, lambda a=a: check_decode(*a)))
        cases.append((DECODE_BWD, name, lambda a=a: check_decode_grads(*a)))

    d, n, k = sizes.real
    tol = TOL[BF16]

    def real_encode(B: int) -> tuple:
        W = (r(d, n, seed=5) / d**0.5).to(BF16)
        return r(B, d, seed=B, dtype=BF16), W, (0.01 * r(n, seed=6)).to(BF16), k, False, tol

    def real_decode(B: int) -> tuple:
        vals, W = r(B, k, seed=B, dtype=BF16).relu(), (r(n, d, seed=7) / d**0.5).to(BF16)
        b = (0.01 * r(d, seed=8)).to(BF16)
        return vals, randint(n, B, k, seed=B, device=dev), W, b, tol

    for B in sizes.real_batches:
        name = f"bfloat16 real size B={B} d={d} n={n} k={k}"
        cases += [
            (ENCODE, name, lambda B=B: check_encode(*real_encode(B))),
            (ENCODE_BWD, name, lambda B=B: check_encode_grads(*real_encode(B), gathered=True)),
            (DECODE, name, lambda B=B: check_decode(*real_decode(B))),
            (DECODE_BWD, name, lambda B=B: check_decode_grads(*real_decode(B))),
        ]
    return cases


def correctness(sizes: Sizes, guard: Guard) -> list[Check]:
    checks = []
    for op, case, check in correctness_cases(sizes):
        status, result = guard.run("correctness", f"{op}, {case}", check)
        if status != "ok":
            checks.append(Check(op, case, math.nan, math.nan, False, status))
        else:
            max_abs, max_rel, problem = result
            checks.append(Check(op, case, max_abs, max_rel, not problem, problem or "ok"))
    return checks


# --- 2. kernels ----------------------------------------------------------------------------------
class KernelRow(NamedTuple):
    op: str  # "decode" or "encode"
    impl: str
    d: int
    n: int
    k: int
    batch: int
    ms: float
    gbps: float  # useful bytes (see useful_bytes) per second
    bw_share: float  # gbps over the copy bandwidth measured in this run
    w_read_share: float  # encode: reading W_enc once in `ms`, over the copy bandwidth
    peak_mb: float | None
    vs_dense: float  # the dense baseline's time over this time
    vs_embedding_bag: float  # decode: embedding_bag's time over this time
    status: str


class KernelInputs(NamedTuple):
    x: torch.Tensor
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    idx: torch.Tensor
    acts: torch.Tensor
    dense_acts: torch.Tensor  # acts scattered to [B, n]: the dense decode's input


DENSE_ENCODE, DENSE_DECODE, BAG = "matmul + torch.topk", "dense torch", "F.embedding_bag"


def useful_bytes(op: str, d: int, n: int, k: int, B: int, el: int) -> int:
    """One model per op for every implementation (as kernels/bench.py): encode reads x, W_enc,
    b_enc and writes values and int64 indices; decode reads the codes and the B*k used rows of
    W_dec (each time: reuse from cache can take the share above 1) and writes [B, d]."""
    if op == "encode":
        return (B * d + d * n + n) * el + B * k * (el + 8)
    return B * k * (8 + el) + B * k * d * el + B * d * el


def kernel_inputs(d: int, n: int, k: int, B: int, sizes: Sizes) -> KernelInputs:
    dev, dt = sizes.device, sizes.dtype
    W_enc = (rand(d, n, seed=d + n, device=dev) / d**0.5).to(dt)
    x = rand(B, d, seed=B, device=dev, dtype=dt)
    b_enc, b_dec = torch.zeros(n, device=dev, dtype=dt), torch.zeros(d, device=dev, dtype=dt)
    values, idx = topk_encode_ref(x, W_enc, b_enc, k)  # exact codes, whatever the kernel does
    acts = values.relu()
    dense = torch.zeros(B, n, device=dev, dtype=dt).scatter_(1, idx, acts)
    return KernelInputs(x, W_enc, b_enc, W_enc.t().contiguous(), b_dec, idx, acts, dense)


def kernel_impls(k: int, name: str) -> list[tuple[str, str, str | None, Callable]]:
    """(op, impl, the correctness op it needs, the call on KernelInputs)."""
    return [
        ("decode", name, DECODE, lambda t: sparse_decode(t.acts, t.idx, t.W_dec, t.b_dec)),
        ("decode", DENSE_DECODE, None, lambda t: torch.addmm(t.b_dec, t.dense_acts, t.W_dec)),
        (
            "decode",
            BAG,
            None,
            lambda t: (
                F.embedding_bag(t.idx, t.W_dec, per_sample_weights=t.acts, mode="sum") + t.b_dec
            ),
        ),
        ("encode", name, ENCODE, lambda t: topk_encode(t.x, t.W_enc, t.b_enc, k)),
        ("encode", DENSE_ENCODE, None, lambda t: torch.addmm(t.b_enc, t.x, t.W_enc).topk(k)),
    ]


def time_kernel(call: Callable, inputs: KernelInputs, sizes: Sizes) -> Timing:
    with torch.no_grad():
        return timed(lambda: call(inputs), sizes.device, sizes.reps["kernels"])


def kernel_rows(sizes: Sizes, guard: Guard, copy_gbps: float, broken: set[str]) -> list[KernelRow]:
    el = torch.finfo(sizes.dtype).bits // 8
    rows = []
    for d, n, k in sizes.shapes:
        for B in sizes.batches:
            status, inputs = guard.run(
                "kernels", f"inputs d={d} B={B}", partial(kernel_inputs, d, n, k, B, sizes)
            )
            group = []
            for op, impl, needs, call in kernel_impls(k, ours(sizes)):
                if status == "ok" and needs in broken:
                    got = "skipped: correctness failed", None
                elif status == "ok":
                    what = f"{op} {impl} d={d} B={B}"
                    got = guard.run("kernels", what, partial(time_kernel, call, inputs, sizes))
                else:
                    got = status, None
                group.append((op, impl, *got))
            inputs = None  # free before the next batch's inputs are built
            base = {(op, impl): t.ms for op, impl, s, t in group if s == "ok"}
            for op, impl, s, t in group:
                ms = t.ms if t else math.nan
                gbps = useful_bytes(op, d, n, k, B, el) / ms / 1e6
                dense = base.get((op, DENSE_ENCODE if op == "encode" else DENSE_DECODE), math.nan)
                w_read = d * n * el / ms / 1e6 / copy_gbps if op == "encode" else math.nan
                bag = base.get((op, BAG), math.nan) / ms
                peak = t.peak_mb if t else None
                row = (op, impl, d, n, k, B, ms, gbps, gbps / copy_gbps, w_read, peak)
                rows.append(KernelRow(*row, dense / ms, bag, s))
    return rows


# --- 3. training ---------------------------------------------------------------------------------
class TrainRow(NamedTuple):
    impl: str
    dtype: str
    d: int
    n: int
    k: int
    batch: int
    ms: float
    tokens_per_s: float
    peak_mb: float | None
    vs_dense: float  # dense torch's time at the same dtype over this time
    status: str


KERNEL_STEP, DENSE_STEP = "codecut kernels", "dense torch"
TRAINER_STEP = "codecut trainer (_Objective + _step_unit_norm)"


def fvu(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (y - x).float().pow(2).sum(-1).mean() / (x - x.mean(0)).float().pow(2).sum(-1).mean()


def kernel_loss(p: dict, x: torch.Tensor, k: int) -> torch.Tensor:
    values, indices = topk_encode(x - p["b_dec"], p["W_enc"], p["b_enc"], k)
    return fvu(sparse_decode(values.relu(), indices, p["W_dec"], p["b_dec"]), x)


def dense_loss(p: dict, x: torch.Tensor, k: int) -> torch.Tensor:
    pre = torch.addmm(p["b_enc"], x - p["b_dec"], p["W_enc"])
    values, indices = pre.topk(k, dim=-1)
    acts = torch.zeros_like(pre).scatter(1, indices, values.relu())
    return fvu(torch.addmm(p["b_dec"], acts, p["W_dec"]), x)


def unit_rows(n: int, d: int, device: torch.device) -> torch.Tensor:
    """Random unit-norm decoder rows [n, d] (the trainer's start)."""
    W = rand(n, d, seed=n + d, device=device)
    return W / W.norm(dim=-1, keepdim=True)


def trainer_step(d: int, n: int, k: int, x: torch.Tensor) -> Callable[[], None]:
    """The trainer's own objective and step on its fp32 bottleneck (private names: if train.py
    changes them, this row reports the error and the others still run)."""
    from codecut.codebook.distributed import ranks
    from codecut.codebook.train import TrainConfig, _Objective, _step_unit_norm

    bn = Bottleneck(BottleneckConfig(kind="topk", d_in=d, n_codes=n, k=k)).to(x.device)
    with torch.no_grad():
        bn.W_dec.copy_(unit_rows(n, d, x.device))
        bn.W_enc.copy_(bn.W_dec.t())
    objective = _Objective(bn, TrainConfig(n_codes=n, k=k, batch_size=len(x)), ranks())
    opt = torch.optim.Adam(bn.parameters(), lr=1e-4)
    last_fired = torch.zeros(n, dtype=torch.long, device=x.device)

    def step():
        loss, _, _ = objective(x.float(), len(x), last_fired, len(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _step_unit_norm(bn, opt)

    return step


def step_fn(impl: str, d: int, n: int, k: int, dtype: torch.dtype, sizes: Sizes):
    """One step of `impl` on fresh weights: forward, backward, Adam, unit-norm decoder rows (the
    trainer's step without AuxK, which has nothing to do while no code is dead)."""
    dev = sizes.device
    x = rand(sizes.train_batch, d, seed=1, device=dev, dtype=dtype)
    if impl == TRAINER_STEP:
        return trainer_step(d, n, k, x)
    W_dec = unit_rows(n, d, dev)
    p = {
        "W_enc": W_dec.t().contiguous().to(dtype),
        "b_enc": torch.zeros(n, device=dev, dtype=dtype),
        "W_dec": W_dec.to(dtype),
        "b_dec": torch.zeros(d, device=dev, dtype=dtype),
    }
    p = {name: torch.nn.Parameter(t) for name, t in p.items()}
    opt = torch.optim.Adam(p.values(), lr=1e-4)
    loss_fn = kernel_loss if impl == KERNEL_STEP else dense_loss

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(p, x, k).backward()
        W = p["W_dec"]
        with torch.no_grad():  # as the trainer: no gradient along a row, rows renormalized
            W.grad -= (W.grad * W).sum(-1, keepdim=True) * W
        opt.step()
        with torch.no_grad():
            W.div_(W.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    return step


def time_step(impl: str, d: int, n: int, k: int, dtype: torch.dtype, sizes: Sizes) -> Timing:
    return timed(step_fn(impl, d, n, k, dtype, sizes), sizes.device, sizes.reps["training"])


def training_rows(sizes: Sizes, guard: Guard, broken: set[str]) -> list[TrainRow]:
    B = sizes.train_batch
    kernels_ok = not {ENCODE, ENCODE_BWD, DECODE, DECODE_BWD} & broken
    runs = [(impl, dt) for dt in (BF16, F32) for impl in (KERNEL_STEP, DENSE_STEP)]
    runs.append((TRAINER_STEP, F32))
    rows = []
    for d, n, k in sizes.shapes:
        group = []
        for impl, dt in runs:
            if impl != DENSE_STEP and not kernels_ok:
                group.append((impl, dt, "skipped: correctness failed", None))
                continue
            measure = partial(time_step, impl, d, n, k, dt, sizes)
            what = f"{impl} {short(dt)} d={d}"
            group.append((impl, dt, *guard.run("training", what, measure)))
        dense = {dt: t.ms for impl, dt, s, t in group if impl == DENSE_STEP and s == "ok"}
        for impl, dt, s, t in group:
            ms = t.ms if t else math.nan
            peak = t.peak_mb if t else None
            row = (impl, short(dt), d, n, k, B, ms, B / ms * 1e3, peak)
            rows.append(TrainRow(*row, dense.get(dt, math.nan) / ms, s))
    return rows


# --- 4. the attached forward ---------------------------------------------------------------------
class AttachRow(NamedTuple):
    model: str
    batch: int
    seq: int
    setup: str
    ms: float
    ratio: float  # this time over the bare model's
    logits_max_diff: float  # against the bare model's logits on the same tokens
    status: str


BARE, ERROR_TERM = "bare model", "attached (error term)"
PLAN = "attached (error term + plan: zero with `when`, clamp)"
# load_bottleneck holds weights in fp32 and attach moves them to the model's device, not its
# dtype: on a bf16 model that encodes in fp32. The same plan, so measured.
PLAN_FP32 = "attached (error term + plan), fp32 bottleneck as load_bottleneck holds it"
SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]


def tokenizer():
    """What a Model needs of a tokenizer (pad, eos; special ids for attach): a four-token
    word-level one. The benchmark feeds token ids directly, so that vocabulary is enough."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL)}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
    )


def build_model(spec: ModelSpec, sizes: Sizes) -> tuple[Model, Bottleneck]:
    """A random-weight Llama of `spec`'s shape in codecut's Model, and a random unit-norm
    bottleneck at its hook, with code statistics (so clamp can run) and a norm limit (so the
    norm check runs as with a trained one; nothing exceeds it)."""
    torch.manual_seed(0)
    with torch.device(sizes.device):
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**spec.config))
    hf.to(sizes.dtype).eval()
    d, n, k = spec.bottleneck
    cfg = BottleneckConfig(kind="topk", d_in=d, n_codes=n, k=k, hook=spec.hook, norm_limit=1e9)
    bn = Bottleneck(cfg).to(sizes.device)
    with torch.no_grad():
        bn.W_dec.copy_(unit_rows(n, d, sizes.device))
        bn.W_enc.copy_(bn.W_dec.t())
        bn.fire_rate.fill_(0.01)
        bn.act_mean.fill_(1.0)
    return Model(hf, tokenizer(), name=spec.name), bn.to(sizes.dtype)


def plan_ablations() -> list[Ablation]:
    """Cuts shaped like a plan's: a few codes zeroed under a condition, a few clamped."""
    return [
        Ablation(codes=list(range(8)), mode="zero", when=[100, 101]),
        Ablation(codes=list(range(8, 12)), mode="clamp", c=2.0),
    ]


def forward(model: Model, bn: Bottleneck, setup: str, ids: torch.Tensor, sizes: Sizes):
    """(Timing, logits of one more call) for `setup`."""
    reps = sizes.reps["attached"]
    with torch.no_grad():
        if setup == BARE:
            return timed(lambda: model(ids), sizes.device, reps), model(ids)
        if setup == PLAN_FP32:
            bn32 = Bottleneck(bn.cfg).to(sizes.device)
            bn32.load_state_dict(bn.state_dict())  # cast to the fp32 its parameters are
            bn = bn32
        cuts = [] if setup == ERROR_TERM else plan_ablations()
        with attach(model, bn, error_term=True, ablations=cuts):
            return timed(lambda: model(ids), sizes.device, reps), model(ids)


def attached_rows(sizes: Sizes, guard: Guard, broken: set[str]) -> list[AttachRow]:
    rows = []
    for spec in sizes.models:
        status, built = guard.run(
            "attached", f"build {spec.name}", partial(build_model, spec, sizes)
        )
        for B in sizes.attach_batches:
            ids = randint(
                spec.config["vocab_size"] - len(SPECIAL), B, sizes.seq, seed=B, device=sizes.device
            )
            ids += len(SPECIAL)
            ids[:, 0] = SPECIAL.index("<bos>")  # a BOS first, as prompts have (attach skips it)
            group, bare_logits = [], None
            for setup in (BARE, ERROR_TERM, PLAN, PLAN_FP32):
                if status != "ok":
                    group.append((setup, status, None, math.nan))
                    continue
                if setup != BARE and {ENCODE, DECODE} & broken:
                    group.append((setup, "skipped: correctness failed", None, math.nan))
                    continue
                what = f"{spec.name} B={B} {setup}"
                s, got = guard.run("attached", what, partial(forward, *built, setup, ids, sizes))
                diff = math.nan
                if s == "ok" and setup == BARE:
                    bare_logits = got[1]
                elif s == "ok" and bare_logits is not None:  # in their dtype: 4 GB each at 2B
                    diff = (got[1] - bare_logits).abs().max().float().item()
                group.append((setup, s, got[0] if got else None, diff))
                got = None
            bare_logits = None
            bare = next((t.ms for setup, s, t, _ in group if setup == BARE and t), math.nan)
            for setup, s, t, diff in group:
                ms = t.ms if t else math.nan
                rows.append(AttachRow(spec.name, B, sizes.seq, setup, ms, ms / bare, diff, s))
        built = None
        free()
    return rows


# --- 5. a request's model work, replayed ---------------------------------------------------------
PASSES = ROOT / "benchmarks" / "results" / "request_passes.json"


class ReplayRow(NamedTuple):
    model: str
    passes: int
    with_gradients: int
    token_forwards: float  # tokens through the layers (padding included) / the model's layers
    seconds: float  # the whole replay, once (a warm-up replay of a few passes first)
    status: str


class _Stop(Exception):
    """Raised after a pass's last layer: the layers above it are not part of the pass."""


def mapped(layer: int, hook: int, layers: int, to_hook: int, to_layers: int) -> int:
    """`layer` of the recorded model (its hook at `hook`, `layers` deep) on another: the layers
    up to the hook and those above it each stretched to the other's."""
    if layer <= hook:
        return round(layer * to_hook / hook) if hook else 0
    return to_hook + round((layer - hook) * (to_layers - 1 - to_hook) / (layers - 1 - hook))


def run_pass(model: Model, p: dict, vocab: int, d: int) -> None:
    """One recorded pass: layers p["first"]..p["last"] on random ids [rows, tokens] (from a
    random residual stream where it starts above layer 0), with a backward to that stream where
    the pass had gradients (the selector's attributions), weights frozen."""
    rows, tokens, grad = p["rows"], p["tokens"], p["grad"]
    ids = torch.randint(len(SPECIAL), vocab, (rows, tokens), device=model.device)
    start = None
    if p["first"]:
        start = torch.randn(rows, tokens, d, device=model.device, dtype=model.hf.dtype)
        start.requires_grad_(grad)
    layers = decoder_layers(model.hf)
    stop = None
    if p["last"] + 1 < len(layers):

        def halt(module, args, kwargs):
            raise _Stop

        stop = layers[p["last"] + 1].register_forward_pre_hook(halt, with_kwargs=True)
    try:
        with torch.set_grad_enabled(grad), _from_layer(model.hf, p["first"], start):
            out = model.hf(input_ids=ids, use_cache=False, logits_to_keep=1).logits
            if out.requires_grad:  # a pass with gradients from a residual stream
                out.float().sum().backward()
    except _Stop:
        pass
    finally:
        if stop is not None:
            stop.remove()


def replay(model: Model, bn: Bottleneck, spec: ModelSpec, passes: list[dict]) -> float:
    """Seconds to run `passes` with the bottleneck attached, after a warm-up on a few (kernels
    compiled, memory pools filled)."""
    model.hf.requires_grad_(False)
    vocab, d = spec.config["vocab_size"], spec.config["hidden_size"]
    with attach(model, bn):
        for some in (passes[:8], passes):
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for p in some:
                run_pass(model, p, vocab, d)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
    return time.perf_counter() - t


def replay_rows(sizes: Sizes, guard: Guard, broken: set[str]) -> list[ReplayRow]:
    recorded = json.loads(PASSES.read_text())
    hook = int(recorded["bottleneck_hook"].split(".")[1])
    rows = []
    for spec in sizes.models:
        status, built = guard.run("replay", f"build {spec.name}", partial(build_model, spec, sizes))
        if status == "ok" and {ENCODE, DECODE} & broken:
            status = "skipped: correctness failed"
        L, h = spec.config["num_hidden_layers"], int(spec.hook.split(".")[1])
        passes = [
            {**p, "first": mapped(p["first"], hook, recorded["layers"], h, L),
             "last": mapped(p["last"], hook, recorded["layers"], h, L),
             "rows": min(p["rows"], sizes.replay_rows),
             "tokens": min(p["tokens"], sizes.replay_tokens)}
            for p in recorded["passes"][: sizes.replay_passes]
        ]  # fmt: skip
        work = sum(p["rows"] * p["tokens"] * (p["last"] - p["first"] + 1) for p in passes) / L
        seconds = math.nan
        if status == "ok":
            what = f"{spec.name}: {len(passes)} passes"
            status, seconds = guard.run("replay", what, partial(replay, *built, spec, passes))
        grads = sum(p["grad"] for p in passes)
        rows.append(ReplayRow(spec.name, len(passes), grads, work, seconds, status))
        built = None
        free()
    return rows


# --- goals and results ---------------------------------------------------------------------------
class Goal(NamedTuple):
    goal: str
    target: str
    measured: str
    met: bool | None  # None: not measured


def at_least(goal: str, value: float, target: float, percent: bool = False) -> Goal:
    """`value >= target`; a miss says how far short it is."""
    want = f">= {target:.0%}" if percent else f">= {target:g}x"
    if not math.isfinite(value):
        return Goal(goal, want, "not measured", None)
    shown = f"{value:.0%}" if percent else f"{value:.3g}x"
    if value < target:
        shown += f" ({value / target:.2f} of the target)"
    return Goal(goal, want, shown, value >= target)


def goals(
    sizes: Sizes, kernels: list, training: list, attached: list, replayed: list
) -> list[Goal]:
    """The issue's goals, each computed from this run's numbers."""

    def value(rows, field: str, **match) -> float:
        """`field` of the row that matches, NaN where it did not run."""
        for r in rows:
            if all(getattr(r, k) == v for k, v in match.items()):
                got = getattr(r, field)
                return got if r.status == "ok" and got is not None else math.nan
        return math.nan

    out, name, big = [], ours(sizes), max(sizes.batches)
    for d, n, k in sizes.shapes:
        shape = f"d={d} n={n} k={k}"
        dec = partial(value, kernels, op="decode", impl=name, d=d, batch=big)
        out.append(at_least(f"decode vs dense, {shape}, B={big}", dec("vs_dense"), 10))
        out.append(
            at_least(f"decode vs embedding_bag, {shape}, B={big}", dec("vs_embedding_bag"), 1.5)
        )
        out.append(
            at_least(
                f"decode, share of copy bandwidth, {shape}, B={big}", dec("bw_share"), 0.6, True
            )
        )
        for B in sizes.batches:
            enc = partial(value, kernels, op="encode", impl=name, d=d, batch=B)
            if B == 1:
                goal = f"encode at B=1: reading W_enc once, share of copy bandwidth, {shape}"
                out.append(at_least(goal, enc("w_read_share"), 0.7, True))
                continue
            speed = at_least(f"encode vs matmul + topk, {shape}, B={B}", enc("vs_dense"), 1.3)
            dense_mb = value(kernels, "peak_mb", op="encode", impl=DENSE_ENCODE, d=d, batch=B)
            mem = enc("peak_mb") / dense_mb if dense_mb else math.nan
            target = f"{speed.target} at <= 1/4 of its peak memory"
            if speed.met is None or not math.isfinite(mem):
                out.append(Goal(speed.goal, target, f"{speed.measured}; memory not measured", None))
            else:
                measured = f"{speed.measured} at {mem:.3g} of its peak memory"
                out.append(Goal(speed.goal, target, measured, speed.met and mem <= 0.25))
        for dt in ("bfloat16", "float32"):
            step = value(training, "vs_dense", impl=KERNEL_STEP, dtype=dt, d=d)
            out.append(
                at_least(f"training step vs dense, {dt}, {shape}, B={sizes.train_batch}", step, 2)
            )
    for spec in sizes.models:
        for B in sizes.attach_batches:
            ratio = value(attached, "ratio", model=spec.name, batch=B, setup=PLAN)
            goal = (
                f"attached forward (error term, plan) vs bare, {spec.name}, B={B}, seq {sizes.seq}"
            )
            shown = f"{ratio:.3f}x" if math.isfinite(ratio) else "not measured"
            out.append(
                Goal(goal, "<= 1.05x", shown, ratio <= 1.05 if math.isfinite(ratio) else None)
            )
    first = sizes.models[0].name
    seconds = value(replayed, "seconds", model=first)
    shown = f"{seconds:.3g} s" if math.isfinite(seconds) else "not measured"
    met = seconds <= 1 if math.isfinite(seconds) else None
    out.append(Goal(f"a request's replayed model work, {first}", "<= 1 s", shown, met))
    return out


def plain(value):
    """JSON-safe: NaN and infinities become null, NamedTuples dicts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return plain(value._asdict())
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


SECTIONS = {  # key: (title, what its table shows)
    "correctness": (
        "1. Correctness: compiled kernels against kernels/reference.py",
        "max_rel is the largest difference over the reference's largest value. A kernel with a "
        "failed case is not timed below.",
    ),
    "kernels": (
        "2. Kernels: sparse decode and fused encode + top-k",
        "Dense decode times the matmul on codes already scattered to [B, n] (the stricter "
        "baseline). GB/s counts useful bytes (decode: every gathered W_dec row, so cache reuse "
        "can take bw_share above 1); peak_mb is device memory above the inputs.",
    ),
    "training": (
        "3. Training step: forward, backward, Adam, unit-norm decoder rows",
        "The kernel and dense steps compute the same loss (FVU) from the same weights; the "
        "trainer's own step (codecut.codebook.train) runs its fp32 bottleneck, as it trains.",
    ),
    "attached": (
        "4. Attached forward",
        "Random-weight Llamas in codecut's Model (a four-token tokenizer: ids are fed "
        "directly) and a random unit-norm bottleneck at the hook, in the model's dtype; the "
        "last setup holds it in fp32, as load_bottleneck does (the goal reads the one before). "
        "logits_max_diff is against the bare model (0 with the error term alone).",
    ),
    "replay": (
        "5. A request's model work, replayed",
        "The passes the demo's unlearn request (France -> Paris, SmolLM2-135M-Instruct) made "
        "through the decoder layers on the CPU (benchmarks/results/request_passes.json), run on "
        "each random-weight model with its bottleneck attached: the layers of each pass mapped "
        "to the model's depth around its hook, random ids and residual streams of the recorded "
        "shapes, a backward to the residual stream where the pass had gradients. The model work "
        "only: the selector's own host work (bookkeeping, tokenizing) is not in it.",
    ),
}


def table(rows: list[dict]) -> str:
    if not rows:
        return "(nothing ran)"
    return markdown_table(pd.DataFrame(rows).astype(object).fillna(math.nan))


def markdown(data: dict) -> str:
    """The results page, from `plain(data)`."""
    m = data["machine"]
    lines = [f"# GPU check ({data['device']})", "", f"    {data['command']}", ""]
    lines += [
        f"torch {data['torch']}, triton {data['triton']}, transformers {data['transformers']}, "
        f"Python {data['python']}; codecut from {data['codecut_from']}; Triton kernels "
        f"{'interpreted' if data['triton_interpreted'] else 'compiled'}; {data['dtype']}; "
        f"{data['elapsed_s']:.0f} s, budget {data['budget_s']:.0f} s.",
        "",
    ]
    if data["toy"]:
        lines += ["**Toy run**: tiny sizes on the CPU, torch reference paths (section 1 under "
                  "Triton's interpreter). These are not kernel numbers.", ""]  # fmt: skip
    if m.get("copy_gbps"):
        lines += [f"Measured here: copy {m['copy_gbps']:.4g} GB/s (read + write), matmul "
                  f"{m['matmul_tflops']:.4g} TFLOP/s.", ""]  # fmt: skip
    lines += ["## Goals (issue 30), computed from the numbers below", "", table(data["goals"]), ""]
    for key, (title, note) in SECTIONS.items():
        lines += [f"## {title}", "", note, "", table(data["sections"].get(key, [])), ""]
    return "\n".join(lines)


def plot(rows: list[KernelRow], device: str) -> Figure:
    """Median ms per implementation, decode and encode, per shape and batch (log scale)."""
    fig = Figure(figsize=(12, 4.5))
    for ax, op in zip(fig.subplots(1, 2), ("decode", "encode")):
        mine = [r for r in rows if r.op == op]
        groups = sorted({(r.d, r.batch) for r in mine})
        impls = list(dict.fromkeys(r.impl for r in mine))
        width = 0.8 / max(len(impls), 1)
        for j, impl in enumerate(impls):
            ms = {(r.d, r.batch): r.ms for r in mine if r.impl == impl and math.isfinite(r.ms)}
            xs = [i + j * width for i, g in enumerate(groups) if g in ms]
            ax.bar(xs, [ms[g] for g in groups if g in ms], width, label=impl)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
        ax.set_xticklabels([f"d={d}\nB={B}" for d, B in groups])
        if any(math.isfinite(r.ms) for r in mine):  # a log axis needs a value (none: all skipped)
            ax.set_yscale("log")
        ax.set_ylabel("median ms (lower is faster)")
        ax.set_title(f"{op}, {device}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write(out: Path, data: dict) -> None:
    """gpu.json and gpu.md, each atomically."""
    data["elapsed_s"] = time.monotonic() - T0
    flat = plain(data)
    write_text(out / "gpu.json", json.dumps(flat, indent=1, allow_nan=False) + "\n")
    write_text(out / "gpu.md", markdown(flat))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu.json/.md/.png")
    parser.add_argument("--toy", action="store_true", help="tiny sizes on the CPU (a minute)")
    parser.add_argument(
        "--budget", type=float, default=450.0, help="seconds after which nothing new starts"
    )
    args = parser.parse_args(argv)
    if not args.toy and not torch.cuda.is_available():
        parser.error("no CUDA device here: the full run needs one (--toy runs on the CPU)")
    sizes = TOY if args.toy else FULL
    cpu = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    data: dict = {
        "device": torch.cuda.get_device_name() if sizes.device.type == "cuda" else cpu,
        "toy": args.toy,
        "command": shlex.join(["python", "benchmarks/gpu.py", *sys.argv[1:]]),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "codecut_from": CODECUT_FROM,
        "triton_interpreted": INTERPRETED,
        "dtype": short(sizes.dtype),
        "tf32": torch.backends.cuda.matmul.allow_tf32,
        "budget_s": args.budget,
        "machine": {},
        "sections": {},
        "section_seconds": {},
        "goals": [],
    }
    guard = Guard(args.budget)

    def section(name: str, run: Callable[[], Any]) -> Any:
        t = time.monotonic()
        data["sections"][name] = result = run()
        data["section_seconds"][name] = time.monotonic() - t
        write(args.out, data)
        return result

    status, peak = guard.run("machine", "copy and matmul", partial(ceilings, sizes))
    data["machine"] = peak or {"status": status}
    copy_gbps = data["machine"].get("copy_gbps", math.nan)
    checks = section("correctness", lambda: correctness(sizes, guard))
    # A kernel with a failed case (a mismatch, an error) is not timed; one left unchecked for
    # lack of time would be skipped for the same reason anyway.
    broken = {c.op for c in checks if not c.passed and c.status != "skipped: time"}
    kernels = section("kernels", lambda: kernel_rows(sizes, guard, copy_gbps, broken))
    training = section("training", lambda: training_rows(sizes, guard, broken))
    attached = section("attached", lambda: attached_rows(sizes, guard, broken))
    replayed = section("replay", lambda: replay_rows(sizes, guard, broken))
    data["goals"] = goals(sizes, kernels, training, attached, replayed)
    write(args.out, data)
    with atomic_file(args.out / "gpu.png") as tmp:  # last: the numbers are on disk whatever it does
        plot(kernels, data["device"]).savefig(tmp, format="png", dpi=110)
    print(f"[{time.monotonic() - T0:5.0f} s] wrote {args.out}/gpu.json, .md, .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

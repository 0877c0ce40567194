"""Kernel benchmark: codecut's kernels beside torch dense, ``F.embedding_bag`` and sae-lens.

``run()`` times every implementation of each op on the same inputs in one process and returns a
DataFrame (median ms, useful TFLOP/s and GB/s, peak memory, fraction of this machine's measured
peak, speed-up over torch dense). On a machine without a GPU it times the torch reference on a
small CPU grid and says so in every row: those are not kernel numbers.

Throughput uses one *useful-work* model per op, shared by all its implementations (e.g. encode is
``2*B*d*n`` flops; decode reads ``B*k`` rows of ``W_dec``), so within an op higher means faster.
"""

import gc
import json
import logging
import math
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from codecut.core.io import markdown_table, write_text

from .dispatch import backend, sparse_decode, topk_encode

log = logging.getLogger(__name__)

# (d, n, k, B). The target shape first, then sweeps of each axis around it, then the shape where
# a dense [B, n] score matrix (16 GiB in bf16) plus top-k and backward buffers exhausts memory.
TARGET = (768, 32768, 32, 4096)
GPU_GRID = [
    TARGET,
    *[(d, 32768, 32, 4096) for d in (576, 2048, 4096)],
    *[(768, n, 32, 4096) for n in (8192, 131072)],
    *[(768, 32768, k, 4096) for k in (16, 64, 128)],
    *[(768, 32768, 32, B) for B in (1, 64, 16384)],
    (2048, 131072, 64, 16384),
    (768, 131072, 32, 65536),
]
CPU_GRID = [(768, 8192, 32, 256), (768, 8192, 32, 1), (576, 8192, 32, 1024), (768, 8192, 64, 1024)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median wall time of ``fn`` over ``reps`` calls after two warm-ups (compiles, caches)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _peak_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Extra device memory one call needs above what was already allocated (NaN on CPU)."""
    if device.type != "cuda":
        return math.nan
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def machine_peak(device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Measured ceilings to compare against: a large matmul (TFLOP/s) and a device copy (GB/s)."""
    m = 8192 if device.type == "cuda" else 1024
    a, b = (
        torch.randn(m, m, device=device, dtype=dtype),
        torch.randn(m, m, device=device, dtype=dtype),
    )
    mm_ms = _median_ms(lambda: a @ b, device, reps=10 if device.type == "cuda" else 3)
    src = torch.empty(2**28 if device.type == "cuda" else 2**25, device=device, dtype=torch.uint8)
    dst = torch.empty_like(src)
    cp_ms = _median_ms(lambda: dst.copy_(src), device, reps=10)
    return {"matmul_tflops": 2 * m**3 / mm_ms / 1e9, "copy_gbps": 2 * src.numel() / cp_ms / 1e6}


def _sae_lens_topk(d: int, n: int, k: int, device: torch.device, dtype: torch.dtype):
    """sae-lens' own TopK SAE (inference class), configured to compute exactly our encode."""
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    cfg = TopKSAEConfig(
        d_in=d,
        d_sae=n,
        k=k,
        dtype=str(dtype).removeprefix("torch."),
        device=str(device),
        apply_b_dec_to_input=False,
    )
    return TopKSAE(cfg)


def _cases(d: int, n: int, k: int, B: int, device: torch.device, dtype: torch.dtype):
    """Yield (op, impl, fn, flops, bytes) for every implementation of every op at one shape."""
    el = torch.finfo(dtype).bits // 8
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(B, d, device=device, dtype=dtype, generator=g)
    W_enc = (torch.randn(d, n, device=device, generator=g) / d**0.5).to(dtype)
    b_enc = torch.zeros(n, device=device, dtype=dtype)
    W_dec, b_dec = W_enc.t().contiguous(), torch.zeros(d, device=device, dtype=dtype)
    with torch.no_grad():
        values, indices = topk_encode(x, W_enc, b_enc, k)
        acts = values.relu()
    ours = f"codecut ({backend(device)})"

    enc = (2 * B * d * n, (B * d + d * n + n) * el + B * k * (el + 8))
    yield "encode", ours, _infer(lambda: topk_encode(x, W_enc, b_enc, k)), *enc
    yield "encode", "torch dense", _infer(lambda: torch.addmm(b_enc, x, W_enc).topk(k, -1)), *enc
    sae = _sae_lens_topk(d, n, k, device, dtype)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc), sae.b_enc.zero_(), sae.W_dec.copy_(W_dec), sae.b_dec.zero_()
    yield "encode", "sae-lens TopKSAE", _infer(lambda: sae.encode(x)), *enc

    dec = (2 * B * k * d, B * k * (8 + el) + B * k * d * el + B * d * el)
    yield "decode", ours, _infer(lambda: sparse_decode(acts, indices, W_dec, b_dec)), *dec
    dense_acts = torch.zeros(B, n, device=device, dtype=dtype).scatter_(1, indices, acts)
    yield "decode", "torch dense", _infer(lambda: torch.addmm(b_dec, dense_acts, W_dec)), *dec
    yield (
        "decode",
        "F.embedding_bag",
        _infer(
            lambda: F.embedding_bag(indices, W_dec, per_sample_weights=acts, mode="sum") + b_dec
        ),
        *dec,
    )
    yield "decode", "sae-lens TopKSAE", _infer(lambda: sae.decode(dense_acts)), *dec
    if B == 1:
        return  # a training step on one token says nothing

    params = [W_enc, b_enc, W_dec, b_dec]

    def ours_loss():
        v, i = topk_encode(x, W_enc, b_enc, k)
        return (sparse_decode(v.relu(), i, W_dec, b_dec) - x).float().pow(2).mean()

    def dense_loss():
        v, i = torch.addmm(b_enc, x, W_enc).topk(k, dim=-1)
        a = torch.zeros(B, n, device=device, dtype=dtype).scatter(1, i, v.relu())
        return (torch.addmm(b_dec, a, W_dec) - x).float().pow(2).mean()

    def sae_loss():
        return (sae(x) - x).float().pow(2).mean()

    fwd = 2 * B * d * n + 2 * B * k * d
    # useful backward: d_x, d_W_enc, d_values, d_W_dec each cost 2*B*k*d
    for impl, loss, ps in [
        (ours, ours_loss, params),
        ("torch dense", dense_loss, params),
        ("sae-lens TopKSAE", sae_loss, list(sae.parameters())),
    ]:
        yield "train fwd", impl, _forward(loss, ps), fwd, enc[1] + dec[1]
        yield "train fwd+bwd", impl, _step(loss, ps), fwd + 8 * B * k * d, 2 * (enc[1] + dec[1])


def _infer(fn: Callable[[], object]) -> Callable[[], object]:
    def run_no_grad():
        with torch.no_grad():  # inference: no implementation pays for autograd bookkeeping
            return fn()

    return run_no_grad


def _forward(loss: Callable[[], torch.Tensor], params: list[torch.Tensor]):
    def fn():
        for p in params:
            p.requires_grad_(True)
        return loss()  # forward with the graph recorded, as in training

    return fn


def _step(loss: Callable[[], torch.Tensor], params: list[torch.Tensor]):
    def fn():
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        loss().backward()

    return fn


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run(quick: bool = False, out_dir: Path | None = None) -> pd.DataFrame:
    """Time all implementations side by side; write ``kernels_<device>.json/.md`` to ``out_dir``.

    ``quick`` times only the target shape (d=768, n=32768, k=32, B=4096; on CPU the first CPU
    grid shape). Without CUDA the torch reference runs on a small CPU grid. ``out_dir=None``
    writes nothing. On CPU ``frac_peak_bw`` can exceed 1: weights this small stay in cache.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        device_name, dtype, grid, reps = (
            torch.cuda.get_device_name(device),
            torch.bfloat16,
            GPU_GRID,
            20,
        )
    else:
        device_name, dtype, grid, reps = (
            f"CPU {platform.processor() or platform.machine()}",
            torch.float32,
            CPU_GRID,
            3,
        )
        log.warning("no CUDA device: timing the torch reference on CPU, not the Triton kernels")
    if quick:
        grid = grid[:1]
    peak = machine_peak(device, dtype)
    rows = []
    for d, n, k, B in tqdm(grid, desc="kernel bench", unit="shape"):
        shape = dict(d=d, n=n, k=k, B=B)
        try:
            for op, impl, fn, flops, nbytes in _cases(d, n, k, B, device, dtype):
                row = dict(op=op, impl=impl, **shape)
                try:
                    ms = _median_ms(fn, device, reps)
                    row.update(ms=ms, peak_mem_mb=_peak_mb(fn, device), status="ok")
                except torch.OutOfMemoryError:
                    row.update(ms=math.nan, peak_mem_mb=math.nan, status="out of memory")
                rows.append(
                    row | dict(tflops=flops / row["ms"] / 1e9, gbps=nbytes / row["ms"] / 1e6)
                )
                del fn
                _free(device)
        except torch.OutOfMemoryError:  # building the inputs (e.g. dense activations) failed
            rows.append(
                dict(
                    op="inputs",
                    impl="",
                    **shape,
                    ms=math.nan,
                    peak_mem_mb=math.nan,
                    status="out of memory",
                    tflops=math.nan,
                    gbps=math.nan,
                )
            )
            _free(device)
    df = pd.DataFrame(rows)
    df["frac_peak_flops"] = df.tflops / peak["matmul_tflops"]
    df["frac_peak_bw"] = df.gbps / peak["copy_gbps"]
    dense = df[df.impl == "torch dense"].set_index(["op", "d", "n", "k", "B"]).ms
    df["speedup_vs_dense"] = [
        dense.get(key, math.nan) / ms
        for key, ms in zip(df.set_index(["op", "d", "n", "k", "B"]).index, df.ms, strict=True)
    ]
    df.insert(0, "device", device_name)
    df.insert(1, "dtype", str(dtype).removeprefix("torch."))
    note = (
        "CPU reference numbers: the torch reference path, not the Triton kernels"
        if device.type == "cpu"
        else "Triton kernels on GPU"
    )
    df.attrs.update(device=device_name, note=note, peak=peak)
    if out_dir is not None:
        _write(df, Path(out_dir), device_name, note, peak)
    return df


def _write(df: pd.DataFrame, out_dir: Path, device_name: str, note: str, peak: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"kernels_{_slug(device_name)}"
    meta = dict(device=device_name, note=note, torch=torch.__version__, peak=peak)
    records = df.astype(object).where(df.notna(), None).to_dict("records")  # NaN is not JSON
    for path, text in [
        (stem.with_suffix(".json"), json.dumps(meta | {"rows": records}, indent=1)),
        (
            stem.with_suffix(".md"),
            f"# Kernel benchmark: {device_name}\n\n{note}. Machine peak: "
            f"{peak['matmul_tflops']:.3g} TFLOP/s matmul, {peak['copy_gbps']:.3g} GB/s copy.\n\n"
            f"{markdown_table(df.drop(columns=['device']))}\n",
        ),
    ]:
        write_text(path, text)
    log.info("wrote %s.json and .md", stem)

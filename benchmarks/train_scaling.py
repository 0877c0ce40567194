"""Training past one process and past memory: peak memory of `codecut train --activations` at two
sizes, and training throughput at 1 and 2 processes under torchrun.

    python benchmarks/train_scaling.py [--small 250000] [--large 1000000] [--codes 4096] [--k 32]

On the synthetic world model (built and cached on first use; d_model 128), whose activations are
cheap to collect, so that the numbers are about training and not about the model:

1. `codecut collect` writes `--large` activations as shards (`--small` is its first shards'
   worth, a second folder collected the same way).
2. Memory: `codecut train --activations DIR` on each, one process, its peak resident memory
   (ru_maxrss) measured by a fresh parent. Streaming keeps one shard in memory, so the large run
   should not need more than the small one (beyond the fixed statistics sample).
3. Throughput: the same training on the large folder by 1 process and by
   `torchrun --standalone --nproc_per_node 2`, tokens per second of the optimization (the
   trained bottleneck records its seconds).

Run it alone: two torch processes beside another job measure the other job. Writes
benchmarks/results/train_scaling.json and .md with the machine named.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from codecut.codebook.activations import collect_to_disk
from codecut.codebook.bottleneck import load_bottleneck
from codecut.probes.testing.world import fixture
from common import RESULTS, command_line, heading, machine, write_files  # benchmarks/common.py

from codecut.core.io import markdown_table

HOOK = "blocks.2.hook_out"
SHARD_TOKENS = 50_000

# Run a command as the only child of a fresh interpreter, print that child's peak RSS (KiB).
PEAK = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)


def peak_rss_mib(cmd: list[str], env: dict) -> float:
    out = subprocess.run([sys.executable, "-c", PEAK, *cmd], env=env, capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def train_cmd(acts: Path, out: Path, tokens: int, args, procs: int = 1) -> list[str]:
    launch = [sys.executable, "-m", "codecut"]
    if procs > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node", str(procs), "-m", "codecut"]  # fmt: skip
    return [*launch, "train", "--activations", str(acts), "--codes", str(args.codes),
            "--k", str(args.k), "--tokens", str(tokens), "--out", str(out)]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--small", type=int, default=250_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--codes", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    args = ap.parse_args()
    model, world, _ = fixture("world-0")
    corpus = world.corpus()
    corpus_tokens = sum(len(model.tokenizer(t)["input_ids"]) for t in corpus)
    # Twice the tokens asked for: special tokens and outliers are not collected.
    texts = corpus * (2 + 2 * args.large // corpus_tokens)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun's own default for 2 processes
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = {}
        for size in (args.small, args.large):
            folders[size] = tmp / f"acts-{size}"
            man = collect_to_disk(model, HOOK, size, folders[size], texts=texts,
                                  shard_tokens=SHARD_TOKENS, dtype="fp32")  # fmt: skip
            if man.positions < size:
                raise SystemExit(
                    f"collected {man.positions} of {size} activations: too little text"
                )
        for size, acts in folders.items():
            mib = peak_rss_mib(train_cmd(acts, tmp / f"mem-{size}", size, args), dict(os.environ))
            rows.append({"run": "memory", "tokens": size, "processes": 1,
                         "peak_rss_mib": round(mib, 1)})  # fmt: skip
        for procs in (1, 2):
            out = tmp / f"speed-{procs}"
            t0 = time.time()
            cmd = train_cmd(folders[args.large], out, args.large, args, procs)
            mib = peak_rss_mib(cmd, env if procs > 1 else dict(os.environ))
            wall = time.time() - t0
            seconds = load_bottleneck(out).cfg.extra["train"]["seconds"]
            rows.append({"run": "throughput", "tokens": args.large, "processes": procs,
                         "train_seconds": seconds, "tokens_per_second": round(args.large / seconds),
                         "wall_seconds": round(wall, 1),
                         "peak_rss_mib_per_process": round(mib, 1)})  # fmt: skip
    command = command_line(__file__)
    meta = {"machine": machine(), "command": command, "torch": torch.__version__,
            "codes": args.codes, "k": args.k, "shard_tokens": SHARD_TOKENS, "rows": rows}  # fmt: skip
    md = heading("Training past one process and past memory", command) + (
        f"World model activations at {HOOK} (d_model 128), TopK n={args.codes}, k={args.k}, "
        f"fp32 shards of {SHARD_TOKENS} activations.\n\n"
        f"{markdown_table(pd.DataFrame(rows), '{:.1f}')}\n"
    )
    write_files(RESULTS / "train_scaling", meta, md)
    print(md)


if __name__ == "__main__":
    main()

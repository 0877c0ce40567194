"""Data-parallel training under torchrun (gloo on the CPU): two processes give the one-process
result, from texts and from activation shards, and an interrupted two-process run resumes."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from codecut.codebook.activations import ActivationShards, Manifest, collect_to_disk
from codecut.codebook.bottleneck import load_bottleneck
from safetensors.torch import load_file

# Small and quick: 20 steps of 1024 activations (512 on each of 2 processes).
ARGS = ["--hook", "blocks.2.hook_out", "--codes", "256", "--k", "8", "--tokens", "20480"]
# Two processes sum the batch's statistics in another order than one: the weights drift apart
# by float rounding only (measured: at most 2e-5 after 20 steps), far below what training changes.
TOLERANCE = 1e-4


def run(
    cmd: list[str], env_extra: dict | None = None, ok: bool = True
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if ok:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            *args]  # fmt: skip


def codecut(*args: str) -> list[str]:
    return [sys.executable, "-m", "codecut", *args]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "sae_weights.safetensors")


def assert_close(a: Path, b: Path, tol: float = TOLERANCE) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        diff = (wa[name] - wb[name]).abs().max().item()
        assert diff <= tol * max(wa[name].abs().max().item(), 1.0), (name, diff)


@pytest.fixture(scope="module")
def texts(world, tmp_path_factory) -> Path:
    # Fewer tokens than --tokens: both runs collect every activation of the texts (with more,
    # each process would stop at its own share of the texts: another, equally valid, sample).
    path = tmp_path_factory.mktemp("texts") / "texts.txt"
    path.write_text("\n\n".join(world[1].sentences()[:300]) + "\n")  # documents: one a sentence
    return path


@pytest.fixture(scope="module")
def runs(world, texts, tmp_path_factory) -> dict[str, Path]:
    """The same training from texts by one process and by two."""
    out = tmp_path_factory.mktemp("ddp")
    model_dir = world[0].name
    common = ["train", "--model", model_dir, *ARGS, "--texts", str(texts)]
    run(codecut(*common, "--out", str(out / "one")))
    two = run(torchrun("-m", "codecut", *common, "--out", str(out / "two")))
    assert two.stdout.count("saved Bottleneck") == 1  # rank 0 reports, once
    return {"one": out / "one", "two": out / "two", "root": out}


def metrics(folder: Path) -> dict:
    return load_bottleneck(folder).cfg.extra


def test_two_processes_match_one(runs):
    assert_close(runs["one"], runs["two"])
    one, two = metrics(runs["one"]), metrics(runs["two"])
    assert one["train"]["steps"] == two["train"]["steps"] == 20
    assert one["train"]["unique_tokens"] == two["train"]["unique_tokens"]  # the same data
    assert two["metrics"]["fvu"] < 0.5  # it trained
    assert abs(one["metrics"]["fvu"] - two["metrics"]["fvu"]) < 1e-4


def test_two_processes_match_one_from_shards(world, texts, tmp_path):
    model, _ = world
    shards = tmp_path / "acts"
    collect_to_disk(model, "blocks.2.hook_out", 20480, shards,
                    texts=texts.read_text().split("\n\n"), dtype="fp32")  # fmt: skip
    common = ["train", "--activations", str(shards), *ARGS[2:]]
    run(codecut(*common, "--out", str(tmp_path / "one")))
    run(torchrun("-m", "codecut", *common, "--out", str(tmp_path / "two")))
    assert_close(tmp_path / "one", tmp_path / "two")


WORKER = r"""
import sys
import torch
import torch.distributed as dist
import codecut
from codecut.codebook import train
from codecut.codebook.distributed import init_from_env

init_from_env(torch.device("cpu"))
texts = open(sys.argv[2]).read().strip().split("\n\n")
if sys.argv[4] == "interrupt":  # every rank is interrupted at the same step, as by Ctrl-C
    real, calls = train._Objective.forward, []
    def forward(self, *args):
        calls.append(1)
        if len(calls) == 13:
            raise KeyboardInterrupt
        return real(self, *args)
    train._Objective.forward = forward
try:
    codecut.train_bottleneck(sys.argv[1], hook="blocks.2.hook_out", n_codes=256, k=8,
                             tokens=20480, texts=texts, out=sys.argv[3], checkpoint_every=5)
except KeyboardInterrupt:
    sys.exit(3)
finally:
    dist.destroy_process_group()
"""


def test_interrupted_two_process_run_resumes(world, texts, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(WORKER))

    def args(out: Path, mode: str) -> list[str]:
        return [str(worker), world[0].name, str(texts), str(out), mode]

    run(torchrun(*args(tmp_path / "whole", "whole")))
    out = tmp_path / "resumed"
    first = run(torchrun(*args(out, "interrupt")), ok=False)
    assert first.returncode != 0
    state = out / "checkpoint" / "state.pt"
    assert state.exists() and not (out / "sae_weights.safetensors").exists()
    assert torch.load(state)["step"] == 10  # the last checkpoint before step 13
    run(torchrun(*args(out, "resume")))
    assert not (out / "checkpoint").exists()
    assert_close(tmp_path / "whole", out, tol=1e-6)  # as if never interrupted


def test_collection_split_across_ranks(world, texts, tmp_path):
    # Each rank collects its share of the texts into its own folder; the one manifest lists
    # both, and holds what one process collects (all of the texts' activations, in order).
    common = ["collect", "--model", world[0].name, "--hook", "blocks.2.hook_out", "--tokens",
              "20480", "--texts", str(texts), "--dtype", "fp32", "--shard-tokens", "1000"]  # fmt: skip
    run(codecut(*common, "--out", str(tmp_path / "one")))
    two = run(torchrun("-m", "codecut", *common, "--out", str(tmp_path / "two")))
    assert two.stdout.count("activations (") == 1  # rank 0 reports, once
    manifest = Manifest.read(tmp_path / "two")
    assert manifest.complete
    assert {s.file.split("/")[0] for s in manifest.shards} == {"rank-0", "rank-1"}
    one, both = ActivationShards(tmp_path / "one"), ActivationShards(tmp_path / "two")
    assert len(one) == len(both) > 1000
    assert torch.allclose(one.head(len(one)), both.head(len(both)), atol=1e-4)

"""Shared fixtures: the committed synthetic fact worlds (tiny Llamas that know fictitious facts).

The worlds and their bottlenecks are loaded from probes/testing/fixtures/, never trained here: a world
trained on another processor comes out different, and no test may hinge on those bits."""

import os

import pytest
import torch
from codecut.probes.testing.world import fixture

# Under pytest-xdist (`make test` runs a worker per core), each worker takes its share of the cores,
# for its own torch and for the processes its tests start: two workers of two threads each on
# 2 cores would slow each other several times over.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)

HOOK, LATER = "blocks.2.hook_out", "blocks.3.hook_out"


# The files that take a minute or more, in the order the workers should start them: a long file
# begun last leaves the other workers idle at the end (measured: pytest's --durations).
SLOW_FIRST = ["test_unlearn_many.py", "test_world.py", "test_unlearn_smollm2.py",
              "test_gemma3.py", "test_distributed.py", "test_gpu_script.py", "test_smollm2.py"]  # fmt: skip


def pytest_collection_modifyitems(items):
    """Slow files first (a stable sort: every worker collects the same order, as xdist needs)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def world_fixtures():
    """name -> (Model, World, {hook: Bottleneck}), each committed world loaded at most once."""
    loaded = {}

    def load(name: str):
        if name not in loaded:
            loaded[name] = fixture(name)
        return loaded[name]

    return load


@pytest.fixture(scope="session")
def world(world_fixtures):
    """(Model, World): the seed-0 world model, bridge-wrapped."""
    return world_fixtures("world-0")[:2]


@pytest.fixture(scope="session")
def world_bottleneck(world_fixtures):
    """The seed-0 world's TopK bottleneck (1024 codes, k=16) at layer 2."""
    return world_fixtures("world-0")[2][HOOK]


@pytest.fixture(scope="session")
def later_bottleneck(world_fixtures):
    """A second seed-0 bottleneck, one layer above the first (blocks.3)."""
    return world_fixtures("world-0")[2][LATER]


@pytest.fixture
def interrupt_at(monkeypatch):
    """`interrupt_at(module, name, n)`: the n-th call of `module.name` raises KeyboardInterrupt
    (a Ctrl-C) instead of running; every other call runs as usual, so a resumed run goes on."""

    def patch(module, name: str, n: int) -> None:
        real, calls = getattr(module, name), []

        def once_interrupted(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, once_interrupted)

    return patch

"""Shared fixtures: the synthetic fact world (a tiny Llama that knows fictitious facts)."""

import pytest
from codecut.probes.world import build_world
from codecut.probes.world import world_bottleneck as world_bottleneck_for


@pytest.fixture(scope="session")
def world():
    """(Model, World): the bridge-wrapped world model, trained once and cached."""
    return build_world(seed=0)


@pytest.fixture(scope="session")
def world_bottleneck(world):
    """The world's TopK bottleneck (1024 codes, k=16) at layer 2, trained once per run."""
    return world_bottleneck_for(*world, seed=0)


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

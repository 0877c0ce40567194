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

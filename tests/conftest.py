"""Shared fixtures: the synthetic fact world (a tiny Llama that knows fictitious facts)."""

import pytest
from codecut.probes.world import build_world


@pytest.fixture(scope="session")
def world():
    """(Model, World): the bridge-wrapped world model, trained once and cached."""
    return build_world(seed=0)

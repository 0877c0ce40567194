"""Shared fixtures: the synthetic fact world (a tiny Llama that knows fictitious facts)."""

import pytest
from codecut.probes.world import build_world


@pytest.fixture(scope="session")
def world():
    """(Model, World): the bridge-wrapped world model, trained once and cached."""
    return build_world(seed=0)


@pytest.fixture(scope="session")
def world_bottleneck(world):
    """A TopK bottleneck (1024 codes, k=16) at layer 2 of the world model, trained once per run."""
    from codecut import train_bottleneck

    model, w = world
    return train_bottleneck(
        model, "blocks.2.hook_out", "topk", n_codes=1024, k=16, tokens=200_000,
        texts=w.corpus(), batch_size=512,
    )  # fmt: skip

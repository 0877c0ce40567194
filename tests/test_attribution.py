"""Attributions under condition sets, on the synthetic world: only the positions where a set
holds count, since a cut under it cannot act elsewhere."""

import torch
from codecut.codebook import attach
from codecut.probes.selector.attribution import attributions, probe_facts, relation_values


def test_only_positions_where_a_condition_holds_count(world, world_bottleneck):
    model, w = world
    facts = w.facts()
    probe = probe_facts(facts[:4], relation_values(facts), fallback=[])
    with attach(model, world_bottleneck) as handle:
        full = attributions(model, handle, probe)
        everywhere = attributions(model, handle, probe, sets=[[]])  # an empty set always holds
        silent = int((~full.fired.any(0)).nonzero()[0])  # a code that fires in no prompt
        nowhere = attributions(model, handle, probe, sets=[[silent]])
        # a code that fires in every prompt, but only from some position on
        common = int(full.fired.all(0).nonzero()[0])
        later = attributions(model, handle, probe, sets=[[common]])
    assert full.scores.abs().sum() > 0
    torch.testing.assert_close(everywhere.scores, full.scores)
    assert nowhere.scores.abs().sum() == 0
    assert not torch.equal(later.scores, nowhere.scores)

"""The synthetic world: deterministic facts and a model that knows them."""

import json

from codecut.probes.evaluate import fact_accuracy
from codecut.probes.testing.world import build_world, make_world


def test_world_is_deterministic_by_seed():
    assert make_world(seed=3).table == make_world(seed=3).table
    assert make_world(seed=3).table != make_world(seed=4).table


def test_facts_have_train_and_heldout_prompts():
    world = make_world(seed=0)
    train, held = world.facts("train"), world.facts("heldout")
    assert len(train) == len(held) == len(world.subjects) * len(world.relations)
    assert not {p for f in train for p in f.prompts} & {p for f in held for p in f.prompts}


def test_world_model_knows_its_facts(world):
    model, w = world
    train = fact_accuracy(model, w.facts("train"))
    held = fact_accuracy(model, w.facts("heldout"))
    print(f"world model accuracy: training templates {train:.1%}, held-out paraphrases {held:.1%}")
    assert train >= 0.95
    assert held > 0.25  # well above chance (1/8 per relation); the exact level is reported above
    assert abs(w.accuracy["train"] - train) < 1e-6  # the recorded number is the measured one


def test_training_a_world_here_learns_its_facts(tmp_path, monkeypatch):
    """World training on this processor, held only to what any reasonable run meets: its bits
    (and which facts come out) differ from processor to processor, so the other tests load
    the committed worlds. The fixtures' recipe, another seed. The bounds are far from what
    runs give: the 10 worlds trained for benchmarks/worlds.py on an Intel Xeon and the 4
    committed ones (an AMD EPYC, and the machine of world-0-other-cpu) all answered 100% of
    their training prompts and 59-89% of the held-out ones; this seed's loss fell to about a
    quarter. (At 300 steps one seed answered 82%: too near any bound worth asserting.)"""
    monkeypatch.setenv("CODECUT_CACHE", str(tmp_path))
    model, w = build_world(seed=7, cache=False)
    (record,) = tmp_path.glob("worlds/world-7-*/world.json")
    first, last = json.loads(record.read_text())["loss"]
    assert last < 0.5 * first, (first, last)  # the loss fell
    train = fact_accuracy(model, w.facts("train"))
    assert train >= 0.9, train  # the world learned its facts
    assert fact_accuracy(model, w.facts("heldout")) > 0.25  # chance: 1/8 per relation
    assert abs(w.accuracy["train"] - train) < 1e-6  # the recorded number is the measured one

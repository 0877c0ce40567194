"""The ignorance reading on the synthetic world: it sees the answer on the clean model, loses
it under a plan that forgets the fact, and scores gibberish as less natural than the model's
own words."""

import random

from codecut.probes.attacks.generation import continuations
from codecut.probes.attacks.ignorance import Reading, _loss, ignorance
from codecut.probes.evaluate import fact_accuracy

from codecut import unlearn


def _colours(model, w):
    facts = w.facts()
    return facts, [f for f in facts if f.relation == "color" and fact_accuracy(model, [f]) == 1]


def test_the_clean_model_still_says_the_answer(world):
    """The probe sees the fact where it is: the clean model, read as if it were unlearned,
    writes the answer after every known colour prompt."""
    model, w = world
    facts, known = _colours(model, w)
    read = ignorance(model, model, known[:6], facts)
    assert read.unlearned.answer == 1.0 and read.unlearned.plausible == 0.0
    assert len(read.examples) == 6
    for r in (read.unlearned, read.unknown):
        assert abs(r.answer + r.plausible + r.other - 1) < 1e-9 and r.loss > 0


def test_a_plan_takes_the_answer_out_of_the_continuation(world, world_bottleneck):
    model, w = world
    facts, known = _colours(model, w)
    target = known[3]
    plan = unlearn(model, world_bottleneck, [target], pool=facts)
    read = ignorance(model, plan, [target], facts)
    assert read.unlearned.answer == 0.0
    assert isinstance(read.unknown, Reading)


def test_gibberish_reads_less_natural_than_the_models_own_words(world):
    model, w = world
    _, known = _colours(model, w)
    prompts = [f.prompt for f in known[:6]]
    own = [c[0] for c in continuations(model, prompts, 8)]
    vocab = [t for t in model.tokenizer.get_vocab() if t.isalpha()]
    rng = random.Random(0)
    noise = [" ".join(rng.choice(vocab) for _ in range(8)) for _ in prompts]
    assert _loss(model, prompts, noise) > _loss(model, prompts, own) + 1.0

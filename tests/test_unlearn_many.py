"""Ten facts in one plan on the synthetic world: the same cuts as ten single-fact plans
composed, for less model work than ten requests in ten processes (the retain prompts are
measured once, not ten times)."""

import pytest
import torch
from codecut.probes.evaluate import answered, fact_accuracy
from codecut.probes.selector.config import SelectConfig
from codecut.probes.selector.memo import clear

from codecut import apply, unlearn
from codecut.core.models import decoder_layers

N = 10


class TokenCount:
    """Tokens through each of the model's layers, summed (padding included): the model work
    done, that of the searches' measurements (which skip the layers below the hook) included."""

    def __init__(self, model):
        self.tokens = 0
        self.layers = decoder_layers(model.hf)

    def __enter__(self):
        def count(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            self.tokens += hidden.shape[0] * hidden.shape[1]

        self.handles = [x.register_forward_pre_hook(count, with_kwargs=True) for x in self.layers]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


@pytest.fixture(scope="module")
def plans(world, world_bottleneck):
    """(model, ten forget facts, retain facts, the ten-fact plan, the ten single plans, the
    tokens each way). The ten: known facts (every template answered) spread over subjects and
    relations, every third known fact in the world's order; retain: every other known fact."""
    model, w = world
    facts = w.facts("all")
    known = [f for f in facts if fact_accuracy(model, [f]) == 1]
    ten = known[::3][:N]
    assert (
        len(ten) == N and len({f.subject for f in ten}) > 1 and len({f.relation for f in ten}) > 1
    )
    retain = [f for f in known if f not in ten]
    # The search's first stage only: the formats' stage would double the time and change
    # nothing of what is compared here (test_unlearn.py holds the formats to account).
    config = SelectConfig(formats=())
    clear()  # nothing kept from earlier tests: each way starts cold
    with TokenCount(model) as one_plan:
        together = unlearn(model, world_bottleneck, ten, retain=retain, pool=facts, config=config)
    singles = []
    with TokenCount(model) as single_plans:
        for f in ten:  # ten requests in ten fresh processes: nothing kept between them
            clear()
            singles.append(
                unlearn(model, world_bottleneck, [f], retain=retain, pool=facts, config=config)
            )
    return model, ten, retain, together, singles, (one_plan.tokens, single_plans.tokens)


def test_ten_facts_in_one_plan_match_ten_plans_composed(plans):
    model, ten, retain, together, singles, _ = plans
    with apply(model, together):
        forgot = ~answered(model, ten)
        kept = answered(model, retain).float().mean().item()
    with apply(model, *singles):
        forgot_composed = ~answered(model, ten)
        kept_composed = answered(model, retain).float().mean().item()
    # Not every search succeeds on this 4-layer world (about 6 of the 10 at seed 0; the
    # selector's own tests hold it to account); what this test holds is that one plan of ten
    # cuts what ten plans do.
    assert forgot.float().mean() >= 0.5
    assert torch.equal(forgot, forgot_composed)
    assert abs(kept - kept_composed) <= 0.01, (kept, kept_composed)
    assert kept >= 0.8, kept  # the retain facts mostly survive ten cuts at once
    assert [r.selection.codes for r in together.results.facts] == [
        s.results.facts[0].selection.codes for s in singles
    ]


def test_one_plan_does_less_model_work_than_ten(plans):
    one_plan, single_plans = plans[-1]
    # Counted through every layer (the searches' trials, which skip the layers below the hook,
    # are most of it): 0.86 of the work at seed 0. Counted at the first layer alone, as this
    # test once did, the saving looked larger than it is.
    assert one_plan < 0.9 * single_plans, (one_plan, single_plans)


def test_the_next_request_reuses_the_retain_measurements(world, world_bottleneck):
    """The same request again in the same process measures its retain prompts no more: less
    model work, the same cut."""
    model, w = world
    facts = w.facts()
    known = [f for f in facts[:40] if fact_accuracy(model, [f]) == 1]
    fact, retain = known[0], known[1:]
    clear()
    with TokenCount(model) as count:  # one count: a hook added between them would be a change
        first = unlearn(model, world_bottleneck, [fact], retain=retain, pool=facts)
        cold = count.tokens
        again = unlearn(model, world_bottleneck, [fact], retain=retain, pool=facts)
        warm = count.tokens - cold
    assert warm < 0.8 * cold, (warm, cold)
    assert again.results.facts[0].selection == first.results.facts[0].selection
    assert again.results.retain == first.results.retain

"""Ten facts in one plan on the synthetic world: the same cuts as ten single-fact plans
composed, for less model work (the retain prompts are measured once, not ten times)."""

import pytest
import torch
from codecut.probes.evaluate import answered, fact_accuracy

from codecut import apply, unlearn
from codecut.models import decoder_layers

N = 10


class TokenCount:
    """Tokens through the model's first layer (padding included): the model work done."""

    def __init__(self, model):
        self.tokens = 0
        self.layer = decoder_layers(model.hf)[0]

    def __enter__(self):
        def count(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            self.tokens += hidden.shape[0] * hidden.shape[1]

        self.handle = self.layer.register_forward_pre_hook(count, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


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
    with TokenCount(model) as one_plan:
        together = unlearn(model, world_bottleneck, ten, retain=retain, pool=facts)
    with TokenCount(model) as single_plans:
        singles = [unlearn(model, world_bottleneck, [f], retain=retain, pool=facts) for f in ten]
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
    assert one_plan < 0.8 * single_plans, (one_plan, single_plans)

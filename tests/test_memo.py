"""What is kept between requests is reused only while the model and bottleneck are unchanged,
and a prompt measured among others reads the same as measured with them."""

import copy
import gc

import pytest
import torch
from codecut.codebook import attach
from codecut.probes.selector.cache import RetainCache
from codecut.probes.selector.memo import answer_scores, kept
from codecut.probes.selector.prefix import Prefix


def test_kept_is_made_again_when_weights_or_hooks_change(world, world_bottleneck):
    model, _ = world
    first = kept(model, ("test",), dict, world_bottleneck)
    assert kept(model, ("test",), dict, world_bottleneck) is first
    assert kept(model, ("other",), dict, world_bottleneck) is not first
    weight = next(model.hf.parameters())
    with torch.no_grad():
        weight.add_(0.0)  # an in-place step: same values, a new version
    second = kept(model, ("test",), dict, world_bottleneck)
    assert second is not first
    with attach(model, world_bottleneck):  # a hook in the model
        assert kept(model, ("test",), dict, world_bottleneck) is not second
    assert kept(model, ("test",), dict, world_bottleneck) is not second  # made anew once more
    with torch.no_grad():
        next(world_bottleneck.parameters()).mul_(1.0)
    assert kept(model, ("test",), dict, world_bottleneck) is not second


def test_a_dead_bottleneck_takes_its_entry_with_it(world, world_bottleneck):
    model, _ = world
    other = copy.deepcopy(world_bottleneck)
    kept(model, ("dies",), dict, other)
    from codecut.probes.selector.memo import _KEPT

    before = len(_KEPT[model.hf])
    del other
    gc.collect()
    assert len(_KEPT[model.hf]) == before - 1


def test_answer_scores_are_the_models(world):
    model, w = world
    facts = w.facts()[:10]
    prompts, answers = [f.prompt for f in facts], [f.answer for f in facts]
    p, ok = model.answer_scores(prompts, answers)
    answer_scores(model, prompts[:4], answers[:4])  # some measured before, in another batch
    p2, ok2 = answer_scores(model, prompts, answers)
    torch.testing.assert_close(p2, p, atol=1e-5, rtol=1e-4)
    assert ok2.tolist() == ok.tolist()


def test_stacked_prefixes_are_the_batchs(world, world_bottleneck):
    model, w = world
    prompts = [f.prompt for f in w.facts()[:6]] + ["A much longer prompt, padded less than most."]
    with attach(model, world_bottleneck):
        whole = Prefix(model, world_bottleneck.hook, prompts)
        parts = Prefix.stack([whole.rows([i]) for i in (6, 2, 0)])
        with torch.no_grad():
            torch.testing.assert_close(
                parts.logits(), whole.logits()[[6, 2, 0]], atol=1e-4, rtol=1e-4
            )


@pytest.fixture(scope="module")
def twelve(world, world_bottleneck):
    """(model, prompts, answers) of twelve world facts, and their `Clean` measured together."""
    model, w = world
    facts = w.facts()[:12]
    prompts, answers = [f.prompt for f in facts], [f.answer for f in facts]
    with attach(model, world_bottleneck) as handle:
        together = RetainCache().clean(model, handle, prompts, answers)
    return model, prompts, answers, together


def test_the_retain_cache_measures_each_prompt_once_and_the_same(twelve, world_bottleneck):
    model, prompts, answers, together = twelve
    with attach(model, world_bottleneck) as handle:
        cache = RetainCache()
        cache.clean(model, handle, prompts[5:], answers[5:])
        assert cache.get(prompts, answers) is None  # not all measured yet
        apart = cache.clean(model, handle, prompts, answers)
    torch.testing.assert_close(apart.p, together.p, atol=1e-5, rtol=1e-4)
    assert apart.ok.tolist() == together.ok.tolist()
    assert torch.equal(apart.fired, together.fired)
    assert torch.equal(apart.first, together.first)
    assert apart.fired.any()  # codes fire: the comparison can fail


def test_a_full_retain_cache_starts_again_with_the_prompts_asked(twelve, world_bottleneck):
    model, prompts, answers, together = twelve
    with attach(model, world_bottleneck) as handle:
        small = RetainCache()
        small.MAX_ROWS = 12
        small.clean(model, handle, prompts[:8], answers[:8])
        small.clean(model, handle, prompts[4:], answers[4:])  # 4 new: 12 rows, it fits
        assert len(small._rows) == 12
        asked = [*prompts[6:], "A new prompt about nothing"]
        again = small.clean(model, handle, asked, [*answers[6:], "x"])  # 1 new: over
    assert len(small._rows) == 7  # started again: what was asked, not the old rows
    assert again.ok[:6].tolist() == together.ok[6:].tolist()
    torch.testing.assert_close(again.p[:6], together.p[6:], atol=1e-5, rtol=1e-4)


def test_a_cache_after_a_cut_measures_anew_only_what_the_cut_reaches(twelve, world_bottleneck):
    """`after_cut` (a later bottleneck's search with an earlier cut in place): the prompts the
    cut reaches are measured anew and kept apart; the others come from the parent cache, and
    what is measured of them goes there, for the next request."""
    model, prompts, answers, together = twelve
    reached = {(prompts[0], answers[0])}
    with attach(model, world_bottleneck) as handle:
        base = RetainCache()
        base.clean(model, handle, prompts[:6], answers[:6])
        parent_row = base._rows[(prompts[1], answers[1])]
        after = base.after_cut(reached)
        got = after.clean(model, handle, prompts, answers)
    assert set(after._rows) == reached
    assert set(base._rows) == set(zip(prompts, answers))  # the 6 new ones went to the parent
    assert base._rows[(prompts[1], answers[1])] is parent_row  # not measured again
    assert after._rows[(prompts[0], answers[0])] is not base._rows[(prompts[0], answers[0])]
    assert got.ok.tolist() == together.ok.tolist()
    torch.testing.assert_close(got.p, together.p, atol=1e-5, rtol=1e-4)

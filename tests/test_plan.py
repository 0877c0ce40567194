"""Plans: save/load round trip, apply and revert, composition, and refusals."""

import json

import pytest
import torch

from codecut import Ablation, UnlearnPlan, apply, load_plan


def make_plan(bn, codes, facts):
    return UnlearnPlan(
        bottleneck_hash=bn.content_hash,
        bottleneck_source=bn.source,
        hook=bn.hook,
        ablations=[Ablation(codes, mode="zero")],
        facts=facts,
        bottleneck=bn,
    )


def logits(model, prompts):
    batch = model.tokenize(prompts)
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"])


def test_round_trip(world, world_bottleneck, tmp_path):
    model, w = world
    plan = make_plan(world_bottleneck, [3, 5], w.facts()[:1])
    plan.results = {"facts": [{"prompt": "x", "after": {"correct": False}}]}
    plan.save(tmp_path / "plan.json")
    again = load_plan(tmp_path / "plan.json")
    assert again.to_dict() == plan.to_dict()
    assert again.codes == [3, 5]


def test_apply_changes_and_revert_is_exact(world, world_bottleneck):
    model, w = world
    prompts = [f.prompt for f in w.facts()[:8]]
    clean = logits(model, prompts)
    weights = {k: v.clone() for k, v in model.hf.state_dict().items()}
    codes = world_bottleneck.act_mean.argsort(descending=True)[:8].tolist()
    with apply(model, make_plan(world_bottleneck, codes, w.facts()[:1])):
        cut = logits(model, prompts)
    assert not torch.allclose(cut, clean, atol=1e-3)
    assert torch.equal(logits(model, prompts), clean)
    assert all(torch.equal(v, weights[k]) for k, v in model.hf.state_dict().items())


def test_plans_compose(world, world_bottleneck):
    model, w = world
    a = make_plan(world_bottleneck, [1], w.facts()[:1])
    b = make_plan(world_bottleneck, [2], w.facts()[1:2])
    with apply(model, a, b) as handle:
        assert [abl.codes for abl in handle.ablations] == [[1], [2]]


def test_plan_for_another_bottleneck_is_refused(world, world_bottleneck):
    model, w = world
    plan = make_plan(world_bottleneck, [1], w.facts()[:1])
    plan.bottleneck_hash = "0" * 16
    with pytest.raises(ValueError, match="made for bottleneck 0000000000000000"):
        apply(model, plan)
    other = make_plan(world_bottleneck, [1], w.facts()[:1])
    other.bottleneck_hash = "1" * 16
    with pytest.raises(ValueError, match="different bottlenecks"):
        apply(model, plan, other)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "invalid JSON"),
        (json.dumps({"format": "x"}), "not a codecut plan"),
        (json.dumps({"format": "codecut-plan/1"}), "malformed plan"),
    ],
)
def test_bad_plan_files(tmp_path, content, message):
    path = tmp_path / "plan.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_plan(path)

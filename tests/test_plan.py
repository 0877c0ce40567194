"""Plans: save/load round trip, apply and revert, composition, and refusals."""

import json
import shutil

import pytest
import torch
from codecut.codebook.saefile import shipped_for
from codecut.probes.evaluate import to_json
from codecut.probes.plan import PlanResults

import codecut
from codecut import Ablation, UnlearnPlan, apply, load_bottleneck, load_plan
from codecut.core.errors import BadInput, NotFound

# A plan file's "results" as `unlearn` has always written them.
RESULTS = {
    "facts": [
        {
            "prompt": "the favourite colour of Findar is",
            "answer": "teal",
            "before": {"correct": True, "p_answer": 0.98, "paraphrase_accuracy": 1.0},
            "after": {"correct": False, "p_answer": 0.01, "paraphrase_accuracy": 0.0},
            "selection": {
                "mode": "clamp",
                "c": 2.0,
                "conditional": True,
                "codes": [3, 5],
                "success": True,
                "forget_accuracy": 0.0,
                "retain_accuracy": 1.0,
                "condition_codes": [[7], [8, 9]],
            },
        }
    ],
    "retain": {
        "before": {
            "n_facts": 2,
            "accuracy": 1.0,
            "mean_p_answer": 0.9,
            "n_paraphrases": 2,
            "paraphrase_accuracy": 1.0,
        },
        "after": {
            "n_facts": 2,
            "accuracy": 1.0,
            "mean_p_answer": 0.8,
            "n_paraphrases": 2,
            "paraphrase_accuracy": 0.5,
        },
    },
}


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
    plan.results = PlanResults.from_dict(RESULTS)
    plan.save(tmp_path / "plan.json")
    again = load_plan(tmp_path / "plan.json")
    assert again.to_dict() == plan.to_dict()
    assert again.codes == [3, 5]
    # typed in memory, the same JSON object on disk as plan files have always held, with the
    # one key added since (a file from before it reads as: formats not asked)
    assert again.results.facts[0].selection.family.mode == "clamp"
    on_disk = json.loads((tmp_path / "plan.json").read_text())["results"]
    assert on_disk["facts"][0]["selection"].pop("formats_lost") is False
    assert on_disk == RESULTS


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


def test_strict_plan_round_trips_and_runs_without_the_error_term(world, world_bottleneck, tmp_path):
    """A strict-mode plan (CodeUnlearn's setting) is saved as such and applied with no error
    term: with nothing cut, the outputs are the codes' reconstruction, not the clean model's."""
    model, w = world
    prompts = [f.prompt for f in w.facts()[:8]]
    plan = make_plan(world_bottleneck, [3], w.facts()[:1])
    plan.strict = True
    plan.save(tmp_path / "plan.json")
    again = load_plan(tmp_path / "plan.json")
    assert again.strict and json.loads((tmp_path / "plan.json").read_text())["strict"] is True
    with apply(model, again, bottleneck=world_bottleneck) as handle:
        assert not handle.error_term
        handle.ablations.clear()
        strict = logits(model, prompts)
    with codecut.attach(model, world_bottleneck, error_term=False):
        reconstructed = logits(model, prompts)
    torch.testing.assert_close(strict, reconstructed)
    assert not torch.allclose(strict, logits(model, prompts), atol=1e-3)
    with pytest.raises(BadInput, match="strict-mode and error-term"):
        apply(model, again, make_plan(world_bottleneck, [2], w.facts()[1:2]))


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


def test_edited_hook_is_refused(world, world_bottleneck):
    model, w = world
    plan = make_plan(world_bottleneck, [1], w.facts()[:1])
    plan.hook = "blocks.1.hook_out"  # another layer than the bottleneck's
    with pytest.raises(BadInput, match=r"cuts at blocks.1.hook_out.*trained at blocks.2.hook_out"):
        apply(model, plan)
    assert not any(p._forward_hooks for p in model.hook_dict.values())


def test_saved_plan_names_its_bottleneck_relative_to_itself(world, world_bottleneck, tmp_path):
    model, w = world
    world_bottleneck.save(tmp_path / "a" / "bn")
    bn = load_bottleneck(tmp_path / "a" / "bn")
    (tmp_path / "a" / "plans").mkdir()
    make_plan(bn, [1], w.facts()[:1]).save(tmp_path / "a" / "plans" / "plan.json")
    stored = json.loads((tmp_path / "a" / "plans" / "plan.json").read_text())
    assert stored["bottleneck_source"] == "../bn"
    shutil.move(tmp_path / "a", tmp_path / "moved")  # another install: the old path is gone
    plan = load_plan(tmp_path / "moved" / "plans" / "plan.json")
    with apply(model, plan) as handle:
        assert handle.bottleneck.content_hash == bn.content_hash
    # a bottleneck beside the plan file
    bn.save(tmp_path / "moved" / "plans" / "bn")
    make_plan(load_bottleneck(tmp_path / "moved" / "plans" / "bn"), [1], []).save(
        tmp_path / "moved" / "plans" / "p2.json"
    )
    assert (
        json.loads((tmp_path / "moved" / "plans" / "p2.json").read_text())["bottleneck_source"]
        == "./bn"
    )


def test_shipped_bottleneck_is_named_by_registry_name(tmp_path):
    bn = load_bottleneck("smollm2-135m-instruct")
    assert bn.source == "smollm2-135m-instruct"
    # the model's shipped bottlenecks, its default first (what `codecut unlearn` cuts in)
    assert shipped_for("smollm2-135m-instruct") == [
        "smollm2-135m-instruct",
        "smollm2-135m-instruct-l18",
    ]
    assert load_bottleneck("smollm2-135m-instruct-l18").hook == "blocks.18.hook_out"
    assert shipped_for("no-such-model") == []
    plan = make_plan(bn, [1], [])
    plan.save(tmp_path / "plan.json")
    assert json.loads((tmp_path / "plan.json").read_text())["bottleneck_source"] == bn.source
    assert load_plan(tmp_path / "plan.json").bottleneck_source == "smollm2-135m-instruct"
    # an older plan written on another install stored the shipped directory's absolute path
    old = json.loads((tmp_path / "plan.json").read_text())
    old["bottleneck_source"] = "/elsewhere/site-packages/codecut/codebook/shipped/" + bn.source
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_plan(tmp_path / "old.json").bottleneck_source == "smollm2-135m-instruct"
    plan = load_plan(tmp_path / "old.json")
    assert load_bottleneck(plan.bottleneck_source).content_hash == plan.bottleneck_hash


def test_plan_never_saved_bottleneck_says_pass_it(world, world_bottleneck):
    model, w = world
    plan = make_plan(world_bottleneck, [1], w.facts()[:1])
    plan.bottleneck = None  # as if loaded from a file whose bottleneck was never saved:
    plan.bottleneck_source = ""  # (the fixture's bottleneck was loaded from its folder)
    with pytest.raises(BadInput, match="pass bottleneck="):
        apply(model, plan)
    with apply(model, plan, bottleneck=world_bottleneck):
        pass


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"c": "abc"}, r"Ablation c: expected a number, got 'abc'"),
        ({"codes": [1.7, "12"]}, r"Ablation codes: code ids must be integers"),
        ({"codes": [True]}, r"Ablation codes: code ids must be integers, got True"),
        ({"when": ["3"]}, r"Ablation when: code ids must be integers"),
        ({"mode": "cut"}, r"Ablation mode: unknown mode 'cut'"),
        ({"mode": 3}, r"Ablation mode: unknown mode 3"),
        ({"min_value": None}, r"Ablation min_value: expected a number"),
        ({"c": float("nan")}, r"Ablation c: expected a finite number"),
        ({"codes": "12"}, r"Ablation codes: expected a list of code ids"),
        ({"codes": [-3]}, r"Ablation codes: code ids must be >= 0"),
        ({"size": 3}, r"unknown Ablation key"),
    ],
)
def test_plan_file_ablation_types_are_checked(tmp_path, world_bottleneck, edit, message):
    plan = make_plan(world_bottleneck, [1, 2], [])
    data = plan.to_dict()
    data["ablations"][0].update(edit)
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(BadInput, match=rf"plan.json: ablations\[0\]: {message}"):
        load_plan(tmp_path / "plan.json")


def test_plan_file_errors_name_the_file(tmp_path):
    (tmp_path / "plan.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(BadInput, match="plan.json: not a plan file"):
        load_plan(tmp_path / "plan.json")
    with pytest.raises(NotFound, match="missing.json does not exist"):
        load_plan(tmp_path / "missing.json")
    base = {"format": "codecut-plan/1", "bottleneck_hash": "0" * 16, "bottleneck_source": "",
            "hook": "blocks.2.hook_out", "facts": []}  # fmt: skip
    for broken in ({**base, "ablations": {"codes": [1]}}, {**base, "ablations": [[1]]}):
        (tmp_path / "plan.json").write_text(json.dumps(broken))
        with pytest.raises(BadInput, match=r"plan.json: .*(ablations|Ablation)"):
            load_plan(tmp_path / "plan.json")
    # a later bottleneck's cuts (format /2) are checked as the plan's own
    base = {**base, "format": "codecut-plan/2", "ablations": []}
    later = {"bottleneck_hash": "1" * 16, "bottleneck_source": "", "hook": "blocks.3.hook_out"}
    for broken, message in (
        ({**base, "later": {}}, "later must be a list"),
        ({**base, "later": [5]}, r"later\[0\] must be an object"),
        ({**base, "later": [{**later, "ablations": [[1]]}]}, r"later\[0\]\.ablations\[0\]"),
        ({**base, "later": [{**later, "hook": ""}]}, r"later\[0\]\.hook must be a non-empty"),
    ):
        (tmp_path / "plan.json").write_text(json.dumps(broken))
        with pytest.raises(BadInput, match=rf"plan.json: .*{message}"):
            load_plan(tmp_path / "plan.json")


def test_evaluate_with_a_plan_gives_before_and_after(world, world_bottleneck):
    model, w = world
    facts = w.facts()[:6]
    codes = world_bottleneck.act_mean.argsort(descending=True)[:8].tolist()
    plan = make_plan(world_bottleneck, codes, facts[:1])
    plain = codecut.evaluate(model, facts)
    table = codecut.evaluate(model, facts, plan=plan)
    with apply(model, plan):
        after = codecut.evaluate(model, facts)
    # the plain columns are the state evaluated (with the plan), the _before ones without it
    assert table["p_answer"].tolist() == pytest.approx(after["p_answer"].tolist(), abs=1e-6)
    assert table["correct"].tolist() == after["correct"].tolist()
    assert table["p_answer_before"].tolist() == pytest.approx(plain["p_answer"].tolist(), abs=1e-6)
    assert table["correct_before"].tolist() == plain["correct"].tolist()
    assert table["paraphrase_accuracy_before"].tolist() == pytest.approx(
        plain["paraphrase_accuracy"].tolist(), nan_ok=True
    )
    assert table["p_answer"].tolist() != pytest.approx(table["p_answer_before"].tolist())
    out = to_json(table)
    assert {"correct", "p_answer", "correct_before", "p_answer_before"} <= set(out["facts"][0])
    assert out["summary"]["accuracy_before"] == plain["correct"].mean()
    assert "correct_before" not in plain and "correct_before" not in to_json(plain)["facts"][0]


def test_cli_eval_with_a_plan_prints_before_and_after(world, world_bottleneck, tmp_path, capsys):
    from codecut.cli import main

    model, w = world
    world_bottleneck.save(tmp_path / "bn")
    codes = world_bottleneck.act_mean.argsort(descending=True)[:8].tolist()
    make_plan(load_bottleneck(tmp_path / "bn"), codes, w.facts()[:1]).save(tmp_path / "plan.json")
    codecut.save_facts(w.facts()[:3], tmp_path / "f.jsonl")
    argv = ["eval", "--model", model.name, "--facts", str(tmp_path / "f.jsonl")]
    assert main([*argv, "--plan", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    assert "correct_before" in out and "p_answer_before" in out
    assert "without the plan" in out

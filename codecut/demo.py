"""`codecut demo`: the main job end to end on a registry model with a shipped bottleneck (the
embedded default unless `--model` names another). One real fact is forgotten with a plan, the
table shows it and its neighbours before and after, greedy text shows the answer gone, and
removing the plan is shown to restore the exact outputs."""

from __future__ import annotations

import time

import pandas as pd

import codecut
from codecut.codebook.saefile import shipped_for
from codecut.core.errors import BadInput
from codecut.core.facts import example_facts
from codecut.core.models import DEFAULT_MODEL, REGISTRY

# Each model's demo fact: one the model knows on its prompt and paraphrases (Gemma 3 270M, a
# base model, continues "The capital of France is" with " the capital of the country of").
DEMO_FACT = {
    "smollm2-135m-instruct": ("France", "capital"),
    "gemma3-270m": ("France", "language"),
}


def demo(
    subject: str | None = None,
    relation: str | None = None,
    model_name: str | None = None,
    device: str | None = None,
) -> None:
    """Forget the example fact (`subject`, `relation`; default: the model's demo fact) in
    `model_name` (default: the embedded default model), print what changed for it and its
    neighbours, and show that removing the plan reverts."""
    t0 = time.time()
    model_name = model_name or DEFAULT_MODEL
    # Bad input fails fast, before anything loads.
    if model_name not in REGISTRY:
        raise BadInput(f"unknown model {model_name!r}: the demo runs {', '.join(REGISTRY)}")
    bottlenecks = shipped_for(model_name)
    if not bottlenecks:
        raise BadInput(
            f"{model_name} has no shipped bottleneck yet; train one with `codecut train --model "
            f"{model_name} --out DIR` and unlearn with `codecut unlearn --bottleneck DIR`"
        )
    default_subject, default_relation = DEMO_FACT.get(model_name, ("France", "capital"))
    subject, relation = subject or default_subject, relation or default_relation
    facts = example_facts()
    target = next((f for f in facts if (f.subject, f.relation) == (subject, relation)), None)
    if target is None:
        raise BadInput(f"no example fact ({subject}, {relation}); see `codecut eval --facts`")
    model = codecut.load_model(model_name, device=device)
    bn = codecut.load_bottleneck(bottlenecks[0])
    print(f"loaded {model_name} and its bottleneck ({bn}) in {time.time() - t0:.1f} s")
    known = codecut.evaluate(model, facts)["correct"]
    print(f"{int(known.sum())}/{len(facts)} example facts known on their prompt")
    if not known[facts.index(target)]:
        raise BadInput(
            f"{model_name} does not answer {target.prompt!r} with {target.answer!r}, so there "
            "is nothing to forget; pick a fact it knows (`codecut eval --model "
            f"{model_name}`) with --subject and --relation"
        )
    # The pool: the facts the model knows (those it does not cannot be kept or lost).
    facts = [f for f, ok in zip(facts, known) if ok]
    print(f"\nforgetting: {target.prompt!r} -> {target.answer!r}")
    plan = codecut.unlearn(model, bn, [target], pool=facts)
    sel = plan.results.facts[0].selection
    when = f" when codes {sel.condition_codes} fired" if sel.family.conditional else ""
    print(
        f"cut {len(sel.codes)} codes ({sel.family.mode}{when}) in {plan.seconds:.0f} s; "
        f"success: {sel.success}; every format (question, chat where the model has a template, few-shot, context) too: "
        f"{sel.formats_lost}"
    )

    # The forget prompt and its paraphrases, the same subject's other facts, other subjects'
    # facts of the same relation, and a related but different association.
    rows = [("forget", p, target.answer) for p in target.prompts]
    rows += [
        ("same subject", f.prompt, f.answer)
        for f in facts
        if f.subject == target.subject and f is not target
    ]
    rows += [
        ("same relation", f.prompt, f.answer)
        for f in facts
        if f.relation == target.relation and f.subject != target.subject
    ][:6]
    rows += [("related", p, a) for p, a in RELATED.get((target.subject, target.relation), [])]
    prompts, answers = [r[1] for r in rows], [r[2] for r in rows]
    clean_logp = model.next_token_logprobs(prompts)
    p0, ok0 = model.answer_scores(prompts, answers)
    gen0 = model.generate(target.prompt, max_new_tokens=12)
    with codecut.apply(model, plan):
        p1, ok1 = model.answer_scores(prompts, answers)
        gen1 = model.generate(target.prompt, max_new_tokens=12)
    table = pd.DataFrame(
        {
            "group": [r[0] for r in rows],
            "prompt": prompts,
            "answer": answers,
            "p before": p0.numpy(),
            "p after": p1.numpy(),
            "answered before": ok0.numpy(),
            "answered after": ok1.numpy(),
        }
    )
    print()
    print(table.to_string(index=False, float_format="{:.3f}".format))
    print(f"\nbefore: {target.prompt}{gen0!r}")
    print(f"after:  {target.prompt}{gen1!r}")
    diff = (model.next_token_logprobs(prompts) - clean_logp).abs().max().item()
    print(f"\nreverted: max |change| of next-token log-probs after removing the plan = {diff:.1e}")
    print(f"demo done in {time.time() - t0:.0f} s")


# Associations related to an example fact but different from it (not in the retain set):
# shown in the demo to say what happens to them.
RELATED = {
    ("France", "capital"): [
        ("The Eiffel Tower is in the city of", "Paris"),
        ("Paris is the capital city of", "France"),
    ],
    ("France", "language"): [
        ("The Eiffel Tower is in the city of", "Paris"),
        ("The official language of Belgium includes", "French"),
    ],
}

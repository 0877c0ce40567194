"""Do the misleading rationales help the selector? The same requests with and without them.

"without" is the selector as it is (the forget probe: the fact's prompts, its main prompt in
the attack card's formats, generated paraphrases). "with" adds the rationale anti-samples that
the clean model still answers (the true answer is its greedy token despite the misleading
text) to the forget probe as generated prompts: they count in the score (codes that push the
answer against a misleading context) and, like paraphrases, within the slack of the check.

    python benchmarks/rationales.py

Writes benchmarks/results/rationales.json and .md, with the machine named: per request and
variant, success, codes, seconds, the forget probe's must-lose prompts still answered after
the plan, the attack card's formats of the fact's prompts (question, chat, few-shot,
misleading and helpful context; those the clean model answers) still answered after it, and
the shipped example facts kept (main prompt greedy). Default retain set and pool. Run it alone:
the seconds are part of the answer.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import torch
from codecut.probes.antisamples import make_antisamples
from codecut.probes.formats import variant_prompts
from codecut.probes.selector import search
from codecut.probes.selector.attribution import Probe
from common import RESULTS, machine, write_files  # benchmarks/common.py, beside this script

import codecut
from codecut.core.facts import Fact, example_facts
from codecut.core.io import markdown_table

MODEL = "smollm2-135m-instruct"
OWN = [
    Fact("Pride and Prejudice", "author", "Pride and Prejudice was written by", "Jane"),
    Fact("solar system", "largest planet", "The largest planet in the solar system is", "Jupiter"),
]
EXAMPLES = [
    ("France", "capital"),
    ("Japan", "currency"),
    ("Germany", "language"),
    ("Italy", "capital"),
]
FORMATS = ("question", "chat", "few-shot", "misleading", "helpful")
plain_probe = search._forget_probe


def with_rationales(
    model, fact: Fact, pool: list[Fact], formats: tuple[str, ...] = ()
) -> tuple[Probe, torch.Tensor]:
    """The selector's forget probe plus the rationales the clean model still answers (asked
    from the first stage, like the paraphrases)."""
    probe, late = plain_probe(model, fact, pool, formats)
    texts = [
        s.prompt
        for s in make_antisamples(model, fact, pool=pool, paraphrases=False)
        if s.kind == "rationale"
    ]
    _, answered = model.answer_scores(texts, [fact.answer] * len(texts))
    extra = [t for t, ok in zip(texts, answered.tolist()) if ok and t not in probe.prompts]
    n = len(extra)
    no = torch.zeros(n, dtype=torch.bool)
    return Probe(
        probe.prompts + extra,
        probe.answers + [fact.answer] * n,
        probe.anti + [probe.anti[0]] * n,
        torch.cat([probe.main, no]),
    ), torch.cat([late, no])


def run(model, bn, fact: Fact, examples: list[Fact], variant: str) -> dict:
    search._forget_probe = with_rationales if variant == "with" else plain_probe
    probe, _ = search._forget_probe(model, fact, example_facts())
    t0 = time.time()
    plan = codecut.unlearn(model, bn, [fact])
    seconds = time.time() - t0
    kept = [f for f in examples if (f.subject, f.relation) != (fact.subject, fact.relation)]
    must = [p for p, m in zip(probe.prompts, probe.main.tolist()) if m]
    others = [
        f for f in example_facts() if (f.subject, f.relation) != (fact.subject, fact.relation)
    ]
    asked = [q for v in FORMATS for q in variant_prompts(model, fact, others, v, search.SHOTS)]
    _, known = model.answer_scores(asked, [fact.answer] * len(asked))
    asked = [q for q, k in zip(asked, known.tolist()) if k]
    with codecut.apply(model, plan):
        _, still = model.answer_scores(must, [fact.answer] * len(must))
        _, ok = model.answer_scores([f.prompt for f in kept], [f.answer for f in kept])
        _, formats = model.answer_scores(asked, [fact.answer] * len(asked))
    selection = plan.results.facts[0].selection
    return {
        "fact": fact.prompt,
        "variant": variant,
        "forget_prompts": len(probe.prompts),
        "success": selection.success,
        "codes": len(selection.codes),
        "family": f"{selection.family.mode} c={selection.family.c}"
        + (" if subject" if selection.family.conditional else ""),
        "must_lose": len(must),
        "must_lose_still_answered": int(still.sum()),
        "formats_still_answered": f"{int(formats.sum())}/{len(asked)}",
        "examples_kept": f"{int(ok.sum())}/{len(kept)}",
        "seconds": round(seconds, 1),
    }


def main() -> None:
    examples = example_facts()
    facts = [*OWN, *[next(f for f in examples if (f.subject, f.relation) == k) for k in EXAMPLES]]
    model = codecut.load_model(MODEL)
    bn = codecut.load_bottleneck(MODEL)
    rows = []
    for fact in facts:
        for variant in ("without", "with"):
            rows.append(run(model, bn, fact, examples, variant))
            print(json.dumps(rows[-1]), flush=True)
    ran_on = f"{machine()}, run alone"
    out = {"machine": ran_on, "torch": torch.__version__, "rows": rows}
    table = markdown_table(pd.DataFrame(rows))
    text = f"# Rationales in the forget probe, with and without\n\n{ran_on}\n\n{table}\n"
    write_files(RESULTS / "rationales", out, text)
    print(table)


if __name__ == "__main__":
    main()

"""Does the demo subject's forgetting read like ignorance? France's three example facts
(capital, currency, language) forgotten by one plan on SmolLM2-135M-Instruct with its shipped
bottlenecks, then `probes.attacks.ignorance` on their main prompts: what the plan-applied model
writes, beside the clean model on the same prompts about a made-up subject and the clean model
itself.

    python benchmarks/ignorance.py [--subject France] [--out ignorance]

Writes benchmarks/results/ignorance.json and .md, with the machine named.
"""

from __future__ import annotations

import argparse

import pandas as pd
from codecut.codebook.saefile import shipped_for
from codecut.probes.attacks.ignorance import ignorance
from common import RESULTS, command_line, heading, write_files

import codecut
from codecut.core.facts import example_facts
from codecut.core.io import markdown_table
from codecut.core.models import DEFAULT_MODEL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subject", default="France", help="an example facts' subject")
    ap.add_argument("--out", default="ignorance", help="the results' name")
    args = ap.parse_args()
    pool = example_facts()
    facts = [f for f in pool if f.subject == args.subject]
    if not facts:
        ap.error(f"no example fact about {args.subject!r}")
    model = codecut.load_model(DEFAULT_MODEL)
    bottlenecks = [codecut.load_bottleneck(b) for b in shipped_for(DEFAULT_MODEL)]
    plan = codecut.unlearn(model, bottlenecks, forget=facts, pool=pool)
    read = ignorance(model, plan, facts, pool)
    clean = ignorance(model, model, facts, pool)
    rows = [
        {"model": "plan applied", **read.unlearned._asdict()},
        {"model": "clean, made-up subject (ignorance)", **read.unknown._asdict()},
        {"model": "clean", **clean.unlearned._asdict()},
    ]
    examples = [
        {"prompt": p, "plan applied": w, "clean, made-up subject": u} for p, w, u in read.examples
    ]
    command = command_line(__file__)
    md = heading(f"Does forgetting {args.subject} read like ignorance?", command)
    md += markdown_table(pd.DataFrame(rows).round(3)) + "\n\n"
    md += markdown_table(pd.DataFrame(examples).map(repr)) + "\n"
    write_files(RESULTS / args.out, {"command": command, "rows": rows, "examples": examples}, md)
    print(md)


if __name__ == "__main__":
    main()

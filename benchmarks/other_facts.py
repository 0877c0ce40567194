"""Facts beyond the countries, built and filtered as the country facts are.

    python benchmarks/other_facts.py [--model smollm2-135m-instruct]

Sources (offline dev dependencies): `us` 4.0.0 (the 50 US states: capital, postal code) and
`periodictable` 2.1.0 (the 118 elements: chemical symbol). Three relations:

- state capital: "The capital of the state of Texas is" Austin;
- state code: "The two-letter postal code of Texas is" TX;
- element symbol: "The chemical symbol of gold is" Au.

Each has a main prompt and three paraphrases (TEMPLATES). The filter is `country_facts.check`,
unchanged: a fact is kept when the answer's first token is the greedy next token after the main
prompt, after at least 2 of its 3 paraphrases and after the main prompt in the chat format;
only the answered paraphrases are written. The templates were written before any was scored,
and nothing else decides whether a fact is kept.

Writes benchmarks/data/other_facts.jsonl, other_facts.md (counts per relation) and
other_facts_candidates.csv (every candidate's checks). Deterministic, as country_facts.py.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from importlib.metadata import version

import pandas as pd
import periodictable
import us
from country_facts import DATA, MIN_PARAPHRASES, check, summary_table

import codecut
from codecut.core.io import markdown_table, write_text

# relation -> main prompt, then three paraphrases; {s}: the subject's name.
TEMPLATES = {
    "state capital": [
        "The capital of the state of {s} is",
        "The capital city of the state of {s} is",
        "The state capital of {s} is",
        "The city that serves as the capital of the state of {s} is",
    ],
    "state code": [
        "The two-letter postal code of {s} is",
        "The postal abbreviation of the state of {s} is",
        "The two-letter abbreviation for {s} is",
        "The US state of {s} is abbreviated as",
    ],
    "element symbol": [
        "The chemical symbol of {s} is",
        "The chemical symbol for the element {s} is",
        "In the periodic table, the symbol for {s} is",
        "The element {s} has the chemical symbol",
    ],
}


def candidate_facts() -> list[codecut.Fact]:
    """Every (subject, relation, answer) the two packages define, with its prompts."""
    answers = [("state capital", s.name, s.capital) for s in us.states.STATES]
    answers += [("state code", s.name, s.abbr) for s in us.states.STATES]
    answers += [
        ("element symbol", e.name, e.symbol) for e in periodictable.elements if e.number >= 1
    ]  # fmt: skip  (0 is the neutron)
    facts = []
    for relation, subject, answer in answers:
        main, *para = [t.format(s=subject) for t in TEMPLATES[relation]]
        facts.append(codecut.Fact(subject, relation, main, answer, para))
    return facts


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    model = codecut.load_model(args.model)
    facts = candidate_facts()
    rows = check(model, facts)
    kept = [f for f, r in zip(facts, rows) if r.kept]
    codecut.save_facts(kept, DATA / "other_facts.jsonl")
    write_text(
        DATA / "other_facts_candidates.csv", pd.DataFrame(map(asdict, rows)).to_csv(index=False)
    )
    counts = summary_table(rows)
    md = (
        f"# Facts beyond the countries ({args.model})\n\n    python benchmarks/other_facts.py "
        f"--model {args.model}\n\nSources: us {version('us')}, periodictable "
        f"{version('periodictable')}. Kept as the country facts are: the answer is the greedy "
        f"next token after the main prompt, at least {MIN_PARAPHRASES} of 3 paraphrases and the "
        "main prompt in the chat format. Every candidate's checks: "
        "`other_facts_candidates.csv`.\n\n"
    )
    md += markdown_table(counts) + "\n"
    write_text(DATA / "other_facts.md", md)
    print(markdown_table(counts))


if __name__ == "__main__":
    main()

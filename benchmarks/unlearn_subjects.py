"""Whole-subject unlearning on the country facts: one request per country, every format.

    python benchmarks/unlearn_subjects.py [--subjects 20] [--min-facts 3] [--seed 0] [--out NAME]

Facts: benchmarks/data/country_facts.jsonl (the country facts SmolLM2-135M-Instruct knows,
built by benchmarks/country_facts.py). Model: SmolLM2-135M-Instruct with its shipped
bottlenecks. Each request is `codecut.unlearn(model, bottlenecks, forget_subject=S,
pool=facts)`: the subject's facts are the pool's about it and any other relation of the pool
the model answers confidently for it (`codecut.probes.selector.subject`).

Subjects, fixed before any result was seen: the countries with at least `--min-facts` facts in
the file, shuffled with `--seed`, the first N. (Only 8 countries have 3 or more; `--min-facts
2` draws from 51.)

Per request:
- forgotten, per format: of the subject's prompts (its facts' prompts and paraphrases, and
  each asked as a question, in the chat template, after 3 other facts of the relation and
  after a true fact about the subject; `codecut.probes.formats`) the model answered before, the
  share it no longer answers with the plan;
- kept: of the other countries' plain prompts the model answered before, the share it still
  answers with the plan, for the relations the request forgot and for the others;
- seconds: the time `codecut.unlearn` took, finding the facts included.

Writes benchmarks/results/unlearn_subjects.json and .md (the summary and every row), after each
request, with the machine named. Run it alone: another process on the same cores changes every
time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import asdict, dataclass

import pandas as pd
from codecut.codebook.saefile import shipped_for
from codecut.probes.evaluate import prompts_and_answers
from codecut.probes.formats import variant_prompts
from common import RESULTS, bullets, command_line, heading, write_files
from tqdm.auto import tqdm

import codecut
from codecut.core.facts import Fact
from codecut.core.io import markdown_table
from codecut.core.models import DEFAULT_MODEL

FACTS = RESULTS.parent / "data" / "country_facts.jsonl"
FORMATS = ("prompt", "question", "chat", "few-shot", "helpful")
SHOTS = 3


@dataclass
class Row:
    """One subject: what was forgotten, in each format; what the others kept; the time."""

    subject: str
    facts: int  # the subject's facts the request forgot (given and found)
    found: int  # of them, found by asking the model (not in the file)
    prompt: float | None  # share of the answered prompts (and paraphrases) no longer answered
    question: float | None
    chat: float | None
    few_shot: float | None
    helpful: float | None
    kept_same_relation: float  # other subjects' prompts of the forgotten relations still answered
    kept_other: float  # other subjects' prompts of the other relations still answered
    codes: int
    seconds: float


def answered(model, prompts: list[str], answers: list[str]) -> list[bool]:
    if not prompts:
        return []
    return model.answer_scores(prompts, answers)[1].tolist()


def forgotten(model, plan, facts: list[Fact], pool: list[Fact], variant: str) -> float | None:
    """Of `facts`' prompts in `variant` that the clean model answers, the share the plan stops."""
    asked = [(q, f.answer) for f in facts for q in variant_prompts(model, f, pool, variant, SHOTS)]
    if not asked:
        return None
    prompts, answers = map(list, zip(*asked))
    before = answered(model, prompts, answers)
    with codecut.apply(model, plan):
        after = answered(model, prompts, answers)
    held = [a for b, a in zip(before, after) if b]
    return 1 - sum(held) / len(held) if held else None


def kept(model, plan, before: list[bool], facts: list[Fact]) -> float:
    """Of `facts`' plain prompts the clean model answers (`before`), the share still answered."""
    with codecut.apply(model, plan):
        after = answered(model, *prompts_and_answers(facts))
    held = [a for b, a in zip(before, after) if b]
    return sum(held) / len(held) if held else float("nan")


def pick_subjects(facts: list[Fact], n: int, least: int, seed: int) -> list[str]:
    counts: dict[str, int] = {}
    for f in facts:
        counts[f.subject] = counts.get(f.subject, 0) + 1
    subjects = sorted(s for s, c in counts.items() if c >= least)
    random.Random(seed).shuffle(subjects)
    return subjects[:n]


def write(rows: list[Row], command: str, name: str) -> None:
    table = pd.DataFrame([asdict(r) for r in rows])
    shares = ["prompt", "question", "chat", "few_shot", "helpful"]
    every = {f: bool((table[f].isna() | (table[f] >= 0.9)).all()) for f in shares}
    summary = {
        "subjects": len(rows),
        "facts forgotten per subject (mean)": table["facts"].mean(),
        "of them found by asking the model (mean)": table["found"].mean(),
        **{f"{f} forgotten (mean share)": table[f].mean() for f in every},
        **{f"{f}: every subject >= 90%": v for f, v in every.items()},
        "subjects with >= 90% forgotten in every format": int(
            (table[list(every)].fillna(1.0) >= 0.9).all(axis=1).sum()
        ),
        "other subjects kept, same relations (mean)": table["kept_same_relation"].mean(),
        "other subjects kept, other relations (mean)": table["kept_other"].mean(),
        "other subjects kept, lowest": min(
            table["kept_same_relation"].min(), table["kept_other"].min()
        ),
        "seconds per subject (median)": statistics.median(table["seconds"]),
        "seconds per fact (median)": statistics.median(table["seconds"] / table["facts"]),
    }
    md = heading("Whole-subject unlearning, country facts", command)
    md += bullets(summary) + "\n\n" + markdown_table(table) + "\n"
    write_files(RESULTS / name, {"command": command, "summary": summary,
                                 "rows": [asdict(r) for r in rows]}, md)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--subjects", type=int, default=20, help="how many countries to forget")
    ap.add_argument("--min-facts", type=int, default=3, help="facts a country needs in the file")
    ap.add_argument("--seed", type=int, default=0, help="the shuffle that picks the countries")
    ap.add_argument("--out", default="unlearn_subjects", help="the results' name")
    args = ap.parse_args()
    facts = codecut.load_facts(FACTS)
    model = codecut.load_model(DEFAULT_MODEL)
    bottlenecks = [codecut.load_bottleneck(b) for b in shipped_for(DEFAULT_MODEL)]
    command = command_line(__file__)
    clean = answered(model, *prompts_and_answers(facts))
    per_fact = iter(clean)
    clean_by_fact = [[next(per_fact) for _ in f.prompts] for f in facts]
    rows: list[Row] = []
    for subject in tqdm(
        pick_subjects(facts, args.subjects, args.min_facts, args.seed), desc="subjects"
    ):
        t = time.time()
        plan = codecut.unlearn(model, bottlenecks, forget_subject=subject, pool=facts)
        seconds = time.time() - t
        mine = plan.facts
        relations = {f.relation for f in mine}
        # Context facts may be about the subject (its other facts, stated: the helpful format).
        share = {v: forgotten(model, plan, mine, facts, v) for v in FORMATS}
        groups = {True: ([], []), False: ([], [])}
        for f, before in zip(facts, clean_by_fact):
            if f.subject != subject:
                groups[f.relation in relations][0].append(f)
                groups[f.relation in relations][1].extend(before)
        given = {f.relation for f in facts if f.subject == subject}
        rows.append(Row(
            subject=subject, facts=len(mine),
            found=sum(f.relation not in given for f in mine),
            prompt=share["prompt"], question=share["question"], chat=share["chat"],
            few_shot=share["few-shot"], helpful=share["helpful"],
            kept_same_relation=kept(model, plan, groups[True][1], groups[True][0]),
            kept_other=kept(model, plan, groups[False][1], groups[False][0]),
            codes=len({c for a in plan.ablations for c in a.codes})
            + sum(len({c for a in cut.ablations for c in a.codes}) for cut in plan.later),
            seconds=round(seconds, 1),
        ))  # fmt: skip
        tqdm.write(str(rows[-1]))
        write(rows, command, args.out)


if __name__ == "__main__":
    main()

"""Whole-subject unlearning on the country facts: one request per country, every format; the
zero-shot plan and (`--methods`) fine-tuning methods on the same requests, RWKU-style.

    python benchmarks/unlearn_subjects.py [--subjects 20] [--min-facts 3] [--seed 0] [--out NAME]
        [--methods npo,snap,graddiff,bake] [--units]

Facts: benchmarks/data/country_facts.jsonl (the country facts SmolLM2-135M-Instruct knows,
built by benchmarks/country_facts.py). Model: SmolLM2-135M-Instruct with its shipped
bottlenecks. Each request is `codecut.unlearn(model, bottlenecks, forget_subject=S,
pool=facts)`: the subject's facts are the pool's about it and any other relation of the pool
the model answers confidently for it (`codecut.probes.selector.subject`).

Fine-tuning (`--methods`, default none): each method then runs on a copy of the model,
`codecut.finetune_unlearn(model, plan.facts, retain, method=m, lr=LR[m], steps=10,
batch_size=16)` (bake distils the plan), forgetting the plan's facts (given and found). The
retain set, the same for every method: RETAIN facts drawn (with `--seed`) from the file's facts
about the other countries, main prompts only (as `unlearn_compare.py --small`; all ~220 cost
~26 s a step on 2 cores); graddiff, snap and bake train on it, npo does not, and the kept
shares below include these main prompts. LR: each method's best lr in
benchmarks/results/unlearn_compare.md (chosen on single-fact requests of the example facts,
10 steps, batch 16), not on these requests. A run that raises a CodecutError is a row with a
note and no measurements.

Subject codes as the unit (`--units`): beside the plan, which is the union of the cuts its
facts' searches made (each under the subject's condition sets), a plan that cuts the subject's
own codes instead: at each hook, every code of the plan's condition sets, under those same
sets (`Ablation(codes=all condition codes, when=set)`, one per set), so the codes that mark
the subject are dropped from where they fire on; no search (its seconds are the plan's, whose
conditions it takes). Its row is method "subject codes".

Subjects, fixed before any result was seen: the countries with at least `--min-facts` facts in
the file, shuffled with `--seed`, the first N. (Only 8 countries have 3 or more; `--min-facts
2` draws from 51.)

Per request and method ("after": the plan applied, or the fine-tuned copy; "before": the
clean model):
- forgotten, per format: of the subject's prompts (its facts' prompts and paraphrases, and
  each asked as a question, in the chat template, after 3 other facts of the relation and
  after a true fact about the subject; `codecut.probes.formats`) answered before, the share
  not answered after;
- kept: of the other countries' plain prompts answered before, the share answered after, for
  the relations the request forgot and for the others; and (`kept_formats`) of the other
  countries' main prompts of the forgotten relations asked in the four other formats (the
  context never about the forgotten subject), the share answered after of those answered before;
- seconds: the time `codecut.unlearn` took, finding the facts included; for fine-tuning,
  `finetune_unlearn`'s (the facts given, not found), plus the plan's for bake.

Writes benchmarks/results/unlearn_subjects.json, .md (zero-shot summary, a table per method,
every row) and .png (forgotten against kept, a point per method), after each request, with the
machine named. Run it alone: another process on the same cores changes every time.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial

import pandas as pd
from codecut.codebook.ablation import Ablation
from codecut.codebook.saefile import shipped_for
from codecut.probes.evaluate import prompts_and_answers
from codecut.probes.formats import variant_prompts
from common import RESULTS, bullets, command_line, heading, write_files
from matplotlib.figure import Figure
from tqdm.auto import tqdm

import codecut
from codecut.core.errors import CodecutError
from codecut.core.facts import Fact
from codecut.core.io import markdown_table
from codecut.core.models import DEFAULT_MODEL, Model

FACTS = RESULTS.parent / "data" / "country_facts.jsonl"
FORMATS = ("prompt", "question", "chat", "few-shot", "helpful")
SHARES = ["prompt", "question", "chat", "few_shot", "helpful"]  # FORMATS as Row's fields
SHOTS = 3
ZERO_SHOT = "zero-shot"
UNITS = "subject codes"
# Best lr per method in benchmarks/results/unlearn_compare.md (single-fact requests).
LR = {"ga": 3e-6, "graddiff": 1e-5, "npo": 3e-6, "simnpo": 3e-6, "rmu": 1e-6, "flat": 3e-6,
      "snap": 3e-5, "antisample": 3e-5, "bake": 3e-5}  # fmt: skip
STEPS, BATCH = 10, 16
RETAIN = 32  # facts of other countries the fine-tuning methods keep in view
After = Callable[[list[str], list[str]], list[bool]]  # the model after: is each answer greedy


@dataclass(kw_only=True)
class Row:
    """One subject and method: what was forgotten, in each format; what the others kept."""

    subject: str
    method: str  # "zero-shot" (the plan) or a fine-tuning method
    facts: int  # the subject's facts the request forgot (given and found)
    found: int  # of them, found by asking the model (not in the file)
    prompt: float | None  # share of the answered prompts (and paraphrases) no longer answered
    question: float | None
    chat: float | None
    few_shot: float | None
    helpful: float | None
    kept_same_relation: float | None  # other subjects' prompts of the forgotten relations kept
    kept_other: float | None  # other subjects' prompts of the other relations still answered
    kept_formats: float | None  # other subjects' main prompts, forgotten relations, in the formats
    codes: int | None = None  # codes the plan cuts (None: fine-tuning)
    seconds: float
    steps: int | None = None  # optimizer steps run (fine-tuning)
    note: str = ""  # the error that stopped a fine-tuning run (its row has no measurements)


def answered(model: Model, prompts: list[str], answers: list[str]) -> list[bool]:
    return model.answer_scores(prompts, answers)[1].tolist()


@dataclass
class Asked:
    """Prompts with their answers, and whether the clean model answers each."""

    prompts: list[str]
    answers: list[str]
    before: list[bool]

    def kept(self, after: After) -> float | None:
        """Of the prompts the clean model answers, the share `after` still answers."""
        if not any(self.before):
            return None
        held = [a for b, a in zip(self.before, after(self.prompts, self.answers)) if b]
        return sum(held) / len(held)


@dataclass
class Request:
    """One subject's request: its facts, and what the clean model answers of each group."""

    subject: str
    facts: int
    found: int
    formats: dict[str, Asked]  # the subject's prompts, per format
    same_relation: Asked  # the other subjects' prompts of the forgotten relations
    other: Asked  # and of the other relations
    neighbours: Asked  # the same relations' other subjects' main prompts, in the other formats


def request(
    model: Model, subject: str, mine: list[Fact], facts: list[Fact], clean: list[list[bool]]
) -> Request:
    """The prompts a request is measured on; `clean`: per fact of `facts`, per prompt."""
    formats = {}
    for v in FORMATS:
        # Context facts may be about the subject (its other facts, stated: the helpful format).
        asked = [(q, f.answer) for f in mine for q in variant_prompts(model, f, facts, v, SHOTS)]
        prompts, answers = (list(x) for x in zip(*asked)) if asked else ([], [])
        formats[v] = Asked(prompts, answers, answered(model, prompts, answers))
    relations = {f.relation for f in mine}
    groups = {True: Asked([], [], []), False: Asked([], [], [])}
    for f, before in zip(facts, clean):
        if f.subject != subject:
            g = groups[f.relation in relations]
            g.prompts += f.prompts
            g.answers += [f.answer] * len(f.prompts)
            g.before += before
    shown = [g for g in facts if g.subject != subject]  # context never names the subject
    asked = [
        (q, f.answer)
        for f in shown
        if f.relation in relations
        for v in FORMATS[1:]
        for q in variant_prompts(model, replace(f, paraphrases=[]), shown, v, SHOTS)
    ]
    prompts, answers = (list(x) for x in zip(*asked)) if asked else ([], [])
    neighbours = Asked(prompts, answers, answered(model, prompts, answers))
    given = {f.relation for f in facts if f.subject == subject}
    found = sum(f.relation not in given for f in mine)
    return Request(subject, len(mine), found, formats, groups[True], groups[False], neighbours)


def row(req: Request, method: str, after: After | None, seconds: float, **extra) -> Row:
    """`req` measured on the model after (None: the method failed, no measurements)."""
    kept = {v: a.kept(after) if after else None for v, a in req.formats.items()}
    gone = {v: None if k is None else 1 - k for v, k in kept.items()}
    return Row(
        subject=req.subject, method=method, facts=req.facts, found=req.found,
        prompt=gone["prompt"], question=gone["question"], chat=gone["chat"],
        few_shot=gone["few-shot"], helpful=gone["helpful"],
        kept_same_relation=req.same_relation.kept(after) if after else None,
        kept_other=req.other.kept(after) if after else None,
        kept_formats=req.neighbours.kept(after) if after else None,
        seconds=round(seconds, 1), **extra,
    )  # fmt: skip


def with_plan(model: Model, plan: codecut.UnlearnPlan) -> After:
    def after(prompts: list[str], answers: list[str]) -> list[bool]:
        with codecut.apply(model, plan):
            return answered(model, prompts, answers)

    return after


def subject_codes(plan: codecut.UnlearnPlan) -> codecut.UnlearnPlan | None:
    """The plan that cuts the subject's condition codes themselves, under the same conditions
    (see the module docstring); None if the plan has no condition."""

    def unit(ablations: list[Ablation]) -> list[Ablation]:
        sets = {tuple(a.when) for a in ablations if a.when}
        codes = sorted({c for s in sets for c in s})
        return [Ablation(codes=codes, when=list(s)) for s in sorted(sets)]

    own = unit(plan.ablations)
    later = [replace(cut, ablations=unit(cut.ablations)) for cut in plan.later]
    later = [cut for cut in later if cut.ablations]
    if not own and not later:
        return None
    if not own:  # the plan's first bottleneck had no condition: start from its first later one
        first, *later = later
        return replace(plan, hook=first.hook, bottleneck_hash=first.bottleneck_hash,
                       bottleneck_source=first.bottleneck_source, bottleneck=first.bottleneck,
                       ablations=first.ablations, later=later)  # fmt: skip
    return replace(plan, ablations=own, later=later)


def finetune(
    model: Model, req: Request, plan: codecut.UnlearnPlan, retain: list[Fact], method: str
) -> Row:
    """One fine-tuning run on a copy of the model, measured, then dropped."""
    t = time.time()
    try:
        result = codecut.finetune_unlearn(
            model, plan.facts, retain, method=method, lr=LR[method], steps=STEPS,
            batch_size=BATCH, **({"plan": plan} if method == "bake" else {}),
        )  # fmt: skip
    except CodecutError as e:
        return row(req, method, None, time.time() - t, note=f"{type(e).__name__}: {e}")
    seconds = time.time() - t + (plan.seconds if method == "bake" else 0.0)
    out = row(req, method, partial(answered, result.model), seconds,
              steps=result.record.steps_run)  # fmt: skip
    del result
    gc.collect()
    return out


def pick_subjects(facts: list[Fact], n: int, least: int, seed: int) -> list[str]:
    counts: dict[str, int] = {}
    for f in facts:
        counts[f.subject] = counts.get(f.subject, 0) + 1
    subjects = sorted(s for s, c in counts.items() if c >= least)
    random.Random(seed).shuffle(subjects)
    return subjects[:n]


def zero_shot_summary(table: pd.DataFrame) -> dict:
    """The zero-shot rows' summary (the keys of the results before `--methods`)."""
    every = {f: bool((table[f].isna() | (table[f] >= 0.9)).all()) for f in SHARES}
    return {
        "subjects": len(table),
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
        "other subjects kept in the formats, same relations (mean)": table["kept_formats"].mean(),
        "other subjects kept in the formats, lowest": table["kept_formats"].min(),
        "seconds per subject (median)": statistics.median(table["seconds"]),
        "seconds per fact (median)": statistics.median(table["seconds"] / table["facts"]),
    }


def per_method(table: pd.DataFrame) -> pd.DataFrame:
    """A row per method over the subjects it ran; measurements over its runs that finished."""
    out = []
    for method, g in table.groupby("method", sort=False):
        ok = g[g["note"] == ""]
        out.append({
            "method": method, "lr": LR.get(method), "subjects": len(g), "errors": len(g) - len(ok),
            **{f"{f} forgotten": ok[f].mean() for f in SHARES},
            "subjects >= 90% every format": int((ok[SHARES].fillna(1.0) >= 0.9).all(axis=1).sum()),
            "kept same relation": ok["kept_same_relation"].mean(),
            "same relation lowest": ok["kept_same_relation"].min(),
            "kept other": ok["kept_other"].mean(), "other lowest": ok["kept_other"].min(),
            "kept formats": ok["kept_formats"].mean(), "formats lowest": ok["kept_formats"].min(),
            "median s": ok["seconds"].median(),
        })  # fmt: skip
    return pd.DataFrame(out)


def frontier(methods: pd.DataFrame) -> Figure:
    """RWKU-style forget against neighbour: a labelled point per method."""
    figure = Figure(figsize=(6, 5), layout="constrained")
    ax = figure.add_subplot()
    forgot = methods[[f"{f} forgotten" for f in SHARES]].mean(axis=1)
    kept = methods["kept same relation"]
    for i, (method, x, y) in enumerate(zip(methods["method"], kept, forgot)):
        ax.scatter(x, y, s=180 if method == ZERO_SHOT else 60, marker="*o"[method != ZERO_SHOT],
                   color=f"C{i % 10}")  # fmt: skip
        ax.annotate(method, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.margins(0.15)
    ax.set_xlabel("other subjects kept, the forgotten relations (mean share)")
    ax.set_ylabel("subject forgotten (mean over the 5 formats)")
    ax.set_title("Whole-subject unlearning: forget vs neighbour")
    return figure


def write(rows: list[Row], command: str, name: str) -> None:
    table = pd.DataFrame([asdict(r) for r in rows])
    numeric = [*SHARES, "kept_same_relation", "kept_other", "kept_formats"]
    table[numeric] = table[numeric].astype(float)  # a failed run's None: NaN
    summary = zero_shot_summary(table[table["method"] == ZERO_SHOT])
    methods = per_method(table)
    md = heading("Whole-subject unlearning, country facts", command)
    md += "## Zero-shot\n\n" + bullets(summary) + "\n\n"
    md += "## Per method\n\n" + markdown_table(methods, "{:.3g}") + "\n\n"
    md += "## Every row\n\n" + markdown_table(table) + "\n"
    data = {"command": command, "lr": LR, "steps": STEPS, "batch_size": BATCH,
            "summary": summary, "methods": methods.to_dict("records"),
            "rows": [asdict(r) for r in rows]}  # fmt: skip
    write_files(RESULTS / name, data, md, frontier(methods))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--subjects", type=int, default=20, help="how many countries to forget")
    ap.add_argument("--min-facts", type=int, default=3, help="facts a country needs in the file")
    ap.add_argument("--seed", type=int, default=0, help="the shuffle that picks the countries")
    ap.add_argument("--methods", default="", help="fine-tuning methods, comma-separated")
    ap.add_argument("--units", action="store_true", help="also cut the subject's own codes")
    ap.add_argument("--out", default="unlearn_subjects", help="the results' name")
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if set(methods) - set(LR):
        ap.error(f"unknown methods {sorted(set(methods) - set(LR))}; known: {', '.join(LR)}")
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
        req = request(model, subject, plan.facts, facts, clean_by_fact)
        codes = len({c for a in plan.ablations for c in a.codes})
        codes += sum(len({c for a in cut.ablations for c in a.codes}) for cut in plan.later)
        rows.append(row(req, ZERO_SHOT, with_plan(model, plan), seconds, codes=codes))
        tqdm.write(str(rows[-1]))
        if args.units:
            unit = subject_codes(plan)
            if unit is None:
                rows.append(row(req, UNITS, None, 0.0, note="the plan has no condition set"))
            else:
                n = len(unit.codes) + sum(len(cut.codes) for cut in unit.later)
                rows.append(row(req, UNITS, with_plan(model, unit), seconds, codes=n))
            tqdm.write(str(rows[-1]))
        others = [replace(f, paraphrases=[]) for f in facts if f.subject != subject]
        retain = random.Random(args.seed).sample(others, min(RETAIN, len(others)))
        for method in methods:
            rows.append(finetune(model, req, plan, retain, method))
            tqdm.write(str(rows[-1]))
        write(rows, command, args.out)


if __name__ == "__main__":
    main()

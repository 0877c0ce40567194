"""Unlearning benchmark on the country facts: one request at a time, every format, every row.

    python benchmarks/unlearn_countries.py [--model NAME] [--requests 60] [--seed 0] [--max-seconds S]
        [--no-formats] [--cold] [--bottleneck NAME ...] [--only SUBJECT:RELATION ...] [--out NAME]

Facts: benchmarks/data/country_facts.jsonl (built by benchmarks/country_facts.py from the
`countryinfo` package: the facts SmolLM2-135M-Instruct knows; `--model gemma3-270m` reads
country_facts_gemma3-270m.jsonl, the facts Gemma 3 270M knows, built the same way). Model:
SmolLM2-135M-Instruct by default, with its shipped bottlenecks (`--bottleneck`, repeated, picks others; the first is the one
`Baseline` and the `codes` column use, the others are tried where it cannot remove the fact:
`later_codes`). Each request is `codecut.unlearn(model, bottlenecks, [fact], pool=facts)`:
the library's default retain set drawn from the other country facts, as benchmarks/unlearn.py
does.

Requests, fixed before any result was seen: each relation's facts shuffled with `--seed`, then
taken round-robin across relations (so every prefix is stratified by relation), the first N.

Per request:
- success: the answer is no longer the greedy next token on the prompt, on every paraphrase,
  and in every format on every prompt that format answered before the cut. Formats
  (`codecut.probes.formats.variant_prompts`, the other country facts as context):
  question ("Q: <prompt> what?\\nA:"), chat (the chat template, assistant turn begun with the
  prompt), few-shot (3 other facts of the relation first), helpful (a true fact about the same
  subject first). `<format>_forgotten`: the fraction of that format's prompts answered before
  that are not after (empty when none was answered before).
- retention, on the plain prompts (the prompt and paraphrases) of the other facts: prompts
  answered with the plan / answered without it, for the same subject's other facts, other
  subjects' facts of the same relation, and unrelated facts (other subject, other relation).
- seconds: the time `codecut.unlearn` took (the measuring around it is not counted). The
  requests run one after another in one process, as in a notebook: what a request measured
  that the next one needs again (its relation's other facts) is kept (`codecut.probes.selector.memo`).
  `cold` marks the first request of each relation, which paid for them; `--cold` clears what
  is kept before every request.
Only the prompts where a cut code fires are measured with the plan (`Baseline`); on the first
request every prompt is measured as well, and the run stops if the two differ. A plan with cuts
in a later bottleneck has every prompt measured.
A request that raises is a row with its error and success False.

Writes benchmarks/results/unlearn_countries.json and .md (unlearn_countries_<model>.* for another
model; the summary and every row), rewritten after each request so an interrupted run keeps what
it measured, with the machine named.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from codecut.codebook import attach
from codecut.codebook.saefile import shipped_for
from codecut.probes.evaluate import answered, prompts_and_answers
from codecut.probes.formats import variant_prompts
from codecut.probes.selector.attribution import fired_codes
from codecut.probes.selector.cache import reached
from codecut.probes.selector.config import FORMATS, SelectConfig
from codecut.probes.selector.memo import clear
from common import (
    DATA,
    RESULTS,
    bullets,
    command_line,
    heading,
    machine,
    per_model,
    write_files,
)
from tqdm.auto import tqdm

import codecut
from codecut.core.facts import Fact
from codecut.core.io import markdown_table
from codecut.core.models import DEFAULT_MODEL

HERE = Path(__file__).resolve().parent
SHOTS = 3  # FORMATS (the formats measured) are the ones the selector asks, unless --no-formats


@dataclass
class Row:
    """One request: what was forgotten, what was kept, how long it took."""

    subject: str
    relation: str
    answer: str
    success: bool
    forgot_prompt: bool
    paraphrases_forgotten: float | None
    question_forgotten: float | None
    chat_forgotten: float | None
    few_shot_forgotten: float | None
    helpful_forgotten: float | None
    same_subject_retention: float | None
    same_relation_retention: float | None
    unrelated_retention: float | None
    codes: int | None
    later_codes: int | None  # codes cut in the later bottlenecks (0: the first was enough)
    selector_success: bool | None
    selector_formats_lost: bool | None  # the selector's own claim (`Selection.formats_lost`)
    family: str | None  # the cut's family: mode, clamp strength, "if" for a conditional one
    seconds: float | None
    # The first request of its relation in the process: the retain facts of its relation not
    # yet measured (`codecut.probes.selector.memo`); with --cold, every request is.
    cold: bool = True
    error: str = ""


def pick_requests(facts: list[Fact], n: int, seed: int) -> list[Fact]:
    """The first `n` facts of each relation's seeded shuffle, taken round-robin by relation."""
    by_relation: dict[str, list[Fact]] = {}
    for f in facts:
        by_relation.setdefault(f.relation, []).append(f)
    rng = random.Random(seed)
    for group in by_relation.values():
        rng.shuffle(group)
    out, i = [], 0
    while len(out) < n and any(i < len(g) for g in by_relation.values()):
        out += [g[i] for g in by_relation.values() if i < len(g)]
        i += 1
    return out[:n]


def format_prompts(model, fact: Fact, others: list[Fact]) -> dict[str, list[str]]:
    """The fact's prompts asked in each format (see the module docstring)."""
    return {v: variant_prompts(model, fact, others, v, SHOTS) for v in FORMATS}


def answered_prompts(model, prompts: list[str], answer: str) -> list[bool]:
    """Whether the answer is the greedy next token after each prompt."""
    if not prompts:
        return []
    return model.answer_scores(prompts, [answer] * len(prompts))[1].tolist()


class Baseline:
    """Every fact's plain prompts on the clean model, measured once: which are answered, and
    which codes of the bottleneck fire in each (at or before its predicting position).

    A plan's cut changes a prompt's answer only where it can reach (`search.reached`: a cut
    code fires there, and its condition set too; the selector's trials rely on the same fact,
    tested in tests/test_prefix.py), so with a plan applied only those prompts are measured
    again; every other prompt keeps its clean answer. That makes a
    request's retention over all 224 facts cost seconds instead of a minute; `check` measures
    every prompt once to show the two agree."""

    def __init__(self, model, bn, facts: list[Fact]):
        self.prompts, self.answers = prompts_and_answers(facts)
        self.owner = torch.tensor([i for i, f in enumerate(facts) for _ in f.prompts])
        self.index = {id(f): i for i, f in enumerate(facts)}
        self.ok = answered(model, facts)
        self.fired = torch.zeros(len(self.prompts), bn.n_codes, dtype=torch.bool)
        with attach(model, bn) as handle, torch.no_grad():
            for start in range(0, len(self.prompts), 64):
                batch = model.tokenize(self.prompts[start : start + 64])
                model(batch["input_ids"], batch["attention_mask"])
                self.fired[start : start + 64] = fired_codes(handle, batch["last"])

    def mask(self, facts: list[Fact]) -> torch.Tensor:
        """bool per prompt: the prompts of `facts`."""
        return torch.isin(self.owner, torch.tensor([self.index[id(f)] for f in facts]))

    def with_plan(self, model, plan) -> torch.Tensor:
        """bool per prompt: answered with `plan` applied (call it inside `apply`); every prompt
        for a plan with later cuts (`fired` is the first bottleneck's)."""
        if plan.later:
            return model.answer_scores(self.prompts, self.answers)[1]
        ok = self.ok.clone()
        reach = reached(plan.ablations, self.fired).nonzero().flatten().tolist()
        if reach:
            prompts = [self.prompts[i] for i in reach]
            ok[reach] = model.answer_scores(prompts, [self.answers[i] for i in reach])[1]
        return ok

    def check(self, model, plan) -> None:
        """Stop the run if the reached prompts alone do not give what measuring all gives."""
        full = model.answer_scores(self.prompts, self.answers)[1]
        if not torch.equal(full, self.with_plan(model, plan)):
            raise SystemExit("measuring only the prompts a cut reaches differs from all prompts")


def request(
    model, bottlenecks, fact: Fact, facts: list[Fact], base: Baseline, config, check=False
) -> Row:
    """Forget `fact` (the other `facts` as the pool) and measure what changed."""
    others = [f for f in facts if f is not fact]
    groups = {
        "same_subject": [f for f in others if f.subject == fact.subject],
        "same_relation": [
            f for f in others if f.relation == fact.relation and f.subject != fact.subject
        ],
        "unrelated": [
            f for f in others if f.relation != fact.relation and f.subject != fact.subject
        ],
    }
    formats = format_prompts(model, fact, others)
    before = {v: answered_prompts(model, ps, fact.answer) for v, ps in formats.items()}
    t0 = time.time()
    try:
        plan = codecut.unlearn(model, bottlenecks, [fact], pool=facts, config=config)
    except Exception as e:  # a crash is a failed request, reported as its row
        return Row(
            fact.subject, fact.relation, fact.answer, False, False,
            *[None] * 13, round(time.time() - t0, 1), f"{type(e).__name__}: {e}",
        )  # fmt: skip
    seconds = time.time() - t0
    with codecut.apply(model, plan):
        after = {v: answered_prompts(model, ps, fact.answer) for v, ps in formats.items()}
        ok = base.with_plan(model, plan)
        if check:
            base.check(model, plan)
    plain = ok[base.mask([fact])].tolist()
    forgotten = {}
    for v in FORMATS:
        asked = [a for b, a in zip(before[v], after[v]) if b]
        forgotten[v] = sum(not a for a in asked) / len(asked) if asked else None
    retention = {}
    for k, g in groups.items():
        mask = base.mask(g) if g else None
        retention[k] = int(ok[mask].sum()) / max(int(base.ok[mask].sum()), 1) if g else None
    result = plan.results.facts[0]
    sel, last = result.selection, result.last
    success = not any(plain) and all(f in (None, 1.0) for f in forgotten.values())
    para = [not a for a in plain[1:]]
    return Row(
        fact.subject, fact.relation, fact.answer, success, not plain[0],
        sum(para) / len(para) if para else None,
        forgotten["question"], forgotten["chat"], forgotten["few-shot"], forgotten["helpful"],
        retention["same_subject"], retention["same_relation"], retention["unrelated"],
        len(sel.codes), sum(len(s.codes) for s in result.later.values()),
        last.success, last.formats_lost,
        f"{sel.family.mode} {sel.family.c:g}{' if' if sel.family.conditional else ''}",
        round(seconds, 1),
    )  # fmt: skip


def summarize(rows: list[Row]) -> dict:
    """Success rate, mean retention per group, and seconds over the requests so far."""
    t = pd.DataFrame([asdict(r) for r in rows])
    seconds = t["seconds"].dropna()
    return {
        "requests": len(t),
        "errors": int((t["error"] != "").sum()),
        "success_rate": float(t["success"].mean()),
        "success_rate_prompt": float(t["forgot_prompt"].mean()),
        **{
            f"mean_{k}_retention": float(t[f"{k}_retention"].mean())
            for k in ("same_subject", "same_relation", "unrelated")
        },
        "median_seconds": float(seconds.median()) if len(seconds) else None,
        "worst_seconds": float(seconds.max()) if len(seconds) else None,
        "cold_requests": int(t["cold"].sum()),
        "cold_median_seconds": float(t.loc[t["cold"], "seconds"].median())
        if t["cold"].any()
        else None,
        "success_rate_by_relation": t.groupby("relation")["success"].mean().round(3).to_dict(),
    }


def write_results(
    rows: list[Row], bn_hash: str, command: str, planned: int, facts: Path, n_facts: int, name: str
) -> None:
    """benchmarks/results/`name`.json and .md: the summary and every request."""
    summary = {**summarize(rows), "requests_planned": planned, "facts_in_pool": n_facts}
    out = {
        "machine": machine(),
        "command": command,
        "bottleneck": bn_hash,
        "facts": str(facts.relative_to(HERE.parent)),
        "summary": summary,
        "rows": [asdict(r) for r in rows],
    }
    md = heading("Unlearning benchmark: country facts", command) + bullets(summary)
    md += "\n\n" + markdown_table(pd.DataFrame([asdict(r) for r in rows]), "{:.3f}") + "\n"
    write_files(RESULTS / name, out, md)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default=DEFAULT_MODEL, help="a registry model")
    ap.add_argument("--requests", type=int, default=60, help="how many facts to forget")
    ap.add_argument("--seed", type=int, default=0, help="the shuffle that picks the requests")
    ap.add_argument(
        "--max-seconds", type=float, default=None, help="the selector's time budget per request"
    )
    ap.add_argument(
        "--no-formats",
        action="store_true",
        help="the selector does not ask the formats (SelectConfig(formats=())); results go to "
        "unlearn_countries_noformats.{json,md}",
    )
    ap.add_argument(
        "--cold",
        action="store_true",
        help="nothing kept between requests (codecut.probes.selector.memo.clear() before each), as if "
        "each ran in a fresh process",
    )
    ap.add_argument(
        "--bottleneck", action="append",
        help="a bottleneck to cut in, repeated for later ones (default: the shipped ones)",
    )  # fmt: skip
    ap.add_argument(
        "--only", action="append", metavar="SUBJECT:RELATION",
        help="run these requests alone, in the order given (give --out too)",
    )  # fmt: skip
    ap.add_argument("--out", help="the results' name under benchmarks/results (no extension)")
    args = ap.parse_args()
    config = SelectConfig(max_seconds=args.max_seconds, formats=() if args.no_formats else FORMATS)
    name = args.out or per_model("unlearn_countries", args.model) + (
        "_noformats" if args.no_formats else ""
    ) + ("_cold" if args.cold else "")
    where = DATA / f"{per_model('country_facts', args.model)}.jsonl"
    facts = codecut.load_facts(where)
    model = codecut.load_model(args.model)
    names = args.bottleneck or shipped_for(args.model)
    bottlenecks = [codecut.load_bottleneck(b) for b in names]
    bn = bottlenecks[0]
    targets = pick_requests(facts, args.requests, args.seed)
    if args.only:
        by_key = {f"{f.subject}:{f.relation}": f for f in facts}
        missing = [k for k in args.only if k not in by_key]
        if missing:
            raise SystemExit(f"--only {missing[0]}: no such fact in {where.name}")
        targets = [by_key[k] for k in args.only]
    command = command_line(__file__)
    base = Baseline(model, bn, facts)
    rows = []
    seen: set[str] = set()
    for i, fact in enumerate(tqdm(targets, desc="forgetting country facts one at a time")):
        if args.cold:
            clear()
        row = request(model, bottlenecks, fact, facts, base, config, check=i == 0)
        rows.append(replace(row, cold=args.cold or fact.relation not in seen))
        seen.add(fact.relation)
        tqdm.write(str(rows[-1]))
        hashes = " + ".join(b.content_hash for b in bottlenecks)
        write_results(rows, hashes, command, len(targets), where, len(facts), name)


if __name__ == "__main__":
    main()

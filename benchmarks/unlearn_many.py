"""Many facts in one plan: how a plan's cost and damage grow with its size, 1 to 200 facts.

    python benchmarks/unlearn_many.py [--sizes 1,10,50,200] [--joint SIZES] [--seed 0]
        [--out unlearn_many] [--plans DIR]

Facts: the country facts and the facts beyond them (benchmarks/data/country_facts.jsonl and
other_facts.jsonl: capitals, languages, currencies, continents, a neighbour, US state capitals,
element symbols; 248 that SmolLM2-135M-Instruct knows). Shuffled once with `--seed`; the plan of
N facts forgets the first N (so each size holds the smaller ones). Model: SmolLM2-135M-Instruct
with its shipped bottlenecks; `pool` is the 248 facts for every request.

For each size, two ways to forget the same N facts:
- joint: one request, `codecut.unlearn(model, bottlenecks, forget=first_N, pool=facts)`;
- composed: N single-fact requests (`forget=[fact]`, the same pool), applied together
  (`codecut.apply(model, *plans)`), what a user who asks one fact at a time ends with. Single
  plans are made once, in order, and shared by every size.
`--joint` names the sizes to make joint plans for, when fewer than `--sizes` (the composed rows
come at every size of `--sizes` anyway). `--plans DIR` keeps each single plan as DIR/NNN.json
(its `seconds` the request's wall time) and reads it back instead of asking again when it is
there for the same fact: the single plans of a long run serve the next one (a joint plan of 200
facts later, say), as long as the selector has not changed since.

Measured for each, against the clean model:
- forgotten: of the N facts' prompts and paraphrases the clean model answers, the share the plan
  stops;
- kept (seen): of the other 248 - N facts' prompts and paraphrases answered, the share still
  answered (the selector may have checked them: they are in the pool);
- kept (held out): of the facts the model answers on their main prompt that failed the
  benchmark's paraphrase or chat check (the candidates files; never in the pool, never seen by
  the selector), the share still answered;
- fluency: the change of the mean next-token loss on plain sentences (nats per token,
  `probes.attacks.fluency`);
- seconds: wall time of the request(s), and per fact; codes: the distinct codes cut.

Writes benchmarks/results/unlearn_many.json, .md and .png (facts -> seconds, retention), after
each measurement, with the machine named. Run it alone: another process on the same cores
changes every time.
"""

from __future__ import annotations

import argparse
import random
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import country_facts
import matplotlib.pyplot as plt
import other_facts
import pandas as pd
from codecut.codebook.saefile import shipped_for
from codecut.probes.attacks.fluency import TEXTS, loss
from codecut.probes.evaluate import prompts_and_answers
from common import RESULTS, bullets, command_line, heading, write_files
from matplotlib.figure import Figure
from tqdm.auto import tqdm

import codecut
from codecut.core.facts import Fact
from codecut.core.io import markdown_table
from codecut.core.models import DEFAULT_MODEL

DATA = RESULTS.parent / "data"


@dataclass
class Row:
    """One way (joint or composed) of forgetting the first N facts, measured."""

    way: str  # "joint" (one request), "composed" (N single requests applied together) or "bare"
    facts: int
    forgotten: float  # share of the N facts' answered prompts the plan stops
    kept_seen: float  # share of the other pool facts' answered prompts still answered
    kept_held_out: float  # share of the held-out facts' answered main prompts still answered
    fluency: float  # change of the mean next-token loss on plain text, nats per token
    codes: int  # distinct (hook, code) pairs cut
    seconds: float  # wall time of the request(s)
    seconds_per_fact: float


def held_out() -> list[Fact]:
    """Facts answered on their main prompt that failed the benchmark's other checks (main
    prompt only): never in the pool."""
    out = []
    for name, prompt in (
        ("country_facts", lambda r: country_facts.prompts(r.relation, r.subject)[0]),
        ("other_facts", lambda r: other_facts.TEMPLATES[r.relation][0].format(s=r.subject)),
    ):
        table = pd.read_csv(DATA / f"{name}_candidates.csv")
        for r in table[table["main"] & ~table["kept"]].itertuples():
            out.append(Fact(r.subject, r.relation, prompt(r), r.answer))
    return out


class Meter:
    """The clean model's answers, measured once; a plan's numbers against them."""

    def __init__(self, model: codecut.Model, facts: list[Fact], held: list[Fact]) -> None:
        self.model, self.facts, self.held = model, facts, held
        self.clean = self._answers(facts)  # per fact, per prompt
        self.clean_held = self._answers(held)
        self.clean_loss = loss(model, TEXTS)

    def _answers(self, facts: list[Fact]) -> list[list[bool]]:
        flat = iter(self.model.answer_scores(*prompts_and_answers(facts))[1].tolist())
        return [[next(flat) for _ in f.prompts] for f in facts]

    @staticmethod
    def _share(before: list[list[bool]], after: list[list[bool]]) -> float:
        held = [a for bs, as_ in zip(before, after) for b, a in zip(bs, as_) if b]
        return sum(held) / len(held) if held else float("nan")

    def bare(self, bottlenecks: list[codecut.Bottleneck]) -> Row:
        """The bottlenecks attached with no cut: what attaching alone changes (float rounding
        through the error term), the floor of every plan's numbers."""
        with ExitStack() as attached:
            for bn in bottlenecks:
                attached.enter_context(codecut.attach(self.model, bn))
            return self._row("bare", 0, self._answers(self.facts), self._answers(self.held))

    def row(self, way: str, n: int, plans: list[codecut.UnlearnPlan], seconds: float) -> Row:
        with codecut.apply(self.model, *plans):
            return self._row(way, n, self._answers(self.facts), self._answers(self.held), plans,
                             seconds)  # fmt: skip

    def _row(
        self,
        way: str,
        n: int,
        after: list[list[bool]],
        after_held: list[list[bool]],
        plans: list[codecut.UnlearnPlan] | tuple = (),
        seconds: float = 0.0,
    ) -> Row:
        """The row of answers measured `after` (in the state they were measured in)."""
        fluency = loss(self.model, TEXTS) - self.clean_loss
        codes = {(p.hook, c) for p in plans for c in p.codes}
        codes |= {(cut.hook, c) for p in plans for cut in p.later for c in cut.codes}
        return Row(
            way=way, facts=n,
            forgotten=1 - self._share(self.clean[:n], after[:n]),
            kept_seen=self._share(self.clean[n:], after[n:]),
            kept_held_out=self._share(self.clean_held, after_held),
            fluency=round(fluency, 4), codes=len(codes), seconds=round(seconds, 1),
            seconds_per_fact=round(seconds / n, 2) if n else 0.0,
        )  # fmt: skip


def figure(rows: list[Row]) -> Figure:
    table = pd.DataFrame([asdict(r) for r in rows])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for way, part in table[table["way"] != "bare"].groupby("way"):
        left.plot(part["facts"], part["seconds_per_fact"], "o-", label=way)
        right.plot(part["facts"], part["kept_seen"], "o-", label=f"{way}: kept, seen")
        right.plot(part["facts"], part["kept_held_out"], "s--", label=f"{way}: kept, held out")
        right.plot(part["facts"], part["forgotten"], "^:", label=f"{way}: forgotten")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("facts in the plan")
        ax.legend(fontsize=8)
    left.set_ylabel("seconds per fact")
    right.set_ylabel("share of the clean model's answers")
    fig.suptitle("One plan of N facts (joint) against N single plans applied together")
    fig.tight_layout()
    return fig


def write(rows: list[Row], single_seconds: list[float], command: str, name: str) -> None:
    table = pd.DataFrame([asdict(r) for r in rows])
    summary = {
        "single plans made": len(single_seconds),
        "single plan seconds (median)": float(pd.Series(single_seconds).median())
        if single_seconds else float("nan"),
    }  # fmt: skip
    joint = table[table["way"] == "joint"].set_index("facts")
    composed = table[table["way"] == "composed"].set_index("facts")
    for n in joint.index.intersection(composed.index):
        for k in ("kept_seen", "kept_held_out", "forgotten"):
            summary[f"{n} facts, {k}: joint - composed"] = joint.at[n, k] - composed.at[n, k]
    md = heading("Many facts in one plan", command) + bullets(summary) + "\n\n"
    md += markdown_table(table.sort_values(["facts", "way"])) + "\n"
    write_files(
        RESULTS / name,
        {"command": command, "summary": summary, "rows": [asdict(r) for r in rows],
         "single_seconds": single_seconds},
        md, figure(rows),
    )  # fmt: skip


def single(
    model: codecut.Model,
    bottlenecks: list[codecut.Bottleneck],
    fact: Fact,
    pool: list[Fact],
    plans: Path | None,
    i: int,
) -> codecut.UnlearnPlan:
    """The single plan of `fact`: read from `plans`/NNN.json when it is there for this fact,
    else asked for (and kept there)."""
    path = plans / f"{i:03d}.json" if plans is not None else None
    if path is not None and path.is_file():
        plan = codecut.load_plan(path)
        if plan.facts == [fact]:
            return plan
    plan = codecut.unlearn(model, bottlenecks, forget=[fact], pool=pool)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        plan.save(path)
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1,10,50,200", help="plan sizes, comma-separated")
    ap.add_argument("--joint", help="the sizes to make joint plans for (default: --sizes)")
    ap.add_argument("--seed", type=int, default=0, help="the shuffle that orders the facts")
    ap.add_argument("--out", default="unlearn_many", help="the results' name")
    ap.add_argument("--plans", type=Path, help="where single plans are kept and read back")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    joint = sorted(int(s) for s in args.joint.split(",")) if args.joint else sizes
    facts = [*codecut.load_facts(DATA / "country_facts.jsonl"),
             *codecut.load_facts(DATA / "other_facts.jsonl")]  # fmt: skip
    random.Random(args.seed).shuffle(facts)
    if max(sizes + joint) > len(facts):
        ap.error(f"--sizes, --joint: at most {len(facts)} facts")
    model = codecut.load_model(DEFAULT_MODEL)
    bottlenecks = [codecut.load_bottleneck(b) for b in shipped_for(DEFAULT_MODEL)]
    command = command_line(__file__)
    meter = Meter(model, facts, held_out())
    rows = [meter.bare(bottlenecks)]
    singles: list[codecut.UnlearnPlan] = []
    single_seconds: list[float] = []
    for n in tqdm(joint, desc="joint plans"):
        t = time.time()
        plan = codecut.unlearn(model, bottlenecks, forget=facts[:n], pool=facts)
        rows.append(meter.row("joint", n, [plan], time.time() - t))
        tqdm.write(str(rows[-1]))
        write(rows, single_seconds, command, args.out)
    for i, fact in enumerate(tqdm(facts[: sizes[-1]], desc="single plans")):
        singles.append(single(model, bottlenecks, fact, facts, args.plans, i))
        single_seconds.append(singles[-1].seconds)
        if len(singles) in sizes:
            n = len(singles)
            rows.append(meter.row("composed", n, singles, sum(single_seconds)))
            tqdm.write(str(rows[-1]))
            write(rows, single_seconds, command, args.out)


if __name__ == "__main__":
    main()

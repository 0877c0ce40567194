"""The selector on worlds it was not tuned on: freshly trained synthetic worlds, one per seed.

    python benchmarks/worlds.py [--seeds 0-9] [--subjects 21]
    python benchmarks/worlds.py --hooks blocks.2.hook_out blocks.3.hook_out  # a later one too

Each seed trains its own world model (other names, other facts, another table of answers) and
its own bottleneck (`world_bottleneck`: TopK, 1024 codes, k=16, layer 2); the committed fixture
`world-0-other-cpu` (seed 0 as another processor trained it) comes last. In each world,
every relation of `--subjects` subjects (from the fourth by name on, as the unit tests pick) is
forgotten, one request at a time, where the model answers the fact on every prompt.

A request counts as met under the unit tests' bar (tests/test_unlearn.py): after the plan, at
most 5% of the fact's prompts (templates and held-out paraphrases) keep the answer, and the same
subject's other facts and the same relation's other facts each keep at least 95% of their
accuracy before. A request the selector refuses (no cut within the retain budget) is not met.

Writes benchmarks/results/worlds.json, .md and .png (worlds_2hooks.* with two hooks), with the
machine named. Worlds are trained into the cache (`CODECUT_CACHE`), so a second run only unlearns.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass

from codecut.probes.evaluate import fact_accuracy
from codecut.probes.testing.world import build_world, fixture, world_bottleneck
from common import RESULTS, command_line, heading, machine, write_files
from matplotlib.figure import Figure
from tqdm.auto import tqdm

import codecut
from codecut.core.errors import BadInput

HOOK = "blocks.2.hook_out"  # the tests' bottleneck
STRICT = 0.95  # share of a neighbour group's accuracy that must stay (the unit tests' bar)
FORGOTTEN = 0.05  # most share of the fact's prompts that may keep the answer


@dataclass
class Request:
    """One forgotten fact and what it cost."""

    world: str
    subject: str
    relation: str
    answer: str
    forgotten: bool  # at most FORGOTTEN of the fact's prompts keep the answer
    kept: bool  # both neighbour groups keep STRICT of their accuracy
    after: float  # the fact's accuracy over its prompts with the plan
    same_subject: float  # accuracy after / before, the subject's other facts
    same_relation: float  # accuracy after / before, the relation's other facts
    codes: int  # codes cut, every bottleneck's
    seconds: float
    refused: str  # the selector's error, "" when it made a plan

    @property
    def met(self) -> bool:
        return self.forgotten and self.kept


@dataclass
class WorldResult:
    """One world's requests, summed up."""

    world: str
    train_accuracy: float
    heldout_accuracy: float
    requests: int
    met: float  # share forgotten with the neighbours kept
    forgotten: float
    kept: float
    refused: int
    median_seconds: float


def ratio(after: float, before: float) -> float:
    return after / before if before else 1.0


def request(model, bottlenecks, name: str, target, facts) -> Request:
    """Forget `target` (the world's facts as the pool) and measure it as the unit tests do."""
    same_subject = [f for f in facts if f.subject == target.subject and f is not target]
    same_relation = [f for f in facts if f.relation == target.relation and f is not target]
    groups = (same_subject, same_relation)
    before = [fact_accuracy(model, g) for g in groups]
    started = time.time()
    try:
        plan = codecut.unlearn(model, bottlenecks, [target], pool=facts)
    except BadInput as e:
        return Request(
            name, target.subject, target.relation, target.answer, False, True, 1.0, 1.0, 1.0,
            0, round(time.time() - started, 1), str(e),
        )  # fmt: skip
    seconds = time.time() - started
    with codecut.apply(model, plan):
        gone = fact_accuracy(model, [target])
        after = [fact_accuracy(model, g) for g in groups]
    kept = [ratio(a, b) for a, b in zip(after, before)]
    return Request(
        world=name,
        subject=target.subject,
        relation=target.relation,
        answer=target.answer,
        forgotten=gone <= FORGOTTEN,
        kept=all(a >= STRICT * b for a, b in zip(after, before)),
        after=round(gone, 3),
        same_subject=round(kept[0], 3),
        same_relation=round(kept[1], 3),
        codes=sum(
            len({c for a in cut.ablations for c in a.codes}) for cut in [plan.own, *plan.later]
        ),
        seconds=round(seconds, 1),
        refused="",
    )


def run_world(name: str, model, w, bottlenecks, subjects: int) -> tuple[WorldResult, list[Request]]:
    facts = w.facts("all")
    chosen = set(w.subjects[3 : 3 + subjects])
    targets = [f for f in facts if f.subject in chosen and fact_accuracy(model, [f]) == 1]
    rows = [
        request(model, bottlenecks, name, t, facts)
        for t in tqdm(targets, desc=f"{name}: forgetting", leave=False)
    ]
    n = len(rows)
    seconds = sorted(r.seconds for r in rows)
    result = WorldResult(
        world=name,
        train_accuracy=round(w.accuracy["train"], 3),
        heldout_accuracy=round(w.accuracy["heldout"], 3),
        requests=n,
        met=round(sum(r.met for r in rows) / n, 3),
        forgotten=round(sum(r.forgotten for r in rows) / n, 3),
        kept=round(
            sum(r.kept for r in rows if r.forgotten) / max(sum(r.forgotten for r in rows), 1), 3
        ),
        refused=sum(bool(r.refused) for r in rows),
        median_seconds=seconds[n // 2],
    )
    return result, rows


def write(worlds: list[WorldResult], rows: list[Request], command: str, name: str) -> None:
    """benchmarks/results/<name>.json, .md and .png."""
    data = {
        "machine": machine(),
        "command": command,
        "bar": {"forgotten_at_most": FORGOTTEN, "neighbours_keep": STRICT},
        "worlds": [asdict(w) for w in worlds],
        "requests": [asdict(r) | {"met": r.met} for r in rows],
    }
    all_met = sum(r.met for r in rows)
    md = [
        f"A request is met when at most {FORGOTTEN:.0%} of the fact's prompts keep the answer and "
        f"the same subject's and same relation's other facts each keep {STRICT:.0%} of their "
        "accuracy (tests/test_unlearn.py's bar). `kept` is over the forgotten requests.",
        "",
        f"All worlds: {all_met} of {len(rows)} requests met ({all_met / len(rows):.1%}); "
        f"{sum(w.met >= 0.9 for w in worlds)} of {len(worlds)} worlds at 90% or more.",
        "",
        "| world | train acc | held-out acc | requests | met | forgotten | kept | refused | median s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    md += [
        f"| {w.world} | {w.train_accuracy:.2f} | {w.heldout_accuracy:.2f} | {w.requests} | "
        f"{w.met:.0%} | {w.forgotten:.0%} | {w.kept:.0%} | {w.refused} | {w.median_seconds:.1f} |"
        for w in worlds
    ]
    md += ["", "## Requests not met", "",
           "| world | subject | relation | answer | after | same subject | same relation | codes | why |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if not r.met:
            why = r.refused or ("not forgotten" if not r.forgotten else "a neighbour lost")
            md.append(
                f"| {r.world} | {r.subject} | {r.relation} | {r.answer} | {r.after:.2f} | "
                f"{r.same_subject:.2f} | {r.same_relation:.2f} | {r.codes} | {why} |"
            )
    title = heading("The selector over freshly trained worlds", command)
    write_files(RESULTS / name, data, title + "\n".join(md) + "\n", plot(worlds))


def plot(worlds: list[WorldResult]) -> Figure:
    """Per world, the share of requests met and forgotten."""
    fig = Figure(figsize=(max(6, 0.7 * len(worlds)), 3.5), layout="tight")
    ax = fig.add_subplot()
    x = range(len(worlds))
    ax.bar(x, [w.met for w in worlds], color="tab:blue", label="met (forgotten, neighbours kept)")
    ax.plot(x, [w.forgotten for w in worlds], "o", color="tab:orange", label="forgotten")
    ax.axhline(0.9, color="gray", ls="--", lw=1, label="90%")
    ax.set_xticks(list(x), [w.world for w in worlds], rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of requests")
    ax.set_title("One request at a time, per freshly trained world")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def seeds(text: str) -> list[int]:
    """ "0-9" or "0,3,5"."""
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=seeds, default=list(range(10)), help="e.g. 0-9 or 0,3")
    ap.add_argument(
        "--subjects", type=int, default=21, help="subjects per world (default: all but the first 3)"
    )
    ap.add_argument(
        "--hooks", nargs="+", default=[HOOK],
        help="a bottleneck at each, later ones tried where the first cannot remove a fact "
        "(codecut.unlearn with a list); results go to worlds.* for the default, "
        "worlds_<n>hooks.* otherwise",
    )  # fmt: skip
    args = ap.parse_args()
    out = "worlds" if args.hooks == [HOOK] else f"worlds_{len(args.hooks)}hooks"
    command = command_line(__file__)
    worlds: list[WorldResult] = []
    rows: list[Request] = []
    names = [f"seed-{s}" for s in args.seeds] + ["world-0-other-cpu"]
    for name in tqdm(names, desc="worlds"):
        if name.startswith("seed-"):
            seed = int(name.removeprefix("seed-"))
            model, w = build_world(seed=seed)
            have = {}
        else:
            seed = 0
            model, w, have = fixture(name)
        bns = [have.get(h) or world_bottleneck(model, w, seed=seed, hook=h) for h in args.hooks]
        result, got = run_world(name, model, w, bns, args.subjects)
        worlds.append(result)
        rows += got
        tqdm.write(str(result))
        write(worlds, rows, command, out)  # after every world: an interrupted run keeps its worlds


if __name__ == "__main__":
    main()

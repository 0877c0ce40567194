"""Forget each known fact in turn, one request at a time, and measure what else goes.

    python benchmarks/unlearn.py smollm2 [--limit N] [--relations capital,language,currency]
    python benchmarks/unlearn.py smollm2 --bottleneck DIR   # a bottleneck you trained
    python benchmarks/unlearn.py world [--limit N]

`smollm2`: SmolLM2-135M-Instruct with its shipped bottleneck, over the example facts. `world`:
the committed seed-0 world (`probes/testing/fixtures/world-0`) with the bottleneck the tests load
(1024 codes, k=16, layer 2), over its 96 facts (prompts: training templates and held-out
paraphrases). Freshly trained worlds: benchmarks/worlds.py.

Per request: success on the prompt and on its paraphrases (the answer is no longer the greedy
next token), retention of the same subject's other facts and of every other subject's facts
(greedy accuracy after / before over all their prompts), and the seconds `codecut.unlearn`
took. Writes benchmarks/results/unlearn_<target>.json and .md, with the machine named
(unlearn_smollm2_<hash>.* for a bottleneck given with --bottleneck).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
from codecut.probes.evaluate import answered
from common import RESULTS, bullets, command_line, heading, machine, write_files
from tqdm.auto import tqdm

import codecut
from codecut.core.facts import example_facts
from codecut.core.io import markdown_table


def accuracy(model, facts) -> tuple[int, int]:
    """(prompts answered, prompts) over every prompt of `facts`."""
    ok = answered(model, facts)
    return int(ok.sum()), len(ok)


def spread(facts: list, relations: list[str] | None = None) -> list:
    """The facts of `relations` (default all), relations interleaved so that a prefix of the
    list covers all of them."""
    by_rel: dict[str, list] = {}
    for f in facts:
        if relations is None or f.relation in relations:
            by_rel.setdefault(f.relation, []).append(f)
    out, i = [], 0
    while any(i < len(group) for group in by_rel.values()):
        out += [group[i] for group in by_rel.values() if i < len(group)]
        i += 1
    return out


def request(model, bn, fact, facts) -> dict:
    """Forget `fact` (one request, the other `facts` as the pool) and measure what changed."""
    same = [f for f in facts if f.subject == fact.subject and f is not fact]
    relation = [f for f in facts if f.relation == fact.relation and f.subject != fact.subject]
    rest = [f for f in facts if f.subject != fact.subject]  # other subjects, every relation
    groups = {"same_subject": same, "same_relation": relation, "rest": rest}
    before = {k: accuracy(model, g) for k, g in groups.items() if g}
    t0 = time.time()
    plan = codecut.unlearn(model, bn, [fact], pool=facts)
    seconds = time.time() - t0
    with codecut.apply(model, plan):
        ok = answered(model, [fact])
        after = {k: accuracy(model, g) for k, g in groups.items() if g}
    sel = plan.results.facts[0].selection
    retention = {
        f"{k}_retention": after[k][0] / max(before[k][0], 1) if k in before else None
        for k in groups
    }
    return {
        "subject": fact.subject, "relation": fact.relation, "answer": fact.answer,
        "forgot_prompt": not bool(ok[0]),
        "forgot_paraphrases": float((~ok[1:]).float().mean()) if len(ok) > 1 else None,
        **retention,
        "codes": len(sel.codes), "mode": sel.family.mode, "c": sel.family.c,
        "conditional": sel.family.conditional, "selector_success": sel.success,
        "seconds": round(seconds, 1),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("target", choices=["smollm2", "world"])
    ap.add_argument(
        "--limit", type=int, default=None, help="forget only N facts (spread over relations)"
    )
    ap.add_argument(
        "--relations", default="", help="comma-separated relations to forget (default: all)"
    )
    ap.add_argument(
        "--bottleneck",
        default=None,
        help="smollm2 only: a bottleneck directory instead of the shipped one",
    )
    args = ap.parse_args()
    if args.bottleneck and args.target != "smollm2":
        ap.error("--bottleneck works with the smollm2 target only")

    if args.target == "smollm2":
        model = codecut.load_model("smollm2-135m-instruct")
        bn = codecut.load_bottleneck(args.bottleneck or "smollm2-135m-instruct")
        facts = example_facts()
    else:
        from codecut.probes.testing.world import fixture

        model, w, bottlenecks = fixture("world-0")
        bn = bottlenecks["blocks.2.hook_out"]
        facts = w.facts("all")
    known = codecut.evaluate(model, facts)
    facts = [f for f, ok in zip(facts, known["correct"]) if ok]
    targets = spread(facts, args.relations.split(",") if args.relations else None)[: args.limit]
    command = command_line(__file__)
    name = f"{args.target}_{bn.content_hash[:8]}" if args.bottleneck else args.target
    rows = []
    for fact in tqdm(targets, desc="forgetting facts one at a time"):
        rows.append(request(model, bn, fact, facts))
        tqdm.write(str(rows[-1]))
        # Rewritten after every request, so that an interrupted run keeps what it measured.
        write_results(rows, name, bn.content_hash, command, planned=len(targets))


def summarize(rows: list[dict]) -> dict:
    """Forget success and retention over single-fact requests (rows of `request`)."""
    table = pd.DataFrame(rows)
    full = table["forgot_prompt"] & (table["forgot_paraphrases"].fillna(1.0) == 1.0)
    return {
        "requests": len(table),
        "success_prompt_and_paraphrases": float(full.mean()),
        "success_prompt": float(table["forgot_prompt"].mean()),
        "mean_paraphrases_forgotten": float(table["forgot_paraphrases"].mean()),
        "mean_same_subject_retention": float(table["same_subject_retention"].mean()),
        "mean_same_relation_retention": float(table["same_relation_retention"].mean()),
        "mean_rest_retention": float(table["rest_retention"].mean()),
        "median_seconds": float(table["seconds"].median()),
    }


def write_results(rows: list[dict], name: str, bn_hash: str, command: str, planned: int) -> None:
    """benchmarks/results/unlearn_<name>.json and .md: the summary and every request."""
    summary = {**summarize(rows), "requests_planned": planned}
    out = {
        "machine": machine(),
        "command": command,
        "bottleneck": bn_hash,
        "summary": summary,
        "rows": rows,
    }
    md = heading(f"Unlearning benchmark: {name}", command) + bullets(summary)
    md += "\n\n" + markdown_table(pd.DataFrame(rows), "{:.2f}") + "\n"
    write_files(RESULTS / f"unlearn_{name}", out, md)


if __name__ == "__main__":
    main()

"""The attack suite on whole-subject plans: is what the model knew about a country gone?

    python benchmarks/attack_subjects.py [--subjects 3] [--min-facts 3] [--seed 0]

Subjects: the first N of `unlearn_subjects.pick_subjects` (the same draw as that benchmark).
For each, the plan is `codecut.unlearn(model, bottlenecks, forget_subject=S, pool=facts)` and
the card `codecut.attack(model, plan.facts, plan=plan, pool=facts, config)`: every relation of
the subject (given and found) in every format, indirect (multi-hop) questions, generation,
linear probes, relearning on other facts, quantisation and fluency; beside them the reference
groups (other relations of the subject: none left, all are forgotten; other subjects of the
same relations; unrelated), `neighbours=5` facts each where the pool has them.

The table averages each card row over the subjects: the clean model's number, the plan's, and
for the forget group the share of the clean accuracy that comes back (plan / clean). A row
whose clean number is no better than chance is blind (the probe cannot see the fact) and
left out of the average.

Writes benchmarks/results/attack_subjects.json (every card) and .md, with the machine named.
Run it alone.
"""

from __future__ import annotations

import argparse

import pandas as pd
from codecut.codebook.saefile import shipped_for
from codecut.probes.attacks import AttackConfig
from common import RESULTS, command_line, heading, write_files
from tqdm.auto import tqdm
from unlearn_subjects import FACTS, pick_subjects

import codecut
from codecut.core.io import markdown_table
from codecut.core.models import DEFAULT_MODEL

CONFIG = AttackConfig(neighbours=5)


def average(cards: list[codecut.AttackCard]) -> pd.DataFrame:
    """Each (probe, variant, group, metric) averaged over the cards where it is not blind."""
    tables = []
    for card in cards:
        t = card.table()
        tables.append(t[t["note"] == ""])
    rows = pd.concat(tables)
    keys = ["probe", "variant", "group", "metric"]
    out = rows.groupby(keys, sort=False).agg(
        subjects=("clean", "size"), n=("n", "sum"), clean=("clean", "mean"), plan=("plan", "mean")
    )
    out["back"] = (out["plan"] / out["clean"]).where(
        out.index.get_level_values("group") == "forget"
    )
    return out.reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--subjects", type=int, default=3, help="how many countries")
    ap.add_argument("--min-facts", type=int, default=3, help="facts a country needs in the file")
    ap.add_argument("--seed", type=int, default=0, help="the shuffle that picks the countries")
    args = ap.parse_args()
    facts = codecut.load_facts(FACTS)
    model = codecut.load_model(DEFAULT_MODEL)
    bottlenecks = [codecut.load_bottleneck(b) for b in shipped_for(DEFAULT_MODEL)]
    command = command_line(__file__)
    cards, plans = [], []
    for subject in tqdm(pick_subjects(facts, args.subjects, args.min_facts, args.seed)):
        plan = codecut.unlearn(model, bottlenecks, forget_subject=subject, pool=facts)
        cards.append(codecut.attack(model, plan.facts, plan=plan, pool=facts, config=CONFIG))
        plans.append({"subject": subject, "facts": len(plan.facts), "seconds": plan.seconds,
                      "attack_seconds": cards[-1].seconds})  # fmt: skip
        table = average(cards)
        md = heading("The attack suite on whole-subject plans", command)
        md += markdown_table(pd.DataFrame(plans)) + "\n\n"
        md += markdown_table(table, "{:.3f}") + "\n"
        write_files(
            RESULTS / "attack_subjects",
            {"command": command, "plans": plans, "average": table.to_dict("records"),
             "cards": [c.to_dict() for c in cards]},
            md,
        )  # fmt: skip


if __name__ == "__main__":
    main()

"""The attack suite on the demo's plan: SmolLM2-135M-Instruct forgets France's capital through the
shipped bottleneck (as `codecut demo` does), then `codecut.attack` measures whether it is gone.

    python benchmarks/attack_demo.py

Writes benchmarks/results/attack_demo.json (the card, the plan's codes, the seconds the
selection and the attack took), attack_demo.md and the card's plot attack_demo.png, with the
machine named. Run it alone.
"""

from __future__ import annotations

import time

import torch
from common import RESULTS, command_line, heading, machine, write_files  # benchmarks/common.py

import codecut
from codecut.core.facts import example_facts
from codecut.core.io import markdown_table

MODEL = "smollm2-135m-instruct"


def main() -> None:
    facts = example_facts()
    target = next(f for f in facts if (f.subject, f.relation) == ("France", "capital"))
    model = codecut.load_model(MODEL)
    bn = codecut.load_bottleneck(MODEL)
    t0 = time.time()
    plan = codecut.unlearn(model, bn, [target], pool=facts)
    select_seconds = time.time() - t0
    t0 = time.time()
    card = codecut.attack(model, [target], plan=plan, pool=facts)
    attack_seconds = time.time() - t0
    command = command_line(__file__)
    sel = plan.results.facts[0].selection
    record = {
        "machine": machine(), "command": command, "torch": torch.__version__,
        "fact": [target.subject, target.relation, target.answer], "codes": sel.codes,
        "success": sel.success, "select_seconds": round(select_seconds, 1),
        "attack_seconds": round(attack_seconds, 1), "card": card.to_dict(),
    }  # fmt: skip
    md = heading("Attack suite on the demo's plan", command) + (
        f"{target.prompt} -> {target.answer}: {len(sel.codes)} codes cut (success: "
        f"{sel.success}) in {select_seconds:.0f} s; the attack took {attack_seconds:.0f} s.\n\n"
        f"{markdown_table(card.table(), '{:.3f}')}\n"
    )
    write_files(RESULTS / "attack_demo", record, md, card.plot())
    print(md)


if __name__ == "__main__":
    main()

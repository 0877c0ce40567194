"""The attack suite on the demo's plan: SmolLM2-135M-Instruct forgets France's capital through the
shipped bottleneck (as `codecut demo` does), then `codecut.attack` measures whether it is gone.

    python benchmarks/attack_demo.py

Writes benchmarks/results/attack_demo.json (the card, the plan's codes, the seconds the
selection and the attack took), attack_demo.md and the card's plot attack_demo.png, with the
machine named. Run it alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from machine import machine as machine_name  # benchmarks/machine.py, beside this script

import codecut
from codecut.facts import example_facts
from codecut.io import markdown_table, write_text

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
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
    machine = machine_name()
    command = " ".join(["python", "benchmarks/attack_demo.py", *sys.argv[1:]])
    sel = plan.results.facts[0].selection
    record = {
        "machine": machine, "command": command, "torch": torch.__version__,
        "fact": [target.subject, target.relation, target.answer], "codes": sel.codes,
        "success": sel.success, "select_seconds": round(select_seconds, 1),
        "attack_seconds": round(attack_seconds, 1), "card": card.to_dict(),
    }  # fmt: skip
    write_text(RESULTS / "attack_demo.json", json.dumps(record, indent=1) + "\n")
    md = (
        f"# Attack suite on the demo's plan ({machine})\n\n    {command}\n\n"
        f"{target.prompt} -> {target.answer}: {len(sel.codes)} codes cut (success: "
        f"{sel.success}) in {select_seconds:.0f} s; the attack took {attack_seconds:.0f} s.\n\n"
        f"{markdown_table(card.table(), '{:.3f}')}\n"
    )
    write_text(RESULTS / "attack_demo.md", md)
    card.plot(RESULTS / "attack_demo.png")
    print(md)


if __name__ == "__main__":
    main()

"""The `codecut` command line. Each command is a function `cmd_<name>(args)`; `main` dispatches.

Bad input ends in one line on stderr, `codecut: error: ...`, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import codecut

DEFAULT_MODEL = "smollm2-135m-instruct"
FACTS_DIR = Path(codecut.__file__).parent / "data" / "facts"


def example_facts() -> list[codecut.Fact]:
    """The shipped example facts (countries' capitals, languages, currencies)."""
    return [f for path in sorted(FACTS_DIR.glob("*.jsonl")) for f in codecut.load_facts(path)]


def print_table(table, columns: list[str]) -> None:
    """A readable fact table on stdout."""
    shown = table[columns].copy()
    if "p_answer" in shown:
        shown["p_answer"] = shown["p_answer"].map("{:.3f}".format)
    print(shown.to_string(index=False))


def cmd_demo(args: argparse.Namespace) -> None:
    """Load the embedded default model and show which example facts it knows."""
    t0 = time.time()
    model = codecut.load_model(DEFAULT_MODEL)
    print(f"loaded {DEFAULT_MODEL} in {time.time() - t0:.1f} s")
    table = codecut.evaluate(model, example_facts())
    s = codecut.probes.evaluate.summary(table)
    table["paraphrases"] = table["paraphrase_accuracy"].map("{:.0%}".format)
    print_table(table, ["subject", "relation", "answer", "correct", "p_answer", "paraphrases"])
    print(
        f"\n{int(table['correct'].sum())}/{s['n_facts']} facts known on their prompt; "
        f"{s['paraphrase_accuracy']:.0%} of {s['n_paraphrases']} paraphrases answered"
    )


def cmd_eval(args: argparse.Namespace) -> None:
    """Does the model answer each fact (prompt and paraphrases)?"""
    if args.strict and not args.bottleneck:
        raise ValueError("--strict needs --bottleneck")
    facts = codecut.load_facts(args.facts)
    model = codecut.load_model(args.model)
    bottleneck = codecut.load_bottleneck(args.bottleneck) if args.bottleneck else None
    table = codecut.evaluate(model, facts, bottleneck=bottleneck, strict=args.strict)
    if args.json:
        print(json.dumps(codecut.probes.evaluate.to_json(table), indent=1))
        return
    s = codecut.probes.evaluate.summary(table)
    table["paraphrases"] = table["paraphrase_accuracy"].map("{:.0%}".format)
    print_table(table, ["subject", "relation", "prompt", "answer", "correct", "p_answer", "paraphrases"])
    print(f"\naccuracy {s['accuracy']:.0%} on {s['n_facts']} facts")


def parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per command."""
    p = argparse.ArgumentParser(prog="codecut", description=codecut.__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("demo", help="the main job on the embedded default model, end to end")
    s.set_defaults(run=cmd_demo)

    s = sub.add_parser("eval", help="which facts a model answers, with or without a bottleneck")
    s.add_argument("--model", required=True, help="registry name or local HF directory")
    s.add_argument("--facts", required=True, help="JSONL file of facts")
    s.add_argument("--bottleneck", help="registry name or bottleneck directory to attach")
    s.add_argument("--strict", action="store_true", help="attach without the error term")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(run=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `codecut` command."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.run(args)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as e:
        print(f"codecut: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

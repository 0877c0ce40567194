"""The `codecut` command line. Each command is a function `cmd_<name>(args)`; `main` dispatches.

Every failure ends in one line on stderr, `codecut: error: ...`, and exit status 2: bad input
(codecut's own error types, `codecut.core.errors`) says what to do; Ctrl-C says `interrupted`; any
other exception is a bug, reported as `internal error (a bug)` with the path of a log file that
holds its traceback (under `cache_dir()/logs/`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

import codecut

if TYPE_CHECKING:
    from codecut.codebook.distributed import Ranks

from codecut.core.errors import BadInput, BadOption, CodecutError
from codecut.core.facts import read_utf8
from codecut.failures import close_progress_bars, one_line, write_traceback


@contextmanager
def flags(names: dict[str, str]) -> Iterator[None]:
    """A config's `BadOption` raised inside the block names the flags in `names`, not fields."""
    try:
        yield
    except BadOption as e:
        raise e.named(names) from None


def check_device(args: argparse.Namespace) -> None:
    """`--device`, for the commands that take it, checked before anything is read or loaded and
    made a torch.device (CUDA when there is one)."""
    if "device" not in vars(args):
        return
    from codecut.core.models import resolve_device

    with flags({"device": "--device"}):
        args.device = resolve_device(args.device)


def add_device(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--device",
        help="where the model runs: cpu, cuda or cuda:N (default: cuda when there is one)",
    )


def percent(x) -> str:
    """A fraction as a percentage; "-" where there is none (a fact without paraphrases)."""
    return "-" if x is None or x != x else f"{x:.0%}"


def print_table(table, columns: list[str]) -> None:
    """A readable fact table on stdout."""
    shown = table[columns].copy()
    if "p_answer" in shown:
        shown["p_answer"] = shown["p_answer"].map("{:.3f}".format)
    print(shown.to_string(index=False))


def cmd_demo(args: argparse.Namespace) -> None:
    """Forget one real fact in a registry model, show what changed, and revert."""
    from codecut.demo import demo

    demo(args.subject, args.relation, model_name=args.model, device=args.device)


def cmd_eval(args: argparse.Namespace) -> None:
    """Does the model answer each fact (prompt and paraphrases)?"""
    if args.strict and not args.bottleneck:
        raise BadInput("--strict needs --bottleneck")
    if args.strict and args.plan:
        raise BadInput("--strict and --plan do not combine: a plan keeps the error term")
    facts = codecut.load_facts(args.facts)
    plan = codecut.load_plan(args.plan) if args.plan else None  # bad files fail before the model
    bottleneck = codecut.load_bottleneck(args.bottleneck) if args.bottleneck else None
    model = codecut.load_model(args.model, device=args.device)
    table = codecut.evaluate(model, facts, bottleneck=bottleneck, strict=args.strict, plan=plan)
    if args.json:
        print(json.dumps(codecut.probes.evaluate.to_json(table), indent=1))
        return
    s = codecut.probes.evaluate.summary(table)
    table["paraphrases"] = table["paraphrase_accuracy"].map(percent)
    before = ["correct_before", "p_answer_before"] if "correct_before" in table else []  # a plan
    print_table(
        table,
        ["subject", "relation", "prompt", "answer", *before, "correct", "p_answer", "paraphrases"],
    )
    was = f"{s['accuracy_before']:.0%} without the plan, " if before else ""
    print(f"\naccuracy {was}{s['accuracy']:.0%} on {s['n_facts']} facts")


def read_texts(path: str) -> list[str]:
    """Documents from a text file, separated by blank lines."""
    docs = [d.strip() for d in read_utf8(path, "texts").split("\n\n")]
    docs = [d for d in docs if d]
    if not docs:
        raise BadInput(f"{path} holds no text; give documents separated by blank lines")
    return docs


def cmd_train(args: argparse.Namespace) -> None:
    """Train a bottleneck at one hook of a model and save it."""
    from codecut.codebook.train import CLI_NAMES, TrainConfig

    # Before anything is loaded or collected: a hopeless request fails in a second.
    with flags(CLI_NAMES):
        config = TrainConfig(
            hook=args.hook, kind=args.kind, n_codes=args.codes, k=args.k, tokens=args.tokens
        )
    if Path(args.out).exists() and not (Path(args.out) / "checkpoint").exists():
        raise BadInput(f"{args.out} exists; choose a new --out directory")
    if args.activations:
        from codecut.codebook.activations import ActivationShards

        ActivationShards(args.activations)  # a missing or unfinished folder fails before loading
    elif not (args.model and args.hook):
        raise BadInput(
            "--model and --hook are needed (or --activations DIR from `codecut collect`)"
        )
    texts = read_texts(args.texts) if args.texts else None
    with process_group(
        args.device
    ) as ranks:  # under torchrun: one of WORLD_SIZE data-parallel processes
        model = codecut.load_model(args.model, device=args.device) if args.model else None
        bn = codecut.train_bottleneck(
            model,
            config,
            texts=texts,
            out=args.out,
            activations=args.activations,
            device=args.device,
        )
    if not ranks.main:  # rank 0 wrote the result and reports it
        return
    metrics = bn.cfg.extra.get("metrics", {})
    print(f"saved {bn} to {args.out}")
    print(
        json.dumps(metrics, indent=1)
        if args.json
        else "\n".join(f"{k}: {v}" for k, v in metrics.items())
    )


COLLECT_NAMES = {"tokens": "--tokens", "shard_tokens": "--shard-tokens", "dtype": "--dtype"}


@contextmanager
def process_group(device) -> Iterator[Ranks]:
    """The command's ranks: under torchrun it joins the process group for `device` (and leaves
    it after), else a single process."""
    import torch.distributed

    from codecut.codebook.distributed import init_from_env, ranks

    joined = init_from_env(device)
    try:
        yield ranks()
    finally:
        if joined:
            torch.distributed.destroy_process_group()


def cmd_collect(args: argparse.Namespace) -> None:
    """Collect activations at one hook of a model into safetensors shards."""
    from codecut.codebook.activations import (
        check_collect_arguments,
        collect_to_disk,
        earlier_collection,
    )

    # Before the model loads: bad arguments, or an --out collected differently, fail fast.
    with flags(COLLECT_NAMES):
        check_collect_arguments(args.tokens, args.shard_tokens, args.dtype)
    earlier_collection(
        args.out, args.hook, args.tokens, dtype=args.dtype, shard_tokens=args.shard_tokens
    )
    texts = read_texts(args.texts) if args.texts else None
    with process_group(
        args.device
    ) as ranks:  # under torchrun: each rank collects a share of the texts
        m = collect_to_disk(
            codecut.load_model(args.model, device=args.device), args.hook, args.tokens, args.out,
            texts=texts, dtype=args.dtype, shard_tokens=args.shard_tokens, ranks=ranks,
        )  # fmt: skip
    if not ranks.main:  # rank 0 reports
        return
    kept = sum(s.tokens for s in m.shards)
    print(f"{kept} activations ({m.positions - kept} outliers left out) in {len(m.shards)} "
          f"shards at {args.out}")  # fmt: skip


def cmd_unlearn(args: argparse.Namespace) -> None:
    """Choose the codes to cut so the model forgets the facts; write the plan."""
    from codecut.codebook.saefile import shipped_for
    from codecut.probes.selector.config import SelectConfig
    from codecut.probes.selector.unlearn import unlearn_request

    # Every input is checked before the model loads: a bad one fails in seconds.
    check_out_file(args.out, "--out", "plan.json")
    with flags({"SelectConfig.max_seconds": "--max-seconds",
                "SelectConfig.retain_budget": "--retain-budget"}):  # fmt: skip
        config = SelectConfig(max_seconds=args.max_seconds, retain_budget=args.retain_budget)
    if args.facts and not args.subject:
        raise BadInput("--facts goes with --subject (the facts to draw the subject's from)")
    forget = codecut.load_facts(args.forget) if args.forget else None
    pool = codecut.load_facts(args.facts) if args.facts else None
    retain = codecut.load_facts(args.retain) if args.retain else None
    names = args.bottleneck or shipped_for(args.model) or [args.model]
    bottlenecks = [codecut.load_bottleneck(name) for name in names]
    unlearn_request(bottlenecks, forget, retain, forget_subject=args.subject)
    model = codecut.load_model(args.model, device=args.device)
    plan = codecut.unlearn(
        model, bottlenecks, forget, retain=retain, pool=pool, config=config,
        strict=args.strict, forget_subject=args.subject,
    )  # fmt: skip
    plan.save(args.out)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=1))
        return
    print_plan(plan)
    print(f"\nplan written to {args.out} ({plan.seconds:.1f} s)")


def cmd_attack(args: argparse.Namespace) -> None:
    """Is it really gone? The attack suite's report card for the facts, with and without a plan."""
    from codecut.probes.attacks import AttackConfig

    with flags({"relearn_lora": "--lora"}):
        config = AttackConfig(relearn_lora=args.lora)
    if args.plot:  # before the attack (minutes): a plot that cannot be written fails now
        check_out_file(args.plot, "--plot", "card.png")
    facts = codecut.load_facts(args.facts)
    pool = codecut.load_facts(args.pool) if args.pool else None
    texts = read_texts(args.texts) if args.texts else None
    plan = codecut.load_plan(args.plan) if args.plan else None
    model = codecut.load_model(args.model, device=args.device)
    bottleneck = codecut.load_bottleneck(args.bottleneck) if args.bottleneck else None
    card = codecut.attack(
        model, facts, bottleneck=bottleneck, plan=plan, pool=pool, texts=texts, config=config
    )
    # The card is printed before the plot is drawn: a plotting failure never loses it.
    if args.json:
        print(json.dumps(card.to_dict(), indent=1), flush=True)
    else:
        table = card.table()
        for column in ("clean", "bottleneck", "plan", "chance"):
            table[column] = table[column].map(lambda x: "-" if x is None or x != x else f"{x:.3f}")
        print(table.to_string(index=False))
        print(
            f"\nfacts attacked: {len(facts)}, neighbours: {len(card.neighbours)}, "
            f"{card.seconds:.0f} s",
            flush=True,
        )
    if args.plot:
        card.plot(args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")


def check_out_file(path: str, flag: str, example: str) -> None:
    """Refuse, before any long work, a file to write that could not be written: a directory,
    or a path under a file or an unwritable folder (`example`: a file name to suggest)."""
    out = Path(path)
    if out.is_dir():
        raise BadInput(f"{flag} {path} is a directory; give a file path such as {out / example}")
    folder = next(p for p in out.absolute().parents if p.exists())  # `/` at worst
    if not folder.is_dir():
        raise BadInput(f"{flag} {path}: {folder} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"{flag} {path}: cannot write in {folder}; choose another path")


def print_plan(plan) -> None:
    """The before/after table of a plan."""
    rows = [
        {
            "prompt": f.prompt,
            "answer": f.answer,
            "p before": f"{f.before.p_answer:.3f}",
            "p after": f"{f.after.p_answer:.3f}",
            "answered after": f.after.correct,
            "paraphrases after": percent(f.after.paraphrase_accuracy),
            "formats lost": f.last.formats_lost,
            "codes": " + ".join(str(len(s.codes)) for s in (f.selection, *f.later.values())),
            "mode": f.selection.family.mode
            + (" if subject" if f.selection.family.conditional else ""),
        }
        for f in plan.results.facts
    ]
    print(pd.DataFrame(rows).to_string(index=False))
    if plan.results.retain is not None:
        before, after = plan.results.retain
        print(
            f"retain facts: accuracy {before['accuracy']:.0%} -> {after['accuracy']:.0%} "
            f"on {before['n_facts']} facts"
        )
    if plan.results.formats is not None:
        before, after = plan.results.formats
        print(
            f"other subjects' facts asked in the formats (question, chat, ...): accuracy "
            f"{before['accuracy']:.0%} -> {after['accuracy']:.0%} on {before['n_facts']} prompts"
        )


def cmd_finetune(args: argparse.Namespace) -> None:
    """Fine-tune a model's weights so it forgets the facts; write the model directory."""
    from codecut.probes.finetune.config import CLI_NAMES, ROBUST, finetune_config

    forget = codecut.load_facts(args.forget)
    retain = codecut.load_facts(args.retain) if args.retain else None
    plan = codecut.load_plan(args.plan) if args.plan else None
    bottleneck = codecut.load_bottleneck(args.bottleneck) if args.bottleneck else None
    options = {
        "params": args.params, "steps": args.steps, "lr": args.lr, "batch_size": args.batch_size,
        "noise": args.noise, "texts": args.texts,
    }  # fmt: skip
    options = {k: v for k, v in options.items() if v is not None}
    if args.robust:
        if args.method != "bake":
            raise BadOption(f"--robust is for --method bake, not {args.method}")
        options = {**ROBUST, **options}
        options["min_steps"] = min(options["min_steps"], options["steps"])
    with flags(CLI_NAMES):  # checked here first so that the messages name the flags
        finetune_config(forget, retain, args.method, plan=plan, save_dir=args.out, **options)
    result = codecut.finetune_unlearn(
        args.model, forget, retain, method=args.method, plan=plan, bottleneck=bottleneck,
        save_dir=args.out, device=args.device, **options,
    )  # fmt: skip
    r = result.record
    if args.json:
        print(json.dumps(r.to_dict(), indent=1))
        return
    rows = [("forget prompts answered", r.forget_accuracy), ("forget p_answer", r.forget_p)]
    if r.retain_accuracy is not None:
        rows.append(("retain prompts answered", r.retain_accuracy))
    print(pd.DataFrame([(n, f"{v.before:.3f}", f"{v.after:.3f}") for n, v in rows],
                       columns=["", "before", "after"]).to_string(index=False))  # fmt: skip
    stop = ", stopped early" if r.stopped_early else ""
    print(f"\n{r.config.method}: {r.steps_run} steps{stop} in {r.seconds:.1f} s; "
          f"model written to {args.out}")  # fmt: skip


def cmd_bench(args: argparse.Namespace) -> None:
    """Time the kernels against their alternatives; write benchmarks/results/ when asked."""
    from codecut.kernels.bench import run

    table = run(quick=args.quick, out_dir=Path(args.out) if args.out else None)
    if args.json:
        print(table.to_json(orient="records", indent=1))
    else:
        print(table.drop(columns=["device"]).round(4).to_string(index=False))


def share(text: str) -> float:
    """An argument that is a share of accuracy: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a share of accuracy in [0, 1], e.g. 0.05")
    return value


def seconds(text: str) -> float:
    """An argument that is a time budget: a finite number of seconds > 0 (refused while the
    arguments are parsed, before anything loads)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds > 0, e.g. 60")
    return value


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error on one line like every other failure (sub-parsers too)."""

    def error(self, message: str):
        self.exit(2, f"codecut: error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per command."""
    # The defaults are the configs' (importing them imports torch: ~2 s).
    from codecut.codebook.activations import DTYPE, DTYPES, SHARD_TOKENS
    from codecut.codebook.train import TRAINABLE, TrainConfig
    from codecut.probes.attacks.suite import AttackConfig

    p = OneLineParser(prog="codecut", description=codecut.__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("demo", help="the main job on the embedded default model, end to end")
    add_device(s)
    s.add_argument(
        "--model",
        help="a registry model with a shipped bottleneck (default: the embedded default, "
        "smollm2-135m-instruct)",
    )
    s.add_argument(
        "--subject", help="subject of the example fact to forget (default: the model's demo fact)"
    )
    s.add_argument("--relation", help="relation of the example fact to forget (default: likewise)")
    s.set_defaults(run=cmd_demo)

    s = sub.add_parser("eval", help="which facts a model answers, with or without a bottleneck")
    add_device(s)
    s.add_argument("--model", required=True, help="registry name or local HF directory")
    s.add_argument("--facts", required=True, help="JSONL file of facts")
    s.add_argument("--bottleneck", help="registry name or bottleneck directory to attach")
    s.add_argument("--strict", action="store_true", help="attach without the error term")
    s.add_argument("--plan", help="unlearning plan to apply while measuring")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(run=cmd_eval)

    s = sub.add_parser("train", help="train a bottleneck at one hook of a model")
    add_device(s)
    s.add_argument(
        "--model",
        help="registry name or local HF directory (with --activations: only for the CE metrics)",
    )
    s.add_argument(
        "--hook",
        help="hook name (default: 40%% of the way through the layers, blocks.12 of SmolLM2)",
    )
    s.add_argument("--activations", help="train from a `codecut collect` folder, streamed")
    s.add_argument("--kind", choices=TRAINABLE, default=TrainConfig.kind)
    s.add_argument("--codes", type=int, default=TrainConfig.n_codes, help="number of codes n")
    s.add_argument("--k", type=int, default=TrainConfig.k, help="active codes per token")
    s.add_argument("--tokens", type=int, default=TrainConfig.tokens, help="activations to train on")
    s.add_argument(
        "--texts",
        help="text file to train on, documents separated by blank lines "
        "(default: the model's own samples and prose from installed packages)",
    )
    s.add_argument("--out", required=True, help="directory to write (resumes from its checkpoint)")
    s.add_argument("--json", action="store_true", help="print the metrics as JSON")
    s.set_defaults(run=cmd_train)

    s = sub.add_parser("collect", help="collect activations at one hook into safetensors shards")
    add_device(s)
    s.add_argument("--model", required=True, help="registry name or local HF directory")
    s.add_argument("--hook", required=True, help="hook name, e.g. blocks.12.hook_out")
    s.add_argument("--tokens", type=int, required=True, help="activations to collect")
    s.add_argument("--out", required=True, help="folder to write (resumes what it holds)")
    s.add_argument("--texts", help="text file, documents separated by blank lines")
    s.add_argument("--dtype", choices=list(DTYPES), default=DTYPE)
    s.add_argument("--shard-tokens", type=int, default=SHARD_TOKENS, help="activations per shard")
    s.set_defaults(run=cmd_collect)

    s = sub.add_parser("unlearn", help="choose the codes to cut so the model forgets facts")
    add_device(s)
    s.add_argument("--model", required=True, help="registry name or local HF directory")
    s.add_argument(
        "--bottleneck", action="append",
        help="registry name or bottleneck directory; give it again for a later one at another "
        "hook, tried where the first cannot remove a fact (default: the model's shipped ones)",
    )  # fmt: skip
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("--forget", help="JSONL file of facts to forget")
    what.add_argument(
        "--subject",
        help="forget every fact the model answers about this subject (found in --facts and by "
        "asking the model each of their relations)",
    )
    s.add_argument(
        "--facts",
        help="with --subject: JSONL file of facts to draw the subject's and its relations from "
        "(default: the shipped example facts)",
    )
    s.add_argument("--retain", help="JSONL file of facts to keep (default: built automatically)")
    s.add_argument("--out", required=True, help="plan file to write (JSON)")
    s.add_argument("--json", action="store_true", help="print the plan as JSON")
    from codecut.probes.selector.config import SelectConfig

    s.add_argument(
        "--max-seconds", type=seconds, default=SelectConfig.max_seconds,
        help="time budget per fact; when it runs out the best cut found is kept, marked "
        "unsuccessful (default: no limit, as in the API: the plan then depends on its inputs "
        "alone, not on the machine's speed; 60 keeps a fact to about a minute)",
    )  # fmt: skip
    s.add_argument(
        "--retain-budget", type=share, default=SelectConfig.retain_budget,
        help="most retain accuracy a code may cost, overall and per relation (default %(default)s)",
    )  # fmt: skip
    s.add_argument(
        "--strict", action="store_true",
        help="strict mode: no error term, only what the codes carry passes (CodeUnlearn's)",
    )  # fmt: skip
    s.set_defaults(run=cmd_unlearn)

    s = sub.add_parser("attack", help="is it really gone? probes a plan (or a model) with attacks")
    add_device(s)
    s.add_argument("--model", required=True, help="registry name or local HF directory")
    s.add_argument("--facts", required=True, help="JSONL file of the facts to attack")
    s.add_argument("--plan", help="unlearning plan to attack (default: the model alone)")
    s.add_argument("--bottleneck", help="the plan's bottleneck (default: the one it names)")
    s.add_argument(
        "--pool",
        help="JSONL file of other facts for few-shot, context, relearning and neighbours "
        "(default: the shipped example facts)",
    )
    s.add_argument("--texts", help="held-out text for fluency, documents separated by blank lines")
    s.add_argument(
        "--lora",
        type=int,
        default=AttackConfig.relearn_lora,
        metavar="R",
        help="relearn through rank-R LoRA adapters (lr 1e-3) instead of all weights (lr 1e-4)",
    )
    s.add_argument("--plot", metavar="PATH.png", help="also write the card as a bar plot (PNG)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(run=cmd_attack)

    s = sub.add_parser("bench", help="benchmarks")
    s.add_argument("what", choices=["kernels"], help="what to benchmark")
    s.add_argument("--quick", action="store_true", help="only the target shape")
    s.add_argument("--out", help="also write JSON + markdown results to this folder")
    s.add_argument("--json", action="store_true", help="print JSON records")
    s.set_defaults(run=cmd_bench)

    from codecut.probes.finetune.losses import METHODS

    s = sub.add_parser("finetune", help="fine-tune a model's weights so it forgets facts")
    add_device(s)
    s.add_argument("--model", required=True, help="registry name or local HF directory")
    s.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    s.add_argument("--forget", required=True, help="JSONL file of facts to forget")
    s.add_argument("--retain", help="JSONL file of facts to keep (graddiff, rmu, snap need it)")
    s.add_argument("--plan", help="for bake: the plan to make permanent")
    s.add_argument("--bottleneck", help="for bake: the plan's bottleneck (default: its own)")
    s.add_argument(
        "--params", help='weights to train: "all", "last:N", "mlp:A-B" or "lora[:R]" (merged)'
    )
    s.add_argument("--steps", type=int, help="most optimizer steps (stops early once forgotten)")
    s.add_argument("--lr", type=float, help="learning rate")
    s.add_argument("--batch-size", type=int, help="sequences per set a step (default: all)")
    s.add_argument(
        "--robust",
        action="store_true",
        help="bake into weights moved toward noise first (UNDO), so relearning brings less "
        "back; sets --noise 0.6 --texts 64 --steps 300 --lr 1e-4 and at least 100 steps "
        "unless given",
    )
    s.add_argument("--noise", type=float, help="bake: move the weights this far toward noise")
    s.add_argument("--texts", type=int, help="bake: also distil on this many texts it writes")
    s.add_argument("--out", required=True, help="model directory to write (new or empty)")
    s.add_argument("--json", action="store_true", help="print the run's record as JSON")
    s.set_defaults(run=cmd_finetune)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `codecut` command."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        check_device(args)
        args.run(args)
    except CodecutError as e:  # bad input: the message says what to do
        close_progress_bars()
        print(f"codecut: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # files are written atomically: nothing half-written is left
        close_progress_bars()
        print("codecut: error: interrupted", file=sys.stderr)
        return 2
    except Exception as e:  # anything else is a bug in codecut: say so, keep the traceback
        close_progress_bars()
        log_file = write_traceback(e)
        print(
            f"codecut: error: internal error (a bug): {type(e).__name__}: {one_line(e)}; "
            f"traceback written to {log_file}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

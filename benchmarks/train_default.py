"""Train a model's shipped bottleneck and write its card (SmolLM2-135M-Instruct by default;
`--model gemma3-270m` for Gemma 3 270M).

    python benchmarks/train_default.py --hook blocks.12.hook_out --codes 8192 --k 32 \
        --tokens 2000000 --unique-tokens 450000 --generated 128 --entity-samples 1024 \
        --package-chars 1600000 --minutes 32

trains it as it was trained (the command its card records) into --out, by default
codebook/shipped/<model>.

The corpus is what codecut's default gives (model samples, package prose) plus the example
facts' prompts completed with their answers, so the codes cover the facts users will
ask to forget. Afterwards it measures, in strict mode (no error term), how many of the example
facts the model still answers, and writes README.md (the card) next to the weights, and a JSON
copy of the numbers to benchmarks/results/bottleneck_<model>.json (bottleneck_<model>_<hash>.json
when --out is not the shipped directory; <model> is "smollm2" for the default).

    python benchmarks/train_default.py --measure-only

measures the bottleneck already in --out again and rewrites its card.

    python benchmarks/train_default.py --compare-layers 6,12,18 --tokens 150000 --unlearn-facts 6 ...

trains one small bottleneck per layer and reports reconstruction, strict fact retention and
how well single-fact unlearning works through it (on the facts the model knows), into
benchmarks/results/bottleneck_layers.json (bottleneck_layers_<model>.json for another model).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import time
from dataclasses import replace
from pathlib import Path

import torch
from codecut.codebook import TrainConfig, attach, load_bottleneck, train_bottleneck
from codecut.codebook.corpus import GENERATED_TEXTS, PACKAGE_CHARS, default_corpus, entity_prompts
from codecut.codebook.train import default_hook
from codecut.probes.evaluate import answered
from common import RESULTS, command_line, machine, per_model, write_json
from unlearn import request, spread, summarize  # benchmarks/unlearn.py, beside this script

import codecut
from codecut.core.facts import example_facts
from codecut.core.io import write_text
from codecut.core.models import DEFAULT_MODEL, REGISTRY

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("train_default")


def fact_sentences(facts) -> list[str]:
    """Each fact's prompts completed with its answer."""
    return [f"{p} {f.answer}." for f in facts for p in f.prompts]


def says(model, facts, new_tokens: int = 6) -> torch.Tensor:
    """bool per fact: its answer appears, in any letter case, in the greedy continuation."""
    return torch.tensor(
        [f.answer.lower() in model.generate(f.prompt, new_tokens).lower() for f in facts]
    )


def kept(model, facts, bottleneck) -> dict:
    """Known facts (main prompt, clean) and how many strict mode keeps: by the first token (the
    answer's first token is still the greedy next token) and by what the model writes (the
    answer still appears in a 6-token greedy continuation, letter case aside)."""
    main_only = [replace(f, paraphrases=[]) for f in facts]
    clean = answered(model, main_only)
    with attach(model, bottleneck, error_term=False):
        strict = answered(model, main_only)
        written = says(model, facts)
    known = int(clean.sum())
    both = int((clean & strict).sum())
    both_written = int((clean & written).sum())
    return {
        "facts": len(facts),
        "known": known,
        "kept_strict": both,
        "kept_fraction": round(both / max(known, 1), 4),
        "kept_written": both_written,
        "kept_written_fraction": round(both_written / max(known, 1), 4),
    }


def short(model: str) -> str:
    """The model's name in results files: "smollm2" for the default (the files' first name)."""
    return "smollm2" if model == DEFAULT_MODEL else model


def card(bn, facts_result: dict, out: Path, entity_samples: int, title: str) -> str:
    m, t, f = bn.cfg.extra["metrics"], bn.cfg.extra["train"], facts_result
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 2**20
    passes = t["tokens"] / max(t["unique_tokens"], 1)
    entities = (
        f" and {entity_samples} more from {len(entity_prompts())} openings about countries,"
        " cities and people"
        if entity_samples
        else ""
    )
    return f"""# Shipped bottleneck: {title}, `{bn.hook}`

A TopK sparse autoencoder: {bn.n_codes} codes, k = {bn.cfg.k} active per token, unit-norm
decoder rows, stored in bf16 ({size:.1f} MB). sae-lens layout: `sae_lens.SAE.load_from_disk`
reads this directory; `codecut.load_bottleneck("{out.name}")` loads it.
Content hash `{bn.content_hash}`.

## Training

    {t["command"]}

{t["tokens"]:,} training activations ({t["unique_tokens"]:,} distinct, {passes:.1f} passes),
batch {t["batch_size"]}, Adam lr {t["lr"]:.2g}, AuxK for dead codes, {t["seconds"] / 60:.0f} min on
{machine()} (a shared 2-core CPU, no GPU).
Corpus: {t["texts"]} texts: {title}'s own samples from 40 seed prompts{entities}, package READMEs
and stdlib docstrings found on this machine, and the prompts of `examples/facts/*.jsonl`
completed with their answers. Special tokens and positions with norm > 5x the median (limit
{bn.cfg.norm_limit:.1f}) were left out and are passed through unchanged when attached.

## Measured (held-out text)

| metric | value |
|---|---|
| fraction of variance unexplained (FVU) | {m["fvu"]} |
| L0 (active codes per token) | {m["l0"]} |
| dead codes (never active on 200k training tokens) | {m["dead_fraction"]:.2%} |
| next-token CE, clean | {m["ce_clean"]} |
| next-token CE, strict (bottleneck replaces the activation) | {m["ce_strict"]} |
| next-token CE, every code cut (b_dec only) | {m["ce_mean_ablated"]} |
| CE recovered in strict mode | {m["ce_recovered"]:.1%} |
| example facts known (clean) | {f["known"]} of {f["facts"]} |
| strict mode: known facts whose answer's first token stays the greedy next token | {f["kept_strict"]} ({f["kept_fraction"]:.0%}) |
| strict mode: known facts whose answer the model still writes (6 greedy tokens, any case) | {f["kept_written"]} ({f["kept_written_fraction"]:.0%}) |

The first count is codecut's definition of a known fact: the answer's first token. The second
reads what the model writes: letter case aside (" Euro" for " euro" counts for it), the whole
answer must be there (a multi-token answer started right and then misspelled counts against it).
"""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(REGISTRY))
    # Defaults: the library's (TrainConfig, corpus), so that a bare run trains what
    # `codecut train` would on this corpus.
    ap.add_argument("--hook", default=None, help="default: the library's (40%% of the layers)")
    ap.add_argument("--codes", type=int, default=TrainConfig.n_codes)
    ap.add_argument("--k", type=int, default=TrainConfig.k)
    ap.add_argument("--tokens", type=int, default=TrainConfig.tokens)
    ap.add_argument("--unique-tokens", type=int, default=TrainConfig.unique_tokens)
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--minutes", type=float, default=None, help="stop training after this long")
    ap.add_argument(
        "--generated", type=int, default=GENERATED_TEXTS, help="model samples in the corpus"
    )
    ap.add_argument("--package-chars", type=int, default=PACKAGE_CHARS)
    ap.add_argument(
        "--entity-samples", type=int, default=0, help="model samples about countries/cities/people"
    )
    ap.add_argument("--out", type=Path, default=None, help="default: codebook/shipped/<model>")
    ap.add_argument(
        "--measure-only",
        action="store_true",
        help="train nothing: measure the bottleneck in --out again and rewrite its card",
    )
    ap.add_argument(
        "--compare-layers", default="", help="e.g. 6,12,18: small run per layer, no card"
    )
    ap.add_argument(
        "--unlearn-facts",
        type=int,
        default=0,
        help="with --compare-layers: forget this many facts per layer",
    )
    return ap


def main() -> None:
    args = parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = command_line(__file__)
    args.out = args.out or shipped_dir(args.model)

    model = codecut.load_model(args.model)
    args.hook = args.hook or default_hook(model)
    facts = example_facts()
    if args.measure_only:
        write_card(model, facts, args)
        return
    extra = fact_sentences(facts)
    corpus = default_corpus(
        model,
        n_generated=args.generated,
        package_chars=args.package_chars,
        extra=extra,
        n_entity=args.entity_samples,
    )
    if args.compare_layers:
        # Unlearning is asked of facts the model knows, with those as the pool.
        known = [f for f, ok in zip(facts, codecut.evaluate(model, facts)["correct"]) if ok]
        layers = per_model("bottleneck_layers", args.model)
        rows = []
        for layer in args.compare_layers.split(","):
            t0 = time.time()
            bn = train_bottleneck(
                model, hook=f"blocks.{layer}.hook_out", kind="topk", n_codes=args.codes, k=args.k, tokens=args.tokens,
                texts=corpus, unique_tokens=args.unique_tokens, batch_size=args.batch_size, command=command,
            )  # fmt: skip
            requests = [request(model, bn, f, known) for f in spread(known)[: args.unlearn_facts]]
            rows.append(
                {
                    "hook": bn.hook,
                    **bn.cfg.extra["metrics"],
                    **kept(model, facts, bn),
                    "seconds": round(time.time() - t0),
                    **(
                        {f"unlearn_{k}": v for k, v in summarize(requests).items()}
                        if requests
                        else {}
                    ),
                    "unlearn_rows": requests,
                }
            )
            log.info("%s", rows[-1])
            # After every layer, so that an interrupted run keeps what it measured.
            write_json(RESULTS / f"{layers}.json", {"command": command, "rows": rows})
        return
    bn = train_bottleneck(
        model, hook=args.hook, kind="topk", n_codes=args.codes, k=args.k, tokens=args.tokens, texts=corpus,
        unique_tokens=args.unique_tokens, batch_size=args.batch_size, out=args.out, command=command,
        time_limit=args.minutes * 60 if args.minutes else None,
    )  # fmt: skip
    bn.save(args.out, dtype=torch.bfloat16)
    write_card(model, facts, args)


def shipped_dir(model: str) -> Path:
    """Where the model's shipped bottleneck lives: codebook/shipped/<registry name>."""
    return ROOT / "codebook" / "shipped" / model


def write_card(model, facts, args) -> None:
    """Measure the bottleneck in `args.out` on the example facts; write its card and results."""
    bn = load_bottleneck(args.out)
    result = kept(model, facts, bn)
    # The corpus it was trained on, read back from its recorded command.
    trained = parser().parse_args(shlex.split(bn.cfg.extra["train"]["command"])[2:])
    title = REGISTRY[args.model].hf_name.split("/")[-1]
    write_text(args.out / "README.md", card(bn, result, args.out, trained.entity_samples, title))
    summary = {
        "command": bn.cfg.extra["train"]["command"],
        "hook": bn.hook,
        "content_hash": bn.content_hash,
        **bn.cfg.extra,
        "facts": result,
    }
    # Only the shipped bottleneck's summary takes the plain name; a trial run elsewhere is kept
    # beside it under its content hash.
    shipped = args.out.resolve() == shipped_dir(args.model).resolve()
    name = f"bottleneck_{short(args.model)}" + ("" if shipped else f"_{bn.content_hash[:8]}")
    write_json(RESULTS / f"{name}.json", summary)
    log.info("done: %s", summary)


if __name__ == "__main__":
    main()

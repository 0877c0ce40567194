"""A fine-tuned model as a directory `codecut.load_model` (and every `--model DIR`) reads back:
the weights (safetensors), config and tokenizer, and a card saying how it was made
(`codecut_finetune.json`, and the same as prose in README.md). Written atomically: an error
or Ctrl-C leaves no directory behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

from codecut.probes.finetune.record import FinetuneRecord, FinetuneResult
from codecut.probes.params import own_names

from codecut.core.io import atomic_directory

CARD = "codecut_finetune.json"
FORMAT = "codecut-finetune/1"


def save_model(result: FinetuneResult, out: str | os.PathLike) -> None:
    """Write the unlearned model and its card to `out` (replacing an empty directory)."""
    with atomic_directory(out) as tmp:
        hf = result.model.hf
        hf.save_pretrained(tmp, state_dict=own_names(hf))
        result.model.tokenizer.save_pretrained(tmp)
        write_card(tmp, result.record)


def write_card(folder: Path, record: FinetuneRecord) -> None:
    """The card: the record as JSON, and a README a person reads."""
    card = {"format": FORMAT, **record.to_dict()}
    (folder / CARD).write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(readme(record), encoding="utf-8")


def readme(record: FinetuneRecord) -> str:
    """The card as markdown."""
    c = record.config
    options = ", ".join(f"{k} = {v}" for k, v in c.options.items()) or "none"
    facts = "\n".join(f"- {f.prompt} -> {f.answer}" for f in record.facts)
    rows = [("forget prompts answered", record.forget_accuracy, "{:.1%}")]
    rows.append(("forget answer's mean probability", record.forget_p, "{:.4f}"))
    if record.retain_accuracy is not None:
        rows.append((f"retain prompts answered ({record.n_retain} facts)",
                     record.retain_accuracy, "{:.1%}"))  # fmt: skip
    table = "\n".join(
        f"| {name} | {fmt.format(v.before)} | {fmt.format(v.after)} |" for name, v, fmt in rows
    )
    stop = "stopped early: no forget prompt answered" if record.stopped_early else "ran every step"
    batch = "full-batch" if c.batch_size is None else f"mini-batch ({c.batch_size} sequences)"
    return f"""# {record.source}, fine-tuned to forget ({c.method})

Made by `codecut.finetune_unlearn` from `{record.source}`. Load it with
`codecut.load_model("<this directory>")`; `{CARD}` holds this card as JSON.

Method `{c.method}`, weights `{c.params}`, at most {c.steps} {batch} Adam steps at
lr = {c.lr:g} (at least {c.min_steps}), seed {c.seed}; options: {options}.
Ran {record.steps_run} steps in {record.seconds:.1f} s ({stop}); loss
{record.losses[0]:.4g} -> {record.losses[-1]:.4g}.

Facts to forget:
{facts}

| | before | after |
|---|---|---|
{table}
"""

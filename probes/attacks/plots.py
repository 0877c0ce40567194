"""Where the cut codes fire (the card's own bars are `AttackCard.plot`, in card.py).

    plot_code_activations(model, bn, plan, facts, pool, "codes.png")

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot, so a user's
matplotlib backend is left as it was (and no display is needed). They show themselves in a
notebook (IPython's `_repr_png_`); `path` writes a PNG atomically.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch
from codecut.codebook import Bottleneck, attach
from codecut.probes.antisamples import make_antisamples
from codecut.probes.attacks.figures import InlineFigure, save
from codecut.probes.plan import UnlearnPlan, apply

from codecut.core.facts import Fact
from codecut.core.models import Model

BATCH = 32  # prompts per forward pass


@torch.no_grad()
def largest_values(
    model: Model, bottleneck: Bottleneck, prompts: list[str], codes: list[int]
) -> torch.Tensor:
    """[len(prompts), len(codes)]: each code's largest value over each prompt's tokens (0 where
    it does not fire), with the bottleneck attached bare, nothing cut."""
    wanted = torch.tensor(codes, device=model.device)
    out = []
    with attach(model, bottleneck) as handle:
        for i in range(0, len(prompts), BATCH):
            batch = model.tokenize(prompts[i : i + BATCH])
            model(batch["input_ids"], batch["attention_mask"])
            fired = handle.codes.indices[..., None] == wanted  # [B, T, k, codes]
            values = torch.where(fired, handle.codes.values[..., None], 0).amax(2)
            on = handle.active & batch["attention_mask"].bool()
            out.append(values.masked_fill(~on[..., None], 0).amax(1).float().cpu())
    return torch.cat(out)


def code_activations(
    model: Model,
    bottleneck: Bottleneck | None,
    plan: UnlearnPlan,
    facts: list[Fact],
    pool: list[Fact],
    retain: int = 12,
) -> pd.DataFrame:
    """A row per prompt, a column per cut code (its largest value over the prompt's tokens).

    Rows: every prompt of `facts` (group "forget"), their anti-samples' other texts
    ("anti-sample", kind: rationale, paraphrase, ...), and the prompts of up to `retain` facts of
    `pool` with another subject or relation, those sharing one first ("retain"). A cut that
    reaches only the fact fires on the first group and little on the others."""
    with apply(model, plan, bottleneck=bottleneck) as handle:  # the plan's bottleneck, checked
        bottleneck = handle.bottleneck
    rows = [
        ("forget", "prompt" if i == 0 else "paraphrase", p)
        for f in facts
        for i, p in enumerate(f.prompts)
    ]
    seen = {p for *_, p in rows}
    for fact in facts:
        for sample in make_antisamples(model, fact, pool=pool):
            if sample.prompt not in seen:
                seen.add(sample.prompt)
                rows.append(("anti-sample", sample.kind, sample.prompt))
    attacked = {(f.subject, f.relation) for f in facts}
    subjects, relations = {f.subject for f in facts}, {f.relation for f in facts}
    others = [g for g in pool if (g.subject, g.relation) not in attacked]
    others.sort(key=lambda g: (g.subject not in subjects, g.relation not in relations))
    for g in others[:retain]:
        near = (
            "same subject"
            if g.subject in subjects
            else "same relation"
            if g.relation in relations
            else "other"
        )
        rows.append(("retain", near, g.prompt))
    table = pd.DataFrame(rows, columns=["group", "kind", "prompt"])
    values = largest_values(model, bottleneck, list(table.prompt), plan.codes)
    return pd.concat([table, pd.DataFrame(values.numpy(), columns=plan.codes)], axis=1)


def plot_code_activations(
    model: Model,
    bottleneck: Bottleneck | None,
    plan: UnlearnPlan,
    facts: list[Fact],
    pool: list[Fact],
    path: str | os.PathLike | None = None,
) -> InlineFigure:
    """A heatmap of `code_activations`: a row per prompt (forget, anti-sample, retain, divided by
    white lines), a column per cut code. Written as a PNG to `path` when given."""
    table = code_activations(model, bottleneck, plan, facts, pool)
    codes = plan.codes
    figure = InlineFigure(
        figsize=(7 + 0.4 * len(codes), 1.5 + 0.22 * len(table)), layout="constrained"
    )
    ax = figure.subplots()
    image = ax.imshow(table[codes].to_numpy(float), aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(codes)), [str(c) for c in codes])
    ax.set_xlabel("cut code")
    ax.set_yticks(
        range(len(table)), [f"{g}: {short(p)}" for g, p in zip(table.group, table.prompt)]
    )
    for end in np.flatnonzero(table.group.to_numpy()[:-1] != table.group.to_numpy()[1:]):
        ax.axhline(end + 0.5, color="white", linewidth=2)
    figure.colorbar(image, ax=ax, label="largest value over the prompt's tokens")
    figure.suptitle(f"where the cut codes fire ({plan.hook})")
    if path is not None:
        save(figure, path)
    return figure


def short(text: str, width: int = 48) -> str:
    """One line of at most `width` characters."""
    line = " / ".join(text.splitlines())
    return line if len(line) <= width else line[: width - 3] + "..."

"""Evaluation probes: does the model still answer each fact, on its prompt and its paraphrases?

A fact is answered on a prompt when the first token of " " + answer is the model's greedy next
token after it. `fact_accuracy` is that over every prompt of some facts, as one number;
`evaluate` is the table, a row per fact.
"""

from __future__ import annotations

from contextlib import nullcontext

import pandas as pd
import torch
from codecut.codebook import Bottleneck, attach
from codecut.probes.plan import UnlearnPlan, apply

from codecut.core.errors import BadInput
from codecut.core.facts import Fact
from codecut.core.models import Model


def prompts_and_answers(facts: list[Fact]) -> tuple[list[str], list[str]]:
    """Every prompt of every fact (its prompt, then its paraphrases), with the fact's answer."""
    return [p for f in facts for p in f.prompts], [f.answer for f in facts for _ in f.prompts]


def answered(model: Model, facts: list[Fact]) -> torch.Tensor:
    """Bool per (fact, prompt), in `prompts_and_answers` order: the answer is the greedy next
    token."""
    return model.answer_scores(*prompts_and_answers(facts))[1]


def fact_accuracy(model: Model, facts: list[Fact]) -> float:
    """Fraction of (fact, prompt) pairs whose answer is the greedy next token."""
    return answered(model, facts).float().mean().item()


def evaluate(
    model: Model,
    facts: list[Fact],
    bottleneck: Bottleneck | None = None,
    strict: bool = False,
    plan: UnlearnPlan | list[UnlearnPlan] | None = None,
) -> pd.DataFrame:
    """A row per fact: `correct` / `p_answer` on its prompt, and per paraphrase.

    Args:
        model: the model to probe.
        facts: the facts to probe.
        bottleneck: if given, it is attached (error term kept unless `strict`) while measuring.
        strict: attach without the error term: only what the codes carry passes the layer.
        plan: an `UnlearnPlan` (or several, in a list) to apply while measuring; `bottleneck`,
            if given, is the one it was made for.

    Columns: subject, relation, prompt, answer, correct (answer's first token is the greedy next
    token), p_answer (its probability), paraphrases (list of {"prompt", "correct", "p_answer"}),
    paraphrase_accuracy (fraction of paraphrases answered; NaN when there are none). These always
    describe the state evaluated: with a bottleneck or plan attached.

    With a plan, the table is its before/after: `correct_before`, `p_answer_before` and
    `paraphrase_accuracy_before` are the same measurements on the model without the plan (a
    plan keeps the error term, so that is also the model with the bare bottleneck).
    """
    if not facts:
        raise BadInput("no facts to evaluate")
    prompts, answers = prompts_and_answers(facts)
    before = None  # with a plan: (p, correct) without it
    if plan is not None:
        if strict:
            raise BadInput("strict and plan do not combine: a plan keeps the error term")
        plans = plan if isinstance(plan, list | tuple) else [plan]
        before = model.answer_scores(prompts, answers)  # measured before the plan goes in
        ctx = apply(model, *plans, bottleneck=bottleneck)
    elif bottleneck is not None:
        ctx = attach(model, bottleneck, error_term=not strict)
    else:
        ctx = nullcontext()
    with ctx:
        p, correct = model.answer_scores(prompts, answers)
    return table(facts, p, correct, before)


def table(
    facts: list[Fact],
    p: torch.Tensor,
    correct: torch.Tensor,
    before: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> pd.DataFrame:
    """`evaluate`'s table from per-prompt measurements in `prompts_and_answers` order: the
    answer's probability, whether it is the greedy next token, and optionally the same two
    without a plan."""
    rows, i = [], 0
    for f in facts:
        n = len(f.prompts)
        para = [
            {"prompt": q, "correct": bool(c), "p_answer": float(pa)}
            for q, c, pa in zip(f.paraphrases, correct[i + 1 : i + n], p[i + 1 : i + n])
        ]
        rows.append(
            {
                "subject": f.subject,
                "relation": f.relation,
                "prompt": f.prompt,
                "answer": f.answer,
                "correct": bool(correct[i]),
                "p_answer": float(p[i]),
                "paraphrases": para,
                "paraphrase_accuracy": sum(q["correct"] for q in para) / len(para)
                if para
                else float("nan"),
            }
        )
        if before is not None:
            p0, ok0 = before[0][i : i + n], before[1][i : i + n]
            rows[-1].update(
                correct_before=bool(ok0[0]),
                p_answer_before=float(p0[0]),
                paraphrase_accuracy_before=float(ok0[1:].float().mean()) if n > 1 else float("nan"),
            )
        i += n
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> dict:
    """Accuracy and mean probability over an `evaluate` table (+ `accuracy_before` with a plan)."""
    para = [q for ps in table["paraphrases"] for q in ps]
    out = {
        "n_facts": len(table),
        "accuracy": float(table["correct"].mean()),
        "mean_p_answer": float(table["p_answer"].mean()),
        "n_paraphrases": len(para),
        "paraphrase_accuracy": sum(q["correct"] for q in para) / len(para) if para else None,
    }
    if "correct_before" in table:
        out["accuracy_before"] = float(table["correct_before"].mean())
    return out


def to_json(table: pd.DataFrame) -> dict:
    """The `codecut eval --json` object: {"facts": [...], "summary": {...}}; `correct` and
    `p_answer` are the state evaluated, with `correct_before` / `p_answer_before` beside them
    when a plan was applied."""
    keys = ["subject", "relation", "prompt", "answer", "correct", "p_answer", "paraphrases"]
    keys += [k for k in ("correct_before", "p_answer_before") if k in table]
    return {"facts": table[keys].to_dict("records"), "summary": summary(table)}

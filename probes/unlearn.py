"""Zero-shot unlearning: a plan that cuts each forget fact's codes, with no weight change.

    plan = unlearn(model, bottleneck, forget=facts, retain=others)
    plan.results.facts[0].selection      # what the search chose (see `search.select`)
    plan.results.facts[0].after          # the fact with the plan applied

Each forget fact gets its own search (`select`), against the same retain set, measured once for
all of them (`RetainCache`); the plan holds every fact's ablations, and its results measure every fact and the retain set before and after
the whole plan.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd
from codecut.codebook import Bottleneck
from codecut.probes.evaluate import evaluate, prompts_and_answers, summary, table
from codecut.probes.plan import FactResult, PlanResults, RetainResult, Scores, UnlearnPlan, apply
from codecut.probes.retain import default_retain
from codecut.probes.search import RetainCache, SelectConfig, Selection, reached, select
from tqdm.auto import tqdm

from codecut.errors import BadInput, BadType
from codecut.facts import Fact, example_facts
from codecut.models import Model


def unlearn(
    model: Model,
    bottleneck: Bottleneck,
    forget: list[Fact],
    retain: list[Fact] | None = None,
    pool: list[Fact] | None = None,
    config: SelectConfig | None = None,
    strict: bool = False,
) -> UnlearnPlan:
    """Zero-shot unlearning: a plan that cuts each forget fact's codes; no weight changes.

    Args:
        model: the model that knows the facts.
        bottleneck: the bottleneck to cut codes in (its hook is used).
        forget: facts to forget; each must be known by the model (greedy answer).
        retain: facts that must survive; default: `retain.default_retain` (the known facts of
            `pool` and the example facts about a forget fact's subject or of its relation, and a
            few unrelated ones). Forget facts' own (subject, relation) pairs are left out of it.
        pool: known facts to draw counterfactual answers and the default retain set from;
            default: `retain`, else the shipped example facts.
        config: the search's options (default `SelectConfig()`).
        strict: cut codes in strict mode (no error term: only what the codes carry passes the
            layer, CodeUnlearn's setting); the plan records it and `apply` runs it so. The
            forget facts must be known by the clean model; retention is measured against it.

    Returns the plan, with `results` (a `PlanResults`) and `seconds` filled in.
    """
    t0 = time.time()
    if not forget:
        raise BadInput("nothing to forget: the forget set is empty")
    if not all(isinstance(f, Fact) for f in forget):
        raise BadType(
            "forget must be a list of codecut.Fact (read a JSONL file with codecut.load_facts)"
        )
    if pool is None:
        pool = list(retain) if retain else example_facts()
    before = evaluate(model, forget)
    unknown = before.loc[~before["correct"], "prompt"].tolist()
    if unknown:
        raise BadInput(
            f"the model does not know {unknown[0]!r} (greedy answer differs): nothing to forget"
        )
    forget_keys = {(f.subject, f.relation) for f in forget}
    if retain is None:
        retain = default_retain(model, forget, pool)
    retain = [f for f in retain if (f.subject, f.relation) not in forget_keys]
    # The retain prompts are measured once for every fact, and kept for the next request.
    shared = RetainCache.shared(model, bottleneck, strict)
    selections = []
    for i, fact in enumerate(tqdm(forget, desc="unlearning", leave=False)):
        # The first fact's time budget counts the request's setup (the default retain set).
        spent = time.time() - t0 if i == 0 else 0.0
        budget = _spend(config or SelectConfig(), spent)
        selections.append(select(model, bottleneck, fact, retain, pool, budget, strict, shared))
    plan = UnlearnPlan(
        bottleneck_hash=bottleneck.content_hash,
        bottleneck_source=bottleneck.source,
        hook=bottleneck.hook,
        ablations=[a for s in selections for a in s.ablations],
        facts=list(forget),
        strict=strict,
        bottleneck=bottleneck,
    )
    plan.results = _results(model, plan, retain, before, selections, shared)
    plan.seconds = round(time.time() - t0, 2)
    return plan


def _spend(config: SelectConfig, seconds: float) -> SelectConfig:
    """`config` with `seconds` less of its time budget (none left: 0)."""
    if config.max_seconds is None:
        return config
    return replace(config, max_seconds=max(config.max_seconds - seconds, 0.0))


def _results(
    model: Model,
    plan: UnlearnPlan,
    retain: list[Fact],
    before: pd.DataFrame,
    selections: list[Selection],
    shared: RetainCache,
) -> PlanResults:
    """Every forget fact (rows of `before`, in `plan.facts`' order) and the retain set, before
    and after the plan. The retain prompts were measured without a cut by the search (error
    term kept: the clean model's answers); with the plan, only those a cut can reach are
    measured again, the others keep their answers (not in strict mode, where every prompt
    goes through the codes)."""
    prompts, answers = prompts_and_answers(retain)
    clean = None if plan.strict or not retain else shared.get(prompts, answers)
    retain_before = retain_after = None
    if retain and clean is None:
        retain_before = evaluate(model, retain)
    with apply(model, plan):
        after = evaluate(model, plan.facts)
        if clean is not None:
            p, ok = clean.p.clone(), clean.ok.clone()
            reach = reached(plan.ablations, clean.fired).nonzero().flatten()
            if len(reach):
                p[reach], ok[reach] = clean.prefix.rows(reach).scores(clean.targets[reach])
            retain_before = table(retain, clean.p, clean.ok)
            retain_after = table(retain, p, ok)
        elif retain:
            retain_after = evaluate(model, retain)
    facts = [
        FactResult(b["prompt"], b["answer"], _scores(b), _scores(a), selection)
        for (_, b), (_, a), selection in zip(before.iterrows(), after.iterrows(), selections)
    ]
    if not retain:
        return PlanResults(facts)
    return PlanResults(facts, RetainResult(summary(retain_before), summary(retain_after)))


def _scores(row: pd.Series) -> Scores:
    return Scores(bool(row["correct"]), float(row["p_answer"]), float(row["paraphrase_accuracy"]))

"""Zero-shot unlearning: a plan that cuts each forget fact's codes, with no weight change.

    plan = unlearn(model, bottleneck, forget=facts, retain=others)
    plan.results.facts[0].selection      # what the search chose (see `search.select`)
    plan.results.facts[0].after          # the fact with the plan applied

Each forget fact gets its own search (`select`), against the retain set given, or by default
against the neighbours of every forget fact and those of its subject's facts asked alone (the
other subjects' forget facts among them, so that no cut reaches across a relation because the
relation's other facts are to be forgotten too); retain prompts are measured once for all of
them (`RetainCache`). The plan holds every fact's ablations, and its results measure every
fact and the retain set (the union, less the forget facts) before and after the whole plan.

Given several bottlenecks (at different hooks), a fact whose search in the first does not remove
it from every prompt and format is searched again in the next, with the cut found so far in
place, and so on; a later bottleneck's cut is kept only where it completes the removal
(`plan.later`):

    plan = unlearn(model, [bn_layer12, bn_layer18], forget=facts)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from typing import NamedTuple

import pandas as pd
import torch
from codecut.codebook import Ablation, Bottleneck, attach
from codecut.probes.evaluate import evaluate, prompts_and_answers, summary, table
from codecut.probes.plan import (
    Cut,
    FactResult,
    PlanResults,
    RetainResult,
    Scores,
    Selection,
    UnlearnPlan,
    apply,
)
from codecut.probes.selector.cache import RetainCache, reached
from codecut.probes.selector.config import FAMILIES, SHOTS, ZERO_FAMILIES, SelectConfig
from codecut.probes.selector.retain import default_retain, in_formats
from codecut.probes.selector.search import select
from codecut.probes.selector.subject import subject_facts
from tqdm.auto import tqdm

from codecut.core.errors import BadInput, BadType
from codecut.core.facts import Fact, example_facts
from codecut.core.models import Model

log = logging.getLogger(__name__)


# With later bottlenecks and a time budget, the first bottleneck's search gets this share of a
# fact's budget and the later ones what is left.
FIRST_SHARE = 0.6
# Within a time budget, a later search starts only with its retain prompts measured (as time
# allows: what one request measured the next one finds) and at least this many seconds left:
# its setup (anti-samples, attributions) takes 5-10 s on the 2-core CPU, and a first request of
# a relation that measured them all in the search's time ended at 61.7 s of a 55 s budget.
LATER_MIN_SECONDS = 10.0


def unlearn(
    model: Model,
    bottleneck: Bottleneck | Sequence[Bottleneck],
    forget: Fact | list[Fact] | None = None,
    retain: Fact | list[Fact] | None = None,
    pool: list[Fact] | None = None,
    config: SelectConfig | None = None,
    strict: bool = False,
    forget_subject: str | None = None,
) -> UnlearnPlan:
    """Zero-shot unlearning: a plan that cuts each forget fact's codes; no weight changes.

    Args:
        model: the model that knows the facts.
        bottleneck: the bottleneck to cut codes in (its hook is used), or several at different
            hooks, tried in order for a fact the earlier ones did not remove (see above).
        forget: facts to forget (or one fact); each must be known by the model (greedy
            answer). A fact given twice is searched once, with a warning.
        retain: facts that must survive; default: `retain.default_retain` (the known facts of
            `pool` and the example facts about a forget fact's subject or of its relation, and
            `UNRELATED_PER_RELATION` of each other relation). Forget facts' own (subject,
            relation) pairs are left out of it (with a warning when given here; an error when
            that leaves none).
        pool: known facts to draw counterfactual answers and the default retain set from;
            default: `retain`, else the shipped example facts.
        config: the search's options (default `SelectConfig()`).
        strict: cut codes in strict mode (no error term: only what the codes carry passes the
            layer, CodeUnlearn's setting); the plan records it and `apply` runs it so. The
            forget facts must be known by the clean model; retention is measured against it.
        forget_subject: instead of `forget`, everything the model answers about this subject
            (`subject.subject_facts`: `pool`'s facts about it, and each other relation of
            `pool` asked about it); other subjects keep every relation, their facts of the
            same relations first of all (the default retain set holds them).

    Returns the plan, with `results` (a `PlanResults`) and `seconds` filled in.
    """
    t0 = time.time()
    request = unlearn_request(bottleneck, forget, retain, forget_subject=forget_subject)
    bottlenecks, forget, retain, repeated = request
    if repeated:
        log.warning("%d repeated forget fact(s) left out: each fact is searched once", repeated)
    bottleneck = bottlenecks[0]
    if pool is None:
        pool = list(retain) if retain else example_facts()
    if forget_subject is not None:
        forget = subject_facts(model, forget_subject, pool)
        if not forget:
            raise BadInput(
                f"the model answers no fact about {forget_subject!r} in the relations of the "
                "pool; give facts about it (pool=, or --facts)"
            )
        log.info("forgetting %d facts about %s", len(forget), forget_subject)
    before = evaluate(model, forget)
    unknown = before.loc[~before["correct"], "prompt"].tolist()
    if unknown:
        raise BadInput(
            f"the model does not know {unknown[0]!r} (greedy answer differs): nothing to forget"
        )
    forget_keys = {(f.subject, f.relation) for f in forget}
    own: dict[str, list[Fact]] = {}  # by subject: what its facts' cuts are checked against
    if retain is None:
        own = _default_retain_by_subject(model, forget, pool)
        retain = list({(f.subject, f.relation): f for fs in own.values() for f in fs}.values())
    elif dropped := sum((f.subject, f.relation) in forget_keys for f in retain):
        log.warning(
            "%d retain fact(s) left out: they have a forget fact's subject and relation", dropped
        )
    retain = [f for f in retain if (f.subject, f.relation) not in forget_keys]
    # The retain prompts are measured once for every fact, and kept for the next request.
    shared = RetainCache.shared(model, bottleneck, strict)
    chosen: list[_Chosen] = []
    asked: dict[str, Fact] = {}  # the neighbours' main prompts in the formats, as the searches ask
    for i, fact in enumerate(tqdm(forget, desc="unlearning", leave=False)):
        # The first fact's time budget counts the request's setup (the default retain set).
        spent = time.time() - t0 if i == 0 else 0.0
        budget = _spend(config or SelectConfig(), spent)
        checked = own.get(fact.subject, retain)
        formats = in_formats(model, fact, checked, pool, budget.formats, SHOTS)
        chosen.append(
            _select(model, bottlenecks, fact, checked, formats, pool, budget, strict, shared)
        )
        for f in formats:
            asked.setdefault(f.prompt, f)
    later = [
        Cut(bn.content_hash, bn.source, bn.hook, ablations, bn)
        for bn in bottlenecks[1:]
        if (ablations := [a for c in chosen for a in _ablations(c, bn.hook)])
    ]
    plan = UnlearnPlan(
        bottleneck_hash=bottleneck.content_hash,
        bottleneck_source=bottleneck.source,
        hook=bottleneck.hook,
        ablations=[a for c in chosen for a in _ablations(c, bottleneck.hook)],
        facts=list(forget),
        strict=strict,
        bottleneck=bottleneck,
        later=later,
    )
    formats = [f for f in asked.values() if (f.subject, f.relation) not in forget_keys]
    plan.results = _results(model, plan, retain, formats, before, chosen, shared)
    plan.seconds = round(time.time() - t0, 2)
    return plan


def _default_retain_by_subject(
    model: Model, forget: list[Fact], pool: list[Fact]
) -> dict[str, list[Fact]]:
    """Each forget subject's default retain set: the request's (the neighbours of every forget
    fact, no forget fact in it) and the subject's own, built as if its facts were asked alone
    (the other subjects' forget facts in it). With the request's alone, a plan of 200 of the
    pool's 248 facts checked each cut against the 48 left and kept 43% of the held-out facts
    (benchmarks/results/unlearn_many_200_before_fix.md); with the subject's alone, as single
    plans are, a cut for one fact is never checked against the neighbours of another (50 single
    plans composed kept 94.8% of the other pool facts and 76% of the held-out ones, one plan of
    the 50 made with both 99.6% and 85%: benchmarks/results/unlearn_many_50.md)."""
    everyone = default_retain(model, forget, pool)
    out = {}
    for s in dict.fromkeys(f.subject for f in forget):
        own = default_retain(model, [f for f in forget if f.subject == s], pool)
        out[s] = list({(f.subject, f.relation): f for f in [*everyone, *own]}.values())
    return out


class Request(NamedTuple):
    """`unlearn`'s arguments but the model, checked (`unlearn_request`)."""

    bottlenecks: list[Bottleneck]
    forget: list[Fact]  # each fact once
    retain: list[Fact] | None  # as given (one Fact: a list of one)
    repeated: int  # forget facts given more than once, left out


def unlearn_request(
    bottleneck: Bottleneck | Sequence[Bottleneck],
    forget: Fact | list[Fact] | None = None,
    retain: Fact | list[Fact] | None = None,
    pool: list[Fact] | None = None,
    config: SelectConfig | None = None,
    strict: bool = False,
    forget_subject: str | None = None,
) -> Request:
    """Check `unlearn`'s arguments but the model, so that a hopeless request fails before the
    model is loaded or run (the command line and `codecut.unlearn` call it first).

    One Fact is a list of one; a forget fact given twice is kept once (each copy would run
    the same search again). A retain set whose every fact has a forget fact's (subject,
    relation) is refused: those are left out of it, and a plan checked against no retain fact
    would report full retention for nothing. With `forget_subject` the forget facts are found
    later, with the model: the request holds none yet."""
    del pool, config, strict  # checked where they are used
    bottlenecks = _bottlenecks(bottleneck)
    if forget_subject is not None:
        if forget:
            raise BadInput("give forget facts or a forget_subject, not both")
        if not isinstance(forget_subject, str) or not forget_subject.strip():
            raise BadInput(f"forget_subject must be a subject's name, got {forget_subject!r}")
        if isinstance(retain, Fact):
            retain = [retain]
        return Request(bottlenecks, [], retain, 0)
    if isinstance(forget, Fact):
        forget = [forget]
    if isinstance(retain, Fact):
        retain = [retain]
    if not forget:
        raise BadInput("nothing to forget: the forget set is empty")
    if not isinstance(forget, Sequence) or not all(isinstance(f, Fact) for f in forget):
        raise BadType(
            "forget must be a codecut.Fact or a list of them (read a JSONL file with "
            "codecut.load_facts)"
        )
    unique: list[Fact] = []
    for f in forget:
        if f not in unique:
            unique.append(f)
    if retain is not None:
        if not isinstance(retain, Sequence) or not all(isinstance(f, Fact) for f in retain):
            raise BadType("retain must be a codecut.Fact or a list of them, or None")
        keys = {(f.subject, f.relation) for f in unique}
        if retain and all((f.subject, f.relation) in keys for f in retain):
            raise BadInput(
                "every retain fact has a forget fact's subject and relation, so none is left "
                "to check the cut against: give other facts to keep (or leave retain out for "
                "the default set)"
            )
    return Request(bottlenecks, unique, retain, len(forget) - len(unique))


def _bottlenecks(bottleneck) -> list[Bottleneck]:
    """`unlearn`'s bottleneck argument as a list, checked: one per hook."""
    many = [bottleneck] if isinstance(bottleneck, Bottleneck) else list(bottleneck or [])
    if not many:
        raise BadInput("no bottleneck given: pass one, or a list of them at different hooks")
    for bn in many:
        if not isinstance(bn, Bottleneck):
            raise BadType(f"bottleneck must be a codecut Bottleneck, got {type(bn).__name__}")
    hooks = [bn.hook for bn in many]
    if len(set(hooks)) < len(hooks):
        raise BadInput(f"give at most one bottleneck per hook, got hooks {hooks}")
    return many


class _Chosen(NamedTuple):
    """One fact's cuts."""

    selections: dict[str, Selection]  # by hook; the first bottleneck's is always there
    reach: set[tuple[str, str]]  # the retain (prompt, answer) pairs its later cuts can change


def _select(
    model: Model,
    bottlenecks: list[Bottleneck],
    fact: Fact,
    retain: list[Fact],
    asked: list[Fact],
    pool: list[Fact],
    config: SelectConfig,
    strict: bool,
    shared: RetainCache,
) -> _Chosen:
    """One fact's cuts: the first bottleneck's search, then, while the fact holds in a prompt or
    a format, the next bottleneck's with the cuts so far in place (a later cut is kept where it
    completes the removal). The first hook's selection is empty when only a later bottleneck
    could cut. `asked`: the neighbours in the formats (`in_formats`), which the searches judge
    conditional cuts on.

    A later search measures anew only the retain prompts the cuts so far reach; the others'
    measurements are its bottleneck's process-wide ones (`RetainCache.after_cut`), made once.
    """
    first, rest = bottlenecks[0], bottlenecks[1:]
    if not rest:
        return _Chosen(
            {first.hook: select(model, first, fact, retain, pool, config, strict, shared)}, set()
        )
    started = time.monotonic()
    budget = config.max_seconds
    own = config if budget is None else replace(config, max_seconds=budget * FIRST_SHARE)
    keys = list(dict.fromkeys(zip(*prompts_and_answers(retain + asked))))
    chosen: dict[str, Selection] = {}
    refused: list[str] = []  # each bottleneck's reason, for the error when none finds a cut
    try:
        chosen[first.hook] = select(model, first, fact, retain, pool, own, strict, shared)
    except BadInput as e:
        log.info("%s: %s; on to %s", first.hook, e, rest[0].hook)
        refused.append(f"{first.hook}: {e}")
    dirty = _reach(shared, chosen[first.hook], keys) if chosen else set()
    reach: set[tuple[str, str]] = set()
    for bn in rest:
        last = next(reversed(chosen.values()), None)  # the selection that ended the search so far
        if last is not None and _done(last, config):
            break
        if strict:  # every prompt goes through the earlier bottleneck's codes: all anew
            cache = RetainCache()
        else:
            base = RetainCache.shared(model, bn, strict)  # looked up before anything is attached
            clean = [k for k in keys if k not in dirty]
            if budget is not None:
                _measure_as_time_allows(model, bn, base, clean, started + budget)
                if base.missing(clean):
                    break
            cache = base.after_cut(dirty)
        left = None if budget is None else budget - (time.monotonic() - started)
        if left is not None and left < LATER_MIN_SECONDS:
            break
        try:
            with ExitStack() as cuts:
                for hook, s in chosen.items():  # the cuts so far, in place
                    bn_cut = _by_hook(bottlenecks, hook)
                    cuts.enter_context(
                        attach(model, bn_cut, error_term=not strict, ablations=s.ablations)
                    )
                later = replace(config, max_seconds=left)
                s = select(model, bn, fact, retain, pool, later, strict, cache)
        except BadInput as e:
            log.info("%s: %s", bn.hook, e)
            refused.append(f"{bn.hook}: {e}")
            continue
        if not s.success:
            refused.append(f"{bn.hook}: its best cut ({len(s.codes)} codes) left the answer")
        elif last is None or not last.success or s.formats_lost:
            chosen[bn.hook] = s
            new = _reach(cache, s, keys)
            dirty |= new
            reach |= new
    if not chosen:
        raise BadInput("; ".join(refused))
    if first.hook not in chosen:
        family = FAMILIES[0] if first.has_stats else ZERO_FAMILIES[0]
        chosen = {first.hook: Selection(family, [], [], False, 1.0, 1.0), **chosen}
    return _Chosen(chosen, reach)


def _measure_as_time_allows(
    model: Model,
    bottleneck: Bottleneck,
    cache: RetainCache,
    keys: list[tuple[str, str]],
    deadline: float,
    chunk: int = 32,
) -> None:
    """Measure the (prompt, answer) pairs `keys` into `cache` with `bottleneck` attached and no
    cut, a chunk at a time, until the deadline."""
    todo = cache.missing(keys)
    if not todo:
        return
    with attach(model, bottleneck) as handle:
        for start in range(0, len(todo), chunk):
            if time.monotonic() > deadline:
                break
            part = todo[start : start + chunk]
            cache.clean(model, handle, [q for q, _ in part], [a for _, a in part])


def _reach(
    cache: RetainCache, selection: Selection, keys: list[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The (prompt, answer) pairs of `keys` whose answer `selection`'s cut can change, by the
    codes `cache` measured firing there (every pair, where it did not measure them all)."""
    if not keys:
        return set()
    clean = cache.get([q for q, _ in keys], [a for _, a in keys])
    if clean is None:
        return set(keys)
    rows = reached(selection.ablations, clean.fired).tolist()
    return {k for k, hit in zip(keys, rows) if hit}


def _ablations(chosen: _Chosen, hook: str) -> list[Ablation]:
    """A fact's cut at `hook` (none where it has none)."""
    selection = chosen.selections.get(hook)
    return selection.ablations if selection is not None else []


def _done(selection: Selection, config: SelectConfig) -> bool:
    """The fact is gone from its prompts, and from the formats where any were asked."""
    return selection.success and (selection.formats_lost or not config.formats)


def _by_hook(bottlenecks: list[Bottleneck], hook: str) -> Bottleneck:
    return next(bn for bn in bottlenecks if bn.hook == hook)


def _spend(config: SelectConfig, seconds: float) -> SelectConfig:
    """`config` with `seconds` less of its time budget (none left: 0)."""
    if config.max_seconds is None:
        return config
    return replace(config, max_seconds=max(config.max_seconds - seconds, 0.0))


def _results(
    model: Model,
    plan: UnlearnPlan,
    retain: list[Fact],
    formats: list[Fact],
    before: pd.DataFrame,
    chosen: list[_Chosen],
    shared: RetainCache,
) -> PlanResults:
    """Every forget fact (rows of `before`, in `plan.facts`' order), the retain set and the
    neighbours in the formats (`formats`), before and after the plan."""
    with apply(model, plan):
        after = evaluate(model, plan.facts)
    hook = plan.hook
    facts = [
        FactResult(
            b["prompt"],
            b["answer"],
            _scores(b),
            _scores(a),
            c.selections[hook],
            {h: s for h, s in c.selections.items() if h != hook},
        )  # fmt: skip
        for (_, b), (_, a), c in zip(before.iterrows(), after.iterrows(), chosen)
    ]
    kept = [_kept(model, plan, fs, chosen, shared) for fs in (retain, formats)]
    return PlanResults(facts, *kept)


def _kept(
    model: Model, plan: UnlearnPlan, facts: list[Fact], chosen: list[_Chosen], shared: RetainCache
) -> RetainResult | None:
    """`facts` before and after the plan (None when there are none). The searches measured
    their prompts without a cut (error term kept: the clean model's answers); with the plan,
    only those a cut can reach are measured again (the first bottleneck's by its firing codes,
    the later ones' as their searches found), the others keep their answers. In strict mode,
    where every prompt goes through the codes, or where a prompt was not measured, all are."""
    if not facts:
        return None
    prompts, answers = prompts_and_answers(facts)
    clean = None if plan.strict else shared.get(prompts, answers)
    if clean is None:
        before = evaluate(model, facts)
        with apply(model, plan):
            return RetainResult(summary(before), summary(evaluate(model, facts)))
    p, ok = clean.p.clone(), clean.ok.clone()
    later = set().union(*(c.reach for c in chosen))
    reach = reached(plan.ablations, clean.fired)
    reach |= torch.tensor([k in later for k in zip(prompts, answers)], dtype=torch.bool)
    reach = reach.nonzero().flatten()
    if len(reach):
        with apply(model, plan):
            p[reach], ok[reach] = clean.prefix.rows(reach).scores(clean.targets[reach])
    return RetainResult(summary(table(facts, clean.p, clean.ok)), summary(table(facts, p, ok)))


def _scores(row: pd.Series) -> Scores:
    return Scores(bool(row["correct"]), float(row["p_answer"]), float(row["paraphrase_accuracy"]))

"""The anti-sample selector: find the few codes that carry one association, and cut them.

Scoring (bottleneck attached, error term kept, so the model is unchanged while we measure).
For each code c, at the predicting (last) position of a prompt p with answer y:

    attr_p(c) = v_c(p) * d/dv_c [ log P(y | p) - mean_a log P(a | p) ]

where v_c is the code's value and a runs over the counterfactual anti-answers (other values of
the relation): how much the code pushes the true answer *against the wrong ones* (gradient x
activation). With F the forget prompts (the fact's prompts, its paraphrases and the
anti-sample paraphrases the model still answers) and R the retain facts' prompts,

    score(c) = mean_{p in F} attr_p(c) - lambda * max_{r in R'} max(attr_r(c), 0)

R' is every retain prompt for an unconditional cut, and only the retain prompts where a condition
holds for a conditional one (the condition spares the others).

Conditions make the cut an association rather than an entity or a relation. Condition sets are
codes that fire in the context (before the predicting position) of the forget prompts and, all
sets together, in at most 5% of other subjects' retain prompts: single codes, AND pairs (or
triples when nothing smaller fits), chosen by greedy set cover so that every forget prompt
contains one. Each set becomes an `Ablation(..., when=set)`,
so the cut codes are suppressed only in sequences where the subject showed up (an OR over the
sets, an AND with the cut itself). When no cover exists only unconditional cuts are tried.

Selection is greedy and verified, for each family (mode zero / clamp 2x / clamp 4x, conditional
first, then unconditional): re-score on the forget prompts that still hold the answer with the
cuts so far in place, try the best code, keep it unless it costs more than `retain_budget` of
retain accuracy, and stop once the answer is gone (not the greedy token and p < `p_threshold`)
on every forget prompt. The first family that succeeds (gentlest first) is kept; if none does,
the best partial result is returned and the plan records `success: false`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
from codecut.codebook import Ablation, Attachment, Bottleneck, attach
from codecut.probes.antisamples import make_antisamples
from codecut.probes.plan import UnlearnPlan
from tqdm.auto import tqdm

from codecut.errors import BadInput, BadType
from codecut.facts import Fact, example_facts
from codecut.models import Model, load_model

log = logging.getLogger(__name__)

# (mode, clamp strength, conditional), gentlest first.
FAMILIES = [
    ("clamp", 2.0, True),
    ("clamp", 4.0, True),
    ("clamp", 8.0, True),
    ("clamp", 4.0, False),
]
# For bottlenecks without the codes' typical activations (e.g. a foreign sae-lens SAE).
ZERO_FAMILIES = [("zero", 1.0, True), ("zero", 1.0, False)]


@dataclass
class Probe:
    """Prompts and answers measured together (forget or retain), with their anti-answers."""

    prompts: list[str]
    answers: list[str]
    anti: list[list[str]]  # per prompt, wrong answers to contrast with
    main: torch.Tensor | None = None  # bool per prompt: a fact's main prompt (not a paraphrase)

    def subset(self, rows: list[int]) -> Probe:
        """The prompts at `rows`, with their answers and anti-answers."""
        return Probe(*[[x[i] for i in rows] for x in (self.prompts, self.answers, self.anti)])


class Trial(NamedTuple):
    """What one set of cuts did during selection."""

    gone: bool  # the answer is gone from the forget prompts (see `select`'s `slack`)
    forget_accuracy: float  # greedy accuracy on the forget prompts
    retain_accuracy: float  # greedy accuracy on the retain prompts the cut can reach
    held: torch.Tensor  # bool per forget prompt: still answered, or p >= p_threshold


NEVER = 1 << 30  # "first position" of a code that did not fire


def attributions(
    model: Model, handle: Attachment, probe: Probe
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per prompt: the attribution of each code, summed over the positions where it is active
    [P, n]; the first position where each code fired before the last one [P, n] (NEVER if it
    did not); and the last (predicting) position [P].

    Every position counts, not only the predicting one: later layers read the answer from the
    subject's and the relation's positions too, so cutting only at the last one leaves it there."""
    n = handle.bottleneck.n_codes
    batch = model.tokenize(probe.prompts)
    rows = torch.arange(len(probe.prompts))
    with torch.enable_grad():
        logits = model(batch["input_ids"], batch["attention_mask"])
        codes = handle.codes
        logp = logits[rows, batch["last"]].float().log_softmax(-1)
        true = torch.tensor([model.answer_token(a) for a in probe.answers])
        anti = torch.stack(
            [
                logp[i, [model.answer_token(a) for a in wrong]].mean()
                for i, wrong in enumerate(probe.anti)
            ]
        )
        objective = (logp[rows, true] - anti).sum()
        (grad,) = torch.autograd.grad(objective, codes.values)
    contrib = (grad * codes.values).detach()
    active = handle.active[..., None].expand_as(contrib)
    attr = torch.zeros(len(rows), n).scatter_add_(
        1, codes.indices.flatten(1), (contrib * active).flatten(1)
    )
    pos = torch.arange(contrib.shape[1])[None, :, None].expand_as(contrib)
    context = handle.active & (pos[..., 0] < batch["last"][:, None])
    on = (codes.values.detach() > 0) & context[..., None]
    first = torch.full((len(rows) * n,), NEVER, dtype=torch.long)
    flat = (rows[:, None, None] * n + codes.indices)[on]
    first.scatter_reduce_(0, flat, pos[on], reduce="amin")
    return attr, first.view(len(rows), n), batch["last"]


def condition_codes(
    first: torch.Tensor,
    last: torch.Tensor,
    fired_other: torch.Tensor,
    max_rate: float = 0.05,
    top: int = 1000,
    top_triples: int = 64,
) -> list[list[int]]:
    """Code sets that mark the association in the forget prompts.

    Each set (one code, or an AND of two or three) fires in the context of some forget prompts.
    The cut acts wherever any chosen set holds, so the sets *together* may hold in at most
    `max_rate` of the other subjects' retain prompts (a bound on each set alone let five sets
    reach 5% each, and the cut then took other subjects' answers of the same relation with it).
    The same subject's other facts are not counted: a subject code is the natural condition, and
    what the cut costs them is scored and verified by the selection.

    The greedy cover takes, at each step, the set that holds in the fewest other prompts not yet
    reached (the condition's job is to mark the subject), and among those the one that opens the
    most positions over the uncovered prompts (a cut under a set acts from the position where its
    last code fires to the end; earlier is better: the answer is read from the subject's position
    on), until every forget prompt is covered; [] if they cannot be. Triples matter where a
    subject follows generic context ("people say that the colour Finvo likes is") and no code or
    pair of its own marks it.

    Args:
        first: [P, n] first position where each code fired in each forget prompt (or NEVER).
        last: [P] the predicting position of each forget prompt.
        fired_other: [R, n] bool, codes fired in the context of each retain prompt of another
            subject.
        top: candidates (by positions reached) paired at each step. Keep it wide: a subject
            named late in the prompt ("The official language of Italy is") has codes that reach
            few positions, and with 100 candidates they were crowded out by generic early codes.
        top_triples: candidates combined three at a time.
    """
    budget = int(max_rate * len(fired_other))  # other prompts the sets may hold in, together
    covered = torch.zeros(len(first), dtype=torch.bool)
    reached = torch.zeros(len(fired_other), dtype=torch.bool)  # other prompts a set holds in
    chosen: list[list[int]] = []
    while not covered.all():
        f, end = first[~covered], last[~covered]
        span = (end[:, None] - f + 1).clamp(min=0)  # positions a cut under each single code reaches
        other = fired_other[~reached].float()
        spare = budget - int(reached.sum())
        found = [
            _best_set(f, end, other, spare, span.sum(0).argsort(descending=True)[:m], triples)
            for m, triples in ((top, False), (top_triples, True))
        ]
        found = [x for x in found if x is not None]
        if not found:
            return []
        codes = min(found, key=lambda x: (x[1], -x[2]))[0]
        chosen.append(codes)
        covered |= (first[:, codes] < NEVER).all(1)
        reached |= fired_other[:, codes].all(1)
    return chosen


def _best_set(f, end, other, spare: int, cands, triples: bool):
    """(codes, other prompts it holds in, positions it opens) of the best single code or AND pair
    of `cands` (AND triples with `triples`) over the prompts `f`, among the sets that open some
    position and hold in at most `spare` of the `other` prompts; None if there is none."""
    fc, o = f[:, cands], other[:, cands]
    best = None
    for a in range(len(cands)) if triples else [None]:
        # gain[b, c]: positions a cut under the set reaches, summed over the prompts (a set gates
        # from its latest code; the diagonal holds singles, or pairs with a). One prompt at a
        # time, so that memory stays [m, m] and not [prompts, m, m].
        gain = torch.zeros(len(cands), len(cands), dtype=torch.long)
        for fp, e in zip(fc, end.tolist()):
            later = torch.maximum(fp[:, None], fp[None, :])
            if a is not None:
                later = later.clamp(min=int(fp[a]))
            gain += (e - later + 1).clamp(min=0)
        oa = o if a is None else o * o[:, a : a + 1]
        leaks = oa.T @ o  # [m, m] other prompts where the whole set holds
        # Fewest leaks first, then most positions; among equals a smaller set (diagonal).
        score = gain.float() - 1e-3 * (1 - torch.eye(len(cands))) - (gain.max() + 1) * leaks
        score[(leaks > spare) | (gain <= 0)] = -float("inf")
        i = int(score.argmax())
        if score.flatten()[i] == -float("inf"):
            continue
        b, c = divmod(i, len(cands))
        codes = sorted({int(cands[x]) for x in (b, c) + ((a,) if a is not None else ())})
        entry = (codes, int(leaks.flatten()[i]), int(gain.flatten()[i]))
        if best is None or (entry[1], -entry[2]) < (best[1], -best[2]):
            best = entry
    return best


def _measure(model: Model, probe: Probe) -> tuple[torch.Tensor, torch.Tensor]:
    """(p of the true answer, greedy-correct) per prompt."""
    return model.answer_scores(probe.prompts, probe.answers)


def _probe(facts: list[Fact], values: dict[str, list[str]], fallback: list[str]) -> Probe:
    """Every prompt of every fact, contrasted with the other answers of its relation (or with
    `fallback`, the forget fact's anti-answers, when its relation has no other answer)."""
    prompts, answers, anti, main = [], [], [], []
    for f in facts:
        wrong = [v for v in values.get(f.relation, []) if v != f.answer] or fallback
        for j, p in enumerate(f.prompts):
            prompts.append(p)
            answers.append(f.answer)
            anti.append(wrong)
            main.append(j == 0)
    return Probe(prompts, answers, anti, torch.tensor(main, dtype=torch.bool))


def select(
    model,
    bottleneck: Bottleneck,
    fact: Fact,
    retain: list[Fact],
    pool: list[Fact],
    max_codes: int = 16,
    max_trials: int = 40,
    retain_budget: float = 0.02,
    p_threshold: float = 0.05,
    slack: float = 0.1,
    penalty: float = 1.0,
) -> tuple[list[Ablation], dict]:
    """Choose the ablations that make `model` forget `fact` while keeping `retain`.

    Args:
        model, bottleneck: the host and the bottleneck to cut codes in.
        fact: the association to forget.
        retain: facts that must keep their answers.
        pool: known facts to draw counterfactual answers from.
        max_codes: most codes one cut may hold.
        max_trials: most candidate codes tried per family.
        retain_budget: largest drop of retain accuracy a code may cost.
        p_threshold: the answer counts as gone below this probability (and not greedy).
        slack: fraction of the generated paraphrases allowed to keep the answer (the fact's own
            prompts may keep none).
        penalty: lambda, the weight of retain attribution in the score.

    Returns (ablations, report): report has the family chosen (mode, c, conditional), its
    codes, success, forget and retain accuracy during selection, and the condition codes.
    """
    model = load_model(model)
    anti = make_antisamples(model, fact, pool=pool)
    wrong = sorted({a.answer for a in anti if a.kind == "counterfactual"})
    if not wrong:
        raise BadInput(
            f"no anti-answers for {fact.prompt!r}: give a pool of facts of the same relation"
        )
    # The forget probe: the prompt, its paraphrases and the model-checked generated paraphrases
    # (`main` marks the fact's own prompts).
    paraphrases = [a.prompt for a in anti if a.kind == "paraphrase"]
    prompts = list(dict.fromkeys([*fact.prompts, *paraphrases]))
    own = torch.tensor([p in fact.prompts for p in prompts])
    forget = Probe(prompts, [fact.answer] * len(prompts), [wrong] * len(prompts), own)
    values: dict[str, list[str]] = {}
    for f in pool + retain:
        values.setdefault(f.relation, []).append(f.answer)
    values = {r: sorted(set(v)) for r, v in values.items()}
    keep = _probe(retain, values, wrong)

    with attach(model, bottleneck) as handle:
        attr, first, last = attributions(model, handle, forget)
        attr = attr.mean(0)
        if keep.prompts:
            attr_r, first_keep, _ = attributions(model, handle, keep)
        else:
            attr_r, first_keep = torch.zeros(0, attr.numel()), torch.zeros(0, attr.numel())
        attr_r, fired_keep = attr_r.clamp(min=0), first_keep < NEVER
        same = torch.tensor([fact.subject in p for p in keep.prompts], dtype=torch.bool)
        cond = condition_codes(first, last, fired_keep[~same])
        # A conditional cut acts only where its condition holds, so only the retain prompts
        # where it does can suffer from it; an unconditional cut can hurt every retain prompt.
        gated = torch.zeros(len(fired_keep), dtype=torch.bool)
        for codes in cond:
            gated |= fired_keep[:, codes].all(1)
        penalties = {
            True: attr_r[gated].amax(0) if gated.any() else torch.zeros_like(attr),
            False: attr_r.amax(0) if len(attr_r) else torch.zeros_like(attr),
        }
        log.info("condition codes %s", cond)
        # Each trial re-measures the retain prompts that a cut can reach: the same subject's, those
        # where a condition holds, and the main prompt of every other fact (for unconditional
        # cuts). The plan's results measure every prompt.
        rows = (same | gated | keep.main).nonzero().flatten().tolist()
        keep = keep.subset(rows)
        _, base_ok = _measure(model, keep)
        base_retain = base_ok.float().mean().item()

        def run(abls: list[Ablation]) -> Trial:
            handle.ablations[:] = abls
            p, ok = _measure(model, forget)
            _, rok = _measure(model, keep)
            handle.ablations.clear()
            held = ok | (p >= p_threshold)
            # Gone: on every prompt of the fact, and on all but `slack` of the generated ones.
            gone = not held[own].any() and held.float().mean().item() <= slack
            return Trial(gone, ok.float().mean().item(), rok.float().mean().item(), held)

        def build(codes: list[int], mode: str, c: float, conditional: bool) -> list[Ablation]:
            if conditional:
                return [Ablation(codes, mode=mode, c=c, when=when) for when in cond]
            return [Ablation(codes, mode=mode, c=c)]

        def next_code(
            abls: list[Ablation], held: torch.Tensor, exclude: list[int], conditional: bool
        ):
            """The best-scoring code on the forget prompts that still hold the answer, measured
            with the cuts so far in place (what is left to cut changes as codes go)."""
            handle.ablations[:] = abls
            a, _, _ = attributions(model, handle, forget.subset(held.nonzero().flatten().tolist()))
            handle.ablations.clear()
            sc = a.mean(0) - penalty * penalties[conditional]
            sc[exclude] = -float("inf")
            best = int(sc.argmax())
            return best if sc[best] > 0 else None

        best = None
        families = [
            f for f in (FAMILIES if bottleneck.has_stats else ZERO_FAMILIES) if cond or not f[2]
        ]
        for mode, c, conditional in tqdm(families, desc="selecting codes", leave=False):
            chosen: list[int] = []
            tried: list[int] = []
            result = Trial(
                False, 1.0, base_retain, torch.ones(len(forget.prompts), dtype=torch.bool)
            )
            while len(chosen) < max_codes and len(tried) < max_trials:
                code = next_code(
                    build(chosen, mode, c, conditional) if chosen else [],
                    result.held,
                    tried,
                    conditional,
                )
                if code is None:
                    break
                tried.append(code)
                trial = run(build(chosen + [code], mode, c, conditional))
                log.debug(
                    "try code %d: forget %.2f retain %.2f held %d", code,
                    trial.forget_accuracy, trial.retain_accuracy, int(trial.held.sum()),
                )  # fmt: skip
                if trial.retain_accuracy < base_retain - retain_budget:
                    continue  # this code costs retain accuracy: skip it
                chosen, result = chosen + [code], trial
                if result.gone:
                    break
            entry = {
                "mode": mode,
                "c": c,
                "conditional": conditional,
                "codes": chosen,
                "success": result.gone,
                "forget_accuracy": result.forget_accuracy,
                "retain_accuracy": result.retain_accuracy,
            }
            log.info("family %s", entry)
            rank = (
                entry["success"],
                -entry["forget_accuracy"],
                entry["retain_accuracy"],
                -len(chosen),
            )
            if chosen and (best is None or rank > best[0]):
                best = (rank, entry)
            if entry["success"]:
                break
    if best is None:
        raise BadInput(f"no code could be cut for {fact.prompt!r} within the retain budget")
    entry = best[1]
    ablations = build(entry["codes"], entry["mode"], entry["c"], entry["conditional"])
    report = {**entry, "condition_codes": cond if entry["conditional"] else []}
    return ablations, report


def unlearn(
    model,
    bottleneck: Bottleneck,
    forget: list[Fact],
    retain: list[Fact] | None = None,
    pool: list[Fact] | None = None,
    **options,
) -> UnlearnPlan:
    """Zero-shot unlearning: a plan that cuts each forget fact's codes; no weight changes.

    Args:
        model: anything `codecut.load_model` accepts.
        bottleneck: the bottleneck to cut codes in (its hook is used).
        forget: facts to forget; each must be known by the model (greedy answer).
        retain: facts that must survive; default: the known facts of `pool` that share a subject
            or a relation with a forget fact (every other known fact of `pool` when none does).
        pool: known facts to draw counterfactual answers and the default retain set from;
            default: `retain`, else the shipped example facts.
        options: passed to `select` (max_codes, retain_budget, p_threshold, ...).
    """
    from codecut.probes.evaluate import evaluate

    t0 = time.time()
    model = load_model(model)
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
        subjects, relations = {f.subject for f in forget}, {f.relation for f in forget}
        others = [f for f in pool if (f.subject, f.relation) not in forget_keys]
        # The neighbours that a cut is likeliest to hurt; with none (a relation and subjects the
        # pool does not hold), every other fact of the pool guards against a careless cut.
        near = [f for f in others if f.subject in subjects or f.relation in relations] or others
        retain = [f for f, ok in zip(near, evaluate(model, near)["correct"]) if ok] if near else []
    retain = [f for f in retain if (f.subject, f.relation) not in forget_keys]
    ablations: list[Ablation] = []
    reports = []
    for fact in tqdm(forget, desc="unlearning", leave=False):
        abls, report = select(model, bottleneck, fact, retain, pool, **options)
        ablations += abls
        reports.append(report)
    plan = UnlearnPlan(
        bottleneck_hash=bottleneck.content_hash,
        bottleneck_source=bottleneck.source,
        hook=bottleneck.hook,
        ablations=ablations,
        facts=list(forget),
        bottleneck=bottleneck,
    )
    plan.results = _results(model, plan, forget, retain, before, reports)
    plan.seconds = round(time.time() - t0, 2)
    return plan


def _results(model, plan: UnlearnPlan, forget, retain, before, reports) -> dict:
    """Before/after numbers per forget fact and for the retain set."""
    from codecut.probes.evaluate import evaluate, summary
    from codecut.probes.plan import apply

    retain_before = evaluate(model, retain) if retain else None
    with apply(model, plan):
        after = evaluate(model, forget)
        retain_after = evaluate(model, retain) if retain else None
    facts = []
    for (_, b), (_, a), rep in zip(before.iterrows(), after.iterrows(), reports):
        facts.append(
            {
                "prompt": b["prompt"],
                "answer": b["answer"],
                "before": {
                    "correct": b["correct"],
                    "p_answer": b["p_answer"],
                    "paraphrase_accuracy": b["paraphrase_accuracy"],
                },
                "after": {
                    "correct": a["correct"],
                    "p_answer": a["p_answer"],
                    "paraphrase_accuracy": a["paraphrase_accuracy"],
                },
                "selection": rep,
            }
        )
    out = {"facts": facts}
    if retain:
        out["retain"] = {"before": summary(retain_before), "after": summary(retain_after)}
    return out

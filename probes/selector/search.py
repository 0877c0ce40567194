"""The selector's search: the few codes that carry one association, verified by measuring.

For one forget fact, with the bottleneck attached (error term kept, unless in strict mode):

1. Probes. Forget: the fact's prompts, the same prompts in the formats a user will try
   (`SelectConfig.formats`, by default `FORMATS`: question, chat template, few-shot, a helpful
   context sentence) and the generated paraphrases, each kept where the model answers it,
   contrasted with the counterfactual answers (`make_antisamples`). Retain: every prompt of
   the retain facts, contrasted with the other answers of their relation. Below the hook
   nothing depends on a cut, so each prompt's residual stream there is computed once
   (`Prefix`) and every measurement runs only the layers above.
2. Conditions (`condition_codes`): code sets that fire in the forget prompts' context and,
   together, in at most `SelectConfig.condition_rate` of other subjects' retain prompts (and of
   their main prompts asked in the same formats, `in_formats`),
   covering the fact's prompts and paraphrases; then sets for the formats, in what is left of
   the budget, which only the second stage's cut acts under.
3. Score (`attributions`), per code c:

       score(c) = mean_{p in F} attr_p(c) - penalty * max_{r in R'} max(attr_r(c), 0)

   F: the forget prompts that still hold the answer; R': for an unconditional cut the retain
   prompts a trial measures (the same subject's, those where a condition holds, every retain
   fact's main prompt), only those where a condition holds for a conditional one (the
   condition spares the others).
4. Greedy, verified, per `Family` (gentlest first, conditional ones only when conditions were
   found): re-score with the cuts so far in place, try the best code, keep it unless it costs
   more than `retain_budget` of retain accuracy (over every prompt, or one relation's alone)
   or any retain prompt about the fact's own subject its answer (the retain prompts: for a
   conditional cut, the same subject's, every other fact's main prompt, and those prompts and
   the neighbours' main prompts in the formats where a condition holds; for an unconditional
   cut, every retain prompt and the neighbours' answered formats of the fact's relation), until
   the answer is gone (not the greedy token and p < `p_threshold`) on every prompt of the fact
   and on all but `slack` of the generated ones (`success`), then go on adding codes until every
   format loses it too (`formats_lost`); a family whose second stage stalls returns the cut it
   reached where its codes took greedy answers from the formats, else its first stage's cut. The
   first family that succeeds with the formats lost is kept; one that succeeds without them is
   the best so far while the next (stronger) families are tried. Then the best result (success,
   formats lost, lowest forget accuracy, highest retain accuracy, fewest codes), with `success`
   False if none succeeded; also when `SelectConfig.max_seconds` runs out.

    selection = select(model, bottleneck, fact, retain, pool, SelectConfig(max_codes=8))
    selection.ablations             # what to install; selection.to_dict() for the plan file
"""

from __future__ import annotations

import logging
import math
import time

import torch
from codecut.codebook import Attachment, Bottleneck, attach
from codecut.probes.antisamples import in_vocabulary, make_antisamples
from codecut.probes.formats import variant_prompts
from codecut.probes.plan import Family, Selection, ablations_of
from codecut.probes.selector.attribution import (
    NEVER,
    Probe,
    attributions,
    probe_facts,
    relation_values,
)
from codecut.probes.selector.cache import (
    Clean,
    Judged,
    RetainCache,
    answer_targets,
    measure,
    reached,
    relation_index,
)
from codecut.probes.selector.conditions import condition_codes
from codecut.probes.selector.config import FAMILIES, SHOTS, ZERO_FAMILIES, SelectConfig, Trial
from codecut.probes.selector.prefix import Prefix
from codecut.probes.selector.retain import in_formats
from tqdm.auto import tqdm

from codecut.core.errors import BadInput
from codecut.core.facts import Fact
from codecut.core.models import Model

log = logging.getLogger(__name__)


def select(
    model: Model,
    bottleneck: Bottleneck,
    fact: Fact,
    retain: list[Fact],
    pool: list[Fact],
    config: SelectConfig | None = None,
    strict: bool = False,
    shared: RetainCache | None = None,
) -> Selection:
    """Choose the codes to cut so that `model` forgets `fact` while keeping `retain`.

    Args:
        model, bottleneck: the host and the bottleneck to cut codes in.
        fact: the association to forget.
        retain: facts that must keep their answers.
        pool: known facts to draw counterfactual answers from.
        config: the search's options (default `SelectConfig()`).
        strict: search with the bottleneck in strict mode (no error term), as the plan will
            run it.
        shared: where the retain prompts' measurements are kept (same model, bottleneck and
            mode); default: the process's (`RetainCache.shared`), so that a plan of many
            facts, and the next request, measure each prompt once.

    Raises BadInput when the fact has no anti-answers or no code can be cut within the retain
    budget.
    """
    config = config or SelectConfig()
    deadline = None if config.max_seconds is None else time.monotonic() + config.max_seconds
    forget, late = _forget_probe(model, fact, pool, config.formats)
    wrong = forget.anti[0]  # the fact's counterfactual answers (the same for every prompt)
    # The neighbours in the formats too (see `in_formats`): where the condition sets must not
    # hold, and what a conditional cut is judged on where one does.
    asked = in_formats(model, fact, retain, pool, config.formats, SHOTS)
    keep = probe_facts(retain + asked, relation_values(pool + retain), fallback=wrong)
    formatted = torch.arange(len(keep.prompts)) >= len(keep.prompts) - len(asked)
    relation = relation_index(retain + asked, first=fact.relation)
    shared = shared or RetainCache.shared(model, bottleneck, strict)  # before attaching
    with attach(model, bottleneck, error_term=not strict) as handle:
        search = _Search(
            model, handle, fact, forget, late, keep, config, deadline, shared, formatted, relation
        )
        families = [
            f
            for f in (FAMILIES if bottleneck.has_stats else ZERO_FAMILIES)
            if search.conditions or not f.conditional
        ]
        best = None
        for family in tqdm(families, desc="selecting codes", leave=False):
            selection = search.family(family)
            log.info("family %s", selection)
            rank = (
                selection.success,
                selection.formats_lost,
                -selection.forget_accuracy,
                selection.retain_accuracy,
                -len(selection.codes),
            )
            if selection.codes and (best is None or rank > best[0]):
                best = (rank, selection)
            done = selection.success and (selection.formats_lost or not search.late.any())
            if done or search.out_of_time(search.step):
                break
    if best is not None:
        return best[1]
    if search.out_of_time():
        log.warning("%r: no code chosen in max_seconds=%s", fact.prompt, config.max_seconds)
        base = search.judged[families[0].conditional].base
        return Selection(families[0], [], [], False, 1.0, base)
    raise BadInput(search.refusal(fact))


def _forget_probe(
    model: Model, fact: Fact, pool: list[Fact], formats: tuple[str, ...] = ()
) -> tuple[Probe, torch.Tensor]:
    """The fact's prompts, the same prompts in the other formats a user will try (`_formats`) and
    the model-checked generated paraphrases, each contrasted with the counterfactual answers.
    `main` marks what must lose the answer: the fact's own prompts and the formats. Also a bool
    per prompt: a format prompt (asked in the search's second stage, where the model answers
    it: `_Search` drops the others)."""
    anti = make_antisamples(model, fact, pool=pool, rationales=False)
    wrong = sorted({a.answer for a in anti if a.kind == "counterfactual"})
    if not wrong:
        raise BadInput(
            f"no anti-answers for {fact.prompt!r}: give a pool of facts of the same relation"
        )
    paraphrases = [a.prompt for a in anti if a.kind == "paraphrase"]
    formats = _formats(model, fact, pool, formats) if formats else []
    prompts = list(dict.fromkeys([*fact.prompts, *formats, *paraphrases]))
    must = {*fact.prompts, *formats}
    main = torch.tensor([p in must for p in prompts])
    late = torch.tensor([p in formats and p not in fact.prompts for p in prompts])
    return Probe(prompts, [fact.answer] * len(prompts), [wrong] * len(prompts), main), late


def _formats(model: Model, fact: Fact, pool: list[Fact], formats: tuple[str, ...]) -> list[str]:
    """The fact's prompts as the attack card asks them (`formats`: e.g. a question, the chat
    template, a few-shot prefix of the pool's facts of its relation, a misleading or a helpful
    context sentence), where they can be built; the search keeps those the model answers. Every
    prompt of the fact, not only the main one: asked of the main prompt alone, 2 of the first
    12 country requests kept the answer in the chat or helpful form of a paraphrase."""
    others = [g for g in pool if (g.subject, g.relation) != (fact.subject, fact.relation)]
    asked = [q for v in formats for q in variant_prompts(model, fact, others, v, SHOTS)]
    return [q for q in dict.fromkeys(asked) if in_vocabulary(model.tokenizer, q)]


class _Search:
    """One fact's greedy search, with the bottleneck attached as `handle`: the condition sets,
    the retain penalties and the retain prompts a cut can reach are found once, on creation;
    `family` then runs the search for one family.

    Every measurement runs only the layers from the hook up (`Prefix`), and a trial re-measures
    only the retain prompts where a cut code fires (at or before the predicting position, and,
    for a conditional cut, where its condition sets fire too): elsewhere the cut changes
    nothing, so their clean answers stand. A cut is measured on the same prompts as before,
    with a small fraction of the model work."""

    def __init__(
        self,
        model: Model,
        handle: Attachment,
        fact: Fact,
        forget: Probe,
        late: torch.Tensor,
        keep: Probe,
        config: SelectConfig,
        deadline: float | None = None,
        shared: RetainCache | None = None,
        formatted: torch.Tensor | None = None,
        relation: torch.Tensor | None = None,
    ):
        """`formatted`: bool per prompt of `keep`, one of other subjects' main prompts in a
        format (`in_formats`): no condition set may hold there either, a conditional cut is
        judged on those where one does, an unconditional cut on those of its relation.
        `relation`: per prompt of `keep`, its fact's relation (`relation_index`, 0 the forget
        fact's own), each held to the budget on its own (`costly`)."""
        self.model, self.handle, self.config = model, handle, config
        self.deadline = deadline
        self.step = 0.0  # seconds the last step of the search (next code and its trial) took
        self.cheapest: tuple[bool, float, int] | None = None  # see `note_costly`
        first = self._ask(forget, late)
        early = self._attribute(first)
        cache = shared or RetainCache()
        if keep.prompts:
            retain = cache.clean(model, handle, keep.prompts, keep.answers)
            fired_keep, fired = retain.first < NEVER, retain.fired
        else:
            retain = None
            fired_keep = fired = torch.zeros(0, handle.bottleneck.n_codes, dtype=torch.bool)
        same = torch.tensor([fact.subject in p for p in keep.prompts], dtype=torch.bool)
        formatted = torch.zeros_like(same) if formatted is None else formatted
        relation = torch.zeros(len(same), dtype=torch.long) if relation is None else relation
        self._condition_sets(first, early, fired_keep[~same])
        rows = self._judging(keep, retain, fired, same, formatted, relation, cache)
        self.clean = self.trial(FAMILIES[0], [], ~self.late, [])  # the first stage, no cut
        # Gone with no cut: the fact's prompts lost the answer to a cut in an earlier bottleneck.
        self.gone_before = self.clean.gone
        self.clean = self.clean._replace(gone=False)
        log.info(
            "forget prompts %d, retain prompts %d (a conditional trial may measure %d), "
            "condition codes %s, for the formats %s",
            len(self.forget.prompts), len(keep.prompts), len(rows), self.conditions, self.more,
        )  # fmt: skip

    def _ask(self, forget: Probe, late: torch.Tensor) -> torch.Tensor:
        """Set the forget prompts the search asks (`forget`, `late`, their `Prefix` and answer
        tokens): the formats are kept where the model answers them (a plan that hides the fact
        from the plain prompt alone is not a plan; measured here, without gradients, not by a
        full forward of their own: 1.2 s of a 10 s request). Returns [P, n] where each code
        first fired in the formats' prompts (NEVER elsewhere, for now), for the second stage's
        condition sets."""
        n = self.handle.bottleneck.n_codes
        self.forget_prefix = Prefix(self.model, self.handle.hook, forget.prompts)
        self.forget_targets = answer_targets(self.model, forget.answers)
        formats = late.nonzero().flatten()
        answered = torch.zeros(len(late), dtype=torch.bool)
        first = torch.full((len(late), n), NEVER, dtype=torch.long)
        sub = self.forget_prefix.rows(formats)
        targets = self.forget_targets[formats]
        _, answered[formats], first[formats], _ = measure(self.handle, sub, targets)
        asked = (~late | answered).nonzero().flatten()
        if len(asked) < len(late):
            forget, late, first = forget.subset(asked.tolist()), late[asked], first[asked]
            self.forget_prefix = self.forget_prefix.rows(asked)
            self.forget_targets = self.forget_targets[asked]
        self.forget, self.late = forget, late  # bool per forget prompt: a format prompt
        return first

    def _attribute(self, first: torch.Tensor) -> torch.Tensor:
        """Attributions (a backward pass) for the first stage's prompts, with no cut in place,
        into `first_scores`, and where each code first fired there into `first`; the formats'
        are first needed in the second stage, with cuts in place. Returns those prompts' rows."""
        early = (~self.late).nonzero().flatten()
        attr = attributions(
            self.model,
            self.handle,
            self.forget.subset(early.tolist()),
            self.forget_prefix.rows(early),
        )
        # The first stage's attributions with no cut, by condition sets (None: everywhere).
        self.first_scores = {None: torch.zeros(len(self.late), self.handle.bottleneck.n_codes)}
        self.first_scores[None][early] = attr.scores
        first[early] = attr.first
        return early

    def _condition_sets(
        self, first: torch.Tensor, early: torch.Tensor, fired_other: torch.Tensor
    ) -> None:
        """The condition sets: `conditions` cover the first stage's prompts; the second stage's
        cut also acts under the sets that cover the formats, in what is left of the budget
        (`more`). The formats' sets are not used in the first stage: there they held in other
        prompts and cost the synthetic world's first stage its cut. Without them the chat and
        few-shot forms of a country's continent, which the first stage's sets do not mark, kept
        the answer under every conditional cut. `fired_other`: where the codes fired in the
        context of other subjects' retain prompts."""
        cover = dict(
            fired_other=fired_other,
            max_rate=self.config.condition_rate,
            top=self.config.condition_candidates,
            top_triples=self.config.condition_triple_candidates,
        )
        last = self.forget_prefix.batch["last"]
        self.conditions = condition_codes(first[early], last[early], **cover)
        self.more: list[list[int]] = []
        if self.conditions and self.late.any():
            self.more = condition_codes(first, last, given=self.conditions, **cover)

    def _judging(
        self,
        keep: Probe,
        retain: Clean | None,
        fired: torch.Tensor,
        same: torch.Tensor,
        formatted: torch.Tensor,
        relation: torch.Tensor,
        cache: RetainCache,
    ) -> list[int]:
        """The retain prompts each kind of cut is judged on (`judged`) and the codes' retain
        penalties (`penalties`); returns the rows a conditional cut is judged on. `fired`: as
        `Clean.fired`, per retain prompt; `formatted`: a neighbour's prompt in a format."""
        n = self.handle.bottleneck.n_codes
        # A conditional cut acts only where its condition holds, so only the retain prompts
        # where it does can suffer from it; an unconditional cut can hurt every retain prompt.
        # A condition can complete at the predicting position itself, so `fired` (up to and
        # including it), not the context alone: judged on context alone, other capitals'
        # paraphrases the demo's cut reached there went unmeasured and lost their answers.
        gated = _holds(self.conditions, fired)
        gated_more = gated | _holds(self.more, fired)
        # The retain prompts a conditional cut is judged on: the same subject's, those where a
        # condition holds (of either stage; the neighbours' formats among them: the card found
        # a plan judged on their plain prompts alone took other capitals' question and chat
        # forms), and the main prompt of every other fact.
        judged = same | gated_more | (keep.main & ~formatted)
        rows = judged.nonzero().flatten().tolist() if keep.prompts else []
        # The penalties come from the same prompts: other subjects' paraphrases are not
        # attributed (a backward pass each).
        attr_r = cache.scores(self.model, self.handle, keep, rows).clamp(min=0) if rows else None
        gated_r = gated[rows]
        self.penalties = {
            True: attr_r[gated_r].amax(0) if gated_r.any() else torch.zeros(n),
            False: attr_r.amax(0) if rows else torch.zeros(n),
        }
        # An unconditional cut is judged on every retain prompt (judged by other subjects'
        # main prompts alone, Rwanda's capital took 34% of the other capitals' paraphrases),
        # and on the answered formats of the fact's relation (without them Spain's clamp took a
        # fifth of the other countries' format answers; with every format, one unconditional
        # search ran past 12 minutes, 2 before). A trial re-measures only those a cut reaches.
        kin = formatted & (relation == 0) & (retain.ok if retain is not None else False)
        every = (~formatted | kin).nonzero().flatten().tolist()
        self.judged = {
            True: Judged.of(retain, same, relation, rows) if rows else Judged.none(n),
            False: Judged.of(retain, same, relation, every) if every else Judged.none(n),
        }
        return rows

    def out_of_time(self, ahead: float = 0.0) -> bool:
        """The deadline has passed, or will have in `ahead` seconds (a step as long as the
        last would run past it: a trial of the formats takes seconds, and checked only between
        trials, a 60 s budget ended at 63 s)."""
        return self.deadline is not None and time.monotonic() + ahead > self.deadline

    def costly(self, family: Family, trial: Trial) -> bool:
        """The cut costs more than `retain_budget` of retain accuracy, over every prompt or
        one relation's alone (`_drop`), or takes the answer of a retain prompt about the fact's
        own subject (the facts a user most expects to stay: a budget over all prompts let 3 of
        6 requests of the fine-tuning comparison take one)."""
        return self._drop(family, trial) > self.config.retain_budget or trial.subject_lost

    def _drop(self, family: Family, trial: Trial) -> float:
        """The larger of the drop over every retain prompt `trial` is judged on and one
        relation's: judged on the mean alone, Spain's plan cut 16 codes at layer 18 with no
        condition and took 2 of the other countries' 49 capital and currency prompts."""
        base = self.judged[family.conditional].base
        return max(base - trial.retain_accuracy, trial.relation_drop)

    def note_costly(self, family: Family, code: int, trial: Trial) -> None:
        """Keep the cheapest code that moved the answer but cost too much, for the error that
        says what the user can do when no family finds a cut (`refusal`)."""
        drop = self._drop(family, trial)
        if self.cheapest is None or (trial.subject_lost, drop) < self.cheapest[:2]:
            self.cheapest = (trial.subject_lost, drop, code)

    def refusal(self, fact: Fact) -> str:
        """Why no cut was found, and what the user can change."""
        budget = self.config.retain_budget
        text = f"no code could be cut for {fact.prompt!r} within the retain budget ({budget:g})"
        if self.cheapest is None and not self.conditions:
            rate = self.config.condition_rate
            return (
                f"{text}: no condition set marks its subject apart from {rate:g} of the other "
                "subjects' prompts (in every format; SelectConfig.condition_rate), and no code "
                "it tried without one moves the answer; try a bottleneck at another layer"
            )
        if self.cheapest is None:
            return f"{text}: no code it tried moves the answer; try a bottleneck at another layer"
        subject_lost, drop, code = self.cheapest
        if subject_lost:
            return (
                f"{text}: every code that moves its answer (the cheapest: code {code}) also "
                "takes the answer of another fact about its subject; try a bottleneck at "
                "another layer, or forget those facts too"
            )
        need = math.ceil(drop * 100) / 100
        return (
            f"{text}: the cheapest code that moves its answer (code {code}) alone costs "
            f"{drop:.3f} of retain accuracy (over all, or one relation's), so any cut costs "
            f"at least that; to let the search try, raise the budget to {need:.2f} or more "
            "(SelectConfig.retain_budget, --retain-budget), or try a bottleneck at another layer"
        )

    def family(self, family: Family) -> Selection:
        """Add the best code while the answer holds, skipping `costly` codes.

        Two stages: first the fact's prompts and paraphrases; once they lose the answer, the
        formats too (`late`), by adding codes from there (asking them from the start cost the
        demo's request its cut, see `FORMATS`). A family whose second stage stalls returns the
        cut it reached if its codes took the greedy answer from some prompts (a format may keep
        p >= `p_threshold` without being answered), else its first stage's cut; either way
        measured on every prompt, the formats included, so that families compare fairly."""
        config = self.config
        chosen: list[int] = []
        tried: list[int] = []
        active = ~self.late  # the forget prompts the current stage asks
        result, idle = self.clean, 0
        first: tuple[list[int], Trial] | None = None  # the first stage's cut, once it succeeds
        sets = self.conditions  # the condition sets a conditional cut acts under
        entered: tuple[list[list[int]], Trial] | None = None  # first's sets and trial, formats in
        if self.gone_before and self.late.any():
            # An earlier bottleneck's cut (see `unlearn`) took the fact's prompts: the formats.
            first, active = ([], result), active | self.late
            sets = self.conditions + self.more
            result = self.trial(family, [], active, sets)
            entered = (sets, result)
        while (
            not result.gone
            and len(chosen) < config.max_codes
            and len(tried) < config.max_trials
            and idle < (config.patience if first is None else config.format_patience)
            and not self.out_of_time(self.step)
        ):
            started = time.monotonic()
            code = self.next_code(family, chosen, result.held & active, tried, sets)
            if code is None:
                break
            tried.append(code)
            trial = self.trial(family, chosen + [code], active, sets)
            self.step = time.monotonic() - started
            log.debug(
                "try code %d: forget %.2f retain %.2f held %d", code,
                trial.forget_accuracy, trial.retain_accuracy, int(trial.held.sum()),
            )  # fmt: skip
            # A code that moves nothing only costs retention later: skip it too. Moved is
            # judged in probability and in log-odds: where the answer is near certain (p 0.998
            # on a world's colour) one code cannot lower p by `min_gain`, and every code was
            # skipped as idle, while their log-odds add up.
            idle_code = (trial.held & active).sum() >= (result.held & active).sum() and (
                trial.p_answer > result.p_answer - config.min_gain
                and trial.log_odds > result.log_odds - config.min_log_odds
            )
            if self.costly(family, trial) or idle_code:
                if not idle_code:
                    self.note_costly(family, code, trial)
                idle += 1
                continue
            chosen, result, idle = chosen + [code], trial, 0
            if result.gone and not active.all():
                first, active = (chosen, result), active | self.late
                sets = self.conditions + self.more
                result = self.trial(family, chosen, active, sets)
                # The formats' sets reach too far: the first stage's alone.
                if self.costly(family, result):
                    sets = self.conditions
                    result = self.trial(family, chosen, active, sets)
                entered = (sets, result)
            if result.gone:
                break
        formats_lost = result.gone and bool(self.late.any() and active.all())
        success = result.gone
        if not result.gone and first is not None and entered is not None:
            success = first[1].gone
            if result.forget_accuracy < entered[1].forget_accuracy:
                log.info(
                    "the formats keep the answer with %s; its codes for them stand (greedy "
                    "accuracy %.2f, %.2f without them)", family, result.forget_accuracy,
                    entered[1].forget_accuracy,
                )  # fmt: skip
            else:
                chosen, (sets, result) = first[0], entered
                log.info(
                    "the formats keep the answer with %s; the first stage's cut stands", family
                )
        return Selection(
            family=family,
            codes=chosen,
            condition_codes=sets if family.conditional else [],
            success=success,
            forget_accuracy=result.forget_accuracy,
            retain_accuracy=result.retain_accuracy,
            formats_lost=formats_lost,
        )

    def reached(self, family: Family, codes: list[int], sets: list[list[int]]) -> torch.Tensor:
        """bool per retain prompt `family` is judged on: a cut of `codes` in it, under the
        condition `sets`, can change its answer (a cut code fires there and, for a conditional
        cut, every code of a set)."""
        cut = ablations_of(family, codes, sets)
        return reached(cut, self.judged[family.conditional].fired)

    def trial(
        self, family: Family, codes: list[int], active: torch.Tensor, sets: list[list[int]]
    ) -> Trial:
        """Measure the `active` forget prompts (the others count as held) and the retain prompts
        the cut reaches, with it (under the condition `sets`) in place."""
        self.handle.ablations[:] = ablations_of(family, codes, sets)
        rows = active.nonzero().flatten()
        p, ok = self.forget_prefix.rows(rows).scores(self.forget_targets[rows])
        judged = self.judged[family.conditional]
        keep_ok = judged.ok.clone()
        reach = self.reached(family, codes, sets).nonzero().flatten()
        if len(reach):
            keep_ok[reach] = judged.prefix.rows(reach).scores(judged.targets[reach])[1]
        self.handle.ablations.clear()
        held = torch.ones_like(active)  # the prompts not asked count as held
        held[rows] = ok | (p >= self.config.p_threshold)
        # Gone: on every prompt of the fact, and on all but `slack` of the generated ones.
        gone = (
            not held[self.forget.main & active].any()
            and held[active].float().mean().item() <= self.config.slack
        )
        retain = keep_ok.float().mean().item() if len(keep_ok) else 1.0
        subject_lost = bool((judged.ok & ~keep_ok & judged.same).any())
        log_odds = p.clamp(1e-6, 1 - 1e-6).logit().mean().item()
        return Trial(
            gone,
            ok.float().mean().item(),
            retain,
            judged.worst_drop(keep_ok),
            held,
            p.mean().item(),
            log_odds,
            subject_lost,
        )

    def next_code(
        self,
        family: Family,
        chosen: list[int],
        held: torch.Tensor,
        exclude: list[int],
        sets: list[list[int]],
    ) -> int | None:
        """The best-scoring code on the forget prompts that still hold the answer, measured
        with the cuts so far in place (what is left to cut changes as codes go); None when no
        code scores above 0."""
        rows = held.nonzero().flatten()
        under = sets if family.conditional else None  # where a cut can act (see `attributions`)
        # The formats' attributions are not measured on creation (the second stage measures
        # them with its cuts in place); a search an earlier cut sent there measures them here.
        # With no cut, the first stage's are measured once per condition sets.
        key = None if under is None else tuple(map(tuple, under))
        if chosen or self.late[rows].any() or key not in self.first_scores:
            self.handle.ablations[:] = ablations_of(family, chosen, sets)
            scores = attributions(
                self.model,
                self.handle,
                self.forget.subset(rows.tolist()),
                self.forget_prefix.rows(rows),
                under,
            ).scores
            self.handle.ablations.clear()
            if not chosen and not self.late[rows].any():
                self.first_scores[key] = torch.zeros_like(self.first_scores[None])
                self.first_scores[key][rows] = scores
        else:
            scores = self.first_scores[key][rows]  # the first stage's, with no cut
        attr = scores.mean(0)
        score = attr - self.config.penalty * self.penalties[family.conditional]
        score[exclude] = -float("inf")
        best = int(score.argmax())
        if score[best] > 0:
            return best
        # Every code left is predicted to cost the retain prompts more than it moves the
        # answer. The prediction is an attribution, the trial a measurement: try the codes
        # that move the answer most, and let the retain budget judge them. Stopping here left
        # a colour of the synthetic world with no code even tried.
        attr[exclude] = -float("inf")
        best = int(attr.argmax())
        return best if attr[best] > 0 else None


def _holds(sets: list[list[int]], fired: torch.Tensor) -> torch.Tensor:
    """bool per prompt: every code of one of `sets` fired (`fired` as `Clean.fired`)."""
    holds = torch.zeros(len(fired), dtype=torch.bool)
    for codes in sets:
        holds |= fired[:, codes].all(1)
    return holds

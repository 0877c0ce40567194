"""The selector's search: the few codes that carry one association, verified by measuring.

For one forget fact, with the bottleneck attached (error term kept, unless in strict mode):

1. Probes. Forget: the fact's prompts, the same prompts in the formats a user will try
   (`SelectConfig.formats`, by default `FORMATS`: question, chat template, few-shot, a helpful
   context sentence) and the generated paraphrases, each kept where the model answers it,
   contrasted with the counterfactual answers (`make_antisamples`). Retain: every prompt
   of the retain facts, contrasted with the other answers of their relation. Below the hook nothing depends on a cut, so each prompt's
   residual stream there is computed once (`Prefix`) and every measurement runs only the
   layers above.
2. Conditions (`condition_codes`): code sets that fire in the forget prompts' context and,
   together, in at most `SelectConfig.condition_rate` of other subjects' retain prompts,
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
   more than `retain_budget` of retain accuracy or any retain prompt about the fact's own
   subject its answer, until the answer is gone (not the greedy token and p <
   `p_threshold`) on every prompt of the fact and on all but `slack` of the generated ones
   (`success`), then go on adding codes until every format loses it too (`formats_lost`); a
   family whose second stage stalls returns its first stage's cut. The first family that
   succeeds with the formats lost is kept; one that succeeds without them is the best so far
   while the next (stronger) families are tried. Then the best result (success, formats lost,
   lowest forget accuracy, highest retain accuracy, fewest codes), with `success` False if
   none succeeded; also when `SelectConfig.max_seconds` runs out.

    selection = select(model, bottleneck, fact, retain, pool, SelectConfig(max_codes=8))
    selection.ablations             # what to install; selection.to_dict() for the plan file
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from codecut.codebook import Ablation, Attachment, Bottleneck, attach
from codecut.probes.antisamples import in_vocabulary, make_antisamples
from codecut.probes.attribution import (
    NEVER,
    Probe,
    attributions,
    fired_codes,
    first_fired,
    probe_facts,
    relation_values,
)
from codecut.probes.conditions import condition_codes
from codecut.probes.memo import kept
from codecut.probes.prefix import Prefix, target_scores
from tqdm.auto import tqdm

from codecut.errors import BadInput
from codecut.facts import Fact
from codecut.models import Model

log = logging.getLogger(__name__)


class Family(NamedTuple):
    """How a cut acts: `Ablation` mode and clamp strength, and whether it is conditional (one
    ablation per condition set) or acts everywhere."""

    mode: str
    c: float
    conditional: bool


# Tried in order, gentlest first.
FAMILIES = (
    Family("clamp", 2.0, True),
    Family("clamp", 4.0, True),
    Family("clamp", 8.0, True),
    Family("clamp", 4.0, False),
)
# The formats of the attack card's format probe that the forget probe can ask the fact's
# prompts in, and how many facts the few-shot prefix shows (the attack card's default).
ALL_FORMATS = ("question", "chat", "few-shot", "misleading", "helpful")
# The formats the forget probe asks by default, in the search's second stage. Asked from the
# start, as must-lose prompts like the fact's own, they cost the demo's request (France ->
# Paris) its cut: no family succeeded in 3.4 minutes, its paraphrases kept the answer.
# "misleading" is left to the attack card.
FORMATS = ("question", "chat", "few-shot", "helpful")
SHOTS = 3

# The command line's time budget per fact (`SelectConfig.max_seconds`).
CLI_MAX_SECONDS = 60.0

# For bottlenecks without the codes' typical activations (e.g. a foreign sae-lens SAE): clamp
# needs them.
ZERO_FAMILIES = (Family("zero", 1.0, True), Family("zero", 1.0, False))


@dataclass(frozen=True)
class SelectConfig:
    """The selector's options; the defaults are the ones measured in docs and benchmarks.

    Attributes:
        max_codes: most codes one cut may hold.
        max_trials: most candidate codes tried per family.
        retain_budget: largest drop of retain accuracy (during selection) a code may cost.
        p_threshold: the answer counts as gone below this probability (and not greedy).
        slack: fraction of the generated paraphrases allowed to keep the answer (the fact's own
            prompts may keep none).
        penalty: the weight of the retain attribution in a code's score.
        condition_rate: the largest fraction of other subjects' retain prompts the condition
            sets may hold in, all sets together.
        condition_candidates: codes (those reaching the most positions) that condition sets
            are built from as singles and pairs. Keep it wide: a subject named late in the
            prompt ("The official language of Italy is") has codes that reach few positions,
            and with 100 candidates they were crowded out by generic early codes.
        condition_triple_candidates: codes combined three at a time.
        patience: a family ends after this many candidate codes in a row were skipped (over
            the retain budget, or moving nothing). Stalled families were most of a request's
            time: on the demo's request the gentlest family held the answer on the same 3
            forget prompts through its last 11 trials. 4 was too few there: the clamp-8
            family then stopped one code short of success (it succeeds with 8).
        format_patience: `patience` in the search's second stage (the formats), where a trial
            costs three times as much (long few-shot prompts): on the demo's request its
            second stage stalled at 5 format prompts for 12 trials, 20 s.
        min_gain: a kept code must take a forget prompt off the answer or lower the answer's
            mean probability by this much, or its mean log-odds by `min_log_odds`.
        min_log_odds: see `min_gain` (nats).
        formats: the formats of the fact's prompts (`ALL_FORMATS`) that must lose the
            answer too, once the fact's prompts and paraphrases have (`Selection.formats_lost`
            says whether they did); () asks none.
        max_seconds: the time budget per fact (None: no limit); `unlearn` counts its own setup
            in the first fact's. The search does not start a step that would run past it, going
            by the last step's time; then the best cut found so far is returned, with `success`
            False unless it already succeeded. The measuring of the plan's results comes after
            it (under a second on the country facts). None by
            default so that a plan depends on its inputs alone, not on the machine's speed;
            `codecut unlearn` sets `CLI_MAX_SECONDS`.
    """

    max_codes: int = 16
    max_trials: int = 40
    retain_budget: float = 0.02
    p_threshold: float = 0.05
    slack: float = 0.1
    penalty: float = 1.0
    condition_rate: float = 0.05
    condition_candidates: int = 1000
    condition_triple_candidates: int = 64
    formats: tuple[str, ...] = FORMATS
    max_seconds: float | None = None
    patience: int = 8
    format_patience: int = 4
    min_gain: float = 0.005
    min_log_odds: float = 0.1

    def __post_init__(self) -> None:
        """Refuse options the search cannot use, naming the field, when the config is made."""
        counts = ("max_codes", "max_trials", "patience", "format_patience")
        shares = ("retain_budget", "p_threshold", "slack", "condition_rate")
        amounts = ("penalty", "min_gain", "min_log_odds")
        for name in counts:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInput(f"SelectConfig.{name} must be a whole number >= 1, got {value!r}")
        for name in ("condition_candidates", "condition_triple_candidates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadInput(f"SelectConfig.{name} must be a whole number >= 0, got {value!r}")
        for name in shares:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise BadInput(f"SelectConfig.{name} must be a share in [0, 1], got {value!r}")
        for name in amounts:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
                raise BadInput(f"SelectConfig.{name} must be a finite number >= 0, got {value!r}")
        unknown = set(self.formats) - set(ALL_FORMATS)
        if unknown:
            raise BadInput(
                f"SelectConfig.formats: unknown {sorted(unknown)}; known: {', '.join(ALL_FORMATS)}"
            )
        seconds = self.max_seconds
        if seconds is not None and not (
            isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0
        ):
            raise BadInput(
                f"SelectConfig.max_seconds must be None or seconds >= 0, got {seconds!r}"
            )


@dataclass(frozen=True)
class Selection:
    """What the search chose for one fact.

    Attributes:
        family: the cut's mode, clamp strength and whether it is conditional.
        codes: the codes cut.
        condition_codes: the condition sets the cut acts under (empty for an unconditional cut).
        success: the answer is gone from the forget prompts (see the module docstring).
        forget_accuracy: greedy accuracy on the forget prompts with the cut, during selection.
        retain_accuracy: greedy accuracy on the retain prompts the cut can reach, with it.
        formats_lost: the formats asked (`SelectConfig.formats`, where the model answers them)
            lose the answer too; False where only the fact's prompts and paraphrases do, or none
            was asked.
    """

    family: Family
    codes: list[int]
    condition_codes: list[list[int]]
    success: bool
    forget_accuracy: float
    retain_accuracy: float
    formats_lost: bool = False

    @property
    def ablations(self) -> list[Ablation]:
        """The cut as ablations: one per condition set, or one acting everywhere."""
        return _ablations(self.family, self.codes, self.condition_codes)

    def to_dict(self) -> dict[str, Any]:
        """The plan file's "selection" object (keys as plan files have always had them)."""
        return {
            **self.family._asdict(),
            "codes": self.codes,
            "success": self.success,
            "forget_accuracy": self.forget_accuracy,
            "retain_accuracy": self.retain_accuracy,
            "condition_codes": self.condition_codes,
            "formats_lost": self.formats_lost,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selection:
        return cls(
            family=Family(d["mode"], d["c"], d["conditional"]),
            codes=d["codes"],
            condition_codes=d["condition_codes"],
            success=d["success"],
            forget_accuracy=d["forget_accuracy"],
            retain_accuracy=d["retain_accuracy"],
            formats_lost=d.get("formats_lost", False),  # plan files before the key: not asked
        )


class Trial(NamedTuple):
    """What one set of cuts did during the search."""

    gone: bool  # the answer is gone from the forget prompts (see `SelectConfig.slack`)
    forget_accuracy: float  # greedy accuracy on the forget prompts
    retain_accuracy: float  # greedy accuracy on the retain prompts the cut can reach
    held: torch.Tensor  # bool per forget prompt: still answered, or p >= p_threshold
    p_answer: float  # the answer's mean probability over the forget prompts
    log_odds: float  # the answer's mean log-odds over them: it moves where p is saturated
    subject_lost: bool  # a retain prompt about the fact's subject lost its answer


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
    keep = probe_facts(retain, relation_values(pool + retain), fallback=wrong)
    shared = shared or RetainCache.shared(model, bottleneck, strict)  # before attaching
    with attach(model, bottleneck, error_term=not strict) as handle:
        search = _Search(model, handle, fact, forget, late, keep, config, deadline, shared)
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
    # Imported here, not at the top: the attack suite imports the plan, which imports this module.
    from codecut.probes.attacks.format import variant_prompts

    others = [g for g in pool if (g.subject, g.relation) != (fact.subject, fact.relation)]
    asked = [q for v in formats for q in variant_prompts(model, fact, others, v, SHOTS)]
    return [q for q in dict.fromkeys(asked) if in_vocabulary(model.tokenizer, q)]


def _ablations(family: Family, codes: list[int], conditions: list[list[int]]) -> list[Ablation]:
    if not codes:
        return []
    if family.conditional:
        return [Ablation(codes, mode=family.mode, c=family.c, when=when) for when in conditions]
    return [Ablation(codes, mode=family.mode, c=family.c)]


class Clean(NamedTuple):
    """Retain prompts measured with the bottleneck attached and no cut in place."""

    prefix: Prefix  # the prompts with their residual stream below the hook
    targets: torch.Tensor  # [P] each prompt's answer token
    p: torch.Tensor  # [P] the answer's probability
    ok: torch.Tensor  # [P] bool: the answer is the greedy next token
    first: torch.Tensor  # [P, n] first context position where each code fired (NEVER: none)
    fired: torch.Tensor  # [P, n] bool: the code fired at or before the predicting position


class RetainCache:
    """The retain prompts measured with no cut in place, kept for the next search and for the
    plan's results: they depend on the prompts, the model and the attached bottleneck, not on
    the fact. `shared` keeps one per model, bottleneck and mode for the life of the process
    (`memo.kept`), so that a plan of many facts, and the next request, measure a prompt once.

    Every prompt is run once without gradients (`clean`: answers and the codes that fire);
    attributions, which need a backward pass, only for the prompts a search asks for
    (`scores`), each once. A country relation's 352 retain prompts took 22 s with gradients."""

    # Prompts kept at most (about 70 kB each with the shipped bottleneck); past it, the
    # cache starts again.
    MAX_ROWS = 8192

    def __init__(
        self, parent: RetainCache | None = None, dirty: frozenset[tuple[str, str]] = frozenset()
    ) -> None:
        self._rows: dict[tuple[str, str], _Row] = {}
        self._scores: dict[tuple, torch.Tensor] = {}
        self._parent, self._dirty = parent, dirty

    def after_cut(self, dirty: set[tuple[str, str]]) -> RetainCache:
        """This bottleneck's cache with a cut in another bottleneck in place (`unlearn`'s later
        bottlenecks) that reaches the (prompt, answer) pairs `dirty`: those are measured anew
        and kept apart; every other prompt's measurement is this cache's (the cut cannot change
        it: its codes do not fire there up to the predicting position), and what is measured of
        them goes here too, for the next request."""
        return RetainCache(self, frozenset(dirty))

    def _home(self, key: tuple[str, str]) -> RetainCache:
        """The cache that holds the measurement of `key` (prompt, answer)."""
        if self._parent is not None and key not in self._dirty:
            return self._parent
        return self

    @staticmethod
    def shared(model: Model, bottleneck: Bottleneck, strict: bool) -> RetainCache:
        """The process's cache for `model` and `bottleneck` at its hook, in strict mode or not;
        looked up before the search attaches the bottleneck (an attachment is a new hook)."""
        return kept(model, ("retain", bottleneck.hook, strict), RetainCache, bottleneck)

    def missing(self, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (prompt, answer) pairs of `keys` not measured yet."""
        return [k for k in keys if k not in self._home(k)._rows]

    def get(self, prompts: list[str], answers: list[str]) -> Clean | None:
        """What `clean` measured for these prompts, if it measured all of them."""
        keys = list(zip(prompts, answers))
        if not keys or any(k not in self._home(k)._rows for k in keys):
            return None
        rows = [self._home(k)._rows[k] for k in keys]
        return Clean(
            Prefix.stack([r.prefix for r in rows]),
            torch.tensor([r.target for r in rows], dtype=torch.long),
            torch.tensor([r.p for r in rows]),
            torch.tensor([r.ok for r in rows], dtype=torch.bool),
            torch.stack([r.first for r in rows]),
            torch.stack([r.fired for r in rows]),
        )

    def clean(
        self, model: Model, handle: Attachment, prompts: list[str], answers: list[str]
    ) -> Clean:
        """The prompts' answers and firing codes, each prompt measured on its first request."""
        keys = list(dict.fromkeys(zip(prompts, answers)))
        todo = [k for k in keys if k not in self._home(k)._rows]
        caches = [self] if self._parent is None else [self, self._parent]
        if sum(len(c._rows) for c in caches) + len(todo) > self.MAX_ROWS:  # start again
            for cache in caches:
                cache._rows.clear()
                cache._scores.clear()
            todo = keys
        if todo:
            prefix = Prefix(model, handle.hook, [q for q, _ in todo])
            targets = _targets(model, [a for _, a in todo])
            p, ok, first, fired = _measure(handle, prefix, targets)
            first = first.int()  # NEVER fits int32: 70 kB a row, not 100
            for i, key in enumerate(todo):
                self._home(key)._rows[key] = _Row(
                    prefix.rows([i]), int(targets[i]), p[i].item(), bool(ok[i]), first[i], fired[i]
                )
        return self.get(prompts, answers)

    def scores(
        self, model: Model, handle: Attachment, keep: Probe, rows: list[int]
    ) -> torch.Tensor:
        """[len(rows), n] the attributions of `keep`'s prompts at `rows` (see `attributions`),
        computed for those not asked before."""
        if not rows:
            return torch.zeros(0, handle.bottleneck.n_codes)
        keys = {i: (keep.prompts[i], keep.answers[i], tuple(keep.anti[i])) for i in rows}
        todo = [i for i in rows if keys[i] not in self._home(keys[i][:2])._scores]
        if todo:
            clean = self.clean(
                model, handle, [keep.prompts[i] for i in todo], [keep.answers[i] for i in todo]
            )
            new = attributions(model, handle, keep.subset(todo), clean.prefix).scores
            for i, row in zip(todo, new):
                self._home(keys[i][:2])._scores[keys[i]] = row
        return torch.stack([self._home(keys[i][:2])._scores[keys[i]] for i in rows])


class _Row(NamedTuple):
    """One retain prompt's `Clean` measurement."""

    prefix: Prefix  # the prompt alone, cut to its width
    target: int
    p: float
    ok: bool
    first: torch.Tensor  # [n] int32
    fired: torch.Tensor  # [n] bool


def reached(ablations: list[Ablation], fired: torch.Tensor) -> torch.Tensor:
    """bool per prompt: one of `ablations` can change its answer (a cut code fires at or before
    its predicting position, and every code of the ablation's `when` set does too); `fired`
    as `Clean.fired`. Elsewhere a cut leaves the prompt's answer as it was."""
    reach = torch.zeros(len(fired), dtype=torch.bool)
    for a in ablations:
        reach |= fired[:, a.codes].any(1) & fired[:, a.when].all(1)
    return reach


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
    ):
        self.model, self.handle, self.config = model, handle, config
        self.deadline = deadline
        self.step = 0.0  # seconds the last step of the search (next code and its trial) took
        self.cheapest: tuple[bool, float, int] | None = None  # see `note_costly`
        n = handle.bottleneck.n_codes
        self.forget_prefix = Prefix(model, handle.hook, forget.prompts)
        self.forget_targets = _targets(model, forget.answers)
        # The formats, run without gradients: kept where the model answers them (a plan that
        # hides the fact from the plain prompt alone is not a plan; measured here, not by a
        # full forward of their own: 1.2 s of a 10 s request), with where each code first
        # fired, for the second stage's condition sets.
        formats = late.nonzero().flatten()
        answered = torch.zeros(len(late), dtype=torch.bool)
        first = torch.full((len(late), n), NEVER, dtype=torch.long)
        sub = self.forget_prefix.rows(formats)
        _, answered[formats], first[formats], _ = _measure(
            handle, sub, self.forget_targets[formats]
        )
        asked = (~late | answered).nonzero().flatten()
        if len(asked) < len(late):
            forget, late, first = forget.subset(asked.tolist()), late[asked], first[asked]
            self.forget_prefix = self.forget_prefix.rows(asked)
            self.forget_targets = self.forget_targets[asked]
        self.forget, self.late = forget, late  # bool per forget prompt: a format prompt
        # Attributions (a backward pass) for the first stage's prompts, with no cut in place;
        # the formats' are first needed in the second stage, with cuts in place.
        early = (~late).nonzero().flatten()
        attr = attributions(
            model, handle, forget.subset(early.tolist()), self.forget_prefix.rows(early)
        )
        self.forget_scores = torch.zeros(len(late), n)
        self.forget_scores[early] = attr.scores
        first[early] = attr.first
        formats = late.nonzero().flatten()
        cache = shared or RetainCache()
        if keep.prompts:
            retain = cache.clean(model, handle, keep.prompts, keep.answers)
            fired_keep, fired = retain.first < NEVER, retain.fired
        else:
            fired_keep = fired = torch.zeros(0, n, dtype=torch.bool)
        same = torch.tensor([fact.subject in p for p in keep.prompts], dtype=torch.bool)
        # The condition sets cover the first stage's prompts; the second stage's cut also acts
        # under the sets that cover the formats, in what is left of the budget (`more`). The
        # formats' sets are not used in the first stage: there they held in other prompts and
        # cost the synthetic world's first stage its cut. Without them the chat and few-shot
        # forms of a country's continent, which the first stage's sets do not mark, kept the
        # answer under every conditional cut.
        cover = dict(
            fired_other=fired_keep[~same],
            max_rate=config.condition_rate,
            top=config.condition_candidates,
            top_triples=config.condition_triple_candidates,
        )
        last = self.forget_prefix.batch["last"]
        self.conditions = condition_codes(first[early], last[early], **cover)
        self.sets = self.conditions  # the sets a conditional cut acts under (`family` sets it)
        self.more: list[list[int]] = []
        if self.conditions and len(formats):
            self.more = condition_codes(first, last, given=self.conditions, **cover)
        log.info(
            "forget prompts %d, retain prompts %d, condition codes %s, for the formats %s",
            len(forget.prompts), len(keep.prompts), self.conditions, self.more,
        )  # fmt: skip
        # A conditional cut acts only where its condition holds, so only the retain prompts
        # where it does can suffer from it; an unconditional cut can hurt every retain prompt.
        # A condition can complete at the predicting position itself, so `fired` (up to and
        # including it), not the context alone: judged on context alone, other capitals'
        # paraphrases the demo's cut reached there went unmeasured and lost their answers.
        gated = _holds(self.conditions, fired)
        gated_more = gated | _holds(self.more, fired)
        # The retain prompts a conditional cut is judged on: the same subject's, those where a
        # condition holds (of either stage), and the main prompt of every other fact.
        rows = (same | gated_more | keep.main).nonzero().flatten().tolist() if keep.prompts else []
        # The penalties come from the same prompts: other subjects' paraphrases are not
        # attributed (a backward pass each).
        attr_r = cache.scores(model, handle, keep, rows).clamp(min=0) if rows else None
        gated_r = gated[rows]
        self.penalties = {
            True: attr_r[gated_r].amax(0) if gated_r.any() else torch.zeros(n),
            False: attr_r.amax(0) if rows else torch.zeros(n),
        }
        # An unconditional cut is judged on every retain prompt: it reaches other subjects'
        # paraphrases, and judged by their main prompts alone, Rwanda's capital took 34% of the
        # other capitals' paraphrases with it. A trial re-measures only those a cut reaches.
        every = list(range(len(keep.prompts)))
        self.judged = {
            True: _Judged.of(retain, same, rows) if rows else _Judged.none(n),
            False: _Judged.of(retain, same, every) if every else _Judged.none(n),
        }
        self.clean = self.trial(FAMILIES[0], [], ~late)  # the first stage, no cut
        # Gone with no cut: the fact's prompts lost the answer to a cut in an earlier bottleneck.
        self.gone_before = self.clean.gone
        self.clean = self.clean._replace(gone=False)
        log.info("retain prompts a conditional trial may measure: %d", len(rows))

    def out_of_time(self, ahead: float = 0.0) -> bool:
        """The deadline has passed, or will have in `ahead` seconds (a step as long as the
        last would run past it: a trial of the formats takes seconds, and checked only between
        trials, a 60 s budget ended at 63 s)."""
        return self.deadline is not None and time.monotonic() + ahead > self.deadline

    def costly(self, family: Family, trial: Trial) -> bool:
        """The cut costs more than `retain_budget` of retain accuracy, or takes the answer of a
        retain prompt about the fact's own subject (the facts a user most expects to stay: a
        budget over all prompts let 3 of 6 requests of the fine-tuning comparison take one)."""
        base = self.judged[family.conditional].base
        drop = trial.retain_accuracy < base - self.config.retain_budget
        return drop or trial.subject_lost

    def note_costly(self, family: Family, code: int, trial: Trial) -> None:
        """Keep the cheapest code that moved the answer but cost too much, for the error that
        says what the user can do when no family finds a cut (`refusal`)."""
        drop = self.judged[family.conditional].base - trial.retain_accuracy
        if self.cheapest is None or (trial.subject_lost, drop) < self.cheapest[:2]:
            self.cheapest = (trial.subject_lost, drop, code)

    def refusal(self, fact: Fact) -> str:
        """Why no cut was found, and what the user can change."""
        budget = self.config.retain_budget
        text = f"no code could be cut for {fact.prompt!r} within the retain budget ({budget:g})"
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
            f"{drop:.3f} of retain accuracy, so any cut costs at least that; to let the search "
            f"try, raise the budget to {need:.2f} or more (SelectConfig.retain_budget, "
            "--retain-budget), or try a bottleneck at another layer"
        )

    def family(self, family: Family) -> Selection:
        """Add the best code while the answer holds, skipping `costly` codes.

        Two stages: first the fact's prompts and paraphrases; once they lose the answer, the
        formats too (`late`), by adding codes from there. A family whose second stage stalls
        returns its first stage's cut: the formats are what the most codes are needed for, and
        asking them from the start cost the demo's request its cut (see `FORMATS`)."""
        config = self.config
        chosen: list[int] = []
        tried: list[int] = []
        active = ~self.late  # the forget prompts the current stage asks
        result, idle = self.clean, 0
        first: tuple[list[int], Trial] | None = None  # the first stage's cut, once it succeeds
        self.sets = self.conditions
        if self.gone_before and self.late.any():
            # An earlier bottleneck's cut (see `unlearn`) took the fact's prompts: the formats.
            first, active = ([], result), active | self.late
            self.sets = self.conditions + self.more
            result = self.trial(family, [], active)
        while (
            not result.gone
            and len(chosen) < config.max_codes
            and len(tried) < config.max_trials
            and idle < (config.patience if first is None else config.format_patience)
            and not self.out_of_time(self.step)
        ):
            started = time.monotonic()
            code = self.next_code(family, chosen, result.held & active, tried)
            if code is None:
                break
            tried.append(code)
            trial = self.trial(family, chosen + [code], active)
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
                self.sets = self.conditions + self.more
                result = self.trial(family, chosen, active)
                # The formats' sets reach too far: the first stage's alone.
                if self.costly(family, result):
                    self.sets = self.conditions
                    result = self.trial(family, chosen, active)
            if result.gone:
                break
        formats_lost = result.gone and bool(self.late.any() and active.all())
        if not result.gone and first is not None:
            (chosen, result), self.sets = first, self.conditions
            log.info("the formats keep the answer with %s; the first stage's cut stands", family)
        return Selection(
            family=family,
            codes=chosen,
            condition_codes=self.sets if family.conditional else [],
            success=result.gone,
            forget_accuracy=result.forget_accuracy,
            retain_accuracy=result.retain_accuracy,
            formats_lost=formats_lost,
        )

    def ablations(self, family: Family, codes: list[int]) -> list[Ablation]:
        return _ablations(family, codes, self.sets)

    def reached(self, family: Family, codes: list[int]) -> torch.Tensor:
        """bool per retain prompt `family` is judged on: a cut of `codes` in it can change its
        answer (a cut code fires there and, for a conditional cut, every code of a set)."""
        return reached(self.ablations(family, codes), self.judged[family.conditional].fired)

    def trial(self, family: Family, codes: list[int], active: torch.Tensor) -> Trial:
        """Measure the `active` forget prompts (the others count as held) and the retain prompts
        the cut reaches, with it in place."""
        self.handle.ablations[:] = self.ablations(family, codes)
        rows = active.nonzero().flatten()
        p, ok = self.forget_prefix.rows(rows).scores(self.forget_targets[rows])
        judged = self.judged[family.conditional]
        keep_ok = judged.ok.clone()
        reach = self.reached(family, codes).nonzero().flatten()
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
            gone, ok.float().mean().item(), retain, held, p.mean().item(), log_odds, subject_lost
        )

    def next_code(
        self, family: Family, chosen: list[int], held: torch.Tensor, exclude: list[int]
    ) -> int | None:
        """The best-scoring code on the forget prompts that still hold the answer, measured
        with the cuts so far in place (what is left to cut changes as codes go); None when no
        code scores above 0."""
        rows = held.nonzero().flatten()
        # The formats' attributions are not measured on creation (the second stage measures
        # them with its cuts in place); a search an earlier cut sent there measures them here.
        if chosen or self.late[rows].any():
            self.handle.ablations[:] = self.ablations(family, chosen)
            scores = attributions(
                self.model,
                self.handle,
                self.forget.subset(rows.tolist()),
                self.forget_prefix.rows(rows),
            ).scores
            self.handle.ablations.clear()
        else:
            scores = self.forget_scores[rows]  # the first stage's, with no cut: from creation
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


class _Judged(NamedTuple):
    """The retain prompts a family's trials judge a cut on, measured with no cut in place."""

    prefix: Prefix | None  # their residual stream below the hook (None: no prompt)
    targets: torch.Tensor  # [R] each one's answer token
    fired: torch.Tensor  # [R, n] as `Clean.fired`
    same: torch.Tensor  # [R] bool: about the forget fact's subject
    ok: torch.Tensor  # [R] bool: answered
    base: float  # their accuracy

    @classmethod
    def of(cls, clean: Clean, same: torch.Tensor, rows: list[int]) -> _Judged:
        ok = clean.ok[rows]
        base = ok.float().mean().item()
        return cls(
            clean.prefix.rows(rows), clean.targets[rows], clean.fired[rows], same[rows], ok, base
        )

    @classmethod
    def none(cls, n: int) -> _Judged:
        empty = torch.zeros(0, dtype=torch.bool)
        return cls(
            None,
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, n, dtype=torch.bool),
            empty,
            empty,
            1.0,
        )


def _measure(
    handle: Attachment, prefix: Prefix, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`prefix`'s prompts run without gradients, by groups of similar length, with whatever cut
    `handle` holds: per prompt, the target's p, whether it is the greedy next token, where each
    code first fired (`first_fired`) and whether it fired up to the predicting position."""
    n, P = handle.bottleneck.n_codes, len(targets)
    p, ok = torch.zeros(P), torch.zeros(P, dtype=torch.bool)
    first = torch.full((P, n), NEVER, dtype=torch.long)
    fired = torch.zeros(P, n, dtype=torch.bool)
    for rows, sub in prefix.groups():
        with torch.no_grad():
            p[rows], ok[rows] = target_scores(sub.batch_logits(), targets[rows])
        last = sub.batch["last"]
        first[rows], fired[rows] = first_fired(handle, last), fired_codes(handle, last)
    return p, ok, first, fired


def _holds(sets: list[list[int]], fired: torch.Tensor) -> torch.Tensor:
    """bool per prompt: every code of one of `sets` fired (`fired` as `Clean.fired`)."""
    holds = torch.zeros(len(fired), dtype=torch.bool)
    for codes in sets:
        holds |= fired[:, codes].all(1)
    return holds


def _targets(model: Model, answers: list[str]) -> torch.Tensor:
    """Each answer's token (the first of " " + answer)."""
    return torch.tensor([model.answer_token(a) for a in answers], dtype=torch.long)

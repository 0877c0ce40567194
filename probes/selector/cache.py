"""The retain prompts' measurements, kept across requests: a prompt measured once with no cut
(its answer, which codes fired where, its residual stream below the hook) serves every search
of the process (`RetainCache`, kept by `memo.kept`); those a search judges a cut on
(`Judged`); and which prompts a cut can reach (`reached`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from codecut.codebook import Ablation, Attachment, Bottleneck
from codecut.probes.selector.attribution import NEVER, Probe, attributions, fired_codes, first_fired
from codecut.probes.selector.memo import kept
from codecut.probes.selector.prefix import Prefix, target_scores

from codecut.core.facts import Fact
from codecut.core.models import Model


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
            targets = answer_targets(model, [a for _, a in todo])
            p, ok, first, fired = measure(handle, prefix, targets)
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


class Judged(NamedTuple):
    """The retain prompts a family's trials judge a cut on, measured with no cut in place."""

    prefix: Prefix | None  # their residual stream below the hook (None: no prompt)
    targets: torch.Tensor  # [R] each one's answer token
    fired: torch.Tensor  # [R, n] as `Clean.fired`
    same: torch.Tensor  # [R] bool: about the forget fact's subject
    relation: torch.Tensor  # [R] long: which relation each one asks (an index)
    ok: torch.Tensor  # [R] bool: answered
    base: float  # their accuracy

    @classmethod
    def of(
        cls, clean: Clean, same: torch.Tensor, relation: torch.Tensor, rows: list[int]
    ) -> Judged:
        ok = clean.ok[rows]
        base = ok.float().mean().item()
        return cls(
            clean.prefix.rows(rows),
            clean.targets[rows],
            clean.fired[rows],
            same[rows],
            relation[rows],
            ok,
            base,
        )

    def worst_drop(self, ok: torch.Tensor) -> float:
        """The largest drop of one relation's accuracy from `self.ok` to `ok` (per prompt, as
        measured with a cut): a mean over every prompt hides a cut that takes one relation's
        few prompts among many of others."""
        if not len(ok):
            return 0.0
        n = torch.bincount(self.relation)
        lost = torch.bincount(self.relation, self.ok.float()) - torch.bincount(
            self.relation, ok.float()
        )
        return (lost[n > 0] / n[n > 0]).max().item()

    @classmethod
    def none(cls, n: int) -> Judged:
        empty = torch.zeros(0, dtype=torch.bool)
        none = torch.zeros(0, dtype=torch.long)
        return cls(None, none, torch.zeros(0, n, dtype=torch.bool), empty, none, empty, 1.0)


def relation_index(facts: list[Fact], first: str) -> torch.Tensor:
    """Per prompt of `facts`, laid out as `probe_facts` lays them, the index of its fact's
    relation: 0 for `first` (the forget fact's), the others in order of first sight
    (`Judged.relation`)."""
    index = {first: 0}
    rows = [index.setdefault(f.relation, len(index)) for f in facts for _ in f.prompts]
    return torch.tensor(rows, dtype=torch.long)


def reached(ablations: list[Ablation], fired: torch.Tensor) -> torch.Tensor:
    """bool per prompt: one of `ablations` can change its answer (a cut code fires at or before
    its predicting position, and every code of the ablation's `when` set does too); `fired`
    as `Clean.fired`. Elsewhere a cut leaves the prompt's answer as it was."""
    reach = torch.zeros(len(fired), dtype=torch.bool)
    for a in ablations:
        reach |= fired[:, a.codes].any(1) & fired[:, a.when].all(1)
    return reach


def measure(
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


def answer_targets(model: Model, answers: list[str]) -> torch.Tensor:
    """Each answer's token (the first of " " + answer)."""
    return torch.tensor([model.answer_token(a) for a in answers], dtype=torch.long)

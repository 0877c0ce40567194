"""Condition sets: codes that mark a forget fact's subject, so a cut acts only where it shows up.

A cut under a condition is `Ablation(codes, when=set)`: the cut codes are suppressed only at
positions where every code of the set has fired earlier in the same sequence. The sets found for
one fact are an OR (one ablation each), so the cut acts in every forget prompt and, as far as
the sets allow, nowhere else: this is what makes the cut an association (this subject's colour)
rather than an entity (everything about the subject) or a relation (every subject's colour).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from codecut.probes.selector.attribution import NEVER


def condition_codes(
    first: torch.Tensor,
    last: torch.Tensor,
    fired_other: torch.Tensor,
    *,
    max_rate: float,
    top: int,
    top_triples: int,
    given: Sequence[list[int]] = (),
) -> list[list[int]]:
    """Code sets that mark the association in the forget prompts.

    Each set (one code, or an AND of two or three) fires in the context of some forget prompts.
    The cut acts wherever any chosen set holds, so the sets *together* may hold in at most
    `max_rate` of the other subjects' retain prompts (a bound on each set alone let five sets
    reach 5% each, and the cut then took other subjects' answers of the same relation with it).
    The same subject's other facts are not counted: a subject code is the natural condition, and
    what the cut costs them is scored and verified by the search.

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
        max_rate: the largest fraction of `fired_other`'s prompts the sets may hold in, together.
        top: candidates (by positions reached) paired at each step.
        top_triples: candidates combined three at a time.
        given: sets chosen before (for some of the prompts): the cover goes on from them, in
            what they left of the budget, and returns only the sets it adds.
    """
    budget = int(max_rate * len(fired_other))  # other prompts the sets may hold in, together
    covered = torch.zeros(len(first), dtype=torch.bool)
    reached = torch.zeros(len(fired_other), dtype=torch.bool)  # other prompts a set holds in
    for codes in given:
        covered |= (first[:, codes] < NEVER).all(1)
        reached |= fired_other[:, codes].all(1)
    chosen: list[list[int]] = []
    while not covered.all():
        f, end = first[~covered], last[~covered]
        span = (end[:, None] - f + 1).clamp(min=0)  # positions a cut under each single code reaches
        other = fired_other[~reached].float()
        spare = budget - int(reached.sum())
        order = span.sum(0).argsort(descending=True)
        found = [
            _best_set(f, end, other, spare, order[:m], triples)
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


def _best_set(
    f: torch.Tensor,
    end: torch.Tensor,
    other: torch.Tensor,
    spare: int,
    cands: torch.Tensor,
    triples: bool,
) -> tuple[list[int], int, int] | None:
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

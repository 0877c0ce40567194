"""Condition sets on hand-made firing patterns: the cover, its shared budget, and going on from
sets chosen before (the selector's second stage covers the formats so)."""

import torch
from codecut.probes.selector.attribution import NEVER
from codecut.probes.selector.conditions import condition_codes

N = 8  # codes
OTHER = 40  # other subjects' retain prompts: a budget of int(0.05 * 40) = 2 of them


def firing(rows: list[list[int]], length: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, last) for prompts in which each listed code fires at position 1."""
    first = torch.full((len(rows), N), NEVER, dtype=torch.long)
    for i, codes in enumerate(rows):
        first[i, codes] = 1
    return first, torch.full((len(rows),), length - 1)


def others(leaks: dict[int, list[int]]) -> torch.Tensor:
    """[OTHER, N] bool: code c fires in the other prompts leaks[c]."""
    fired = torch.zeros(OTHER, N, dtype=torch.bool)
    for code, rows in leaks.items():
        fired[rows, code] = True
    return fired


def cover(first, last, fired_other, given=()):
    return condition_codes(
        first, last, fired_other, max_rate=0.05, top=N, top_triples=N, given=given
    )


def test_the_cover_marks_every_prompt_with_the_set_that_leaks_least():
    first, last = firing([[1, 2], [1, 3]])
    assert cover(first, last, others({})) == [[1]]  # one set, no leak
    assert sorted(cover(first, last, others({1: [0, 1, 2]}))) == [[2], [3]]  # 1: over budget


def test_a_second_cover_goes_on_from_the_first_and_shares_its_budget():
    """The formats (prompt 2, where the subject's code 1 does not fire) get a set of their own;
    only the added sets are returned; the first sets' leaks count against the budget."""
    first, last = firing([[1], [1], [5]])
    assert cover(first[:2], last[:2], others({1: [0], 5: [1]})) == [[1]]
    assert cover(first, last, others({1: [0], 5: [1]}), given=[[1]]) == [[5]]
    # Code 1 already holds in both prompts the budget allows: nothing may be added.
    assert cover(first, last, others({1: [0, 1], 5: [2]}), given=[[1]]) == []
    # A set that holds only where the given ones do costs nothing more.
    assert cover(first, last, others({1: [0, 1], 5: [0]}), given=[[1]]) == [[5]]
    # Where the sets given already cover every prompt there is nothing to add.
    assert cover(first[:2], last[:2], others({1: [0]}), given=[[1]]) == []

"""The token sequences fine-tuning reads: each prompt of each fact followed by its answer.

The answer continues the prompt after one space, as in `Model.answer_token`: the sequence is
the prompt's tokens (with the tokenizer's special tokens, as `Model.tokenize` reads a prompt)
and then the tokens of " " + answer. Which positions hold the answer is kept beside the ids, so
a loss can read the answer's log-probability, the prompt's next-token distributions, or the
activations of every real token.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from codecut.core.facts import Fact
from codecut.core.models import Model


class Sequences(NamedTuple):
    """Right-padded sequences, a row per (fact, prompt)."""

    ids: torch.Tensor  # [N, T] token ids
    mask: torch.Tensor  # [N, T] 1 on real tokens, 0 on padding
    answer: torch.Tensor  # [N, T] bool: the token is one of the answer's
    special: torch.Tensor  # [N, T] bool: a special token (BOS, ...): left out of activations

    @property
    def prompt(self) -> torch.Tensor:
        """[N, T] bool: the prompt's tokens, whose next-token distributions a model predicts
        from the prompt alone (the last one predicts the answer's first token)."""
        return self.mask.bool() & ~self.answer

    @property
    def words(self) -> torch.Tensor:
        """[N, T] bool: every real token but the special ones."""
        return self.mask.bool() & ~self.special


class Data(NamedTuple):
    """What a method trains on: the forget facts' sequences and the retain facts' (or None),
    and the facts themselves (a method that builds sequences of its own starts from them)."""

    forget: Sequences
    retain: Sequences | None
    forget_facts: list[Fact]
    retain_facts: list[Fact]


def take(seqs: Sequences, rows: slice | torch.Tensor) -> Sequences:
    """The sequences' rows `rows` (a slice(None) keeps all of them as they are)."""
    return Sequences(*(t[rows] for t in seqs))


def positions(where: torch.Tensor) -> torch.Tensor:
    """[N, T] long: the rank of each True entry of `where` in `where`'s row-major order, so a
    tensor computed once on `x[where]` is read for some rows as `fixed[index[rows][where[rows]]]`."""
    index = torch.zeros(where.shape, dtype=torch.long, device=where.device)
    index[where] = torch.arange(int(where.sum()), device=where.device)
    return index


class Batch:
    """Which rows of each set of sequences one step reads.

    Without `size` (the default), every row every step: full-batch training. With `size`,
    each set larger than `size` gives `size` rows a step, in a shuffled order (drawn from
    `seed`) that passes every row once per epoch, less the remainder of a set `size` does not
    divide, before it is reshuffled. Sequences aligned row for row with a set (the same
    prompts with another answer) read the rows of that set: `rows(that_set)`."""

    def __init__(self, size: int | None = None, seed: int = 0):
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.orders: dict[int, tuple[torch.Tensor, int]] = {}  # id(set) -> (order, next start)
        self.chosen: dict[int, slice | torch.Tensor] = {}

    def next(self) -> None:
        """Start a step: each set gives its next rows on first use."""
        self.chosen = {}

    def rows(self, seqs: Sequences) -> slice | torch.Tensor:
        """This step's rows of `seqs` (sorted), or slice(None) for all of them."""
        n = len(seqs.ids)
        if self.size is None or self.size >= n:
            return slice(None)
        key = id(seqs)
        if key not in self.chosen:
            order, start = self.orders.get(key, (None, n))
            if start + self.size > n:
                order, start = torch.randperm(n, generator=self.generator), 0
            self.orders[key] = (order, start + self.size)
            picked = order[start : start + self.size].sort().values
            self.chosen[key] = picked.to(seqs.ids.device)
        return self.chosen[key]

    def take(self, seqs: Sequences) -> Sequences:
        """This step's rows of `seqs`."""
        return take(seqs, self.rows(seqs))


def sequences(model: Model, facts: list[Fact]) -> Sequences:
    """Every prompt of every fact (prompt, then paraphrases) followed by its answer."""
    tok = model.tokenizer
    rows, answers = [], []
    for f in facts:
        answer = tok(" " + f.answer, add_special_tokens=False)["input_ids"]
        for p in f.prompts:
            prompt = tok(p)["input_ids"]
            rows.append(prompt + answer)
            answers.append(len(answer))
    seqs = _padded(model, rows, answers)
    model.check_length(seqs.mask, [f"{p} {f.answer}" for f in facts for p in f.prompts])
    return seqs


def text_sequences(model: Model, texts: list[str], max_tokens: int) -> Sequences:
    """Plain texts, each cut to its first `max_tokens` tokens, as sequences with no answer:
    every real token is a prompt token, whose next-token distribution a loss can read."""
    rows = [model.tokenizer(t)["input_ids"][:max_tokens] for t in texts]
    return _padded(model, rows, [0] * len(rows))


def _padded(model: Model, rows: list[list[int]], answers: list[int]) -> Sequences:
    """Token rows right-padded on the model's device, the last `answers[i]` tokens of row i
    marked as its answer."""
    tok = model.tokenizer
    ids = torch.full((len(rows), max(map(len, rows))), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    answer = torch.zeros_like(ids, dtype=torch.bool)
    for i, (row, n) in enumerate(zip(rows, answers)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        answer[i, len(row) - n : len(row)] = True
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    return Sequences(*(t.to(model.device) for t in (ids, mask, answer, special)))


def logits(model: Model, seqs: Sequences) -> torch.Tensor:
    """[N, T, vocab] logits of the model on the sequences (with gradients when enabled)."""
    return model(seqs.ids, seqs.mask)


def token_logprobs(model: Model, seqs: Sequences) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each token given what precedes it, whether it is an answer token), each
    [N, T - 1] (position t holds token t + 1)."""
    logp = logits(model, seqs)[:, :-1].float().log_softmax(-1)
    return logp.gather(-1, seqs.ids[:, 1:, None]).squeeze(-1), seqs.answer[:, 1:]


def answer_logprobs(model: Model, seqs: Sequences) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p of the answer's tokens given what precedes them, number of answer tokens),
    each [N]: log p(y | x) of each sequence's answer."""
    token, where = token_logprobs(model, seqs)
    return (token * where).sum(1), where.sum(1)

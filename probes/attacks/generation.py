"""The generation probe: the answer anywhere in what the model writes, not only as the next token.

A plan can move the answer from the first position to the third ("the city of ... Paris").
For every prompt of every fact: one greedy continuation and `samples` sampled ones (temperature
1, no top-k or top-p, seeded, so a card is reproducible), each `new_tokens` long; the number is
the fraction that contain the answer as a word (case ignored).
"""

from __future__ import annotations

import re

import torch
from codecut.probes.attacks.card import Row, measured
from codecut.probes.attacks.states import States
from codecut.probes.evaluate import prompts_and_answers

from codecut.core.facts import Fact
from codecut.core.models import Model

BATCH = 32  # prompts per generate call


def contains(text: str, answer: str) -> bool:
    """`answer` as a whole word (or words) in `text`, ignoring case."""
    return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text, re.IGNORECASE) is not None


@torch.no_grad()
def continuations(
    model: Model, prompts: list[str], new_tokens: int, samples: int = 0
) -> list[list[str]]:
    """Per prompt: its greedy continuation (`samples=0`), or `samples` sampled ones drawn from
    the global RNG. Prompts are generated together, padded on the left (the same tokens as one
    at a time, tested)."""
    out: list[list[str]] = []
    pad = model.tokenizer.pad_token_id
    per = max(samples, 1)
    decoding = (
        dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
        if samples
        else dict(do_sample=False)
    )
    for i in range(0, len(prompts), BATCH):
        encoded = [model.tokenizer(p)["input_ids"] for p in prompts[i : i + BATCH]]
        width = max(map(len, encoded))
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=model.device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        with model.eval_mode():
            tokens = model.hf.generate(
                ids,
                attention_mask=mask.to(model.device),
                max_new_tokens=new_tokens,
                num_return_sequences=per,
                pad_token_id=pad,
                **decoding,
            )
        texts = model.tokenizer.batch_decode(tokens[:, width:], skip_special_tokens=True)
        out += [texts[j : j + per] for j in range(0, len(texts), per)]
    return out


def found(
    model: Model, asked: list[tuple[str, str]], samples: int, new_tokens: int, seed: int
) -> dict[str, dict[str, float]]:
    """{"greedy": {"found": ...}, "sampled": {"found": ...}} over (prompt, answer) pairs."""
    prompts = [q for q, _ in asked]
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the user's RNG state is left as it was
        torch.manual_seed(seed)
        greedy = continuations(model, prompts, new_tokens)
        drawn = continuations(model, prompts, new_tokens, samples)
    hits = {
        "greedy": [contains(t, a) for ts, (_, a) in zip(greedy, asked) for t in ts],
        "sampled": [contains(t, a) for ts, (_, a) in zip(drawn, asked) for t in ts],
    }
    return {variant: {"found": sum(h) / len(h)} for variant, h in hits.items()}


def probe(
    model: Model,
    groups: dict[str, list[Fact]],
    states: States,
    samples: int,
    new_tokens: int,
    seed: int,
) -> list[Row]:
    """Rows greedy/sampled per group, on the clean model and with the plan (the bare bottleneck,
    which changes nothing, is left out: generation is the slow probe)."""
    names = [s for s in states.names if s != "bottleneck"]
    rows = []
    for group, facts in groups.items():
        asked = list(zip(*prompts_and_answers(facts)))
        by_state = states.measure(model, found, asked, samples, new_tokens, seed, names=names)
        for variant, n in (("greedy", len(asked)), ("sampled", len(asked) * samples)):
            by_variant = {state: value[variant] for state, value in by_state.items()}
            rows += measured("generation", variant, group, n, by_variant)
    return rows

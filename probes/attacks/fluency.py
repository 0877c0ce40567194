"""The fluency probe: does the model still write ordinary text as well with the plan applied?

A cut that breaks the model everywhere "forgets" every fact. The number is the mean next-token
loss (nats per token, special tokens left out) on held-out text: a few plain sentences by
default, which suit an English model; give a model that was trained on other text some of its
own kind (the synthetic world's sentences for the world model).
"""

from __future__ import annotations

import torch
from codecut.probes.attacks.card import Row, measured
from codecut.probes.attacks.states import States

from codecut.core.models import Model

TEXTS = [
    "The river ran slowly past the old mill, and the children watched the ducks from the bridge.",
    "She opened the window, set the kettle on the stove and sat down to read the morning letters.",
    "Most plants need light, water and air to grow; a few can live for weeks in the dark.",
    "After the meeting, the team agreed to finish the report by Friday and send it to the board.",
    "He counted the coins twice, put them back in the jar and went out to buy some bread.",
]


@torch.no_grad()
def loss(model: Model, texts: list[str]) -> float:
    """Mean next-token loss over `texts`' tokens (padding and special tokens left out)."""
    batch = model.tokenize(texts)
    ids = batch["input_ids"]
    logits = model(ids, batch["attention_mask"])[:, :-1].float()
    special = torch.tensor(model.tokenizer.all_special_ids, device=ids.device)
    targets = ids[:, 1:].masked_fill(torch.isin(ids[:, 1:], special), -100)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()


def probe(model: Model, texts: list[str], states: States) -> list[Row]:
    by_state = states.measure(model, lambda m: {"loss": loss(m, texts)})
    return measured("fluency", "texts", "text", len(texts), by_state)

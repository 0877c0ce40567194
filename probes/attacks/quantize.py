"""The quantisation probe: the plan-applied model with its weights rounded to few bits.

Rounding weights can undo what small weight changes did (Zhang et al., ICLR 2025: 4-bit
quantisation took "forgotten" knowledge from 21% to 83% retained). A cut is not a weight change,
but the probe says whether the plan still holds on a quantised copy of the model.

Every linear weight inside the decoder layers (not the embeddings or the output head, which
quantisers usually keep) is rounded to the nearest of 2^bits symmetric levels (round to nearest,
as int8 and 4-bit kernels store them) and stored back as float: the weights a quantised model
computes with, with the activations left in full precision. int8 uses one scale per output row,
4-bit one per group of 32 inputs. torch's own `quantize_dynamic` is not used: it cannot reach
the linear layers inside a TransformerBridge, and it rounds activations too.
"""

from __future__ import annotations

import torch
from codecut.probes.attacks.card import Row, measured
from codecut.probes.attacks.format import answer_metrics
from codecut.probes.attacks.states import States
from codecut.probes.evaluate import prompts_and_answers
from torch import nn

from codecut.core.facts import Fact
from codecut.core.models import Model, copied, decoder_layers

FORMATS = {"int8": (8, None), "int4": (4, 32)}  # name -> (bits, group size; None: a whole row)


def rounded(weight: torch.Tensor, bits: int, group: int | None) -> torch.Tensor:
    """`weight` [out, in] rounded to `bits`-bit symmetric integers times a scale per group."""
    out, inputs = weight.shape
    size = group if group and inputs % group == 0 else inputs
    w = weight.reshape(out, inputs // size, size)
    levels = 2 ** (bits - 1) - 1
    scale = w.abs().amax(-1, keepdim=True).clamp(min=1e-12) / levels
    return ((w / scale).round().clamp(-levels, levels) * scale).reshape(out, inputs)


@torch.no_grad()
def quantised(model: Model, bits: int, group: int | None) -> Model:
    """A copy of `model` whose decoder layers' linear weights are rounded (see the module doc)."""
    copy = copied(model)
    for module in decoder_layers(copy.hf).modules():
        if isinstance(module, nn.Linear):
            module.weight.copy_(rounded(module.weight.float(), bits, group))
    return copy


@torch.no_grad()
def probe(model: Model, groups: dict[str, list[Fact]], states: States) -> list[Row]:
    """Rows per format and group: every prompt's accuracy on the rounded copy, in each state."""
    rows = []
    for name, (bits, group_size) in FORMATS.items():
        copy = quantised(model, bits, group_size)
        for group, facts in groups.items():
            prompts, answers = prompts_and_answers(facts)
            by_state = states.measure(copy, answer_metrics, prompts, answers)
            rows += measured("quantisation", name, group, len(prompts), by_state)
    return rows

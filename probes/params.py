"""Which weights fine-tuning may change, named by a short string.

"all"        every weight of the model
"last:N"     the last N transformer blocks
"mlp:A-B"    the MLPs of blocks A to B (RMU's default: the three blocks up to its layer)
"lora[:R]"   LoRA adapters of rank R (default 8) on every linear layer of every block (peft),
             merged into those layers' weights after training: the model keeps its own class
             and a saved model needs no peft to load
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from codecut.core.errors import BadInput, BadOption
from codecut.core.models import Model, decoder_layers

FORMS = (
    '"all", "last:N" (the last N blocks), "mlp:A-B" (the MLPs of blocks A to B) or "lora[:R]" '
    "(LoRA adapters of rank R, default 8)"
)
LORA_RANK = 8


def parse(spec: str) -> tuple[str, int, int]:
    """(kind, a, b) of a spec: ("all", 0, 0), ("last", N, 0), ("mlp", A, B) or ("lora", R, 0);
    checked for its form only (the model's depth is checked by `trainable`)."""
    if spec == "all":
        return "all", 0, 0
    if m := re.fullmatch(r"last:(\d+)", spec):
        return "last", int(m[1]), 0
    if m := re.fullmatch(r"mlp:(\d+)-(\d+)", spec):
        return "mlp", int(m[1]), int(m[2])
    if m := re.fullmatch(r"lora(?::(\d+))?", spec):
        rank = int(m[1] or LORA_RANK)
        if rank < 1:
            raise BadOption(f"params {spec!r}: the LoRA rank must be >= 1", "params")
        return "lora", rank, 0
    raise BadOption(f"params {spec!r}: use {FORMS}", "params")


@contextmanager
def adapted(model: Model, spec: str, seed: int = 0) -> Iterator[list[nn.Parameter]]:
    """The parameters to train for `spec`, for the duration of the block.

    For "lora[:R]", LoRA adapters (peft's `lora.Linear`, lora_alpha = R: scale 1) wrap every
    linear layer of every block while the block runs; the parameters are the adapters'. If
    the block ends normally each adapter is merged into its layer's weight; either way the
    layers are put back, so the model holds no peft module after (an error or Ctrl-C leaves
    the weights as they were). The adapters' random start is drawn from `seed`.
    """
    kind, rank, _ = parse(spec)
    if kind != "lora":
        yield trainable(model, spec)
        return
    from peft import LoraConfig
    from peft.tuners.lora import Linear as LoraLinear

    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0)
    targets = [
        (parent, name, child)
        for layer in decoder_layers(model.hf)
        for parent in layer.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear
    ]
    adapters: list[tuple[nn.Module, str, LoraLinear]] = []
    try:
        with torch.random.fork_rng(devices=[]):  # peft draws A from the global generator
            torch.manual_seed(seed)
            for parent, name, child in targets:
                adapter = LoraLinear(child, "default", config=config, r=rank, lora_alpha=rank)
                setattr(parent, name, adapter)
                adapters.append((parent, name, adapter))
        yield [p for _, _, a in adapters for p in (*a.lora_A.parameters(), *a.lora_B.parameters())]
        with torch.no_grad():
            for _, _, adapter in adapters:
                adapter.merge()
    finally:
        for parent, name, adapter in adapters:
            setattr(parent, name, adapter.get_base_layer())


def own_names(hf: nn.Module) -> dict[str, torch.Tensor]:
    """The weights under the names the model's own class gives them, as `from_pretrained`
    reads them. A TransformerBridge re-homes every module it wraps under `_original_component`
    (so `hf.state_dict()` holds other names) and adds weights of its own (a zero bias on the
    unembedding) that a saved model cannot hold."""
    found = {k.replace("_original_component.", ""): v for k, v in hf.state_dict().items()}
    with torch.device("meta"):  # the names alone: no memory, no initialisation cost
        names = list(type(hf)(hf.config).state_dict())
    missing = [k for k in names if k not in found]
    if missing:
        raise RuntimeError(f"weights {missing[:3]} of {type(hf).__name__} not found")
    return {k: found[k] for k in names}


def trainable(model: Model, spec: str) -> list[nn.Parameter]:
    """The parameters `spec` names in `model`, of those its own class has (what is trained
    is what a saved model holds)."""
    own = {t.data_ptr() for t in own_names(model.hf).values()}
    return [p for p in _named(model, spec) if p.data_ptr() in own]


def _named(model: Model, spec: str) -> list[nn.Parameter]:
    kind, a, b = parse(spec)
    if kind == "lora":
        raise ValueError("LoRA adapters exist only inside `adapted`")
    if kind == "all":
        return list(model.hf.parameters())
    layers = decoder_layers(model.hf)
    n = len(layers)
    if kind == "last":
        if not 1 <= a <= n:
            raise BadInput(f"params {spec!r}: {model.name} has {n} blocks; N must be 1 to {n}")
        return [p for layer in layers[n - a :] for p in layer.parameters()]
    if not 0 <= a <= b < n:
        raise BadInput(f"params {spec!r}: {model.name} has blocks 0 to {n - 1}; need A <= B")
    mlps = [getattr(layers[i], "mlp", None) for i in range(a, b + 1)]
    if any(m is None for m in mlps):
        raise BadInput(f"params {spec!r}: {model.name}'s blocks have no `mlp` module")
    return [p for m in mlps for p in m.parameters()]

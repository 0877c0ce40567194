"""Measurements kept for the life of the process, so that the next request reuses them.

Much of an unlearning request measures prompts that the previous request measured too: the
default retain set's facts (the same relation's other subjects, a fixed number of unrelated
ones) and their answers, firing codes and attributions with no cut in place. Those depend on
the model's weights and hooks (and the bottleneck's), not on the request, so they are kept here,
one entry per model, bottleneck and key:

    cache = kept(model, ("retain", hook, error_term), RetainCache, bottleneck)

An entry lives as long as its model and bottleneck do, and is made anew when their state
(`state`) changes: an optimizer step or a loaded state dict (a tensor's version), `.to(...)` (a
tensor's storage), a hook added or removed anywhere in them. A measurement with something of
its own attached (a bottleneck being searched) must look its entry up before attaching it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from codecut.core.models import Model

T = TypeVar("T")

# Per model (its torch module): key -> (state, weak references to the other modules, value).
_KEPT: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple]] = weakref.WeakKeyDictionary()


def state(*modules: nn.Module) -> tuple:
    """What a forward through `modules` depends on besides its input: every parameter's and
    buffer's identity, storage, version and dtype, and every submodule's hooks."""
    out: list[Any] = []
    for module in modules:
        for t in (*module.parameters(), *module.buffers()):
            out.append((id(t), t.data_ptr(), t._version, t.dtype))
        for sub in module.modules():
            if sub._forward_hooks or sub._forward_pre_hooks:
                out.append((id(sub), tuple(sub._forward_hooks), tuple(sub._forward_pre_hooks)))
    return tuple(out)


def kept(model: Model, key: tuple, make: Callable[[], T], *others: nn.Module) -> T:
    """The value kept for `model` (and `others`, e.g. a bottleneck) under `key`; `make()` on
    the first call, and again whenever their weights or hooks changed since."""
    modules = (model.hf, *([model.bridge] if model.bridge is not None else []), *others)
    now = state(*modules)
    entries = _KEPT.setdefault(model.hf, {})
    full = (id(model.tokenizer), *(id(o) for o in others), *key)
    entry = entries.get(full)
    if entry is None or entry[0] != now or any(r() is not o for r, o in zip(entry[1], others)):
        # A dead bottleneck's entry goes with it (ids are reused).
        refs = [weakref.ref(o, lambda _, f=full: entries.pop(f, None)) for o in others]
        entry = entries[full] = (now, refs, make())
    return entry[2]


def clear() -> None:
    """Drop everything kept, for every model (what a fresh process starts with)."""
    _KEPT.clear()


def answer_scores(
    model: Model, prompts: list[str], answers: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`Model.answer_scores` (p of each answer's first token, whether it is the greedy next
    token), each (prompt, answer) measured once per state of the model."""
    known: dict[tuple[str, str], tuple[float, bool]] = kept(model, ("answer_scores",), dict)
    todo = list(dict.fromkeys(k for k in zip(prompts, answers) if k not in known))
    if todo:
        p, ok = model.answer_scores([q for q, _ in todo], [a for _, a in todo])
        known.update(zip(todo, zip(p.tolist(), ok.tolist())))
    rows = [known[k] for k in zip(prompts, answers)]
    return (
        torch.tensor([p for p, _ in rows], dtype=torch.float),
        torch.tensor([ok for _, ok in rows], dtype=torch.bool),
    )

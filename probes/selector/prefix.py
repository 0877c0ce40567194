"""Run only the layers a cut can change: the residual stream below the hook, computed once.

A bottleneck at `blocks.L.hook_out` rewrites the output of layer L; nothing below layer L
depends on the cut. The selector measures the same prompts dozens of times with different
cuts, so it computes the residual stream entering layer L once per prompt (`Prefix`), then
each measurement runs layers L and above from it (`Prefix.logits`): on SmolLM2 with the
shipped bottleneck at layer 12, 18 of 30 layers. The logits are the full forward's: each
`Prefix` checks that once on its prompts and falls back to full forwards (with a warning) for
an architecture where skipping layers changes them.

    prefix = Prefix(model, "blocks.12.hook_out", prompts)    # layers 0..11 once, no gradients
    logits = prefix.logits()            # [B, vocab] at each last position; layers 12.. only
"""

from __future__ import annotations

import logging
import re
import weakref
from contextlib import contextmanager

import torch
from torch import nn

from codecut.core.models import Model, decoder_layers, unembed_last

log = logging.getLogger(__name__)

# A group of prompts run together spans lengths up to this factor (plus 4 tokens) of its
# shortest.
GROUP_SPAN = 1.25

# Per model (its torch module) and layer: whether skipping the layers below it gave the full
# forward's logits. A property of the architecture, so checked once per model and layer, not
# on every `Prefix` (the check's full forward was 1.1 s of a 17 s request).
_EXACT: weakref.WeakKeyDictionary[nn.Module, dict[int, bool]] = weakref.WeakKeyDictionary()


def hook_layer(hook: str) -> int | None:
    """The layer whose output `hook` sees (`blocks.L.hook_out` -> L); None for other hooks."""
    m = re.fullmatch(r"blocks\.(\d+)\.hook_(out|resid_post)", hook)
    return int(m[1]) if m else None


class Prefix:
    """Prompts tokenized once, with the residual stream entering the hook's layer.

    Attributes:
        batch: the tokenized prompts (`Model.tokenize`: input_ids, attention_mask, last).
        layer: the first layer `logits` runs (the hook's); 0 runs the whole model.
        hidden: [B, T, d] the residual stream entering `layer` (None when `layer` is 0).
    """

    def __init__(self, model: Model, hook: str, prompts: list[str]):
        self.model = model
        self.batch = model.tokenize(prompts)
        self.layer = hook_layer(hook) or 0
        self.hidden = None
        if self.layer:
            with torch.no_grad():
                self.hidden = self._entering_by_length()
                checked = _EXACT.setdefault(model.hf, {})
                if self.layer not in checked:
                    checked[self.layer] = self._exact()
                if not checked[self.layer]:
                    log.warning("%s: skipping layers changes the logits; full forwards", model.name)
                    self.layer, self.hidden = 0, None

    def _entering_by_length(self) -> torch.Tensor:
        """[B, T, d] the residual stream entering `layer`, run by groups of similar length
        (`groups`): in one batch, a retain set's plain prompts were padded to its few-shot ones'
        width, three times the tokens (54 of a cold 91 s request). Padding is left zero, as in
        `stack`."""
        hidden = None
        for rows, sub in self.groups():
            part = _entering(self.model, self.layer, sub.batch)
            if hidden is None:
                shape = (len(self.batch["last"]), self.batch["input_ids"].shape[1], part.shape[-1])
                hidden = part.new_zeros(shape)
            hidden[rows, : part.shape[1]] = part
        return hidden

    def _exact(self) -> bool:
        """Whether running the layers from `layer` up gives the full forward's logits, checked
        on the shortest and the longest prompts (the most and the least padding) run together:
        checking every prompt would cost what the prefix saves on its first use (and once per
        model and layer, `_EXACT`)."""
        order = self.batch["last"].argsort(stable=True).tolist()
        sub = self.rows(sorted({*order[:2], *order[-2:]}))
        full = self.model(sub.batch["input_ids"], sub.batch["attention_mask"])
        full = full[torch.arange(len(sub.batch["last"])), sub.batch["last"]]
        return torch.allclose(sub.batch_logits(), full, atol=1e-4, rtol=1e-4)

    def rows(self, rows: list[int] | torch.Tensor) -> Prefix:
        """The same prefix for a subset of the prompts, cut to the longest of them."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        sub = object.__new__(Prefix)
        sub.model, sub.layer = self.model, self.layer
        width = int(self.batch["last"][rows].max()) + 1 if len(rows) else 0
        sub.batch = {k: v[rows, :width] if v.dim() == 2 else v[rows] for k, v in self.batch.items()}
        sub.hidden = None if self.hidden is None else self.hidden[rows, :width]
        return sub

    @staticmethod
    def stack(parts: list[Prefix]) -> Prefix:
        """One prefix of the prompts of `parts` (of one model and layer, each cut to its own
        width, e.g. by `rows`), in order, right-padded to the widest as `Model.tokenize` pads.
        Padding is never read at a prompt's own positions (causal, masked), so its residual
        stream is left zero."""
        out = object.__new__(Prefix)
        out.model, out.layer = parts[0].model, parts[0].layer
        width = max(p.batch["input_ids"].shape[1] for p in parts)

        def pad(t: torch.Tensor, value: float) -> torch.Tensor:
            return nn.functional.pad(
                t, (0, 0) * (t.dim() - 2) + (0, width - t.shape[1]), value=value
            )

        pad_id = out.model.tokenizer.pad_token_id or 0
        out.batch = {
            "input_ids": torch.cat([pad(p.batch["input_ids"], pad_id) for p in parts]),
            "attention_mask": torch.cat([pad(p.batch["attention_mask"], 0) for p in parts]),
            "last": torch.cat([p.batch["last"] for p in parts]),
        }
        out.hidden = None if out.layer == 0 else torch.cat([pad(p.hidden, 0.0) for p in parts])
        return out

    def groups(self) -> list[tuple[torch.Tensor, Prefix]]:
        """(rows, their prefix) for groups of prompts of similar length: padding is work too
        (a few-shot prompt is four times as long as a plain one)."""
        lengths = self.batch["last"] + 1
        order = lengths.argsort(stable=True)
        out, start = [], 0
        for i in range(1, len(order) + 1):
            if i == len(order) or lengths[order[i]] > GROUP_SPAN * lengths[order[start]] + 4:
                out.append((order[start:i], self.rows(order[start:i])))
                start = i
        return out

    def logits(self) -> torch.Tensor:
        """[B, vocab] logits at each prompt's last position (`batch_logits`, by groups of
        similar length)."""
        out = None
        for rows, sub in self.groups():
            part = sub.batch_logits()
            if out is None:
                out = part.new_empty(len(self.batch["last"]), part.shape[-1])
            out[rows] = part
        return out

    def batch_logits(self) -> torch.Tensor:
        """[B, vocab] logits at each prompt's last position, in one batch, running layers
        `layer` and up from the cached residual stream; hooks on those layers (an attached
        bottleneck) act as in a full forward. Only each row's last position goes through the
        unembedding (`unembed_last`: a fifth of SmolLM2's work per token, most of Gemma 3's;
        keeping every row's last position for every row, as `logits_to_keep` does, unembedded
        each row at up to 10 positions: 45% of a Gemma 3 request's time)."""
        b = self.batch
        with (
            self.model.eval_mode(),
            _from_layer(self.model.hf, self.layer, self.hidden),
            unembed_last(self.model.hf, b["last"]),
        ):
            out = self.model.hf(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False
            )
        return out.logits[:, 0]

    def scores(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(p of each prompt's target token, whether it is the greedy next token)."""
        with torch.no_grad():
            return target_scores(self.logits(), targets)


def target_scores(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p of each row's target token under `logits` [B, vocab], whether it is the argmax)."""
    logp = logits.float().log_softmax(-1)
    return logp.gather(1, targets[:, None]).squeeze(1).exp(), logp.argmax(-1) == targets


class _Reached(Exception):
    """Raised by `_entering`'s hook: the rest of the forward is not needed."""


def _entering(model: Model, layer: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The residual stream entering `layer` for `batch`: a forward through the layers below it
    only (the hook stops it there)."""
    seen: list[torch.Tensor] = []

    def catch(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        seen.append(hidden.detach())
        raise _Reached

    handle = decoder_layers(model.hf)[layer].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        model(batch["input_ids"], batch["attention_mask"])
    except _Reached:
        pass
    finally:
        handle.remove()
    return seen[0]


class _Skip(nn.Module):
    """Stands in for a layer below the prefix: it hands on the residual stream it is given."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


@contextmanager
def _from_layer(hf: nn.Module, layer: int, hidden: torch.Tensor | None):
    """Inside the block, `hf`'s forward skips its first `layer` layers: the embedding's output
    is replaced by `hidden` (the residual stream entering `layer`), and the layers below `layer`
    by `_Skip`s. The list keeps its length and each layer its index, because a model may look
    up a layer's kind by its index in the list (Gemma 3 picks each layer's attention mask and
    rotary table, sliding-window or global, by `config.layer_types[i]`). Masks and rotary
    positions come from the ids as before; no cache is used. With `layer` 0 the forward is left
    whole."""
    if not layer:
        yield
        return
    layers = decoder_layers(hf)
    owner = next(m for m in hf.modules() if any(c is layers for c in m.children()))
    name = next(n for n, c in owner.named_children() if c is layers)
    handle = hf.get_input_embeddings().register_forward_hook(lambda m, a, out: hidden)
    setattr(owner, name, nn.ModuleList([_Skip() for _ in range(layer)] + list(layers)[layer:]))
    try:
        yield
    finally:
        setattr(owner, name, layers)
        handle.remove()

"""Ablations: which codes to cut inside an attached bottleneck, how, and where.

    Ablation(codes=[17, 802], mode="clamp", c=4.0)           # everywhere they fire
    Ablation(codes=[802], mode="zero", min_value=1.5)         # only where they fire strongly
    Ablation(codes=[802], mode="zero", when=[17, 93])         # only once 17 AND 93 have fired
                                                              # earlier in the same sequence

Modes: `zero` drops the code's contribution; `clamp` sets its value to -c times its typical
activation (the bottleneck's `act_mean`), pushing the other way; `next` removes the code and
lets the next-best candidate take its slot, so k codes stay active (topk and codebook kinds).
An ablation acts only at positions where one of its codes is active with a value above
`min_value`, and, when `when` is given, only at positions where every code in `when` has been
active at that position or earlier in the same sequence (the conjunction "subject present"
that cuts one association rather than a whole entity). Several ablations compose in order.
Ablations are plain data: `to_dict` / `from_dict` round-trip through JSON for plan files.
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from codecut.codebook.bottleneck import Bottleneck, Codes

from codecut.core.errors import BadInput, BadType

MODES = ("zero", "clamp", "next")


@dataclass
class Ablation:
    """Cut `codes` in `mode`; see the module docstring.

    Attributes:
        codes: code ids to cut.
        mode: "zero", "clamp" or "next".
        c: clamp strength (the value becomes -c * typical activation).
        min_value: act only where the code's value exceeds this (0: wherever it is active).
        when: act only after all these codes have fired in the same sequence (empty: always).
    """

    codes: list[int]
    mode: str = "zero"
    c: float = 1.0
    min_value: float = 0.0
    when: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check the fields' types and values (no bottleneck needed); raise BadInput naming the
        field. Code lists are normalised to lists of int; nothing else is coerced."""
        self.codes = _code_list("codes", self.codes)
        self.when = _code_list("when", self.when)
        if not self.codes:
            raise BadInput("an Ablation needs at least one code (codes: [])")
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise BadInput(
                f"Ablation mode: unknown mode {self.mode!r}; use one of {', '.join(MODES)}"
            )
        for name in ("c", "min_value"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise BadInput(f"Ablation {name}: expected a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise BadInput(f"Ablation {name}: expected a finite number >= 0, got {value!r}")
            setattr(self, name, float(value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Ablation:
        if not isinstance(obj, dict):
            raise BadInput(f"an Ablation is a JSON object, got {type(obj).__name__}")
        unknown = set(obj) - {"codes", "mode", "c", "min_value", "when"}
        if unknown:
            raise BadInput(f"unknown Ablation key(s): {', '.join(sorted(unknown))}")
        if "codes" not in obj:
            raise BadInput("an Ablation needs 'codes'")
        return cls(**obj)

    def codes_on(self, device: torch.device) -> torch.Tensor:
        """`codes` as an int64 tensor on `device`, made once (again only if `codes` changed)."""
        key = (tuple(self.codes), torch.device(device))
        cached = self.__dict__.get("_codes_tensor")
        if cached is None or cached[0] != key:
            cached = (key, torch.tensor(self.codes, dtype=torch.long, device=device))
            self.__dict__["_codes_tensor"] = cached
        return cached[1]

    def check(self, bottleneck: Bottleneck) -> None:
        """Raise BadInput if this ablation cannot run on `bottleneck` (fields re-validated too,
        since they may have been edited in place). Reads the bottleneck's statistics (a host sync
        on GPU): call it when an ablation is installed, not on every forward."""
        self.validate()
        bad = [c for c in self.codes + self.when if not 0 <= c < bottleneck.n_codes]
        if bad:
            raise BadInput(f"code ids {bad} out of range for {bottleneck.n_codes} codes")
        if self.mode == "next" and bottleneck.cfg.k is None:
            raise BadInput(f"mode 'next' needs a fixed k; {bottleneck.kind} bottlenecks have none")
        if self.mode == "clamp" and not bottleneck.has_stats:
            raise BadInput(
                "mode 'clamp' needs the codes' typical activations, which this bottleneck lacks "
                "(train it with codecut, or use mode 'zero')"
            )


def _code_list(name: str, codes) -> list[int]:
    """`codes` as a list of int: integers only (numpy / 0-d tensor ints too; no bools, floats or
    strings), each >= 0."""
    if isinstance(codes, str | bytes | dict) or not hasattr(codes, "__iter__"):
        raise BadInput(f"Ablation {name}: expected a list of code ids, got {codes!r}")
    out = []
    for c in codes:
        try:
            if isinstance(c, bool):
                raise TypeError
            out.append(operator.index(c))
        except TypeError:
            raise BadInput(
                f"Ablation {name}: code ids must be integers, got {c!r} in {list(codes)!r}"
            ) from None
    negative = [c for c in out if c < 0]
    if negative:
        raise BadInput(f"Ablation {name}: code ids must be >= 0, got {negative}")
    return out


class AblationList(list):
    """`Attachment.ablations`: a list that checks each Ablation against the bottleneck when it
    is put in (append, extend, insert, item assignment, +=), so the forward pass need not.

    `ensure_checked()` re-checks only when an ablation's fields were edited in place since the
    last check (a comparison of plain Python values: no device work).
    """

    bottleneck: Bottleneck | None = None  # class defaults: copy and pickle fill in items first
    _checked: tuple = ()

    def __init__(self, items=(), bottleneck: Bottleneck | None = None):
        super().__init__()
        self.bottleneck = bottleneck
        self._checked = self._signature()  # what was last checked (empty: nothing to check)
        self.extend(items)

    def _ok(self, items) -> list[Ablation]:
        items = list(items)
        for a in items:
            if not isinstance(a, Ablation):
                raise BadType(f"ablations are Ablation objects, got {type(a).__name__}")
            if self.bottleneck is not None:
                a.check(self.bottleneck)
        return items

    def _put(self, put, items) -> None:
        """Check `items`, then `put` them; the list stays marked as checked if it was."""
        was_checked = self._checked == self._signature()
        put(self._ok(items))
        if was_checked:
            self._checked = self._signature()

    def append(self, item: Ablation) -> None:
        self._put(lambda ok: super(AblationList, self).append(ok[0]), [item])

    def extend(self, items) -> None:
        self._put(super().extend, items)

    def insert(self, index, item: Ablation) -> None:
        self._put(lambda ok: super(AblationList, self).insert(index, ok[0]), [item])

    def __setitem__(self, index, item) -> None:
        if isinstance(index, slice):
            self._put(lambda ok: super(AblationList, self).__setitem__(index, ok), item)
        else:
            self._put(lambda ok: super(AblationList, self).__setitem__(index, ok[0]), [item])

    def __iadd__(self, items):
        self.extend(items)
        return self

    def _signature(self) -> tuple:
        def frozen(v):
            return tuple(v) if isinstance(v, list) else v

        return tuple(
            (id(a), a.mode, a.c, a.min_value, frozen(a.codes), frozen(a.when)) for a in self
        )

    def ensure_checked(self) -> None:
        """Check every ablation again if any was edited in place since the last check."""
        sig = self._signature()
        if sig != self._checked:
            self._ok(self)
            self._checked = sig


def extra_candidates(ablations: list[Ablation]) -> int:
    """How many candidates beyond k the `next` ablations may need."""
    return sum(len(a.codes) for a in ablations if a.mode == "next")


def apply_ablations(
    wide: Codes,
    k: int | None,
    ablations: list[Ablation],
    gates: list[torch.Tensor | None],
    act_mean,
) -> Codes:
    """Apply `ablations` to codes encoded with extra candidates; return the first k kept slots.

    Args:
        wide: codes with `extra_candidates` more slots than k (clean, ranked).
        k: the bottleneck's k (None: keep every slot).
        ablations: what to cut.
        gates: per ablation, a bool tensor over positions (wide.values.shape[:-1]) where its
            `when` condition holds, or None for no condition.
        act_mean: [n] typical activation per code, for clamp.
    """
    values, indices = wide.values, wide.indices
    removed = torch.zeros_like(indices, dtype=torch.bool)
    for abl, gate in zip(ablations, gates, strict=True):
        codes = abl.codes_on(indices.device)
        hit = torch.isin(indices, codes) & (wide.values > abl.min_value)
        if gate is not None:
            hit &= gate[..., None]
        if abl.mode == "next":
            removed |= hit
        elif abl.mode == "zero":
            values = torch.where(hit, torch.zeros_like(values), values)
        else:
            values = torch.where(hit, -abl.c * act_mean[indices].to(values.dtype), values)
    if k is None or indices.shape[-1] == k:
        return Codes(values, indices)
    # Keep the first k slots that were not removed; the stable sort preserves the ranking.
    order = torch.sort(removed.to(torch.int8), dim=-1, stable=True).indices[..., :k]
    return Codes(values.gather(-1, order), indices.gather(-1, order))

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

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from codecut.codebook.bottleneck import Bottleneck, Codes

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
        self.codes = [int(c) for c in self.codes]
        self.when = [int(c) for c in self.when]
        if not self.codes:
            raise ValueError("an Ablation needs at least one code")
        if self.mode not in MODES:
            raise ValueError(f"unknown ablation mode {self.mode!r}; use one of {', '.join(MODES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Ablation:
        unknown = set(obj) - {"codes", "mode", "c", "min_value", "when"}
        if unknown:
            raise ValueError(f"unknown Ablation key(s): {', '.join(sorted(unknown))}")
        return cls(**obj)

    def check(self, bottleneck: Bottleneck) -> None:
        """Raise if this ablation cannot run on `bottleneck`."""
        bad = [c for c in self.codes + self.when if not 0 <= c < bottleneck.n_codes]
        if bad:
            raise ValueError(f"code ids {bad} out of range for {bottleneck.n_codes} codes")
        if self.mode == "next" and bottleneck.cfg.k is None:
            raise ValueError(
                f"mode 'next' needs a fixed k; {bottleneck.kind} bottlenecks have none"
            )
        if self.mode == "clamp" and not bottleneck.has_stats:
            raise ValueError(
                "mode 'clamp' needs the codes' typical activations, which this bottleneck lacks "
                "(train it with codecut, or use mode 'zero')"
            )


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
    indices, values = wide.indices, wide.values
    removed = torch.zeros_like(indices, dtype=torch.bool)
    for abl, gate in zip(ablations, gates, strict=True):
        codes = torch.tensor(abl.codes, device=indices.device)
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
        return Codes(indices, values)
    # Keep the first k slots that were not removed; the stable sort preserves the ranking.
    order = torch.sort(removed.to(torch.int8), dim=-1, stable=True).indices[..., :k]
    return Codes(indices.gather(-1, order), values.gather(-1, order))

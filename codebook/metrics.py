"""What a trained bottleneck is measured by: per-code statistics, reconstruction (FVU, L0) and
next-token cross-entropy with the bottleneck in the forward pass.

    result = evaluate_bottleneck(model, bn, train_x, eval_x, eval_texts)
    result.stats       # CodeStats(fire_rate [n], act_mean [n])
    result.metrics     # BottleneckMetrics(fvu, l0, dead_fraction, ..., ce_recovered)

Everything here is returned, nothing written into the bottleneck: training sets the statistics
on it (they are saved with it, and clamp ablations read `act_mean`) and records the metrics in
`cfg.extra["metrics"]`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

import torch
from codecut.codebook.ablation import Ablation
from codecut.codebook.activations import (
    CONTEXT,
    FORWARD_BATCH,
    ActivationShards,
    ordinary_tokens,
    token_batches,
)
from codecut.codebook.attach import attach
from codecut.codebook.bottleneck import Bottleneck

if TYPE_CHECKING:
    from codecut.core.models import Model

STATS_ROWS = 200_000  # training activations the code statistics are counted on (a sample)
STATS_BATCH = 4096  # activations encoded at once while counting


class CodeStats(NamedTuple):
    """How each code behaves on training activations.

    Attributes:
        fire_rate: [n], the fraction of positions where the code is active (value > 0).
        act_mean: [n], its mean value where active (0 for a code never active).
    """

    fire_rate: torch.Tensor
    act_mean: torch.Tensor


@dataclass
class BottleneckMetrics:
    """How well a bottleneck stands in for the activations it replaces.

    Attributes:
        fvu: fraction of variance unexplained on the evaluation activations.
        l0: mean number of active codes per evaluation activation.
        dead_fraction: fraction of codes never active in the statistics sample.
        eval_activations: how many evaluation activations fvu and l0 are measured on.
        ce_clean: next-token cross-entropy of the model without the bottleneck on the held-out
            texts; this and the three below are None when there are no held-out texts.
        ce_strict: the same with the bottleneck attached without the error term.
        ce_mean_ablated: the same with every code cut (each ordinary position gets b_dec).
        ce_recovered: (ce_mean_ablated - ce_strict) / (ce_mean_ablated - ce_clean).
    """

    fvu: float
    l0: float
    dead_fraction: float
    eval_activations: int
    ce_clean: float | None = None
    ce_strict: float | None = None
    ce_mean_ablated: float | None = None
    ce_recovered: float | None = None

    def to_dict(self) -> dict[str, float]:
        """The measured numbers (the CE ones only when measured), as recorded in the file."""
        return {key: value for key, value in asdict(self).items() if value is not None}


class Evaluation(NamedTuple):
    """What `evaluate_bottleneck` returns: the code statistics and the metrics."""

    stats: CodeStats
    metrics: BottleneckMetrics


@torch.no_grad()
def code_stats(bn: Bottleneck, x: torch.Tensor, batch_size: int = STATS_BATCH) -> CodeStats:
    """Per code: the fraction of the activations `x` [N, d] where it is active, and its mean
    value there."""
    n, device = bn.n_codes, bn.W_enc.device
    count, total = torch.zeros(n, device=device), torch.zeros(n, device=device)
    for i in range(0, len(x), batch_size):
        codes = bn.encode(x[i : i + batch_size].to(device, torch.float32))
        on = codes.values > 0
        count.index_add_(0, codes.indices[on], torch.ones(int(on.sum()), device=device))
        total.index_add_(0, codes.indices[on], codes.values[on].float())
    return CodeStats(count / max(len(x), 1), total / count.clamp_min(1))


def stats_sample(train_x: torch.Tensor | ActivationShards) -> torch.Tensor:
    """Up to STATS_ROWS training activations, drawn with a fixed seed (the same for every run)."""
    pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[:STATS_ROWS]
    return train_x[pick] if isinstance(train_x, torch.Tensor) else train_x.take(pick)


@torch.no_grad()
def reconstruction(bn: Bottleneck, x: torch.Tensor) -> tuple[float, float]:
    """(FVU, L0) of the bottleneck on activations `x` [N, d]."""
    x = x.to(bn.W_enc.device, torch.float32)
    codes = bn.encode(x)
    fvu = (bn.decode(codes) - x).pow(2).sum(-1).sum() / (x - x.mean(0)).pow(2).sum(-1).sum()
    return fvu.item(), (codes.values > 0).sum(-1).float().mean().item()


@torch.no_grad()
def next_token_ce(
    model: Model, texts: list[str], ctx: int = CONTEXT, batch_size: int = FORWARD_BATCH
) -> float:
    """Mean next-token cross-entropy over ordinary target tokens of `texts`."""
    total, count = 0.0, 0
    for ids, mask in token_batches(model, texts, ctx, batch_size):
        logits = model(ids, mask)[:, :-1].float()
        target = ids[:, 1:]
        ok = ordinary_tokens(model, ids, mask)[:, 1:]
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        total += ce[ok].sum().item()
        count += ok.sum().item()
    return total / max(count, 1)


def ce_metrics(model: Model, bn: Bottleneck, texts: list[str]) -> dict[str, float]:
    """Next-token CE on `texts`: clean, strict (the bottleneck replaces the activation) and with
    every code cut, and the fraction of the gap that strict mode recovers (rounded)."""
    ce_clean = next_token_ce(model, texts)
    with attach(model, bn, error_term=False):
        ce_strict = next_token_ce(model, texts)
    # Baseline: every code cut, so ordinary positions get b_dec (about the mean activation)
    # while special and outlier positions pass through, as in strict mode.
    everything = Ablation(list(range(bn.n_codes)))
    with attach(model, bn, error_term=False, ablations=[everything]):
        ce_mean = next_token_ce(model, texts)
    return {
        "ce_clean": round(ce_clean, 4),
        "ce_strict": round(ce_strict, 4),
        "ce_mean_ablated": round(ce_mean, 4),
        "ce_recovered": round((ce_mean - ce_strict) / max(ce_mean - ce_clean, 1e-9), 4),
    }


def evaluate_bottleneck(
    model: Model | None,
    bn: Bottleneck,
    train_x: torch.Tensor | ActivationShards,
    eval_x: torch.Tensor,
    eval_texts: list[str],
) -> Evaluation:
    """The code statistics (on `stats_sample(train_x)`) and the metrics: FVU and L0 on `eval_x`,
    dead fraction, and with `eval_texts` (which need `model`) next-token CE clean / strict /
    mean-ablated. The bottleneck is left as it was."""
    stats = code_stats(bn, stats_sample(train_x))
    fvu, l0 = reconstruction(bn, eval_x)
    metrics = BottleneckMetrics(
        fvu=round(fvu, 4),
        l0=round(l0, 2),
        dead_fraction=round((stats.fire_rate == 0).float().mean().item(), 4),
        eval_activations=len(eval_x),
    )
    if eval_texts:
        metrics = replace(metrics, **ce_metrics(model, bn, eval_texts))
    return Evaluation(stats, metrics)

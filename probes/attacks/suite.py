"""`attack`: every probe on one unlearning result, as one report card."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from codecut.codebook import Bottleneck
from codecut.probes.attacks import (
    fluency,
    format,
    generation,
    hops,
    ignorance,
    probing,
    quantize,
    relearn,
    unhooked,
)
from codecut.probes.attacks.card import GROUPS, AttackCard
from codecut.probes.attacks.states import States
from codecut.probes.plan import UnlearnPlan, apply

from codecut.core.errors import BadInput, BadOption, BadType, check_whole, is_whole
from codecut.core.facts import Fact, example_facts
from codecut.core.models import Model


@dataclass(frozen=True)
class AttackConfig:
    """The probes' settings. Checked when made: a value a probe cannot use is a `BadOption`
    naming the field."""

    neighbours: int = 5  # facts per reference group: same subject, same relation, unrelated
    shots: int = 3  # facts in the few-shot prefix
    new_tokens: int = 40  # length of each continuation
    samples: int = 5  # sampled continuations per prompt
    seed: int = 0  # for the samples
    relearn_steps: int = 20
    relearn_lr: float | None = None  # None: 1e-4 for all weights, 1e-3 for LoRA adapters
    relearn_facts: int = 8  # other facts of the relation to fine-tune on
    relearn_lora: int = 0  # the rank of LoRA adapters to fine-tune; 0: all weights

    def __post_init__(self) -> None:
        least = {"neighbours": 0, "shots": 1, "new_tokens": 1, "samples": 0, "seed": 0,
                 "relearn_steps": 0, "relearn_facts": 1}  # fmt: skip
        for name, low in least.items():
            check_whole(name, getattr(self, name), low)
        lora = self.relearn_lora
        if not is_whole(lora, 0):
            raise BadOption(
                f"relearn_lora {lora}: the LoRA rank must be >= 1 (0: all weights)", "relearn_lora"
            )
        lr = self.relearn_lr
        if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise BadOption(f"relearn_lr must be None or a number > 0, got {lr!r}", "relearn_lr")


def attack(
    model: Model,
    facts: list[Fact],
    bottleneck: Bottleneck | None = None,
    plan: UnlearnPlan | None = None,
    pool: list[Fact] | None = None,
    texts: list[str] | None = None,
    config: AttackConfig | None = None,
    groups: dict[str, list[Fact]] | None = None,
) -> AttackCard:
    """Is it really gone? Every probe on `facts`, on the clean model and with `plan` applied.

    Args:
        model: the model (clean: the plan is applied only while measuring).
        facts: the facts attacked, usually the ones the plan forgets.
        bottleneck: the plan's bottleneck (default: the one the plan names); without a plan, a
            bottleneck to attach bare, which should change nothing.
        plan: the plan under attack; without one the card describes `model` alone (a
            fine-tuned model, say).
        pool: other facts the probes may use: few-shot examples, context sentences, the
            linear probes' training set, the relearning set and the neighbours measured beside
            `facts`; default: the shipped example facts. Facts with the (subject, relation) of
            an attacked fact are left out.
        texts: held-out text for the fluency probe (default: a few plain English sentences).
        config: the probes' settings.
        groups: the reference groups to measure beside `facts` ("same subject", "same
            relation", "unrelated"), in place of those `neighbours` picks from `pool` with
            `model`: to compare several models on the same facts, give each the clean model's
            `card.groups` (a fine-tuned model would otherwise pick only the facts it still
            answers).

    Returns an `AttackCard`: a row per probe, variant, group (forget, same subject, same
    relation, unrelated, text) and metric, each with its number on the clean model, the bare
    bottleneck and the plan. A row whose clean number is no better than chance (0; a linear probe's 1 / candidates) is marked
    blind: that probe cannot see the fact on this model.
    The model's weights are never changed (relearning and quantisation work on copies).
    """
    t0 = time.time()
    if not facts:
        raise BadInput("no facts to attack")
    if not all(isinstance(f, Fact) for f in [*facts, *(pool or [])]):
        raise BadType("facts and pool must be lists of codecut.Fact (see codecut.load_facts)")
    config = config or AttackConfig()
    if plan is not None:  # the plan's bottleneck, checked against it before any work
        with apply(model, plan, bottleneck=bottleneck) as handle:
            bottleneck = handle.bottleneck
    states = States(bottleneck, plan)
    attacked = {(f.subject, f.relation) for f in facts}
    others = [
        f
        for f in (example_facts() if pool is None else pool)
        if (f.subject, f.relation) not in attacked
    ]
    if groups is None:
        groups = neighbours(model, facts, others, config.neighbours)
    elif not set(groups) <= set(GROUPS[1:]) or not all(
        isinstance(f, Fact) for fs in groups.values() for f in fs
    ):
        raise BadType(f"groups must map some of {', '.join(GROUPS[1:])} to lists of codecut.Fact")
    groups = {name: fs for name, fs in {"forget": list(facts), **groups}.items() if fs}
    relearn_lr = config.relearn_lr or (1e-3 if config.relearn_lora else 1e-4)
    rows = [
        *format.probe(model, groups, others, states, config.shots),
        *hops.probe(model, groups, others, states),
        *generation.probe(model, groups, states, config.samples, config.new_tokens, config.seed),
        *ignorance.probe(model, groups, others, states),
        *probing.probe(model, groups, others, states),
        *relearn.probe(
            model,
            groups,
            others,
            states,
            config.relearn_steps,
            relearn_lr,
            config.relearn_facts,
            config.relearn_lora,
        ),
        *relearn.probe_half(
            model,
            groups,
            states,
            config.relearn_steps,
            relearn_lr,
            config.relearn_lora,
        ),
        *unhooked.probe(model, groups, states),
        *quantize.probe(model, groups, states),
        *fluency.probe(model, texts or fluency.TEXTS, states),
    ]
    return AttackCard(
        model=model.name,
        facts=list(facts),
        groups={name: fs for name, fs in groups.items() if name != "forget"},
        codes=plan.codes if plan is not None else None,
        config=asdict(config),
        rows=rows,
        seconds=round(time.time() - t0, 2),
    )


@torch.no_grad()
def neighbours(
    model: Model, facts: list[Fact], others: list[Fact], n: int
) -> dict[str, list[Fact]]:
    """Up to `n` facts of `others` per reference group, each answered by the clean model on its
    prompt: "same subject" (another relation of a subject of `facts`), "same relation" (another
    subject) and "unrelated" (neither)."""
    subjects, relations = {f.subject for f in facts}, {f.relation for f in facts}
    kinds = {
        "same subject": [f for f in others if f.subject in subjects],
        "same relation": [
            f for f in others if f.relation in relations and f.subject not in subjects
        ],
        "unrelated": [
            f for f in others if f.relation not in relations and f.subject not in subjects
        ],
    }
    near = [f for fs in kinds.values() for f in fs]
    if not near or n <= 0:
        return {name: [] for name in kinds}
    _, ok = model.answer_scores([f.prompt for f in near], [f.answer for f in near])
    known = {id(f) for f, yes in zip(near, ok) if yes}
    return {name: [f for f in fs if id(f) in known][:n] for name, fs in kinds.items()}

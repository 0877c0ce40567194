"""The relearning probe: a few fine-tuning steps on other facts, then the forgotten fact again.

Fine-tuning on a handful of unrelated examples brings much "unlearned" knowledge back (Lucki
et al.; Deeb and Roger): a fact that was only hidden returns, one that is gone does not. The
attacker here fine-tunes the deployed model, plan applied, on other facts of the same relation
(every prompt followed by its answer, next-token loss on the whole text, Adam), on a deep copy;
the clean model gets the same steps as the reference. All weights train, or LoRA adapters
(`lora=R`: rank R on every linear layer of every block, peft's, merged into the copy after),
the cheap fine-tuning an attacker with little compute would use.

`probe_half` is the harder test for a plan of several facts: fine-tune on half of the forgotten
facts themselves and measure the other half, which comes back when they share what was hidden.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
from codecut.codebook import Bottleneck
from codecut.probes.attacks.card import Row, measured, skipped
from codecut.probes.attacks.format import answer_metrics
from codecut.probes.attacks.states import States
from codecut.probes.evaluate import prompts_and_answers
from codecut.probes.params import adapted
from codecut.probes.plan import UnlearnPlan, apply

from codecut.core.facts import Fact
from codecut.core.models import Model, copied


def relearn(
    model: Model,
    facts: list[Fact],
    steps: int = 20,
    lr: float = 1e-4,
    plan: UnlearnPlan | None = None,
    bottleneck: Bottleneck | None = None,
    lora: int = 0,
) -> Model:
    """A copy of `model` fine-tuned for `steps` full-batch Adam steps on `facts`' sentences,
    with `plan` (made for `bottleneck`) in the forward pass while it trains: all its weights,
    or rank-`lora` adapters merged into them after. The user's model and bottleneck are not
    touched: both are copied (the bottleneck's copy trains nothing, but would otherwise
    collect gradients)."""
    tuned = copied(model)
    texts = [f"{p} {f.answer}" for f in facts for p in f.prompts]
    batch = tuned.tokenize(texts)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    during = (
        apply(tuned, plan, bottleneck=copy.deepcopy(bottleneck or plan.bottleneck))
        if plan is not None
        else None
    )
    try:
        with adapted(tuned, f"lora:{lora}") if lora else nullcontext() as adapters:
            params = adapters or [p for p in tuned.hf.parameters() if p.requires_grad]
            optimizer = torch.optim.Adam(params, lr=lr)
            with torch.enable_grad():
                for _ in range(steps):
                    logits = tuned(ids, mask)[:, :-1]
                    loss = torch.nn.functional.cross_entropy(
                        logits.flatten(0, 1), targets.flatten()
                    )
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
    finally:
        if during is not None:
            during.remove()
    for p in tuned.hf.parameters():
        p.grad = None  # the copy is for measuring: free the gradients' memory
    return tuned


def probe(
    model: Model,
    groups: dict[str, list[Fact]],
    others: list[Fact],
    states: States,
    steps: int,
    lr: float,
    n_facts: int,
    lora: int = 0,
) -> list[Row]:
    """Rows per group: every prompt's accuracy after fine-tuning (all weights, or rank-`lora`
    adapters) on up to `n_facts` other facts of the forget facts' relations (clean: the clean
    model so tuned; plan: the model tuned and measured with the plan applied)."""
    variant = f"other facts, LoRA r{lora}" if lora else "other facts"
    relations = {f.relation for f in groups["forget"]}
    subjects = {f.subject for f in groups["forget"]}
    train = [g for g in others if g.relation in relations and g.subject not in subjects][:n_facts]
    if not train:
        why = "the pool holds no other fact of the forget facts' relations"
        return [skipped("relearning", variant, group, why) for group in groups]
    return _tuned_rows(model, train, groups, states, variant, steps, lr, lora)


def probe_half(
    model: Model,
    groups: dict[str, list[Fact]],
    states: States,
    steps: int,
    lr: float,
    lora: int = 0,
) -> list[Row]:
    """Rows per group after fine-tuning on the first half of the forget facts, the forget group
    being the other half (Deeb and Roger's test: for typical methods 88% of the clean accuracy
    comes back). Skipped for fewer than two forget facts."""
    variant = f"half of the forgotten, LoRA r{lora}" if lora else "half of the forgotten"
    forget = groups["forget"]
    if len(forget) < 2:
        why = "needs a plan of two or more facts: half trains, the other half is measured"
        return [skipped("relearning", variant, group, why) for group in groups]
    half = len(forget) // 2
    rest = {**groups, "forget": forget[half:]}
    return _tuned_rows(model, forget[:half], rest, states, variant, steps, lr, lora)


def _tuned_rows(
    model: Model,
    train: list[Fact],
    groups: dict[str, list[Fact]],
    states: States,
    variant: str,
    steps: int,
    lr: float,
    lora: int,
) -> list[Row]:
    """Every group's accuracy on the clean model and with the plan, each tuned on `train`."""
    by_group: dict[str, dict[str, dict[str, float]]] = {group: {} for group in groups}
    for name in [s for s in states.names if s != "bottleneck"]:
        plan = states.plan if name == "plan" else None
        tuned = relearn(model, train, steps, lr, plan, states.bottleneck, lora)
        with states.enter(tuned, name), torch.no_grad():
            for group, facts in groups.items():
                by_group[group][name] = answer_metrics(tuned, *prompts_and_answers(facts))
    rows = []
    for group, facts in groups.items():
        n = sum(len(f.prompts) for f in facts)
        rows += measured("relearning", variant, group, n, by_group[group])
    return rows

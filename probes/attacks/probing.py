"""The probing probe: can the answer still be read from the activations, where the model no
longer says it?

SAE ablations can be shallow: the model stops saying a thing while its activations still hold
it, for a later layer (or a fine-tuned head) to read back. A linear probe (multinomial logistic
regression, L2-penalised, on standardised activations) learns from the clean model's activations
at the last token of *other* facts' prompts of the same relation to pick the answer among the
answers those facts have; it then reads every prompt of the facts measured, on the clean model
and with the plan applied. Three read points:

- before hook: the output of the layer below the bottleneck's (a reference: the cut cannot
  reach it, so its plan number equals its clean one);
- at hook: the bottleneck's hook, after the cut;
- last layer: the last layer's output, what the model's head reads.

The facts measured (forget and neighbours) are never in the training set. A fact whose answer
no training fact has cannot be named by such a probe (answers unique to a subject, such as
capitals): its prompts are left out, and a group left with none is skipped. Guessing scores
1 / (number of candidates), the row's `chance`; a clean accuracy no better is blind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from codecut.probes.attacks.card import Row, measured, skipped
from codecut.probes.attacks.states import States
from codecut.probes.evaluate import prompts_and_answers

from codecut.core.facts import Fact
from codecut.core.models import Model

VARIANTS = ("before hook", "at hook", "last layer")
WHY_NOT = {
    "no bottleneck": "no bottleneck, so no hook to read at",
    "before hook": "the bottleneck sits in the first layer: nothing before it to read",
    "last layer": "the bottleneck sits at the last layer's output: see 'at hook'",
    "no answers": "no other fact of the pool has this relation and answer to train a probe on",
}
L2 = 1e-3  # the probe's weight penalty (on standardised activations); set before any run
STEPS = 100  # L-BFGS iterations
BATCH = 32  # prompts per forward pass


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: the candidates it picks among, and its standardisation and weights."""

    answers: list[str]
    mean: torch.Tensor  # [d]
    std: torch.Tensor  # [d]
    weight: torch.Tensor  # [len(answers), d]
    bias: torch.Tensor  # [len(answers)]

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """[N, len(answers)]: each candidate's probability for activations `x` [N, d]."""
        return (((x - self.mean) / self.std) @ self.weight.T + self.bias).softmax(-1)


def fit(x: torch.Tensor, labels: list[str]) -> LinearProbe:
    """Multinomial logistic regression of `labels` on activations `x` [N, d] (full batch,
    L-BFGS from zero weights: deterministic)."""
    answers = sorted(set(labels))
    y = torch.tensor([answers.index(a) for a in labels])
    mean, std = x.mean(0), x.std(0, correction=0).clamp(min=1e-6)
    z = (x - mean) / std
    weight = torch.zeros(len(answers), x.shape[1], requires_grad=True)
    bias = torch.zeros(len(answers), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=STEPS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = z @ weight.T + bias
        loss = torch.nn.functional.cross_entropy(logits, y) + L2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return LinearProbe(answers, mean, std, weight.detach(), bias.detach())


@torch.no_grad()
def read(model: Model, prompts: list[str], hooks: list[str]) -> dict[str, torch.Tensor]:
    """{hook: [len(prompts), d]}: the activation at each prompt's last token (float32, CPU).

    The readers are registered after any attached bottleneck's hook, so at the bottleneck's own
    hook they see its output (the cut activation)."""
    caught: dict[str, torch.Tensor] = {}

    def catcher(hook: str):
        def catch(module, args, output: torch.Tensor) -> None:
            caught[hook] = output.detach()

        return catch

    handles = [model.hook_dict[h].register_forward_hook(catcher(h)) for h in hooks]
    got: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    try:
        for i in range(0, len(prompts), BATCH):
            batch = model.tokenize(prompts[i : i + BATCH])
            model(batch["input_ids"], batch["attention_mask"])
            rows = torch.arange(len(batch["last"]))
            for h in hooks:
                got[h].append(caught[h][rows, batch["last"]].float().cpu())
    finally:
        for handle in handles:
            handle.remove()
    return {h: torch.cat(xs) for h, xs in got.items()}


def points(model: Model, hook: str | None) -> dict[str, str]:
    """{variant: the hook it reads}; a variant with no place on this model is left out."""
    if hook is None:
        return {}
    where = {"at hook": hook}
    layer = re.match(r"blocks\.(\d+)\.", hook)
    if layer and int(layer[1]) > 0:
        where["before hook"] = f"blocks.{int(layer[1]) - 1}.hook_out"
    last = f"blocks.{model.n_layers - 1}.hook_out"
    if model.hook_dict.get(last) is not model.hook_dict[hook]:
        where["last layer"] = last
    return where


def accuracy(
    probes: dict[str, LinearProbe], x: torch.Tensor, answers: list[str], relations: list[str]
) -> dict[str, float]:
    """accuracy (the probe's top candidate is the answer) and p_answer (the probe's probability
    of it), over prompts read as `x` [N, d], each with its relation's probe."""
    hits, p = [], []
    for row, answer, relation in zip(x, answers, relations):
        probe = probes[relation]
        probs = probe.probabilities(row[None])[0]
        hits.append(probe.answers[int(probs.argmax())] == answer)
        p.append(probs[probe.answers.index(answer)].item())
    return {"accuracy": sum(hits) / len(hits), "p_answer": sum(p) / len(p)}


def train_probes(
    model: Model, facts: list[Fact], where: dict[str, str]
) -> dict[str, dict[str, LinearProbe]]:
    """{variant: {relation: probe}}: a probe per read point and relation, fitted on the model's
    activations of `facts`' prompts (the model as it is: clean, in the suite)."""
    texts, labels = prompts_and_answers(facts)
    of = [f.relation for f in facts for _ in f.prompts]
    acts = read(model, texts, list(where.values()))
    probes: dict[str, dict[str, LinearProbe]] = {variant: {} for variant in where}
    for relation in sorted(set(of)):
        rows = [i for i, r in enumerate(of) if r == relation]
        for variant, h in where.items():
            probes[variant][relation] = fit(acts[h][rows], [labels[i] for i in rows])
    return probes


def probe(
    model: Model, groups: dict[str, list[Fact]], others: list[Fact], states: States
) -> list[Row]:
    """A row per read point, group and metric: probes trained on the clean model's activations
    of the pool's other facts read the groups' prompts in each state."""
    hook = states.bottleneck.hook if states.bottleneck is not None else None
    where = points(model, hook)
    hooks = list(where.values())
    measuring = {(f.subject, f.relation) for facts in groups.values() for f in facts}
    relations = {f.relation for facts in groups.values() for f in facts}
    train = [
        g for g in others if g.relation in relations and (g.subject, g.relation) not in measuring
    ]
    candidates = {r: {g.answer for g in train if g.relation == r} for r in relations}
    probes = train_probes(model, train, where) if train and hooks else {}
    out = []
    for group, facts in groups.items():
        known = [f for f in facts if f.answer in candidates[f.relation]]
        texts, answers = prompts_and_answers(known)
        of = [f.relation for f in known for _ in f.prompts]
        by_state = states.measure(model, read, texts, hooks) if texts and hooks else {}
        for variant in VARIANTS:
            if variant not in where:
                reason = WHY_NOT["no bottleneck" if hook is None else variant]
                out.append(skipped("probing", variant, group, reason))
            elif not texts:
                out.append(skipped("probing", variant, group, WHY_NOT["no answers"]))
            else:
                by_relation, h = probes[variant], where[variant]
                metrics = {
                    state: accuracy(by_relation, x[h], answers, of) for state, x in by_state.items()
                }
                chance = sum(1 / len(by_relation[r].answers) for r in of) / len(of)
                out += measured("probing", variant, group, len(texts), metrics, chance=chance)
    return out

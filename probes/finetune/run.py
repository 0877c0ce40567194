"""`finetune_unlearn`: make a model forget facts by changing its weights, and say what it did.

    result = finetune_unlearn(model, forget, retain, method="npo")
    result.model                      # the unlearned Model (a copy unless inplace=True)
    result.record.forget_accuracy     # (before, after): share of the forget prompts answered

The run: check the request, copy the model, build the sequences, pick the weights (LoRA
adapters: added now, merged after), let the method compute what stays fixed, then Adam steps
on those weights (full batch unless `batch_size`), stopping early once no forget prompt
(prompt or paraphrase) is answered any more and `min_steps` have run (`bake`: and the retain
prompts are answered where the plan answers them).
"""

from __future__ import annotations

import inspect
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

import torch
from codecut.codebook import Bottleneck
from codecut.probes.evaluate import answered, prompts_and_answers
from codecut.probes.finetune import save
from codecut.probes.finetune.config import FinetuneConfig, finetune_config
from codecut.probes.finetune.data import Batch, Data, sequences
from codecut.probes.finetune.losses import METHODS, NEEDS_RETAIN, Loss, rmu_layer
from codecut.probes.finetune.record import BeforeAfter, FinetuneRecord, FinetuneResult
from codecut.probes.params import adapted
from codecut.probes.plan import UnlearnPlan, apply
from tqdm.auto import tqdm

from codecut.core.errors import BadInput
from codecut.core.facts import Fact
from codecut.core.models import Model, copied


def finetune_unlearn(
    model: Model,
    forget: list[Fact],
    retain: list[Fact] | None = None,
    method: str = "npo",
    *,
    plan: UnlearnPlan | None = None,
    bottleneck: Bottleneck | None = None,
    inplace: bool = False,
    save_dir: str | os.PathLike | None = None,
    **settings,
) -> FinetuneResult:
    """Fine-tune the model's weights so it forgets `forget` (the baseline the zero-shot path is
    measured against, and the way to make a plan permanent).

    Args:
        model: a model that knows every forget fact (greedy answer on its prompt).
        forget: the facts to forget; it trains on every prompt and paraphrase of each.
        retain: facts to keep: trained on by the methods with a retain term (graddiff, rmu,
            snap, bake; antisample with alpha > 0), measured for every method. Facts with a
            forget fact's (subject, relation) are left out.
        method: one of `METHODS`: "ga", "graddiff", "npo", "simnpo", "rmu", "flat", "snap",
            "antisample" or "bake" (each loss is written out in its function in
            `codecut.probes.finetune.losses`).
        plan: for "bake": the plan to make permanent; `bottleneck` is its bottleneck when the
            plan does not hold it.
        inplace: change `model`'s own weights; by default a deep copy is trained and `model`
            is left as it was. (An interrupted in-place run leaves the weights part-trained;
            with LoRA, as they were.)
        save_dir: also write the model there (see `save.save_model`); it must not exist or be
            empty. Nothing is written if the run fails or is interrupted.
        **settings: `FinetuneConfig`'s fields (params, steps, lr, min_steps, seed, batch_size:
            see it for each, with the defaults) and the method's own hyper-parameters
            (`method_options` lists them), e.g. `steps=50, params="lora:8", beta=0.1`.

    Returns a FinetuneResult: the unlearned model and its record.
    """
    t0 = time.time()
    config = finetune_config(forget, retain, method, plan=plan, save_dir=save_dir, **settings)
    keys = {(f.subject, f.relation) for f in forget}
    retain = [f for f in retain or [] if (f.subject, f.relation) not in keys]
    if method in NEEDS_RETAIN and not retain:
        raise BadInput(f"method {method} needs retain facts other than the forget facts")
    before = _measure(model, forget, retain)
    first = 0
    for f in forget:  # its main prompt must be answered: else there is nothing to forget
        if not before.answered[first]:
            raise BadInput(
                f"the model does not know {f.prompt!r} -> {f.answer!r} (greedy answer "
                "differs): nothing to forget"
            )
        first += len(f.prompts)
    student = model if inplace else copied(model)
    config = _resolved(student, config)
    data = Data(
        sequences(student, forget), sequences(student, retain) if retain else None, forget, retain
    )
    wanted = inspect.signature(METHODS[method]).parameters
    with adapted(student, config.params, config.seed) as weights:
        given = {"plan": plan, "bottleneck": bottleneck, "seed": config.seed, "weights": weights}
        extra = {k: v for k, v in given.items() if k in wanted}
        done = _done(student, data, plan, bottleneck)  # before a method moves the weights
        loss = METHODS[method](student, data, **config.options, **extra)
        losses, stopped = _train(student, loss, weights, config, done)
    after = _measure(student, forget, retain)
    record = FinetuneRecord(
        config=config,
        source=model.name,
        facts=list(forget),
        n_retain=len(retain),
        steps_run=len(losses),
        stopped_early=stopped,
        seconds=0.0,
        forget_accuracy=BeforeAfter(before.forget, after.forget),
        forget_p=BeforeAfter(before.forget_p, after.forget_p),
        retain_accuracy=BeforeAfter(before.retain, after.retain) if retain else None,
        losses=losses,
    )
    record.seconds = time.time() - t0
    if method == "bake" and plan is not None and not stopped:
        # a bake that ran out of steps is not the plan's copy; a robust one (weights moved toward
        # noise) can leave a damaged model, which the numbers above say but a user may not read
        retained = f", retain {before.retain:.3f} -> {after.retain:.3f}" if retain else ""
        warnings.warn(
            f"bake did not copy the plan by step {len(losses)} of {config.steps} (forget prompts "
            f"answered {after.forget:.3f}{retained}): give it more steps before using the model",
            stacklevel=2,
        )
    result = FinetuneResult(student, record)
    if save_dir is not None:
        save.save_model(result, save_dir)
    return result


class _Measured(NamedTuple):
    answered: torch.Tensor  # per forget (fact, prompt)
    forget: float
    forget_p: float
    retain: float


def _measure(model: Model, forget: list[Fact], retain: list[Fact]) -> _Measured:
    p, ok = model.answer_scores(*prompts_and_answers(forget))
    kept = answered(model, retain).float().mean().item() if retain else float("nan")
    return _Measured(ok, ok.float().mean().item(), p.mean().item(), kept)


def _resolved(model: Model, config: FinetuneConfig) -> FinetuneConfig:
    """The config with what depends on the model filled in: RMU's layer, the default params."""
    options = dict(config.options)
    params = config.params or "all"
    if config.method == "rmu":
        options["layer"] = layer = rmu_layer(model, options["layer"])
        if not 0 <= layer < model.n_layers:
            raise BadInput(f"layer {layer}: {model.name} has blocks 0 to {model.n_layers - 1}")
        params = config.params or f"mlp:{max(0, layer - 2)}-{layer}"
    return replace(config, params=params, options=options)


def _done(
    model: Model, data: Data, plan: UnlearnPlan | None, bottleneck: Bottleneck | None
) -> Callable[[], bool]:
    """The early stop: no forget prompt answered any more; for `bake` (given its plan), also
    every retain prompt answered exactly where the plan answers it, since bake is to copy the
    plan, and forgetting alone had it stop with neighbours the plan keeps still lost (a world
    seed: 92% of them against the plan's 100%)."""
    forget, retain = data.forget_facts, data.retain_facts
    if plan is None or not retain:
        return lambda: not answered(model, forget).any()
    with apply(model, plan, bottleneck=bottleneck):
        target = answered(model, retain)
    return lambda: (
        not answered(model, forget).any() and torch.equal(answered(model, retain), target)
    )


def _train(
    model: Model, loss: Loss, weights: list, config: FinetuneConfig, done: Callable[[], bool]
) -> tuple[list[float], bool]:
    """Adam steps on `weights` (every other weight frozen meanwhile); returns the losses and
    whether it stopped early (`done()` after a step, from `min_steps` on). Requires-grad flags
    and gradients are as before afterwards."""
    chosen = {id(p) for p in weights}
    flags = {p: p.requires_grad for p in model.hf.parameters()}
    for p in flags:
        p.requires_grad_(id(p) in chosen)
    optimizer = torch.optim.Adam(weights, lr=config.lr)
    batch = Batch(config.batch_size, config.seed)
    losses: list[float] = []
    try:
        with torch.enable_grad():
            bar = tqdm(range(config.steps), desc=f"finetune {config.method}", leave=False)
            for step in bar:
                batch.next()
                value = loss(batch)
                optimizer.zero_grad()
                value.backward()
                if step == 0 and all(p.grad is None for p in weights):
                    raise BadInput(
                        f"params {config.params!r} do not reach the {config.method} loss "
                        "(for rmu: train blocks at or below its layer)"
                    )
                optimizer.step()
                losses.append(value.item())
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if step + 1 >= config.min_steps and done():
                    return losses, True
        return losses, False
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None

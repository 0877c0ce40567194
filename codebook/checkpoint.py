"""A training run's checkpoint: the folder `out/checkpoint/` holds what the run was made from
(`source.json`), the collected activations (when they were not read from a `collect` folder) and
the optimizer state, so an interrupted `train` resumes where it stopped, and refuses to resume
from a checkpoint made with other arguments."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from codecut.codebook.activations import Activations, ActivationShards, collect_activations
from codecut.codebook.bottleneck import Bottleneck
from codecut.codebook.distributed import Ranks
from codecut.codebook.shuffle import ShuffledRows, ShuffledShards

from codecut.core.errors import BadInput
from codecut.core.io import atomic_file, write_text

if TYPE_CHECKING:
    from codecut.core.models import Model

log = logging.getLogger(__name__)

# In the output folder while training runs: the checkpoint folder and what it holds.
FOLDER = "checkpoint"
SOURCE = "source.json"  # the arguments the checkpoint was made with
CACHED_ACTIVATIONS = "activations.pt"  # the collected activations (not with activations=DIR)
STATE = "state.pt"  # weights, optimizer, step, shuffle state


def source(
    settings: dict, hook: str, model_name: str, d_model: int, shards: ActivationShards | None
) -> dict:
    """What a checkpoint is made from (recorded with it, compared when resuming): the model,
    the hook, the training `settings` that change the result, and the activations folder
    with its texts' hash when training reads one (else the hash is added once the texts are
    known)."""
    made = {"model": model_name, "d_model": d_model, "hook": hook, **settings}
    if shards:
        made["activations"] = str(shards.folder.resolve())
        made["texts_sha256"] = shards.manifest.texts_sha256
    return made


def cached_activations(
    model: Model,
    hook: str,
    texts: list[str],
    n: int,
    ckpt: Path | None,
    source: dict,
    R: Ranks,
) -> Activations:
    """`n` activations of `texts`, collected, or read from the checkpoint of an interrupted run
    (and written there by rank 0 for the next one)."""
    cached = ckpt / CACHED_ACTIVATIONS if ckpt else None
    resume = bool(cached and cached.exists())
    R.barrier()  # every rank has looked before rank 0 writes one
    if resume:
        acts = Activations(**torch.load(cached))
        log.info("resuming: %d cached activations from %s", len(acts.x), cached)
        return acts
    acts = collect_activations(model, hook, texts, n, R)
    if not len(acts.x):
        raise BadInput(f"no activations to train on at {hook}: the texts hold no ordinary tokens")
    if cached and R.main:
        # What the checkpoint is made from, first: a checkpoint without it is never used.
        write_text(ckpt / SOURCE, json.dumps(source, indent=1))
        with atomic_file(cached) as tmp:
            torch.save({"x": acts.x, "norm_limit": acts.norm_limit}, tmp)
    return acts


def save_state(
    state_file: Path,
    bn: Bottleneck,
    opt: torch.optim.Optimizer,
    step: int,
    last_fired: torch.Tensor,
    gen: torch.Generator,
    rows: ShuffledRows | ShuffledShards,
) -> None:
    """Write what resuming after `step` steps needs, atomically."""
    with atomic_file(state_file) as tmp:
        torch.save(
            {"bottleneck": bn.state_dict(), "optimizer": opt.state_dict(), "step": step,
             "last_fired": last_fired, "gen": gen.get_state(), "rows": rows.state()},
            tmp,
        )  # fmt: skip


def load_state(
    state_file: Path,
    bn: Bottleneck,
    opt: torch.optim.Optimizer,
    rows: ShuffledRows | ShuffledShards,
    gen: torch.Generator,
) -> tuple[int, torch.Tensor]:
    """Restore a `save_state` checkpoint into `bn`, `opt`, `rows` and `gen`; returns (the step
    to go on from, the last_fired counts)."""
    state = torch.load(state_file)
    bn.load_state_dict(state["bottleneck"])
    opt.load_state_dict(state["optimizer"])
    rows.load_state(state.get("rows") or {"order": state["order"]})  # older: only "order"
    gen.set_state(state["gen"])
    return state["step"], state["last_fired"]


def check(ckpt_dir: Path, source: dict) -> None:
    """Refuse to resume from a checkpoint made with other arguments (or that does not say)."""
    if not ckpt_dir.is_dir() or not any(ckpt_dir.iterdir()):
        return
    what = f"use a new --out (out=...) or delete {ckpt_dir} to start over"
    try:
        made = json.loads((ckpt_dir / SOURCE).read_text())
    except (OSError, ValueError):
        raise BadInput(
            f"{ckpt_dir} holds a checkpoint that does not record what it was made from; {what}"
        ) from None
    diff = [
        f"{key}={made.get(key)!r} (now {value!r})"
        for key, value in source.items()
        if made.get(key) != value
    ]
    if diff:
        raise BadInput(
            f"{ckpt_dir} holds a checkpoint made with other arguments: {', '.join(diff)}; {what}"
        )

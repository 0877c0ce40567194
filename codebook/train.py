"""Training a bottleneck on a model's activations at one hook.

    bn = train_bottleneck(model, hook="blocks.12.hook_out", kind="topk", n_codes=8192, k=32,
                          tokens=2_000_000, out="my_bottleneck/")
    bn = train(model, TrainConfig(hook="blocks.12.hook_out"), out="my_bottleneck/")  # the same

`TrainConfig` holds what to train and how, with the defaults (the CLI's too). Steps: collect
activations through the hook (`activations.collect_activations`: special tokens and outlier
norms left out), or read them from a `collect_to_disk` folder; hold out 5% of the texts for
evaluation (`corpus.split_texts`); train with Adam on shuffled activations (in memory the whole
set is the shuffle buffer: it fits at these sizes), unit-norm decoder rows, AuxK (dead codes
learn to explain the residual error, as in sparsify); checkpoint and resume; then measure
(`metrics.evaluate_bottleneck`), set the code statistics on the bottleneck and record the
metrics in `cfg.extra`.

Under torchrun (`torchrun --nproc_per_node N -m codecut train ...`) the same training runs
data-parallel: see `distributed.py`.

sae-lens' trainer is not used: it drives its own encoder, while codecut's encode/decode must go
through `codecut.kernels` so training and inference compute the same thing.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from codecut.codebook import checkpoint
from codecut.codebook.activations import (
    SEED,
    ActivationShards,
    check_positive,
    collect_activations,
)
from codecut.codebook.bottleneck import Bottleneck
from codecut.codebook.config import BottleneckConfig
from codecut.codebook.corpus import default_corpus, split_texts, texts_hash
from codecut.codebook.distributed import Ranks, data_parallel, ranks
from codecut.codebook.metrics import evaluate_bottleneck
from codecut.codebook.shuffle import ShuffledRows, ShuffledShards
from codecut.kernels import sparse_decode, topk_encode
from tqdm.auto import tqdm

from codecut.core.errors import BadInput, BadOption, BadType
from codecut.core.io import write_text
from codecut.core.models import resolve_device

if TYPE_CHECKING:
    from codecut.core.models import Model

log = logging.getLogger(__name__)

# The default hook is 40% of the way through the model's layers: blocks.12 of SmolLM2-135M's 30,
# blocks.7 of Gemma 3 270M's 18. A fraction, not a layer number, so that it means the same place
# in any model; 0.4 is where SmolLM2's layer comparison put it (benchmarks/results/bottleneck_layers.json).
DEFAULT_DEPTH = 0.4
# Adam's learning rate is BASE_LR at LR_REFERENCE_CODES codes and falls as 1/sqrt(n_codes), the
# scaling that "Scaling and evaluating sparse autoencoders" (Gao et al. 2024) found for TopK SAEs.
BASE_LR, LR_REFERENCE_CODES = 1e-3, 16384
HEAD_ROWS = 65536  # the first activations, which set the input scale and b_dec's starting mean
EVAL_TOKENS = 50_000  # held-out activations that FVU and L0 are measured on
NO_TEXT_EVAL_ROWS = 4096  # without held-out texts: the first training activations instead
# A code is dead once it has not fired for min(DEAD_AFTER_MAX, tokens / DEAD_AFTER_FRACTION)
# activations (sparsify uses 10M; short runs need a shorter window), but never within
# DEAD_AFTER_MIN_BATCHES batches, when a sparse code may not have had its chance yet.
DEAD_AFTER_MAX, DEAD_AFTER_FRACTION, DEAD_AFTER_MIN_BATCHES = 1_000_000, 10, 20
PROGRESS_EVERY = 20  # steps between progress-bar updates (each reads the loss: a GPU sync)


TRAINABLE = ("topk", "codebook")  # the kinds training makes (relu/jumprelu are only loaded)
# `train_bottleneck`'s arguments that are not TrainConfig fields.
RUN_ARGUMENTS = ("texts", "out", "command", "activations", "device")
# The CLI flag of each TrainConfig field the command line sets, for its messages.
CLI_NAMES = {"n_codes": "--codes", "k": "--k", "tokens": "--tokens", "kind": "--kind"}


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how: the one place for training's defaults. Checked when made: a
    configuration that cannot work is a `BadOption` naming the field.

    Attributes:
        hook: where to train (None: `default_hook(model)`, or with activations=DIR the hook
            they were collected at).
        kind: "topk" or "codebook".
        n_codes: number of codes n.
        k: active codes per token.
        tokens: training steps x batch size (activations seen, with repeats).
        unique_tokens: distinct activations to collect (None: `tokens`); fewer means epochs.
        batch_size: activations per Adam step.
        lr: Adam learning rate (None: `BASE_LR / sqrt(n_codes / LR_REFERENCE_CODES)`).
        aux_coef: weight of the AuxK loss for dead codes (1/32, as Gao et al.).
        checkpoint_every: steps between checkpoints.
        seed: for initialization, shuffling and the held-out split.
        time_limit: stop the optimization after this many seconds of wall time (counted from
            the start), with fewer than `tokens` seen; the recorded numbers say how many.
    """

    hook: str | None = None
    kind: str = "topk"
    n_codes: int = 8192
    k: int = 32
    tokens: int = 2_000_000
    unique_tokens: int | None = None
    batch_size: int = 1024
    lr: float | None = None
    aux_coef: float = 1 / 32
    checkpoint_every: int = 200
    seed: int = SEED
    time_limit: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in TRAINABLE:
            raise BadOption(
                f"kind: can train {' or '.join(map(repr, TRAINABLE))}, not {self.kind!r}", "kind"
            )
        for arg in ("n_codes", "k", "tokens", "unique_tokens", "batch_size", "checkpoint_every"):
            value = getattr(self, arg)
            if not (arg == "unique_tokens" and value is None):  # None: as many as `tokens`
                check_positive(arg, value)
        if self.k > self.n_codes:
            raise BadOption(
                f"k {self.k} is more than n_codes {self.n_codes}: the active codes per token "
                "are chosen among the codes",
                "k",
                "n_codes",
            )
        for arg in ("lr", "time_limit"):
            value = getattr(self, arg)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise BadOption(f"{arg} must be None or a number > 0, got {value!r}", arg)

    @property
    def learning_rate(self) -> float:
        """`lr`, or the default for `n_codes`."""
        return self.lr or BASE_LR / math.sqrt(self.n_codes / LR_REFERENCE_CODES)

    @property
    def steps(self) -> int:
        """Adam steps: `tokens` // `batch_size` (at least one)."""
        return max(1, self.tokens // self.batch_size)

    @property
    def dead_after(self) -> int:
        """Activations without firing after which a code counts as dead (and AuxK trains it)."""
        window = min(DEAD_AFTER_MAX, self.tokens // DEAD_AFTER_FRACTION)
        return max(DEAD_AFTER_MIN_BATCHES * self.batch_size, window)


def train_bottleneck(
    model: Model | None = None,
    config: TrainConfig | None = None,
    *,
    texts: list[str] | None = None,
    out: str | Path | None = None,
    command: str | None = None,
    activations: str | Path | None = None,
    device: str | torch.device | None = None,
    **overrides,
) -> Bottleneck:
    """Train a bottleneck at a hook of `model`: `train` with `config` (default `TrainConfig()`)
    and any of its fields given as `overrides` (hook="blocks.12.hook_out", n_codes=8192, ...);
    see both for what each means."""
    config = train_config(config, **overrides)
    return train(
        model, config, texts=texts, out=out, command=command, activations=activations,
        device=device,
    )  # fmt: skip


def train_config(config: TrainConfig | None = None, **arguments) -> TrainConfig:
    """The checked `TrainConfig` of the call `train_bottleneck(model, config, **arguments)`:
    `config` (default `TrainConfig()`) with the arguments that are its fields. The public API
    checks a request with it before it loads the model."""
    if config is not None and not isinstance(config, TrainConfig):
        raise BadType(
            f"config must be a TrainConfig, got {type(config).__name__}: pass hook=, kind=, "
            "n_codes=, ... as keywords"
        )
    overrides = {k: v for k, v in arguments.items() if k not in RUN_ARGUMENTS}
    known = {f.name for f in fields(TrainConfig)}
    if unknown := sorted(set(overrides) - known):
        raise BadInput(
            f"train_bottleneck has no option {', '.join(unknown)}; TrainConfig's fields: "
            f"{', '.join(sorted(known))}"
        )
    return replace(config or TrainConfig(), **overrides)


class _Data(NamedTuple):
    """What training reads: the training rows (a tensor, or shards read one at a time), the
    numbers its start takes from their head, the held-out texts and the activations that FVU is
    measured on, how many texts there were and the outlier norm limit."""

    rows: torch.Tensor | ActivationShards
    scale: float  # rows are trained on as rows / scale
    mean: torch.Tensor  # [d] mean of the scaled head: b_dec's starting value
    eval_x: torch.Tensor
    eval_texts: list[str]
    n_texts: int
    norm_limit: float


def train(
    model: Model | None,
    config: TrainConfig,
    *,
    texts: list[str] | None = None,
    out: str | Path | None = None,
    command: str | None = None,
    activations: str | Path | None = None,
    device: str | torch.device | None = None,
) -> Bottleneck:
    """Train the bottleneck `config` describes on `model`'s activations.

    Args:
        model: the model; may be None with `activations`.
        config: what to train and how.
        texts: the corpus; default `corpus.default_corpus(model)` (model samples + package prose).
        out: directory to save the result to; checkpoints go to `out/checkpoint/` meanwhile and
            training resumes from there when restarted with the same arguments.
        command: the command line to record (default: this process's argv).
        activations: a folder written by `activations.collect_to_disk` to train from instead of
            collecting, streamed one shard at a time (with one shard, the same steps as direct
            training on the same activations; with several, each epoch visits the shards in a
            random order and each shard's activations in a random order). The model is then
            needed only for the CE metrics (with the texts the shards came from, for the
            held-out ones): without it, FVU and L0 are measured on the first NO_TEXT_EVAL_ROWS
            training activations instead of held-out ones, and the CE metrics are left out.
        device: where the bottleneck trains (the kernels run there: Triton on CUDA); default:
            the model's device, or without a model CUDA when there is one, else the CPU.
            Activations collected from the model stay on its device; shards are read to the
            host and each batch is moved.

    Returns the trained Bottleneck, with its code statistics set (`fire_rate`, `act_mean`) and
    `cfg.extra["train"]` / `cfg.extra["metrics"]` filled in.
    """
    R = ranks()
    device = resolve_device(device if device is not None or model is None else model.device)
    if R.world > config.batch_size:
        raise BadInput(f"batch_size {config.batch_size} is smaller than the {R.world} processes")
    shards = ActivationShards(activations) if activations is not None else None
    hook, model_name, d_model = _where(model, config.hook, shards)
    t0 = time.time()
    ckpt = Path(out) / checkpoint.FOLDER if out else None
    source = checkpoint.source(
        {"kind": config.kind, "n_codes": config.n_codes, "k": config.k, "tokens": config.tokens,
         "unique_tokens": config.unique_tokens, "batch_size": config.batch_size,
         "lr": config.lr, "aux_coef": config.aux_coef, "seed": config.seed},
        hook, model_name, d_model, shards,
    )  # fmt: skip
    if ckpt:  # before the corpus is built: a mismatch fails fast
        checkpoint.check(ckpt, source)
    # Every rank has checked before rank 0 writes into the checkpoint: a rank that looked while
    # rank 0 was writing saw a folder without its source record and refused it.
    R.barrier()
    gen = torch.Generator().manual_seed(config.seed)
    if shards:
        data = _from_shards(model, hook, shards, texts, gen, ckpt, source, R)
    else:
        data = _from_texts(model, config, hook, texts, gen, ckpt, source, R)
    cfg = BottleneckConfig(
        kind=config.kind, d_in=d_model, n_codes=config.n_codes, k=config.k, hook=hook,
        model=model_name, apply_b_dec_to_input=config.kind == "topk",
        norm_limit=data.norm_limit,
    )  # fmt: skip
    bn = _init(cfg, data.mean.float().cpu(), gen).to(device)  # drawn on the host: any device
    rows = ShuffledShards(shards, gen) if shards else ShuffledRows(data.rows, gen)
    done = _optimize(bn, config, rows, len(data.rows), data.scale, gen, ckpt, t0, R)
    _fold_scale(bn, data.scale)
    train_seconds = time.time() - t0
    bn.cfg.extra = {
        "train": {
            "command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "tokens": done * config.batch_size,
            "unique_tokens": len(data.rows),
            "steps": done,
            "batch_size": config.batch_size,
            "lr": config.learning_rate,
            "seed": config.seed,
            "texts": data.n_texts,
            "seconds": round(train_seconds, 1),
        }
    }
    stats, metrics = evaluate_bottleneck(model, bn, data.rows, data.eval_x, data.eval_texts)
    with torch.no_grad():  # saved with the bottleneck; clamp ablations read act_mean
        bn.fire_rate.copy_(stats.fire_rate)
        bn.act_mean.copy_(stats.act_mean)
    bn.cfg.extra["metrics"] = metrics.to_dict()
    log.info("trained %r in %.0f s: %s", bn, train_seconds, bn.cfg.extra["metrics"])
    if out and R.main:  # every rank holds the same result; one writes it
        bn.save(out)
        if ckpt.exists():
            shutil.rmtree(ckpt)
    R.barrier()  # the result is on disk before any rank returns
    return bn


def default_hook(model: Model) -> str:
    """The hook training uses when none is named: the output of the block DEFAULT_DEPTH of the
    way through `model`."""
    return f"blocks.{round(DEFAULT_DEPTH * model.n_layers)}.hook_out"


def _where(
    model: Model | None, hook: str | None, shards: ActivationShards | None
) -> tuple[str, str, int]:
    """(hook, model name, d_model) of the training: the activations folder's, checked against
    `hook` and `model` when given; else `hook` (default `default_hook(model)`) of `model`."""
    if shards is not None:
        man = shards.manifest
        if hook is not None and hook != man.hook:
            raise BadInput(f"hook {hook!r}: the activations in {shards.folder} are at {man.hook!r}")
        if model is not None and model.name != man.model:
            raise BadInput(
                f"the activations in {shards.folder} are {man.model}'s, not {model.name}'s"
            )
        return man.hook, man.model, man.d_model
    if model is None:
        raise BadInput("a model is needed (or activations=DIR written by collect_to_disk)")
    hook = hook or default_hook(model)
    model.check_hook(hook)
    return hook, model.name, model.d_model


def _from_texts(
    model: Model,
    config: TrainConfig,
    hook: str,
    texts: list[str] | None,
    gen: torch.Generator,
    ckpt: Path | None,
    source: dict,
    R: Ranks,
) -> _Data:
    """Collect the training activations from the texts (or read them from the checkpoint); under
    torchrun each rank collects its share (the sampled default corpus is rank 0's)."""
    if texts is None:
        texts = R.from_main(lambda: default_corpus(model, seed=config.seed))
    texts = list(texts)
    source["texts_sha256"] = texts_hash(texts)
    if ckpt:
        checkpoint.check(ckpt, source)
    train_texts, eval_texts = split_texts(texts, gen)
    acts = checkpoint.cached_activations(
        model, hook, train_texts, config.unique_tokens or config.tokens, ckpt, source, R
    )
    head = acts.x[:HEAD_ROWS]
    eval_x = _eval_activations(model, hook, eval_texts, head, R)
    return _Data(acts.x, *_scale_and_mean(head), eval_x, eval_texts, len(texts), acts.norm_limit)


def _from_shards(
    model: Model | None,
    hook: str,
    shards: ActivationShards,
    texts: list[str] | None,
    gen: torch.Generator,
    ckpt: Path | None,
    source: dict,
    R: Ranks,
) -> _Data:
    """The training activations are the shards (every rank reads them all); with a model, the
    held-out texts are those of the split the shards were collected with (the texts must be the
    same)."""
    man = shards.manifest
    torch.randperm(man.n_texts, generator=gen)  # the split's draw: gen goes on as direct
    eval_texts = []
    if model is not None:
        texts = list(texts) if texts is not None else default_corpus(model, seed=man.seed)
        if texts_hash(texts) != man.texts_sha256:
            raise BadInput(
                f"the texts differ from those {shards.folder} was collected from; "
                "pass the same texts (or no model: the CE metrics are then left out)"
            )
        eval_texts = split_texts(texts, torch.Generator().manual_seed(man.seed))[1]
    if ckpt and R.main:
        ckpt.mkdir(parents=True, exist_ok=True)
        write_text(ckpt / checkpoint.SOURCE, json.dumps(source, indent=1))
    head = shards.head(HEAD_ROWS)
    eval_x = _eval_activations(model, hook, eval_texts, head, R)
    return _Data(shards, *_scale_and_mean(head), eval_x, eval_texts, man.n_texts, man.norm_limit)


def _scale_and_mean(head: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Training runs on x / scale, with scale such that the head's mean squared norm per
    dimension is 1, so one learning rate fits every model (the scale is folded back into the
    weights at the end); and the mean of the scaled head, where b_dec starts."""
    x = head.float()
    scale = x.pow(2).sum(-1).mean().div(x.shape[-1]).sqrt().item()
    return scale, (x / scale).mean(0)


def _eval_activations(
    model: Model | None, hook: str, eval_texts: list[str], head: torch.Tensor, R: Ranks
) -> torch.Tensor:
    """Up to EVAL_TOKENS activations of the held-out texts, or without any, the first
    NO_TEXT_EVAL_ROWS training activations."""
    if eval_texts:
        return collect_activations(model, hook, eval_texts, EVAL_TOKENS, R).x
    return head[:NO_TEXT_EVAL_ROWS]


def _init(cfg: BottleneckConfig, mean: torch.Tensor, gen: torch.Generator) -> Bottleneck:
    """Random unit-norm decoder rows, encoder = decoder transpose, b_dec = the data's `mean`."""
    bn = Bottleneck(cfg)
    with torch.no_grad():
        bn.W_dec.copy_(torch.randn(cfg.n_codes, cfg.d_in, generator=gen))
        bn.normalize_decoder()
        bn.W_enc.copy_(bn.W_dec.T)
        bn.b_dec.copy_(mean)
    return bn


def _fold_scale(bn: Bottleneck, scale: float) -> None:
    """Fold the training input scale back: the same codes, outputs in the model's units."""
    with torch.no_grad():
        bn.b_dec.mul_(scale)
        if bn.kind == "topk":  # values scale with the input
            bn.b_enc.mul_(scale)
        else:  # cosine values do not: the code vectors carry the scale
            bn.W_dec.mul_(scale)


# --- the optimization loop ----------------------------------------------------------------------
def _optimize(
    bn: Bottleneck,
    config: TrainConfig,
    rows: ShuffledRows | ShuffledShards,
    n_rows: int,
    scale: float,
    gen: torch.Generator,
    ckpt: Path | None,
    t0: float,
    R: Ranks,
) -> int:
    """Run the Adam steps (from the checkpoint's, when there is one) on rows / scale, saving a
    checkpoint every `config.checkpoint_every` steps; returns the steps done (fewer than
    `config.steps` when the time limit stopped it). Under torchrun each rank computes its share
    of every global batch and DDP averages the gradients."""
    opt = torch.optim.Adam(bn.parameters(), lr=config.learning_rate, betas=(0.9, 0.999))
    steps, batch_size = config.steps, config.batch_size
    device = bn.W_enc.device
    last_fired = torch.zeros(config.n_codes, dtype=torch.long, device=device)
    state_file = ckpt / checkpoint.STATE if ckpt else None
    start = 0
    if state_file and state_file.exists():
        start, last_fired = checkpoint.load_state(state_file, bn, opt, rows, gen)
        last_fired = last_fired.to(device)
        log.info("resuming at step %d of %d", start, steps)
    # After loading: the ranks start equal. A codebook's encoder bias gets no gradient.
    objective = data_parallel(_Objective(bn, config, R), unused_parameters=bn.kind == "codebook")
    bar = tqdm(
        range(start, steps),
        desc=f"training {config.kind} n={config.n_codes} k={config.k}",
        initial=start,
        total=steps,
        disable=not R.main,
    )
    done = start
    for step in bar:
        if config.time_limit and _out_of_time(config.time_limit, t0, R, device):
            log.warning("time limit reached after %d of %d steps", step, steps)
            break
        done = step + 1
        pos = (step * batch_size) % n_rows
        if step > 0 and pos < batch_size:  # a new epoch: reshuffle
            rows.new_epoch()
        batch = rows.get(pos, batch_size).to(device, non_blocking=True)
        seen = (step + 1) * batch_size
        loss, fvu, dead = objective(R.share(batch).float() / scale, len(batch), last_fired, seen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _step_unit_norm(bn, opt)
        if step % PROGRESS_EVERY == 0:
            fvu = R.sum(fvu.clone()) / R.world  # the ranks' shares add up to the batch's FVU
            bar.set_postfix(fvu=f"{fvu.item():.3f}", dead=f"{dead.float().mean().item():.3f}")
        if state_file and R.main and done % config.checkpoint_every == 0 and done < steps:
            checkpoint.save_state(state_file, bn, opt, done, last_fired, gen, rows)
    bar.close()
    return done


def _out_of_time(limit: float, t0: float, R: Ranks, device: torch.device) -> bool:
    """Whether the time limit has passed, on any rank (all stop at the same step)."""
    late = torch.tensor([float(time.time() - t0 > limit)], device=device)  # NCCL: on the GPU
    return R.sum(late).item() > 0


class _Objective(torch.nn.Module):
    """One step's loss on this rank's share of the global batch: FVU plus AuxK on the dead
    codes. Both are normalized by variances of the whole batch (summed over the ranks) and
    scaled by the number of ranks, so the mean over ranks (what DDP's gradient averaging takes)
    is the one-process loss. A module so that DDP can wrap it."""

    def __init__(self, bn: Bottleneck, config: TrainConfig, R: Ranks):
        super().__init__()
        self.bn, self.config, self.R = bn, config, R

    def forward(
        self, x: torch.Tensor, n: int, last_fired: torch.Tensor, seen: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, this share's part of the FVU, the dead mask) for share `x` of a batch of `n`
        rows; `seen` activations so far. Updates `last_fired` in place (the same on every
        rank: which codes fired anywhere in the batch)."""
        bn, R = self.bn, self.R
        codes = bn.encode(x)
        err = x - bn.decode(codes)
        fvu = _mean_sq(err, n, R) / _variance(x, n, R)
        fired = torch.zeros(self.config.n_codes, dtype=torch.int32, device=x.device)
        # A scatter, not a boolean-mask index: that would wait for the device every step.
        fired.scatter_reduce_(
            0, codes.indices.flatten(), (codes.values > 0).flatten().int(), "amax"
        )
        last_fired[R.sum(fired) > 0] = seen
        dead_after = self.config.dead_after
        if seen > dead_after:
            dead = (seen - last_fired) > dead_after
        else:
            dead = torch.zeros(self.config.n_codes, dtype=torch.bool, device=x.device)
        loss = fvu
        if dead.any():
            k_aux = min(int(dead.sum()), x.shape[-1] // 2)  # up to d/2 dead codes, as Gao et al.
            aux = _aux_loss(bn, x, err.detach(), dead, k_aux, n, R)
            loss = loss + self.config.aux_coef * aux.nan_to_num(0.0)
        return loss, fvu.detach(), dead


def _mean_sq(t: torch.Tensor, n: int, R: Ranks) -> torch.Tensor:
    """This share's part of the batch's mean squared row norm: the parts' mean over the ranks is
    the batch's. (One process keeps its own order of operations: results stay bit-identical.)"""
    if R.world == 1:
        return t.pow(2).sum(-1).mean()
    return R.world * t.pow(2).sum() / n


def _variance(x: torch.Tensor, n: int, R: Ranks) -> torch.Tensor:
    """Mean squared distance of the batch's rows from their mean (over all ranks' shares)."""
    if R.world == 1:
        return (x - x.mean(0)).pow(2).sum(-1).mean()
    mean = R.sum(x.sum(0)) / n
    return R.sum((x - mean).pow(2).sum()) / n


def _aux_loss(
    bn: Bottleneck, x: torch.Tensor, err: torch.Tensor, dead: torch.Tensor, k_aux: int, n: int,
    R: Ranks,
) -> torch.Tensor:  # fmt: skip
    """AuxK: the top dead codes reconstruct the residual error (normalized by its variance);
    this share's part, as in `_Objective`."""
    mask = torch.zeros_like(bn.b_enc).masked_fill(~dead, float("-inf"))
    if bn.kind == "codebook":
        aux = topk_encode(x, bn.W_enc, mask, k_aux, cosine=True)
    else:
        aux = topk_encode(x - bn.b_dec, bn.W_enc, bn.b_enc + mask, k_aux)
    rec = sparse_decode(aux.values.relu(), aux.indices, bn.W_dec, None)
    return _mean_sq(rec - err, n, R) / _variance(err, n, R)


def _step_unit_norm(bn: Bottleneck, opt: torch.optim.Optimizer) -> None:
    """An optimizer step that keeps topk decoder rows unit-norm: the gradient along each row is
    dropped before the step and the rows renormalized after (codebook rows keep free norms)."""
    if bn.kind == "topk":
        with torch.no_grad():
            W = bn.W_dec
            W.grad -= (W.grad * W).sum(-1, keepdim=True) * W
    opt.step()
    if bn.kind == "topk":
        bn.normalize_decoder()

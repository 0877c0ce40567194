"""Activations at a hook: collected in memory for training, or once to disk as safetensors shards
read back one shard at a time, so training from them needs memory for one shard, whatever the
total.

    acts = collect_activations(model, "blocks.12.hook_out", texts, max_tokens=2_000_000)
    collect_to_disk(model, "blocks.12.hook_out", tokens=50_000_000, out="acts/")
    shards = ActivationShards("acts/")      # shards.manifest, len(shards), shards.load(i)

Both keep the ordinary tokens only (special tokens are left out: the BOS position's norm is ~100x
the rest) and leave out outliers, positions with norm above NORM_OUTLIER x the median.

A folder holds `shard-00000.safetensors`, ... (tensors `x` [n, d_model] and `norms` [n]) and
`manifest.json` (`Manifest`). The positions are the ones `collect_activations` takes for training
(the same texts, held-out split, chunking and special-token filter); every position is written,
and the reader leaves out those with norm above `manifest.norm_limit` (known once collection is
done), so the shards read back are exactly the activations that direct training collects in
memory. Each shard is written atomically and the manifest rewritten after it: an interrupted
collection, run again with the same arguments, goes on where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from codecut.codebook.corpus import default_corpus, split_texts, texts_hash
from codecut.codebook.distributed import SINGLE, Ranks
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from codecut.core.errors import BadInput, BadOption, NotFound
from codecut.core.io import atomic_file, write_text

if TYPE_CHECKING:
    from codecut.core.models import Model

log = logging.getLogger(__name__)

NORM_OUTLIER = 5.0  # positions with norm > this x median are left out (and passed through)
CONTEXT = 128  # tokens per forward chunk: long texts are cut into chunks of this many
FORWARD_BATCH = 16  # chunks per forward pass
SHARD_TOKENS = 100_000  # activations per shard file (d_model=576 in bf16: ~115 MB)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}  # how shards may store activations
DTYPE = "bf16"  # the default: half the disk of fp32, and what training reads in memory anyway
SEED = 0  # of the held-out split; TrainConfig.seed's default too, so that the splits agree


def check_positive(arg: str, value) -> None:
    """Raise BadOption unless `value` (argument `arg`) is a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadOption(f"{arg} must be a positive whole number, got {value!r}", arg)


# --- in memory --------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by the collection hook to skip the layers after it."""


@dataclass
class Activations:
    """Collected activations: `x` [N, d] (bf16 to halve memory) and the norm limit used."""

    x: torch.Tensor
    norm_limit: float


def token_batches(
    model: Model, texts: list[str], ctx: int = CONTEXT, batch_size: int = FORWARD_BATCH
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(ids, attention mask) batches of `texts` on the model's device, long texts cut into
    `ctx`-token chunks (a last chunk of one token is dropped: it predicts nothing)."""
    tok = model.tokenizer
    chunks = []
    for text in texts:
        ids = tok(text, truncation=False)["input_ids"]
        chunks += [ids[i : i + ctx] for i in range(0, len(ids), ctx) if len(ids[i : i + ctx]) > 1]
    for i in range(0, len(chunks), batch_size):
        part = chunks[i : i + batch_size]
        width = max(map(len, part))
        ids = torch.full((len(part), width), tok.pad_token_id)
        mask = torch.zeros(len(part), width, dtype=torch.long)
        for j, c in enumerate(part):
            ids[j, : len(c)] = torch.tensor(c)
            mask[j, : len(c)] = 1
        yield ids.to(model.device), mask.to(model.device)


def ordinary_tokens(model: Model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """bool: real, non-special tokens."""
    special = torch.tensor(model.tokenizer.all_special_ids, device=ids.device)
    return mask.bool() & ~torch.isin(ids, special)


@torch.no_grad()
def iter_activations(
    model: Model, hook: str, texts: list[str], ctx: int = CONTEXT,
    batch_size: int = FORWARD_BATCH, dtype: torch.dtype = torch.bfloat16, skip: int = 0,
) -> Iterator[torch.Tensor]:  # fmt: skip
    """Activations at `hook` for ordinary tokens of `texts`, a tensor [n, d] on the model's
    device per batch, in order; the first `skip` of them are left out (batches wholly inside
    them are not run)."""
    got: list[torch.Tensor] = []

    def grab(module, args, out):
        got.append(out.detach())
        raise _Stop

    handle = model.hook_dict[hook].register_forward_hook(grab)
    try:
        for ids, mask in token_batches(model, texts, ctx, batch_size):
            ordinary = ordinary_tokens(model, ids, mask)
            n = int(ordinary.sum())
            if skip >= n:
                skip -= n
                continue
            try:
                model(ids, mask)
            except _Stop:
                pass
            yield got.pop()[ordinary].to(dtype)[skip:]
            skip = 0
    finally:
        handle.remove()


def outlier_limit(norms: torch.Tensor) -> float:
    """The norm above which positions are left out: NORM_OUTLIER x the median of `norms`."""
    return NORM_OUTLIER * norms.median().item()


@torch.no_grad()
def collect_activations(
    model: Model, hook: str, texts: list[str], max_tokens: int, ranks: Ranks = SINGLE
) -> Activations:
    """Activations at `hook` for ordinary tokens of `texts`, up to `max_tokens` of them, outliers
    left out.

    Under torchrun (`ranks`), each rank collects from its contiguous share of the texts, up to
    its share of `max_tokens`, and every rank gets all of them in rank order: the same set one
    process collects when the texts hold no more than `max_tokens` tokens."""
    x = ranks.gather(_collect(model, hook, *ranks.part(texts, max_tokens)))[:max_tokens]
    if not len(x):
        raise BadInput("no text to collect activations from")
    norms = x.float().norm(dim=-1)
    limit = outlier_limit(norms)
    outliers = norms > limit
    log.info(
        "collected %d activations; %d outliers (> %.1f) left out", len(x), outliers.sum(), limit
    )
    return Activations(x[~outliers], limit)


def _collect(model: Model, hook: str, texts: list[str], max_tokens: int) -> torch.Tensor:
    """Up to `max_tokens` activations of `texts` in order, with a progress bar."""
    rows, n = [], 0
    bar = tqdm(total=max_tokens, desc=f"activations at {hook}", leave=False)
    try:
        for x in iter_activations(model, hook, texts):
            rows.append(x)
            n += len(x)
            bar.update(len(x))
            if n >= max_tokens:
                break
    finally:
        bar.close()
    d = model.d_model
    if not rows:
        return torch.empty(0, d, dtype=torch.bfloat16, device=model.device)
    return torch.cat(rows)[:max_tokens]


# --- on disk ----------------------------------------------------------------------------------
MANIFEST = "manifest.json"
RANK_PART = "rank-"  # a rank's folder in a collection made under torchrun: rank-0/, rank-1/, ...


@dataclass
class Shard:
    """One shard file: `positions` activations written, `tokens` of them kept (not outliers;
    None until collection is complete and the norm limit known)."""

    file: str
    positions: int
    tokens: int | None = None


@dataclass
class Manifest:
    """What a folder of activation shards holds and how it was made."""

    model: str
    hook: str
    d_model: int
    tokens: int  # positions asked for (outliers are left out of them when read)
    dtype: str  # "bf16" or "fp32"
    texts_sha256: str
    n_texts: int
    seed: int  # of the held-out split (as `train_bottleneck(seed=...)`)
    shard_tokens: int
    shards: list[Shard] = field(default_factory=list)
    complete: bool = False
    norm_limit: float | None = None
    codecut_version: str = ""

    @property
    def positions(self) -> int:
        return sum(s.positions for s in self.shards)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def read(cls, folder: str | os.PathLike) -> Manifest:
        path = Path(folder) / MANIFEST
        try:
            d = json.loads(path.read_text())
            d["shards"] = [Shard(**s) for s in d["shards"]]
            return cls(**d)
        except FileNotFoundError:
            raise NotFound(f"{folder} holds no {MANIFEST}: not an activations folder") from None
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise BadInput(f"{path} is damaged ({type(e).__name__}: {e})") from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("codecut")
    except PackageNotFoundError:
        return "unknown"


class ActivationShards:
    """The activations of a complete `collect_to_disk` folder, outliers left out, read one shard
    at a time (`load(i)`); `take(indices)` gathers rows by global index, shard by shard."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.manifest = Manifest.read(self.folder)
        if not self.manifest.complete:
            raise BadInput(
                f"{self.folder}: collection is not finished; run the same `codecut collect` again"
            )
        self.sizes = [s.tokens or 0 for s in self.manifest.shards]

    def __len__(self) -> int:
        return sum(self.sizes)

    def load(self, i: int) -> torch.Tensor:
        """Shard `i`'s kept activations [n, d_model], in the stored dtype."""
        path = self.folder / self.manifest.shards[i].file
        try:
            with safe_open(path, "pt") as f:
                x, norms = f.get_tensor("x"), f.get_tensor("norms")
        except Exception as e:  # noqa: BLE001 - any unreadable shard is the same user problem
            raise BadInput(f"{path} cannot be read ({type(e).__name__}: {e})") from None
        return x[norms <= self.manifest.norm_limit]

    def head(self, n: int) -> torch.Tensor:
        """The first `n` activations (in file order)."""
        rows, got = [], 0
        for i in range(len(self.sizes)):
            if got >= n:
                break
            rows.append(self.load(i)[: n - got])
            got += len(rows[-1])
        return torch.cat(rows)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        """Rows at global `indices`, in that order (one shard loaded at a time)."""
        out = None
        start = 0
        for i, size in enumerate(self.sizes):
            hit = (indices >= start) & (indices < start + size)
            if hit.any():
                x = self.load(i)
                if out is None:
                    out = torch.empty(len(indices), x.shape[-1], dtype=x.dtype)
                out[hit] = x[indices[hit] - start]
            start += size
        return out


def check_collect_arguments(tokens, shard_tokens, dtype) -> None:
    """Raise BadOption for collection arguments that cannot work, before anything is loaded."""
    for arg, value in [("tokens", tokens), ("shard_tokens", shard_tokens)]:
        check_positive(arg, value)
    if dtype not in DTYPES:
        raise BadOption(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}", "dtype")


def _refuse_other(made: Manifest, now: dict, out: Path) -> None:
    diff = [
        f"{k}={getattr(made, k)!r} (now {v!r})" for k, v in now.items() if getattr(made, k) != v
    ]
    if diff:
        raise BadInput(
            f"{out} holds activations collected with other arguments: {', '.join(diff)}; "
            "use a new --out or delete it to start over"
        )


def earlier_collection(
    out: str | os.PathLike, hook: str, tokens: int, *, dtype: str = DTYPE,
    shard_tokens: int = SHARD_TOKENS, seed: int = SEED,
) -> Manifest | None:  # fmt: skip
    """The manifest of a collection into `out` begun before (None when there is none); raise
    BadInput when `out` holds something else or a collection made with other arguments. Needs no
    model, so that a caller can check before loading one."""
    out = Path(out)
    if (out / MANIFEST).exists():
        made = Manifest.read(out)
        now = {"hook": hook, "dtype": dtype, "tokens": tokens, "shard_tokens": shard_tokens,
               "seed": seed}  # fmt: skip
        _refuse_other(made, now, out)
        return made
    # rank-N/ folders: the ranks' parts of a collection begun under torchrun
    if out.exists() and any(not p.name.startswith(RANK_PART) for p in out.iterdir()):
        raise BadInput(f"{out} exists and is not an activations folder; choose a new --out")
    return None


def _write_shard(path: Path, x: torch.Tensor) -> None:
    """Write a shard through a temp file in the same folder, renamed into place."""
    with atomic_file(path) as tmp:
        x = x.cpu().contiguous()  # safetensors writes host memory
        save_file({"x": x, "norms": x.float().norm(dim=-1)}, tmp)


def collect_to_disk(
    model: Model,
    hook: str,
    tokens: int,
    out: str | os.PathLike,
    *,
    texts: list[str] | None = None,
    dtype: str = DTYPE,
    shard_tokens: int = SHARD_TOKENS,
    seed: int = SEED,
    ranks: Ranks = SINGLE,
) -> Manifest:
    """Collect `tokens` activations at `hook` of `model` into shards under `out`; resumes an
    interrupted collection made with the same arguments. Returns the complete manifest.

    Under torchrun (`ranks`), each rank collects its contiguous share of the texts, up to its
    share of `tokens`, into `out/rank-N/` (resumable on its own); rank 0 then writes the one
    manifest that lists every rank's shards, in rank order.

    `texts` and `seed` as in `train_bottleneck` (the same held-out split: training with
    `activations=out` and the same seed evaluates on texts the shards do not hold). The
    arguments and an earlier collection in `out` are checked before the model is used."""
    check_collect_arguments(tokens, shard_tokens, dtype)
    out = Path(out)
    made = earlier_collection(out, hook, tokens, dtype=dtype, shard_tokens=shard_tokens, seed=seed)
    model.check_hook(hook)
    if texts is None:  # sampled: every rank must have rank 0's
        texts = ranks.from_main(lambda: default_corpus(model, seed=seed))
    texts = list(texts)
    sha = texts_hash(texts)
    if made:
        _refuse_other(made, {"model": model.name, "d_model": model.d_model,
                             "texts_sha256": sha}, out)  # fmt: skip
        if made.complete:
            return made
    manifest = made or Manifest(
        model=model.name, hook=hook, d_model=model.d_model, tokens=tokens, dtype=dtype,
        texts_sha256=sha, n_texts=len(texts), seed=seed, shard_tokens=shard_tokens,
        codecut_version=_version(),
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    train_texts, _ = split_texts(texts, torch.Generator().manual_seed(seed))
    if ranks.world > 1:
        return _collect_share(model, train_texts, manifest, out, ranks)
    _finish(manifest, _write_shards(model, train_texts, manifest, out), out)
    return manifest


def _finish(manifest: Manifest, norms: list[torch.Tensor], out: Path) -> None:
    """Set the outlier limit from every shard's norms, count each shard's kept activations and
    write the complete manifest."""
    if not manifest.shards:
        raise BadInput(f"no activations at {manifest.hook}: the texts hold no ordinary tokens")
    manifest.norm_limit = outlier_limit(torch.cat(norms))
    for s, nm in zip(manifest.shards, norms, strict=True):
        s.tokens = int((nm <= manifest.norm_limit).sum())
    manifest.complete = True
    write_text(out / MANIFEST, manifest.to_json())


def _collect_share(
    model: Model, train_texts: list[str], manifest: Manifest, out: Path, ranks: Ranks
) -> Manifest:
    """This rank's share into `out/rank-N/`; then rank 0 lists all the ranks' shards in the one
    manifest (the shard files stay where their rank wrote them)."""
    texts, share = ranks.part(train_texts, manifest.tokens)
    part = out / f"{RANK_PART}{ranks.rank}"
    mine = dataclasses.replace(manifest, tokens=share, shards=[])
    if (part / MANIFEST).exists():  # this rank's part of an interrupted collection
        made = Manifest.read(part)
        keys = (
            "model",
            "hook",
            "d_model",
            "tokens",
            "dtype",
            "texts_sha256",
            "seed",
            "shard_tokens",
        )
        _refuse_other(made, {k: getattr(mine, k) for k in keys}, part)
        mine = made
    part.mkdir(exist_ok=True)
    _write_shards(model, texts, mine, part)
    ranks.barrier()
    if ranks.main:
        manifest.shards, norms = [], []
        for r in range(ranks.world):
            for s in Manifest.read(out / f"{RANK_PART}{r}").shards:
                with safe_open(out / f"{RANK_PART}{r}" / s.file, "pt") as f:
                    norms.append(f.get_tensor("norms"))
                manifest.shards.append(Shard(f"{RANK_PART}{r}/{s.file}", s.positions))
        _finish(manifest, norms, out)
    ranks.barrier()
    return Manifest.read(out)


def _write_shards(
    model: Model, train_texts: list[str], manifest: Manifest, out: Path
) -> list[torch.Tensor]:
    """Collect the activations `manifest` still lacks into new shards (the manifest rewritten
    after each); returns every shard's norms, the ones written before read back (the outlier
    limit needs all of them)."""
    norms = []
    for s in manifest.shards:
        with safe_open(out / s.file, "pt") as f:
            norms.append(f.get_tensor("norms"))
    tokens, shard_tokens = manifest.tokens, manifest.shard_tokens
    done = manifest.positions
    bar = tqdm(total=tokens, initial=done, desc=f"activations at {manifest.hook} -> {out}")
    rows, n = [], 0

    def flush():
        nonlocal rows, n
        x = torch.cat(rows)
        rows, n = [], 0
        shard = Shard(f"shard-{len(manifest.shards):05d}.safetensors", len(x))
        _write_shard(out / shard.file, x)
        norms.append(x.float().norm(dim=-1))
        manifest.shards.append(shard)
        write_text(out / MANIFEST, manifest.to_json())

    try:
        if done < tokens:
            source = iter_activations(
                model, manifest.hook, train_texts, dtype=DTYPES[manifest.dtype], skip=done
            )
            for x in source:
                x = x[: tokens - done]
                while len(x):
                    part = x[: shard_tokens - n]
                    rows.append(part)
                    n += len(part)
                    done += len(part)
                    bar.update(len(part))
                    x = x[len(part) :]
                    if n == shard_tokens:
                        flush()
                if done >= tokens:
                    break
            source.close()
        if n:
            flush()
    finally:
        bar.close()
    return norms

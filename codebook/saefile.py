"""Bottleneck files: the sae-lens directory layout, both ways.

A directory holds `cfg.json` (sae-lens fields: architecture, d_in, d_sae, k, dtype, ...,
`metadata.model_name` / `metadata.hook_name`, plus a `codecut` block: kind, model, hook,
training command, metrics, content hash) and `sae_weights.safetensors` (W_enc [d_in, n],
b_enc [n], W_dec [n, d_in], b_dec [d_in], threshold [n] for JumpReLU). codecut's per-code
statistics go to a third file, `code_stats.safetensors`, so that sae-lens, which loads weights
strictly, reads the directory unchanged.

Our topk kind is sae-lens' "topk" architecture (same computation); the codebook kind is
registered with sae-lens as "codecut_codebook" by `register_with_sae_lens()` (called whenever
codecut saves or loads a codebook; sae-lens is not imported otherwise, it takes seconds). Going the other
way, `load_bottleneck` reads sae-lens "standard" (ReLU), "jumprelu" and "topk" directories.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from codecut.codebook.config import BottleneckConfig, content_hash, shapes
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from codecut.core.errors import BadInput, NotFound

if TYPE_CHECKING:
    from torch import nn
from codecut.core.io import atomic_directory

log = logging.getLogger(__name__)

CFG, WEIGHTS, STATS = "cfg.json", "sae_weights.safetensors", "code_stats.safetensors"
SHIPPED = Path(__file__).parent / "shipped"
# sae-lens architecture name <-> our kind
ARCHITECTURES = {
    "topk": "topk",
    "codecut_codebook": "codebook",
    "standard": "relu",
    "jumprelu": "jumprelu",
}


class BottleneckFileError(BadInput):
    """A bottleneck directory that cannot be read; the message names the file."""


def registry() -> dict[str, Path]:
    """Shipped bottlenecks: name -> directory (`codebook/shipped/<name>/`)."""
    if not SHIPPED.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED.iterdir()) if (p / CFG).exists()}


def shipped_for(model: str) -> list[str]:
    """The shipped bottlenecks of a model, by registry name: the one named as the model (its
    default) first, then the others (at other hooks) by name."""
    names = [
        name
        for name, path in registry().items()
        if name == model
        or json.loads((path / CFG).read_text()).get("codecut", {}).get("model") == model
    ]
    return sorted(names, key=lambda name: (name != model, name))


def save_bottleneck(
    bn: nn.Module, path: str | os.PathLike, dtype: torch.dtype | None = None
) -> None:
    """Write bottleneck `bn` (a `Bottleneck`: its `cfg`, weights and per-code statistics) to
    directory `path` atomically (it is replaced as a whole).

    `dtype` stores the weights in another precision (e.g. torch.bfloat16 to halve the size);
    the content hash recorded is the one the stored weights load back with.
    """
    cfg = bn.cfg
    dtype = dtype or bn.W_enc.dtype
    weights = {name: p.detach().to("cpu", dtype).contiguous() for name, p in bn.named_parameters()}
    stats = {"fire_rate": bn.fire_rate.float().cpu(), "act_mean": bn.act_mean.float().cpu()}
    arch = {v: k for k, v in ARCHITECTURES.items()}[cfg.kind]
    data: dict[str, Any] = {
        "architecture": arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.n_codes,
        "dtype": str(dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": cfg.model,
            "hook_name": cfg.hook,
            "hook_head_index": None,
            "prepend_bos": True,
            "sae_lens_version": _sae_lens_version(),
        },
        "codecut": {
            "kind": cfg.kind,
            "model": cfg.model,
            "hook": cfg.hook,
            "norm_limit": cfg.norm_limit,
            "content_hash": content_hash(cfg, {**weights, **stats}),  # as loaded back
            **cfg.extra,
        },
    }
    if cfg.k is not None:
        data["k"] = cfg.k
        data["rescale_acts_by_decoder_norm"] = False
    if cfg.kind == "codebook":
        register_with_sae_lens()
    with atomic_directory(path) as tmp:
        save_file(weights, tmp / WEIGHTS)
        save_file(stats, tmp / STATS)
        (tmp / CFG).write_text(json.dumps(data, indent=1))


class Stored(NamedTuple):
    """A bottleneck directory as read (`read`); `load_bottleneck` builds the Bottleneck."""

    cfg: BottleneckConfig
    state: dict[str, torch.Tensor]  # weights and, where the directory has them, statistics
    content_hash: str | None  # the hash codecut recorded when it wrote the directory
    cfg_file: Path
    weights_file: Path


def read(path: Path) -> Stored:
    """Read a codecut or sae-lens bottleneck directory, checking every tensor's shape against
    the config before anything is loaded."""
    cfg_file, weights_file = path / CFG, path / WEIGHTS
    for f in (cfg_file, weights_file):
        if not f.is_file():
            raise BottleneckFileError(f"{f} is missing: {path} is not a bottleneck directory")
    try:
        data = json.loads(cfg_file.read_text())
        if "codecut" not in data:  # a foreign file: let sae-lens upgrade pre-6.0 configs
            from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting

            data = handle_config_defaulting(data)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as e:
        raise BottleneckFileError(f"{cfg_file} is not a valid sae-lens config ({e})") from None
    cfg = _config(data, cfg_file)
    if cfg.kind == "codebook":
        register_with_sae_lens()
    # The shapes the config implies, checked against the files' headers before anything is
    # allocated: a config with a wrong (say huge) d_sae must not allocate gigabytes first.
    expected, stats_shapes = shapes(cfg)
    _check_shapes(weights_file, expected, cfg_file)
    stats_file = path / STATS
    if stats_file.is_file():
        _check_shapes(stats_file, stats_shapes, cfg_file)
    try:
        weights = load_file(weights_file)
    except (SafetensorError, OSError, ValueError) as e:
        raise BottleneckFileError(f"{weights_file} is corrupt or truncated ({e})") from None
    state = {name: weights[name].float() for name in expected}
    recorded = data.get("codecut", {}).get("content_hash")
    if recorded and not stats_file.is_file():
        # codecut writes the stats with the weights (its content hash covers them); a foreign
        # sae-lens directory has none and loads without (clamp ablations then refuse).
        raise NotFound(
            f"{stats_file} is missing: a codecut bottleneck directory holds {CFG}, {WEIGHTS} "
            f"and {STATS}; copy the whole directory (or save the bottleneck again)"
        )
    if stats_file.is_file():
        try:
            stats = load_file(stats_file)
            state.update(fire_rate=stats["fire_rate"].float(), act_mean=stats["act_mean"].float())
        except (SafetensorError, OSError, ValueError, KeyError) as e:
            raise BottleneckFileError(f"{stats_file} is corrupt or truncated ({e})") from None
    return Stored(cfg, state, recorded, cfg_file, weights_file)


def _check_shapes(file: Path, expected: dict[str, tuple[int, ...]], cfg_file: Path) -> None:
    """Refuse a safetensors file whose tensors (read from its header alone: nothing is loaded)
    do not have the shapes `cfg_file` implies, naming the first that differs."""
    try:
        with safe_open(file, "pt") as f:
            found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise BottleneckFileError(f"{file} is corrupt or truncated ({e})") from None
    for name, shape in expected.items():
        if found.get(name) != shape:
            has = f"has {list(found[name])}" if name in found else "is missing"
            raise BottleneckFileError(
                f"{file} does not match {cfg_file}: tensor {name} {has}, the config "
                f"(d_in, d_sae) implies {list(shape)}; fix {CFG} or use the matching weights"
            )


def _config(data: dict[str, Any], cfg_file: Path) -> BottleneckConfig:
    """Our config from a sae-lens cfg.json dict; refuses what we would compute differently."""
    arch = data.get("architecture", "standard")
    if arch not in ARCHITECTURES:
        raise BottleneckFileError(
            f"{cfg_file}: architecture {arch!r} is not supported; use one of {', '.join(ARCHITECTURES)}"
        )
    if data.get("normalize_activations", "none") not in ("none", None):
        raise BottleneckFileError(
            f"{cfg_file}: normalize_activations={data['normalize_activations']!r} is not supported "
            "(fold the normalization into the weights first)"
        )
    if data.get("reshape_activations", "none") not in ("none", None):
        raise BottleneckFileError(f"{cfg_file}: reshaped (hook_z) SAEs are not supported")
    if data.get("rescale_acts_by_decoder_norm"):
        raise BottleneckFileError(
            f"{cfg_file}: rescale_acts_by_decoder_norm is not supported (fold the decoder norms first)"
        )
    ours = data.get("codecut", {})
    meta = data.get("metadata") or {}
    extra = {
        k: v
        for k, v in ours.items()
        if k not in ("kind", "model", "hook", "norm_limit", "content_hash")
    }
    try:
        return BottleneckConfig(
            kind=ARCHITECTURES[arch],
            d_in=int(data["d_in"]),
            n_codes=int(data["d_sae"]),
            k=int(data["k"]) if "k" in data else None,
            hook=ours.get("hook") or meta.get("hook_name") or data.get("hook_name") or "",
            model=ours.get("model") or meta.get("model_name") or data.get("model_name") or "",
            apply_b_dec_to_input=bool(data.get("apply_b_dec_to_input", True)),
            norm_limit=ours.get("norm_limit"),
            extra=extra,
        )
    except (KeyError, ValueError, TypeError) as e:
        raise BottleneckFileError(f"{cfg_file}: bad or missing field ({e})") from None


def _sae_lens_version() -> str:
    import sae_lens

    return sae_lens.__version__


def register_with_sae_lens() -> None:
    """Teach sae-lens the codebook kind, so `SAE.load_from_disk` reads codebook directories."""
    from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class

    if "codecut_codebook" in SAE_CLASS_REGISTRY:
        return
    from codecut.codebook.sae_lens_codebook import CodebookSAE, CodebookSAEConfig

    register_sae_class("codecut_codebook", CodebookSAE, CodebookSAEConfig)

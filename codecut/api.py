"""The public functions that take a model.

Lower layers (codebook, probes) take a `codecut.Model`. A user may pass anything `load_model`
accepts (a registry name, a local HF directory, a transformers model, a TransformerBridge, a
Model); this module is the one place that turns it into a `Model`, then calls the lower layer.
Each function keeps the lower layer's signature and docstring.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TypeVar

from codecut.codebook.attach import attach as _attach
from codecut.codebook.train import train_bottleneck as _train_bottleneck
from codecut.codebook.train import train_config
from codecut.core.errors import BadType
from codecut.core.models import load_model, resolve_device
from codecut.probes.attacks import attack as _attack
from codecut.probes.evaluate import evaluate as _evaluate
from codecut.probes.finetune import finetune_config
from codecut.probes.finetune import finetune_unlearn as _finetune_unlearn
from codecut.probes.plan import apply as _apply
from codecut.probes.selector.unlearn import unlearn as _unlearn
from codecut.probes.selector.unlearn import unlearn_request

F = TypeVar("F", bound=Callable)


def _any_model(fn: F, check: Callable | None = None, optional: bool = False) -> F:
    """`fn` with its first argument, `model`, passed through `load_model`, and a `device=`
    keyword: where the model runs (`load_model`'s; a model object is moved there when given).

    `check(*args, **kwargs)`, if given, runs first, so a hopeless request fails before the model
    loads (seconds to minutes). `optional`: `model` may be None (passed on as None); `fn` that
    take a `device` themselves (training without a model) get it too.
    """
    passes_device = "device" in inspect.signature(fn).parameters

    @functools.wraps(fn)
    def public(model=None, *args, device=None, **kwargs):
        if check is not None:
            check(*args, **kwargs)
        where = resolve_device(device) if device is not None else None  # before any loading
        if model is None and not optional:
            raise BadType(
                f"{fn.__name__} needs a model: a codecut.Model or anything load_model accepts"
            )
        if passes_device:
            kwargs["device"] = where
        return fn(None if model is None else load_model(model, device=where), *args, **kwargs)

    public.__module__ = __name__
    public.__doc__ = (
        fn.__doc__ or ""
    ) + "\n\n(codecut's public version: `model` may be anything `load_model` accepts.)"
    return public  # type: ignore[return-value]


attach = _any_model(_attach)
attack = _any_model(_attack)
apply = _any_model(_apply)
evaluate = _any_model(_evaluate)
finetune_unlearn = _any_model(_finetune_unlearn, check=finetune_config)
train_bottleneck = _any_model(_train_bottleneck, check=train_config, optional=True)
unlearn = _any_model(_unlearn, check=unlearn_request)

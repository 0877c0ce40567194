"""Putting a bottleneck into a model's forward pass, and taking it out again.

    with attach(model, bn) as handle:              # error term kept: outputs unchanged ...
        handle.ablations.append(Ablation([802]))   # ... until something is cut
        model.generate("The capital of France is")
    handle = attach(model, bn, error_term=False)   # strict: only what the codes carry passes
    handle.remove()

Two hooks do the work. A forward pre-hook on the HF model reads the token ids and whether the
call starts a new sequence (no KV cache yet) or continues one (generation steps see one token);
the bottleneck's forward hook on `model.hook_dict[hook]` rewrites the activation. Special-token
positions (BOS, padding) and outlier-norm positions pass through unchanged: they were not in
training and their norms (BOS ~100x the rest) would swamp the codes. Weights are never touched.
"""

from __future__ import annotations

import logging

import torch
from codecut.codebook.ablation import Ablation, AblationList, apply_ablations, extra_candidates
from codecut.codebook.bottleneck import Bottleneck, Codes

from codecut.core.errors import BadInput
from codecut.core.models import Model

log = logging.getLogger(__name__)


class Attachment:
    """A bottleneck in a model's forward pass: a context manager and a handle.

    Attributes:
        model: the codecut Model.
        bottleneck: the Bottleneck.
        hook: the hook name it sits at.
        error_term: whether the reconstruction error is added back (outputs unchanged unless
            something is ablated) or not (strict mode).
        ablations: list of Ablation, applied in order on every forward; mutate it freely (an
            `AblationList`: each ablation is checked against the bottleneck as it is added, and
            again only if it was edited in place, never on every forward).
        codes: the clean codes of the most recent forward ([B, T, k]; values keep their autograd
            graph when the forward ran with gradients, for attributions).
        active: bool [B, T], the positions of that forward the bottleneck rewrote.
        also: attachments removed together with this one (a plan's cuts in other bottlenecks,
            `codecut.apply`).
    """

    def __init__(
        self,
        model,
        bottleneck: Bottleneck,
        hook: str,
        error_term: bool,
        skip_special: bool,
        ablations: list[Ablation],
    ):
        self.model, self.bottleneck, self.hook = model, bottleneck, hook
        self.error_term, self.skip_special = error_term, skip_special
        self.ablations = ablations
        self.codes: Codes | None = None
        self.active: torch.Tensor | None = None
        self.also: list[Attachment] = []
        self._ids: torch.Tensor | None = None  # token ids of the current call
        self._seen: torch.Tensor | None = None  # bool [B, n]: codes fired so far per sequence
        special = getattr(model.tokenizer, "all_special_ids", None) or []
        self._special = torch.tensor(sorted(special), dtype=torch.long)
        self._special_on: dict[torch.device, torch.Tensor] = {}  # per device, made once
        self._handles = []
        try:
            self._handles.append(
                model.hf.register_forward_pre_hook(self._on_call, with_kwargs=True)
            )
            self._handles.append(model.hook_dict[hook].register_forward_hook(self._on_activation))
        except BaseException:
            self.remove()
            raise

    # --- lifecycle -----------------------------------------------------------------------------
    def remove(self) -> None:
        """Take the bottleneck out, and those in `also` (idempotent). `codes` and `active` stay
        readable."""
        while self.also:
            self.also.pop().remove()
        while self._handles:
            self._handles.pop().remove()
        self._ids = self._seen = None

    @property
    def ablations(self) -> AblationList:
        return self._ablations

    @ablations.setter
    def ablations(self, value) -> None:
        if isinstance(value, AblationList) and value.bottleneck is self.bottleneck:
            self._ablations = value
        else:
            self._ablations = AblationList(value, self.bottleneck)

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # --- hooks ---------------------------------------------------------------------------------
    def _on_call(self, module, args, kwargs) -> None:
        """Record the token ids; a call without a filled KV cache starts new sequences."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._ids = ids if isinstance(ids, torch.Tensor) else None
        # transformers 5.24 renamed `past_key_values` to `cache`; read either.
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is None or cache.get_seq_length() == 0:
            self._seen = None

    def _on_activation(self, module, args, x: torch.Tensor) -> torch.Tensor:
        bn = self.bottleneck
        keep = self._positions(x)
        self._ablations.ensure_checked()  # plain Python: re-checks only after in-place edits
        k = bn.cfg.k
        # With the error term, x reaches the layers above unchanged, so gradients should reach x
        # only that way (as in the clean model); the codes still get their own gradients.
        x_in = x.detach() if self.error_term else x
        wide = bn.encode(x_in, k=k + extra_candidates(self.ablations) if k else None)
        clean = wide
        if k and wide.values.shape[-1] > k:  # cuts start from `clean`: its values get the gradients
            clean = Codes(wide.values[..., :k], wide.indices[..., :k])
            wide = Codes(torch.cat([clean.values, wide.values[..., k:]], -1), wide.indices)
        fired = clean.values > 0
        gates = [self._gate(a.when, clean.indices, fired & keep[..., None]) for a in self.ablations]
        self._remember(clean.indices, fired & keep[..., None])
        used = (
            apply_ablations(wide, k, self.ablations, gates, bn.act_mean)
            if self.ablations
            else clean
        )
        out = bn.decode(used)
        if self.error_term:
            # x plus what the cuts change: exactly x while nothing is cut (the two decodes are
            # the same computation; with no cut, the same tensor), and code values get
            # gradients through the decoder.
            base = out if used is clean else bn.decode(clean)
            out = x + (out - base.detach())
        self.codes, self.active = clean, keep
        return torch.where(keep[..., None], out.to(x.dtype), x)

    # --- helpers -------------------------------------------------------------------------------
    def _positions(self, x: torch.Tensor) -> torch.Tensor:
        """bool [B, T]: positions to rewrite (not special tokens, not outlier norms)."""
        keep = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        limit = self.bottleneck.cfg.norm_limit
        if limit is not None:
            keep &= x.norm(dim=-1) <= limit
        ids = self._ids
        if self.skip_special and ids is not None and ids.shape == keep.shape:
            special = self._special_on.get(ids.device)
            if special is None:
                special = self._special_on[ids.device] = self._special.to(ids.device)
            keep &= ~torch.isin(ids, special)
        return keep

    def _gate(self, when: list[int], indices: torch.Tensor, fired: torch.Tensor):
        """bool [B, T]: where every code in `when` has fired at or before each position (in an
        earlier call of the same sequences too: generation)."""
        return condition_holds(when, indices, fired, self._seen) if when else None

    def _remember(self, indices: torch.Tensor, fired: torch.Tensor) -> None:
        """Add the codes fired in this call to the per-sequence memory (for `when`)."""
        n = self.bottleneck.n_codes
        B = indices.shape[0]
        idx = torch.where(fired, indices, n).reshape(B, -1)  # n = a dump slot for unfired
        now = torch.zeros(B, n + 1, dtype=torch.bool, device=indices.device)
        now.scatter_(1, idx, True)
        self._seen = now[:, :n] if self._seen is None else self._seen | now[:, :n]


def attach(
    model: Model,
    bottleneck: Bottleneck,
    hook: str | None = None,
    error_term: bool = True,
    skip_special: bool = True,
    ablations: list[Ablation] | None = None,
) -> Attachment:
    """Put `bottleneck` into `model`'s forward pass at `hook` (default: the hook it was trained at).

    Args:
        model: the `Model` (`codecut.attach` also accepts anything `codecut.load_model` does).
        bottleneck: the Bottleneck.
        hook: hook name; validated against the model's hooks (the bridge ignores unknown names).
        error_term: add the reconstruction error back, so outputs are unchanged until something
            is ablated; False is strict mode (only what the codes carry passes the layer).
        skip_special: pass special-token positions (BOS, padding) through unchanged.
        ablations: initial list of Ablation (see `Attachment.ablations`).

    Returns an Attachment: use it in a `with` block or call `.remove()`.
    """
    hook = hook or bottleneck.hook
    if not hook:
        raise BadInput("the bottleneck records no hook; pass hook=...")
    model.check_hook(hook)
    if bottleneck.cfg.d_in != model.d_model:
        where = f" ({bottleneck.source})" if bottleneck.source else ""
        raise BadInput(
            f"bottleneck{where} reads width {bottleneck.cfg.d_in} but {model.name} has "
            f"d_model {model.d_model} at {hook}"
        )
    ablations = AblationList(ablations or [], bottleneck)  # checked before anything is installed
    bottleneck.to(model.device)
    return Attachment(model, bottleneck, hook, error_term, skip_special, ablations)


def condition_holds(
    when: list[int], indices: torch.Tensor, fired: torch.Tensor, seen: torch.Tensor | None = None
) -> torch.Tensor:
    """bool [B, T]: where every code in `when` has fired at or before each position, the
    condition under which an `Ablation(when=...)` acts. `indices`, `fired`: [B, T, k] the
    codes and whether each fired; `seen`: [B, n] codes fired in earlier calls (None: none)."""
    holds = torch.ones(indices.shape[:-1], dtype=torch.bool, device=indices.device)
    for code in when:
        now = ((indices == code) & fired).any(-1)
        before = seen[:, code, None] if seen is not None else False
        holds &= (now.int().cummax(-1).values > 0) | before
    return holds

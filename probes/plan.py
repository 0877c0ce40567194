"""Unlearning plans: which codes to cut in which bottleneck, and what that did to the facts.

A plan is plain data (JSON on disk). Applying it only installs its ablations inside the
bottleneck's hook; the model's weights are never touched, and leaving the `with` block (or
calling `.remove()`) reverts to the exact original outputs.

    plan = codecut.unlearn(model, bn, forget=facts)
    with codecut.apply(model, plan): ...
    plan.save("plan.json"); plan = codecut.load_plan("plan.json")
    with codecut.apply(model, plan_a, plan_b): ...        # plans for one bottleneck compose

A plan cuts codes in one bottleneck (its `hook`, `ablations`), and, where that one could not
remove a fact, in later ones at other hooks (`later`, one `Cut` each), applied together.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from codecut.codebook import (
    Ablation,
    Attachment,
    Bottleneck,
    attach,
    load_bottleneck,
    saefile,
)

from codecut.core.errors import BadInput, BadType, NotFound
from codecut.core.facts import Fact, fact_from_dict
from codecut.core.io import write_text

FORMAT = "codecut-plan/2"  # /2 added `later`; a plan without later cuts is written as /1
FORMATS = ("codecut-plan/1", FORMAT)  # what `load_plan` reads


class Family(NamedTuple):
    """How a cut acts: `Ablation` mode and clamp strength, and whether it is conditional (one
    ablation per condition set) or acts everywhere."""

    mode: str
    c: float
    conditional: bool


@dataclass(frozen=True)
class Selection:
    """What the search chose for one fact.

    Attributes:
        family: the cut's mode, clamp strength and whether it is conditional.
        codes: the codes cut.
        condition_codes: the condition sets the cut acts under (empty for an unconditional cut).
        success: the answer is gone from the forget prompts (see the module docstring).
        forget_accuracy: greedy accuracy on the forget prompts with the cut, during selection.
        retain_accuracy: greedy accuracy on the retain prompts the cut can reach, with it.
        formats_lost: the formats asked (`SelectConfig.formats`, where the model answers them)
            lose the answer too; False where only the fact's prompts and paraphrases do, or none
            was asked.
    """

    family: Family
    codes: list[int]
    condition_codes: list[list[int]]
    success: bool
    forget_accuracy: float
    retain_accuracy: float
    formats_lost: bool = False

    @property
    def ablations(self) -> list[Ablation]:
        """The cut as ablations: one per condition set, or one acting everywhere."""
        return ablations_of(self.family, self.codes, self.condition_codes)

    def to_dict(self) -> dict[str, Any]:
        """The plan file's "selection" object (keys as plan files have always had them)."""
        return {
            **self.family._asdict(),
            "codes": self.codes,
            "success": self.success,
            "forget_accuracy": self.forget_accuracy,
            "retain_accuracy": self.retain_accuracy,
            "condition_codes": self.condition_codes,
            "formats_lost": self.formats_lost,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selection:
        return cls(
            family=Family(d["mode"], d["c"], d["conditional"]),
            codes=d["codes"],
            condition_codes=d["condition_codes"],
            success=d["success"],
            forget_accuracy=d["forget_accuracy"],
            retain_accuracy=d["retain_accuracy"],
            formats_lost=d.get("formats_lost", False),  # plan files before the key: not asked
        )


def ablations_of(family: Family, codes: list[int], conditions: list[list[int]]) -> list[Ablation]:
    """A cut of `codes` in `family` as ablations: one per condition set, or one everywhere."""
    if not codes:
        return []
    if family.conditional:
        return [Ablation(codes, mode=family.mode, c=family.c, when=when) for when in conditions]
    return [Ablation(codes, mode=family.mode, c=family.c)]


class Scores(NamedTuple):
    """One fact on one state of the model (a row of `evaluate`'s table)."""

    correct: bool  # the answer is the greedy next token after the prompt
    p_answer: float  # its probability
    paraphrase_accuracy: float  # fraction of the paraphrases answered; NaN when there are none


class RetainResult(NamedTuple):
    """The retain facts without and with the plan (`evaluate.summary` of each)."""

    before: dict[str, Any]
    after: dict[str, Any]


@dataclass
class FactResult:
    """One forget fact: what the search chose for it, and the fact before and after the plan.
    `selection` is the first bottleneck's; `later` the later bottlenecks' whose cut the plan
    kept, by hook."""

    prompt: str
    answer: str
    before: Scores
    after: Scores
    selection: Selection
    later: dict[str, Selection] = field(default_factory=dict)

    @property
    def last(self) -> Selection:
        """The selection that ended the fact's search: the last later bottleneck's, else the
        first's (its `success` and `formats_lost` are the plan's for the fact)."""
        return list(self.later.values())[-1] if self.later else self.selection

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "answer": self.answer,
            "before": self.before._asdict(),
            "after": self.after._asdict(),
            "selection": self.selection.to_dict(),
            **({"later": {h: s.to_dict() for h, s in self.later.items()}} if self.later else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FactResult:
        return cls(
            prompt=d["prompt"],
            answer=d["answer"],
            before=Scores(**d["before"]),
            after=Scores(**d["after"]),
            selection=Selection.from_dict(d["selection"]),
            later={hook: Selection.from_dict(s) for hook, s in d.get("later", {}).items()},
        )


@dataclass
class PlanResults:
    """What a plan did: per forget fact (in the plan's order), to the retain facts, and to their
    main prompts about other subjects asked in the selector's formats (`formats`: question,
    chat, few-shot, helpful; None when there were none, or in a plan file older than them)."""

    facts: list[FactResult]
    retain: RetainResult | None = None
    formats: RetainResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The plan file's "results" object: {"facts": [...], "retain": {"before", "after"},
        "formats": {"before", "after"}}."""
        out: dict[str, Any] = {"facts": [f.to_dict() for f in self.facts]}
        if self.retain is not None:
            out["retain"] = self.retain._asdict()
        if self.formats is not None:
            out["formats"] = self.formats._asdict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanResults:
        retain, formats = d.get("retain"), d.get("formats")
        return cls(
            facts=[FactResult.from_dict(f) for f in d["facts"]],
            retain=RetainResult(**retain) if retain is not None else None,
            formats=RetainResult(**formats) if formats is not None else None,
        )


@dataclass
class Cut:
    """A plan's cuts in one of its later bottlenecks (`UnlearnPlan.later`): the fields as the
    plan's own for its first bottleneck."""

    bottleneck_hash: str
    bottleneck_source: str
    hook: str
    ablations: list[Ablation]
    bottleneck: Bottleneck | None = field(default=None, repr=False, compare=False)

    @property
    def codes(self) -> list[int]:
        return sorted({c for a in self.ablations for c in a.codes})

    def to_dict(self) -> dict[str, Any]:
        return {
            "bottleneck_hash": self.bottleneck_hash,
            "bottleneck_source": self.bottleneck_source,
            "hook": self.hook,
            "codes": self.codes,
            "ablations": [a.to_dict() for a in self.ablations],
        }


@dataclass
class UnlearnPlan:
    """What `codecut.unlearn` decided.

    Attributes:
        bottleneck_hash: content hash of the bottleneck the codes belong to.
        bottleneck_source: where to load that bottleneck from: a shipped bottleneck's registry
            name, or a directory ("" for one never saved). A saved plan stores a directory
            relative to the plan file ("./bn", "../bn"), so plan and bottleneck can move
            together; `load_plan` resolves it (and reads older plans' absolute paths).
        hook: the hook it sits at.
        ablations: the cuts, applied in order.
        facts: the forget facts it was made for.
        results: what the plan did to each forget fact and to the retain facts (None for a
            plan not made by `unlearn`).
        seconds: how long `unlearn` took.
        strict: the bottleneck runs in strict mode (no error term: only what the codes carry
            passes the layer, CodeUnlearn's setting); False keeps the error term.
        bottleneck: the Bottleneck object itself when the plan was made in this process.
        later: cuts in later bottlenecks at other hooks (`unlearn` with several bottlenecks,
            where the first could not remove a fact), applied together with the first's.
    """

    bottleneck_hash: str
    bottleneck_source: str
    hook: str
    ablations: list[Ablation]
    facts: list[Fact]
    results: PlanResults | None = None
    seconds: float = 0.0
    strict: bool = False
    bottleneck: Bottleneck | None = field(default=None, repr=False, compare=False)
    later: list[Cut] = field(default_factory=list)

    @property
    def own(self) -> Cut:
        """The plan's cuts in its first bottleneck, as a `Cut`."""
        return Cut(
            self.bottleneck_hash, self.bottleneck_source, self.hook, self.ablations, self.bottleneck
        )

    @property
    def codes(self) -> list[int]:
        """Every code id the plan cuts in its first bottleneck (`later` has the others')."""
        return self.own.codes

    def to_dict(self) -> dict[str, Any]:
        return {
            # A plan without later cuts is the file earlier versions write and read.
            "format": FORMAT if self.later else FORMATS[0],
            "bottleneck_hash": self.bottleneck_hash,
            "bottleneck_source": self.bottleneck_source,
            "hook": self.hook,
            "codes": self.codes,
            "modes": sorted({a.mode for a in self.ablations}),
            "ablations": [a.to_dict() for a in self.ablations],
            "facts": [asdict(f) for f in self.facts],
            "results": self.results.to_dict() if self.results is not None else {},
            "seconds": self.seconds,
            "strict": self.strict,
            **({"later": [c.to_dict() for c in self.later]} if self.later else {}),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the plan as JSON, atomically; a bottleneck directory is stored relative to it."""
        data = self.to_dict()
        where = Path(path).parent
        for d in (data, *data.get("later", [])):
            d["bottleneck_source"] = _portable_source(d["bottleneck_source"], where)
        write_text(Path(path), json.dumps(data, indent=1) + "\n")


def _portable_source(source: str, plan_dir: Path) -> str:
    """How a plan file names its bottleneck: a registry name as is (a shipped directory by its
    name), any other directory relative to the plan's directory, "" as is."""
    if not source or source in saefile.registry():
        return source
    where = Path(source).resolve()
    for name, shipped in saefile.registry().items():
        if shipped.resolve() == where:
            return name
    rel = os.path.relpath(where, plan_dir.resolve())
    return rel if rel.startswith("..") else f"./{rel}"


def _resolve_source(source, plan_dir: Path) -> str:
    """The bottleneck a plan file names, for `load_bottleneck`: a registry name, or a directory
    (relative ones are relative to the plan file). Older plans stored absolute paths; one into
    another install's shipped bottlenecks (`.../shipped/<name>`) is read as that name."""
    if not isinstance(source, str):
        raise TypeError(f"bottleneck_source must be a string, got {source!r}")
    if not source or source in saefile.registry():
        return source
    path = Path(source)
    if not path.is_absolute():
        return str((plan_dir / path).resolve())
    if not path.is_dir() and path.parent.name == "shipped" and path.name in saefile.registry():
        return path.name
    return source


def load_plan(path: str | os.PathLike) -> UnlearnPlan:
    """Read a plan file; a bad one is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"plan file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not a plan file (invalid JSON: {e.msg})") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a plan file (not UTF-8 text)") from None
    if not isinstance(data, dict) or data.get("format") not in FORMATS:
        raise BadInput(f"{path}: not a codecut plan (expected format {FORMAT!r})")
    try:
        later = data.get("later", [])
        if not isinstance(later, list):
            raise TypeError(f"later must be a list, got {later!r}")
        cuts = [_cut(d, path, f"later[{i}].") for i, d in enumerate(later)]
        first = _cut(data, path)
        return UnlearnPlan(
            bottleneck_hash=first.bottleneck_hash,
            bottleneck_source=first.bottleneck_source,
            hook=first.hook,
            ablations=first.ablations,
            facts=[fact_from_dict(f, where=f"{path}: facts") for f in data["facts"]],
            results=PlanResults.from_dict(data["results"]) if data.get("results") else None,
            seconds=data.get("seconds", 0.0),
            strict=_strict(data.get("strict", False)),
            later=cuts,
        )
    except KeyError as e:
        raise BadInput(f"{path}: malformed plan (missing {e})") from None
    except TypeError as e:
        raise BadInput(f"{path}: malformed plan ({e})") from None


def _cut(data: dict, path: Path, where: str = "") -> Cut:
    """One bottleneck's cuts as a plan file holds them (the plan's own, or one of `later`)."""
    if not isinstance(data, dict):
        raise TypeError(f"{where.rstrip('.') or 'the plan'} must be an object, got {data!r}")
    for key in ("bottleneck_hash", "hook"):
        if not isinstance(data[key], str) or not data[key]:
            raise TypeError(f"{where}{key} must be a non-empty string, got {data[key]!r}")
    if not isinstance(data["ablations"], list):
        raise TypeError(f"{where}ablations must be a list, got {data['ablations']!r}")
    ablations = []
    for i, a in enumerate(data["ablations"]):
        try:
            ablations.append(Ablation.from_dict(a))
        except (ValueError, TypeError) as e:
            raise BadInput(f"{path}: {where}ablations[{i}]: {e}") from None
    source = _resolve_source(data["bottleneck_source"], path.parent)
    return Cut(data["bottleneck_hash"], source, data["hook"], ablations)


def _strict(value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"strict must be true or false, got {value!r}")
    return value


def apply(model, *plans: UnlearnPlan, bottleneck: Bottleneck | None = None) -> Attachment:
    """Attach the plans' bottleneck with all their ablations, and the bottlenecks of their
    `later` cuts with theirs; a context manager and a handle (the first bottleneck's; the later
    ones are in its `also` and go with it).

    The first bottleneck is, in order: `bottleneck`, the one the first plan was made with in this
    process, or loaded from the plan's `bottleneck_source`; a later one, the one its cut was made
    with or loaded from its source. Each must be the one its cuts were made for (same content
    hash), else this is an error, and nothing stays attached.
    """
    if not plans:
        raise BadInput("apply needs at least one plan")
    for p in plans:
        if not isinstance(p, UnlearnPlan):
            raise BadType(f"apply takes UnlearnPlan objects, got {type(p).__name__}")
    hooks = {p.hook for p in plans}
    if len(hooks) > 1:
        raise BadInput(f"plans for different hooks cannot compose: {sorted(hooks)}")
    if len({p.strict for p in plans}) > 1:
        raise BadInput("strict-mode and error-term plans cannot compose: apply them one at a time")
    # Every plan's cuts, by hook: the plans' own first, then their later ones.
    groups: dict[str, list[Cut]] = {plans[0].hook: [p.own for p in plans]}
    for c in (c for p in plans for c in p.later):
        groups.setdefault(c.hook, []).append(c)
    if bottleneck is not None:
        groups[plans[0].hook][0] = replace(groups[plans[0].hook][0], bottleneck=bottleneck)
    strict = plans[0].strict
    handle = None
    try:
        for hook, cuts in groups.items():
            bn = _bottleneck(cuts)
            ablations = [a for c in cuts for a in c.ablations]
            h = attach(model, bn, hook=hook, error_term=not strict, ablations=ablations)
            if handle is None:
                handle = h
            else:
                handle.also.append(h)
    except BaseException:
        if handle is not None:
            handle.remove()
        raise
    return handle


def _bottleneck(cuts: list[Cut]) -> Bottleneck:
    """The bottleneck of cuts at one hook, checked: the first cut's own object, else loaded
    from its source; it must be the one every cut was made for."""
    hashes = {c.bottleneck_hash for c in cuts}
    if len(hashes) > 1:
        raise BadInput(f"plans for different bottlenecks cannot compose: {sorted(hashes)}")
    cut = cuts[0]
    bn = cut.bottleneck
    if bn is None:
        if not cut.bottleneck_source:
            raise BadInput(
                f"the plan names no bottleneck file for {cut.hook} (it was made with one never "
                "saved): pass bottleneck=..."
            )
        bn = load_bottleneck(cut.bottleneck_source)
    if bn.content_hash != cut.bottleneck_hash:
        raise BadInput(
            f"the plan was made for bottleneck {cut.bottleneck_hash}, not for "
            f"{bn.content_hash} ({bn.source or 'in memory'}); make a new plan for this bottleneck"
        )
    if bn.hook and cut.hook != bn.hook:
        raise BadInput(
            f"the plan cuts at {cut.hook} but its bottleneck was trained at {bn.hook}; "
            "a plan's hook must be its bottleneck's (was the plan file edited?)"
        )
    return bn

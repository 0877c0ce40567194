"""Fine-tuning unlearning methods against codecut's zero-shot cut, on the same requests.

    python benchmarks/unlearn_compare.py                 # --small: 6 requests, for a 2-core CPU
    python benchmarks/unlearn_compare.py --full --device cuda    # 12 requests, 6-lr sweep on all
    python benchmarks/unlearn_compare.py --requests 1 --lrs 1e-4 --steps 3 --sweep-requests 1 \
        --codebook-tokens 20000 --out /tmp/smoke     # a quick check

SmolLM2-135M-Instruct (`--model` picks another registry model with a shipped bottleneck) and
the shipped example facts it knows. Each request forgets one known fact; the retain set is the
same for every method: the other known example facts. Methods:

- zero-shot topk: `codecut.unlearn` with the shipped TopK bottleneck (error term kept);
- zero-shot codebook strict: CodeUnlearn's setting, `codecut.unlearn(..., strict=True)` with a
  codebook bottleneck trained here at the same hook (cached under
  $CODECUT_CACHE/unlearn_compare/), no error term; retention is against the clean model, and
  the JSON records how many facts the bare codebook keeps in strict mode (`--no-codebook`
  leaves this row out: its training is most of an hour on 2 cores for Gemma 3 270M);
- every fine-tuning method of `codecut.probes.finetune.METHODS` (`bake` distils that request's
  zero-shot topk plan into the weights), at each learning rate of a small sweep.

The sweep runs on the first `--sweep-requests` requests; each method's best learning rate there
(forget success first, then mean retention) is the one the other requests run at, and the one
its summary uses. Every sweep row is kept.

Per request and method: forget success (the prompt and every paraphrase no longer answered:
the answer's first token is not the greedy next token), the answer's mean probability on them,
retention (share of the prompts answered before that are still answered) of the same
subject's other facts, of the same relation's other subjects and of all other facts, fluency
(`probes.attacks.fluency`: next-token loss on held-out text) before and after, and wall time.
Writes benchmarks/results/unlearn_compare.json (unlearn_compare_<model>.* for another model;
every row, the machine named), .md (summary per method, the sweep, every row) and .png (the
forget/retain frontier), after every request.
`--attack` adds a reduced attack card per method on the first request. `--prepare` only trains
and caches the codebook (a one-time cost, like the shipped bottleneck's), so that a timed run
measures the comparison alone.
"""

from __future__ import annotations

import argparse
import gc
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from codecut.codebook import Bottleneck, attach, load_bottleneck
from codecut.codebook.corpus import default_corpus
from codecut.probes.attacks import AttackConfig, fluency
from codecut.probes.finetune import METHODS
from common import RESULTS, command_line, heading, machine, per_model, write_files
from matplotlib.figure import Figure
from tqdm.auto import tqdm
from unlearn import spread  # benchmarks/unlearn.py, beside this script

import codecut
from codecut.core.errors import CodecutError
from codecut.core.facts import Fact, example_facts
from codecut.core.io import markdown_table
from codecut.core.models import DEFAULT_MODEL, REGISTRY, Model, cache_dir

TOPK, CODEBOOK, BAKE = "zero-shot topk", "zero-shot codebook strict", "bake"


@dataclass(frozen=True)
class Settings:
    """What one run measures (recorded in the JSON)."""

    requests: int  # facts forgotten, one per request (spread over relations); 0: every known one
    sweep_requests: int  # the lr sweep runs on the first N requests; the rest at the best lr
    lrs: tuple[float, ...]
    steps: int  # most optimizer steps per fine-tuning run (early stop once forgotten)
    batch_size: int | None  # finetune_unlearn's batch_size (None: full batch)
    retain_prompts: str  # "all": every prompt of the other facts; "main": only their main one
    codebook_codes: int
    codebook_k: int
    codebook_tokens: int
    codebook_generated: int  # model samples in the codebook's training corpus
    codebook_package_chars: int  # package prose in it


SMALL = Settings(
    requests=6, sweep_requests=1, lrs=(1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 1e-3), steps=10,
    batch_size=16,
    retain_prompts="main", codebook_codes=4096, codebook_k=32, codebook_tokens=150_000,
    codebook_generated=16, codebook_package_chars=200_000,
)  # fmt: skip
FULL = Settings(
    requests=12, sweep_requests=0, lrs=(3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3), steps=50,
    batch_size=None, retain_prompts="all", codebook_codes=8192, codebook_k=32,
    codebook_tokens=2_000_000, codebook_generated=128, codebook_package_chars=1_600_000,
)  # fmt: skip


@dataclass
class State:
    """One model state measured on one request's facts."""

    forgot_prompt: bool
    paraphrases_forgotten: float | None  # share of the fact's paraphrases not answered
    forget_p: float  # mean p(answer's first token) over the fact's prompts
    answered: torch.Tensor = field(repr=False)  # bool per evaluation prompt (see `Request`)
    fluency: float

    @property
    def success(self) -> bool:
        para = self.paraphrases_forgotten
        return self.forgot_prompt and (para is None or para == 1.0)


@dataclass
class Request:
    """One fact to forget, its retain set, and which evaluation prompts form each group."""

    index: int
    fact: Fact
    retain: list[Fact]  # the other known facts, as given to every method and measured
    prompts: list[str]
    answers: list[str]
    groups: dict[str, torch.Tensor]  # group name -> bool mask over `prompts`


@dataclass
class Row:
    """One method (at one learning rate) on one request."""

    request: int
    subject: str
    relation: str
    answer: str
    method: str
    lr: float | None  # None for the zero-shot path
    swept: bool  # run as part of the lr sweep
    chosen: bool  # the method's chosen setting (every zero-shot row; the best lr otherwise)
    success: bool | None  # prompt and every paraphrase no longer answered; None on error
    forgot_prompt: bool | None
    paraphrases_forgotten: float | None
    forget_p_before: float
    forget_p_after: float | None
    same_subject_retention: float | None
    same_relation_retention: float | None
    others_retention: float | None  # every other fact
    fluency_before: float
    fluency_after: float | None
    seconds: float
    steps: int | None = None  # optimizer steps run (fine-tuning)
    codes: int | None = None  # codes cut (zero-shot)
    note: str = ""  # the selector's verdict, or the error that stopped the method

    @property
    def retention(self) -> float | None:
        """Mean of the group retentions that exist (the sweep's second criterion)."""
        groups = (self.same_subject_retention, self.same_relation_retention, self.others_retention)
        kept = [v for v in groups if v is not None]
        return sum(kept) / len(kept) if kept else None


def main_only(fact: Fact) -> Fact:
    return replace(fact, paraphrases=[])


def requests(facts: list[Fact], settings: Settings) -> list[Request]:
    """The requests: `settings.requests` known facts spread over relations (0: all)."""
    targets = spread(facts)[: settings.requests or None]
    out = []
    for i, fact in enumerate(targets):
        retain = [f for f in facts if f is not fact]
        if settings.retain_prompts == "main":
            retain = [main_only(f) for f in retain]
        prompts = list(fact.prompts) + [p for f in retain for p in f.prompts]
        answers = [fact.answer] * len(fact.prompts) + [f.answer for f in retain for _ in f.prompts]
        owners = [f for f in retain for _ in f.prompts]
        own = [False] * len(fact.prompts)  # the forget fact's prompts are in no retain group
        groups = {
            "same_subject": torch.tensor(own + [f.subject == fact.subject for f in owners]),
            "same_relation": torch.tensor(own + [f.relation == fact.relation for f in owners]),
            "others": torch.tensor(own + [True] * len(owners)),
        }
        out.append(Request(i, fact, retain, prompts, answers, groups))
    return out


def measure(model: Model, req: Request) -> State:
    """The forget fact and the retain groups on `model` as it is now (hooks included)."""
    p, ok = model.answer_scores(req.prompts, req.answers)
    n = len(req.fact.prompts)
    return State(
        forgot_prompt=not bool(ok[0]),
        paraphrases_forgotten=float((~ok[1:n]).float().mean()) if n > 1 else None,
        forget_p=float(p[:n].mean()),
        answered=ok,
        fluency=fluency.loss(model, fluency.TEXTS),
    )


def row(
    req: Request,
    method: str,
    before: State,
    after: State | None,
    seconds: float,
    lr: float | None = None,
    swept: bool = False,
    **extra,
) -> Row:
    """A row from the states before and after (`after` None: the method failed)."""

    def kept(group: str) -> float | None:
        was = before.answered & req.groups[group]
        if after is None or not was.any():
            return None
        return float((after.answered & was).sum() / was.sum())

    return Row(
        request=req.index, subject=req.fact.subject, relation=req.fact.relation,
        answer=req.fact.answer, method=method, lr=lr, swept=swept, chosen=not swept,
        success=after.success if after else None,
        forgot_prompt=after.forgot_prompt if after else None,
        paraphrases_forgotten=after.paraphrases_forgotten if after else None,
        forget_p_before=before.forget_p, forget_p_after=after.forget_p if after else None,
        same_subject_retention=kept("same_subject"),
        same_relation_retention=kept("same_relation"), others_retention=kept("others"),
        fluency_before=before.fluency, fluency_after=after.fluency if after else None,
        seconds=round(seconds, 1), **extra,
    )  # fmt: skip


def zero_shot(
    model: Model,
    bn: Bottleneck,
    req: Request,
    pool: list[Fact],
    before: State,
    method: str,
    strict: bool = False,
) -> tuple[Row, codecut.UnlearnPlan | None]:
    """codecut's path: select codes for the fact, measure with the plan applied."""
    t0 = time.time()
    try:
        plan = codecut.unlearn(model, bn, [req.fact], retain=req.retain, pool=pool, strict=strict)
    except CodecutError as e:
        return row(req, method, before, None, time.time() - t0, note=str(e)), None
    seconds = time.time() - t0
    with codecut.apply(model, plan):
        after = measure(model, req)
    sel = plan.results.facts[0].selection
    note = f"{sel.family.mode} c={sel.family.c:g}{' conditional' if sel.family.conditional else ''}"
    note += "" if sel.success else ", selector: not gone on every generated paraphrase"
    return row(req, method, before, after, seconds, codes=len(plan.codes), note=note), plan


def finetune(
    model: Model,
    req: Request,
    method: str,
    lr: float,
    before: State,
    settings: Settings,
    plan: codecut.UnlearnPlan | None,
    swept: bool,
) -> Row:
    """One fine-tuning run on a copy of the model, measured, then dropped."""
    label = f"{BAKE} (distil the zero-shot plan)" if method == BAKE else method
    if method == BAKE and plan is None:
        return row(req, label, before, None, 0.0, lr, swept, note="no zero-shot plan to bake")
    t0 = time.time()
    try:
        result = codecut.finetune_unlearn(
            model, [req.fact], req.retain, method=method, steps=settings.steps, lr=lr,
            batch_size=settings.batch_size, **({"plan": plan} if method == BAKE else {}),
        )  # fmt: skip
    except CodecutError as e:
        return row(req, label, before, None, time.time() - t0, lr, swept, note=str(e))
    seconds = time.time() - t0
    if method == BAKE:
        seconds += plan.seconds  # a baked model costs the plan and the distillation
    after = measure(result.model, req)
    steps = result.record.steps_run
    del result
    gc.collect()
    return row(req, label, before, after, seconds, lr, swept, steps=steps)


def best_lr(rows: list[Row], method: str) -> float | None:
    """The swept lr with the highest success rate, then the highest mean retention."""
    swept = [r for r in rows if r.method == method and r.swept]
    scores = {}
    for lr in sorted({r.lr for r in swept}):
        at = [r for r in swept if r.lr == lr]
        success = sum(bool(r.success) for r in at) / len(at)
        kept = [r.retention for r in at if r.retention is not None]
        scores[lr] = (success, sum(kept) / len(kept) if kept else -1.0)
    return max(scores, key=scores.get) if scores else None


def codebook(model: Model, hook: str, facts: list[Fact], settings: Settings) -> Bottleneck:
    """CodeUnlearn's kind of bottleneck at `hook`, trained once and cached by its settings."""
    s = settings
    name = f"codebook_{hook}_{s.codebook_codes}_{s.codebook_k}_{s.codebook_tokens}"
    name += f"_{s.codebook_generated}_{s.codebook_package_chars}"
    out = cache_dir() / "unlearn_compare" / name
    if (out / "cfg.json").exists():
        return load_bottleneck(out)
    sentences = [f"{p} {f.answer}." for f in facts for p in f.prompts]  # as train_default.py
    corpus = default_corpus(
        model, n_generated=s.codebook_generated, package_chars=s.codebook_package_chars,
        extra=sentences,
    )  # fmt: skip
    codecut.train_bottleneck(  # saves itself into `out`
        model, hook=hook, kind="codebook", n_codes=s.codebook_codes, k=s.codebook_k,
        tokens=s.codebook_tokens, texts=corpus, out=out,
        command=command_line(__file__),
    )  # fmt: skip
    return load_bottleneck(out)


def strict_kept(model: Model, bn: Bottleneck, facts: list[Fact]) -> dict:
    """The bare bottleneck in strict mode: main prompts still answered, and fluency."""
    main = [main_only(f) for f in facts]
    with attach(model, bn, error_term=False):
        kept = codecut.evaluate(model, main)["correct"]
        loss = fluency.loss(model, fluency.TEXTS)
    return {"facts": len(facts), "kept_strict": int(kept.sum()), "fluency_strict": loss}


def codebook_record(model: Model, cb: Bottleneck, facts: list[Fact]) -> dict:
    """The codebook bottleneck as the results name it: its settings, metrics and strict mode."""
    metrics = cb.cfg.extra.get("metrics", {})
    return {"kind": cb.cfg.kind, "hash": cb.content_hash, "hook": cb.hook, "codes": cb.n_codes,
            "k": cb.cfg.k, "fvu": metrics.get("fvu"), "ce_recovered": metrics.get("ce_recovered"),
            "train": cb.cfg.extra.get("train"), **strict_kept(model, cb, facts)}  # fmt: skip


def summary(rows: list[Row]) -> pd.DataFrame:
    """A row per method at its chosen setting, over the requests it ran."""
    table = pd.DataFrame([{**asdict(r), "retention": r.retention} for r in rows if r.chosen])
    out = []
    for method, g in table.groupby("method", sort=False):
        out.append({
            "method": method,
            "lr": g["lr"].iloc[0],
            "requests": len(g),
            "errors": int(g["success"].isna().sum()),
            "success": g["success"].fillna(False).astype(bool).mean(),
            "prompt forgotten": g["forgot_prompt"].fillna(False).astype(bool).mean(),
            "p after / before": (g["forget_p_after"] / g["forget_p_before"]).mean(),
            "same subject kept": g["same_subject_retention"].mean(),
            "same relation kept": g["same_relation_retention"].mean(),
            "others kept": g["others_retention"].mean(),
            "fluency change": (g["fluency_after"] - g["fluency_before"]).mean(),
            "median s": g["seconds"].median(),
            "mean steps": g["steps"].mean(),
        })  # fmt: skip
    return pd.DataFrame(out)


def sweep(rows: list[Row]) -> pd.DataFrame:
    """Success and retention per fine-tuning method and lr, over the sweep's requests."""
    table = pd.DataFrame([{**asdict(r), "retention": r.retention} for r in rows if r.swept])
    if table.empty:
        return table
    grouped = table.groupby(["method", "lr"], sort=False)
    return grouped.agg(
        requests=("success", "size"),
        success=("success", lambda s: s.fillna(False).astype(bool).mean()),
        retention=("retention", "mean"),
        p_after=("forget_p_after", "mean"),
        steps=("steps", "mean"),
        seconds=("seconds", "median"),
    ).reset_index()


def frontier(rows: list[Row]) -> Figure:
    """Forget success against mean retention: left, a point per method and lr over the sweep's
    requests (the zero-shot path on the same ones); right, each method's chosen setting over
    every request. Colour: method; marker: lr (a star for the zero-shot path)."""
    table = pd.DataFrame([{**asdict(r), "retention": r.retention} for r in rows])
    table["lr"] = table["lr"].fillna(0.0)
    swept = table.loc[table["swept"], "request"].unique()
    methods = list(dict.fromkeys(table["method"]))
    lrs = sorted(set(table["lr"]) - {0.0})
    colours = [f"C{i % 10}" for i in range(len(methods))]
    figure = Figure(figsize=(14, 10), layout="constrained")
    panels = [
        (table[table["request"].isin(swept)], f"lr sweep ({len(swept)} requests)"),
        (table[table["chosen"]], "chosen settings (every request)"),
    ]
    for i, (part, title) in enumerate(panels):
        ax = figure.add_subplot(1, 2, i + 1)
        for (method, lr), g in part.groupby(["method", "lr"], sort=False):
            zero = lr == 0.0
            ax.scatter(
                g["success"].fillna(False).astype(bool).mean(),
                g["retention"].mean(),
                marker="*" if zero else "osD^vP<>"[lrs.index(lr) % 8],
                s=180 if zero else 50,
                color=colours[methods.index(method)],
                alpha=0.8,
                label=method if zero else f"{method} lr={lr:g}",
            )
        ax.set_title(title)
        ax.set_xlabel("forget success (share of requests: prompt and every paraphrase)")
        ax.set_ylabel("retention (mean of same subject, same relation, others)")
        ax.set_xlim(-0.05, 1.05)
        ax.legend(fontsize=6, ncols=2, loc="upper left", bbox_to_anchor=(0, -0.12))
    return figure


def write_results(record: dict, rows: list[Row], out: Path, attacks: dict) -> None:
    """`out`.json, .md and .png (`out`: a path without suffix)."""
    data = {**record, "rows": [asdict(r) for r in rows], "attacks": attacks}
    cb = record["codebook"]
    prompts = "every prompt" if record["settings"]["retain_prompts"] == "all" else "main prompts"
    md = heading("Unlearning: fine-tuning against the zero-shot cut", record["command"])
    md += (
        f"{record['model']}; {record['requests_done']} of {record['requests_planned']} "
        "requests, one fact forgotten per request, the other known example facts as every "
        f"method's retain set ({prompts}), on which retention is measured. Settings: "
        f"`{record['settings']}`. Fine-tuning methods at their best lr on the sweep requests "
        f"(the first {record['sweep_requests']}); bake's seconds include its zero-shot plan's.\n\n"
    )
    md += (
        "No zero-shot codebook row (`--no-codebook`).\n\n"
        if cb is None
        else (
            f"Zero-shot codebook: {cb['kind']} bottleneck `{cb['hash']}` ({cb['codes']} codes, "
            f"k={cb['k']}, {cb['hook']}, FVU {cb['fvu']}, strict mode keeps {cb['kept_strict']} of "
            f"{cb['facts']} facts, fluency strict {cb['fluency_strict']:.3f} against clean "
            f"{record['fluency_clean']:.3f}), cut in strict mode; its retention and fluency are "
            "against the clean model, so they include what the bare codebook loses.\n\n"
        )
    )
    md += "## Summary per method\n\n" + markdown_table(summary(rows), "{:.3g}") + "\n\n"
    md += "## Learning-rate sweep\n\n" + markdown_table(sweep(rows), "{:.3g}") + "\n\n"
    for method, card in attacks.items():
        md += f"## Attack card: {method}\n\n{markdown_table(pd.DataFrame(card), '{:.3f}')}\n\n"
    table = pd.DataFrame([asdict(r) for r in rows])
    md += "## Every row\n\n" + markdown_table(table, "{:.3g}") + "\n"
    write_files(out, data, md, frontier(rows))


def attack_cards(
    model: Model, req: Request, plans: dict, lrs: dict, pool: list[Fact], settings: Settings
) -> dict:
    """A reduced attack card per method on `req`: the zero-shot plans applied, each fine-tuned
    method re-run at its chosen lr (the card then describes the fine-tuned model alone)."""
    config = AttackConfig(samples=2, new_tokens=20, relearn_steps=10)
    cards = {}
    for method, plan in plans.items():
        if plan is not None:
            card = codecut.attack(model, [req.fact], plan=plan, pool=pool, config=config)
            cards[method] = card.table().to_dict("records")
    for method, lr in tqdm(lrs.items(), desc="attack cards"):
        if lr is None or (method == BAKE and plans.get(TOPK) is None):
            continue
        result = codecut.finetune_unlearn(
            model, [req.fact], req.retain, method=method, steps=settings.steps, lr=lr,
            batch_size=settings.batch_size, **({"plan": plans[TOPK]} if method == BAKE else {}),
        )  # fmt: skip
        card = codecut.attack(result.model, [req.fact], pool=pool, config=config)
        cards[f"{method} lr={lr:g}"] = card.table().to_dict("records")
        del result
        gc.collect()
    return cards


def parse() -> tuple[argparse.Namespace, Settings]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="the CPU setting (the default)")
    size.add_argument("--full", action="store_true", help="12 requests, wider sweep (GPU)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if --full)")
    ap.add_argument(
        "--model", default=DEFAULT_MODEL, choices=list(REGISTRY), help="the registry model"
    )
    ap.add_argument(
        "--no-codebook", action="store_true", help="no zero-shot codebook row (no training)"
    )
    ap.add_argument("--requests", type=int, help="override: requests (0: every known fact)")
    ap.add_argument("--sweep-requests", type=int, help="override: lr sweep on the first N (0: all)")
    ap.add_argument("--lrs", help="override: comma-separated learning rates")
    ap.add_argument("--steps", type=int, help="override: most steps per fine-tuning run")
    ap.add_argument("--batch-size", type=int, help="override: finetune batch size")
    ap.add_argument("--methods", help="only these fine-tuning methods (comma-separated)")
    ap.add_argument(
        "--zero-shot-only", action="store_true", help="no fine-tuning method: the zero-shot rows"
    )
    ap.add_argument("--codebook-tokens", type=int, help="override: codebook training tokens")
    ap.add_argument("--codebook-generated", type=int, help="override: model samples in its corpus")
    ap.add_argument("--attack", action="store_true", help="attack cards on the first request")
    ap.add_argument(
        "--prepare", action="store_true", help="only train and cache the codebook, then exit"
    )
    ap.add_argument(
        "--out",
        type=Path,
        help="results path without suffix (default: benchmarks/results/unlearn_compare, "
        "unlearn_compare_<model> for another model)",
    )
    args = ap.parse_args()
    args.out = args.out or RESULTS / per_model("unlearn_compare", args.model)
    settings = FULL if args.full else SMALL
    overrides = {
        "requests": args.requests, "sweep_requests": args.sweep_requests,
        "lrs": tuple(float(x) for x in args.lrs.split(",")) if args.lrs else None,
        "steps": args.steps, "batch_size": args.batch_size,
        "codebook_tokens": args.codebook_tokens, "codebook_generated": args.codebook_generated,
    }  # fmt: skip
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    unknown = set((args.methods or "").split(",")) - set(METHODS) - {""}
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    return args, settings


def main() -> None:
    args, settings = parse()
    device = args.device or ("cuda" if args.full else "cpu")
    command = command_line(__file__)
    methods = args.methods.split(",") if args.methods else list(METHODS)
    methods = [] if args.zero_shot_only else methods
    methods = [m for m in methods if m != BAKE] + ([BAKE] if BAKE in methods else [])

    model = codecut.load_model(args.model, device=device)
    shipped = codecut.load_bottleneck(args.model)
    known = codecut.evaluate(model, example_facts())
    facts = [f for f, ok in zip(example_facts(), known["correct"]) if ok]
    cb = None
    if not args.no_codebook:
        t0 = time.time()
        cb = codebook(model, shipped.hook, facts, settings)
        tqdm.write(f"codebook {cb.content_hash} ready in {time.time() - t0:.0f} s")
    if args.prepare:
        return
    todo = requests(facts, settings)
    n_sweep = settings.sweep_requests or len(todo)
    clean_fluency = fluency.loss(model, fluency.TEXTS)
    record = {
        "machine": machine(), "command": command, "torch": torch.__version__,
        "model": REGISTRY[args.model].hf_name,
        "settings": asdict(settings), "methods": methods, "requests_planned": len(todo),
        "requests_done": 0, "sweep_requests": n_sweep, "fluency_clean": clean_fluency,
        "topk": {"hash": shipped.content_hash, "hook": shipped.hook,
                 **strict_kept(model, shipped, facts)},
        "codebook": None if cb is None else codebook_record(model, cb, facts),
    }  # fmt: skip
    rows: list[Row] = []
    chosen: dict[str, float | None] = {}
    plans: dict = {}
    for req in tqdm(todo, desc="requests"):
        before = measure(model, req)
        topk_row, plan = zero_shot(model, shipped, req, facts, before, TOPK)
        rows.append(topk_row)
        cb_plan = None
        if cb is not None:
            cb_row, cb_plan = zero_shot(model, cb, req, facts, before, CODEBOOK, strict=True)
            rows.append(cb_row)
        if req.index == 0:
            plans = {TOPK: plan, CODEBOOK: cb_plan}
        sweeping = req.index < n_sweep
        for method in tqdm(methods, desc="methods", leave=False):
            for lr in settings.lrs if sweeping else [chosen[method]]:
                if lr is None:  # no lr was chosen: every swept run failed
                    continue
                rows.append(finetune(model, req, method, lr, before, settings, plan, sweeping))
                tqdm.write(f"{rows[-1].method} lr={lr:g}: success {rows[-1].success}, "
                           f"retention {rows[-1].retention}, {rows[-1].seconds} s")  # fmt: skip
        if req.index == n_sweep - 1:
            for method in methods:
                label = f"{BAKE} (distil the zero-shot plan)" if method == BAKE else method
                chosen[method] = best_lr(rows, label)
                for r in rows:
                    r.chosen = r.chosen or (r.method == label and r.lr == chosen[method])
        record["requests_done"] = req.index + 1
        record["chosen_lrs"] = chosen
        # Rewritten after every request, so that an interrupted run keeps what it measured.
        write_results(record, rows, args.out, {})
    if args.attack:
        cards = attack_cards(model, todo[0], plans, chosen, facts, settings)
        write_results(record, rows, args.out, cards)


if __name__ == "__main__":
    main()

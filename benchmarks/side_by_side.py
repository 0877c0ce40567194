"""The side by side: every way to forget the same 12 facts, each under every attack.

    python benchmarks/side_by_side.py                       # SmolLM2, every method (~2 h, 2 cores)
    python benchmarks/side_by_side.py --methods 'zero-shot plan,bake' --out /tmp/sbs   # a part
    python benchmarks/side_by_side.py --resume --methods 'zero-shot plan,bake' --bake-params mlp:0-11

The forget set: 12 facts the model knows, of seven relations (two capitals, two languages, two
currencies and two chemical symbols from benchmarks/data; two books' authors, an inventor and a
painter from `HAND`, written before any was scored and kept by the same filter,
`country_facts.check`); one draw (`--seed`), one subject per fact. Every method forgets all 12
at once, so relearning on half of them can be measured on the other half.

The methods: the zero-shot plan (`codecut.unlearn`, the shipped bottlenecks); `bake` (that plan
distilled into the weights); `bake --robust` (UNDO: the student moved toward noise first; its
settings `--robust-steps` and `--robust-noise`); every fine-tuning method of
`codecut.probes.finetune.METHODS`, at the learning rate its sweep chose in
benchmarks/results/unlearn_compare.json (not tuned here), at most `--steps` steps of
mini-batches of 16 with the early stop.

The same facts for everyone: the retain set (trained on by the methods that take one, checked
by the selector) is `default_retain`'s facts of the pool; the three reference groups the cards
measure (same subject, same relation, unrelated; 5 facts each) are drawn from the pool's other
facts with the clean model and held out of the retain set, so no method has seen them.
Each method's model gets the full attack card (`codecut.attack`, those groups): the plan's
column for the zero-shot plan, the model's own column for a fine-tuned one.

Per method and attack, `back`: the share of the clean model's accuracy that the attack finds on
the forget facts, (method - chance) / (clean - chance), with the clean model measured the same
way (for relearning: the clean model tuned the same way); rows where the clean model is blind
are left out, and so are rows where the model was asked other prompts than the clean model.
Retention: each reference group's accuracy over the clean model's, per format.

Writes benchmarks/results/side_by_side.json (every card), .md (the table) and .png, after each
method, with the machine named. Run it alone: the seconds are part of the answer.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from codecut.codebook.saefile import shipped_for
from codecut.probes.attacks import AttackConfig
from codecut.probes.attacks.suite import neighbours
from codecut.probes.finetune import METHODS, finetune_unlearn
from codecut.probes.finetune.config import ROBUST
from codecut.probes.selector.retain import default_retain
from common import DATA, RESULTS, command_line, machine, write_files
from country_facts import check
from matplotlib.figure import Figure
from tqdm.auto import tqdm

import codecut
from codecut.core.facts import Fact
from codecut.core.io import markdown_table
from codecut.core.models import DEFAULT_MODEL

# relation -> how many facts to forget of it
DRAW = {"capital": 2, "language": 2, "currency": 2, "element symbol": 2, "author": 2,
        "inventor": 1, "painter": 1}  # fmt: skip
# Facts beyond the data files: relation -> (main prompt, three paraphrases), then subject ->
# answer, in the order they were written. `check` keeps those the model knows.
HAND = {
    "author": (
        ["{s} was written by", "The author of {s} is", "The book {s} was written by",
         "{s} is a book written by"],
        {"Pride and Prejudice": "Jane Austen", "Hamlet": "William Shakespeare",
         "War and Peace": "Leo Tolstoy", "On the Origin of Species": "Charles Darwin",
         "Don Quixote": "Miguel de Cervantes", "Moby-Dick": "Herman Melville",
         "Oliver Twist": "Charles Dickens", "The Odyssey": "Homer",
         # the second batch (the first kept one author):
         "Nineteen Eighty-Four": "George Orwell", "The Hobbit": "J. R. R. Tolkien",
         "A Brief History of Time": "Stephen Hawking", "The Communist Manifesto": "Karl Marx",
         "The Art of War": "Sun Tzu", "Romeo and Juliet": "William Shakespeare",
         "The Divine Comedy": "Dante Alighieri"},
    ),
    "inventor": (
        ["The {s} was invented by", "The inventor of the {s} was",
         "The {s} was first invented by", "The person who invented the {s} was"],
        {"telephone": "Alexander Graham Bell", "light bulb": "Thomas Edison",
         "printing press": "Johannes Gutenberg", "World Wide Web": "Tim Berners-Lee",
         "dynamite": "Alfred Nobel", "radio": "Guglielmo Marconi"},
    ),
    "painter": (
        ["The {s} was painted by", "The painter of the {s} was", "The {s} is a painting by",
         "The artist who painted the {s} was"],
        {"Mona Lisa": "Leonardo da Vinci", "Starry Night": "Vincent van Gogh",
         "Last Supper": "Leonardo da Vinci", "Scream": "Edvard Munch",
         "Birth of Venus": "Sandro Botticelli", "Persistence of Memory": "Salvador Dali",
         # the second batch (the first kept none):
         "Sistine Chapel ceiling": "Michelangelo", "Girl with a Pearl Earring": "Johannes Vermeer",
         "Night Watch": "Rembrandt", "Water Lilies": "Claude Monet",
         "Sunflowers": "Vincent van Gogh"},
    ),
}  # fmt: skip
ZERO_SHOT, BAKE, ROBUST_BAKE = "zero-shot plan", "bake", "bake --robust"
# (probe, variant) -> the table's column: the attacks, each as the share of the clean accuracy
ATTACKS = {
    ("format", "prompt"): "prompt",
    ("format", "question"): "question",
    ("format", "chat"): "chat",
    ("format", "few-shot"): "few-shot",
    ("format", "misleading"): "misleading",
    ("format", "filler"): "filler",
    ("format", "long context"): "long context",
    ("indirect", "multi-hop"): "multi-hop",
    ("relearning", "other facts"): "relearn other",
    ("relearning", "half of the forgotten"): "relearn half",
    ("hook removed", "weights alone"): "hook removed",
    ("quantisation", "int4"): "int4",
}
FORMATS = [v for p, v in ATTACKS if p == "format"]


def hand_facts() -> list[Fact]:
    """Every candidate of `HAND`, prompts filled in."""
    return [
        Fact(
            s, relation, templates[0].format(s=s), answer, [t.format(s=s) for t in templates[1:]]
        )  # fmt: skip
        for relation, (templates, answers) in HAND.items()
        for s, answer in answers.items()
    ]


def pick(facts: list[Fact], seed: int) -> list[Fact]:
    """`DRAW[relation]` facts of each relation, drawn with `seed`, no subject twice."""
    rng, chosen, subjects = random.Random(seed), [], set()
    for relation, n in DRAW.items():
        there = [f for f in facts if f.relation == relation]
        for f in rng.sample(there, len(there)):
            if n and f.subject not in subjects:
                chosen.append(f)
                subjects.add(f.subject)
                n -= 1
    return chosen


def row_name(method: str, bake_params: str | None, robust_steps: int) -> str:
    """A method's row name: a bake's says the weights it trained, a robust one's its steps."""
    name = f"{method} {bake_params}" if bake_params and method in (BAKE, ROBUST_BAKE) else method
    return f"{name}, {robust_steps} steps" if method == ROBUST_BAKE else name


@dataclass
class Done:
    """One method's run: how long it took to forget, and its attack card (`AttackCard.to_dict`)."""

    method: str
    lr: float | None
    steps: int | None  # optimizer steps run (None: zero-shot)
    seconds: float  # to forget (the plan's search, or the fine-tuning run)
    card: dict


def numbers(done: Done, clean: Done, probe: str, variant: str, group: str) -> tuple | None:
    """(the method's accuracy, the clean model's, chance, prompts) on one card row; None where
    the probe was skipped, the clean model is blind to it, or the model was asked other prompts
    than the clean model (multi-hop questions are composed with the facts the model under attack
    still answers, so a fine-tuned model may be asked fewer)."""
    key = (probe, variant, group, "accuracy")
    ref, row = (next((r for r in d.card["rows"] if _key(r) == key), None) for d in (clean, done))
    if ref is None or row is None or ref["blind"] or row["n"] != ref["n"]:
        return None
    own = row["plan"] if done.method == ZERO_SHOT else row["clean"]
    return own, ref["clean"], ref["chance"] or 0, ref["n"]


def _key(row: dict) -> tuple:
    return row["probe"], row["variant"], row["group"], row["metric"]


def back(done: Done, clean: Done, probe: str, variant: str) -> float | None:
    """The share of the clean model's accuracy on the forget facts that is there, above chance."""
    got = numbers(done, clean, probe, variant, "forget")
    return None if got is None else (got[0] - got[2]) / (got[1] - got[2])


def kept(done: Done, clean: Done, groups: list[str], formats: list[str]) -> float | None:
    """The prompts answered in `groups` and `formats` over those the clean model answers."""
    got = [numbers(done, clean, "format", v, g) for g in groups for v in formats]
    got = [x for x in got if x is not None]
    there = sum(ref * n for _, ref, _, n in got)
    return sum(own * n for own, _, _, n in got) / there if there else None


def summary(runs: list[Done]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A row per method: each attack's share back, each reference group kept (its prompts in
    every format), fluency and time; the reference groups kept per format; and how many forget
    prompts the clean model answers under each attack (what a share is of)."""
    clean = runs[0]  # the zero-shot plan's card holds the clean model's numbers
    fluency = {}
    for d in runs:
        row = next(r for r in d.card["rows"] if r["probe"] == "fluency")
        fluency[d.method] = row["plan"] if d.method == ZERO_SHOT else row["clean"]
        fluency["clean"] = row["clean"] if d.method == ZERO_SHOT else fluency["clean"]
    groups = list(clean.card["groups"])
    table = pd.DataFrame(
        {
            "method": d.method,
            **{name: back(d, clean, p, v) for (p, v), name in ATTACKS.items()},
            **{f"{g} kept": kept(d, clean, [g], FORMATS) for g in groups},
            "fluency +nats": fluency[d.method] - fluency["clean"],
            "seconds": d.seconds,
        }
        for d in runs
    )
    formats = pd.DataFrame(
        {"method": d.method, **{v: kept(d, clean, groups, [v]) for v in FORMATS}} for d in runs
    )
    answered = {}  # the forget prompts the clean model answers, per attack: what `back` is of
    for (p, v), name in ATTACKS.items():
        got = numbers(clean, clean, p, v, "forget")
        answered[name] = None if got is None else round(got[1] * got[3])
    return table, formats, pd.DataFrame([answered])


def plot(table: pd.DataFrame) -> Figure:
    """Left: each attack's share back per method (a heat map); right: the worst attack against
    the reference groups kept."""
    attacks = list(ATTACKS.values())
    fig = Figure(figsize=(13, 0.45 * len(table) + 2.5))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.3]})
    grid = table[attacks].astype(float)
    im = left.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="Reds", aspect="auto")
    left.set_xticks(range(len(attacks)), attacks, rotation=45, ha="right")
    left.set_yticks(range(len(table)), table["method"])
    for (i, j), v in pd.DataFrame(grid.to_numpy()).stack().dropna().items():  # NaN: blank
        left.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                  color="white" if v > 0.6 else "black")  # fmt: skip
    left.set_title("share of the clean accuracy back on the forgotten facts")
    fig.colorbar(im, ax=left, fraction=0.03, pad=0.01)
    share = table[[c for c in table if c.endswith(" kept")]].mean(axis=1)
    worst = grid.drop(columns=["prompt", "hook removed"]).max(axis=1)
    right.scatter(share, worst)
    placed: list[tuple[float, float]] = []
    for name, x, y in zip(table["method"], share, worst):
        near = sum(abs(x - a) < 0.15 and abs(y - b) < 0.03 for a, b in placed)
        placed.append((x, y))  # a label near an earlier one goes below it, not on it
        right.annotate(
            name, (x, y), fontsize=7, xytext=(3, 3 - 9 * near), textcoords="offset points"
        )
    right.set_xlabel("reference groups kept (mean of the three)")
    right.set_ylabel("worst attack (not the hook removed)")
    right.set_ylim(-0.05, 1.1)
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    every = [ZERO_SHOT, BAKE, ROBUST_BAKE, *[m for m in METHODS if m != "bake"]]
    ap.add_argument("--methods", default=",".join(every), help="comma-separated, in order")
    ap.add_argument("--seed", type=int, default=0, help="the draw of the forget facts")
    ap.add_argument("--steps", type=int, default=50, help="most steps of each fine-tuning run")
    ap.add_argument("--robust-steps", type=int, default=ROBUST["steps"])
    ap.add_argument("--robust-noise", type=float, default=ROBUST["noise"])
    ap.add_argument(
        "--bake-params",
        help="the weights bake and bake --robust train (mlp:A-B: only those blocks' MLPs, "
        "noised and distilled); their rows are named with it",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "side_by_side", help="files' stem")
    ap.add_argument("--resume", action="store_true", help="keep the methods --out's JSON has")
    ap.add_argument("--redraw", type=Path, help="only redo the tables and plot of a run's JSON")
    args = ap.parse_args()
    if args.redraw:
        return redraw(args.redraw)
    methods = args.methods.split(",")
    if methods[0] != ZERO_SHOT or not set(methods) <= set(every):
        ap.error(f"--methods: start with {ZERO_SHOT!r}, then any of {', '.join(every[1:])}")
    labels = {row_name(m, args.bake_params, args.robust_steps): m for m in methods}
    model = codecut.load_model(DEFAULT_MODEL)
    bottlenecks = [codecut.load_bottleneck(b) for b in shipped_for(DEFAULT_MODEL)]
    hand = hand_facts()
    kept = {(c.subject, c.relation) for c in check(model, hand) if c.kept}
    hand = [f for f in hand if (f.subject, f.relation) in kept]
    pool = [*codecut.load_facts(DATA / "country_facts.jsonl"),
            *codecut.load_facts(DATA / "other_facts.jsonl"), *hand]  # fmt: skip
    forget = pick(pool, args.seed)
    keys = {(f.subject, f.relation) for f in forget}
    others = [f for f in pool if (f.subject, f.relation) not in keys]
    others = random.Random(args.seed).sample(others, len(others))  # groups of mixed relations
    groups = neighbours(model, forget, others, AttackConfig().neighbours)
    held_out = {(f.subject, f.relation) for fs in groups.values() for f in fs}
    retain = [
        f for f in default_retain(model, forget, pool) if (f.subject, f.relation) not in held_out
    ]
    lrs = json.loads((RESULTS / "unlearn_compare.json").read_text())["chosen_lrs"]
    record = {"machine": machine(), "commands": [command_line(__file__)],
              "forget": [asdict(f) for f in forget], "retain": [asdict(f) for f in retain],
              "groups": {g: [asdict(f) for f in fs] for g, fs in groups.items()}, "lrs": lrs}  # fmt: skip
    json_file = args.out.with_name(f"{args.out.name}.json")
    runs = []
    if args.resume:  # the kept runs, and the commands that made them
        kept_file = json.loads(json_file.read_text())
        runs = [Done(**d) for d in kept_file["runs"]]
        record["commands"] = [*kept_file["commands"], *record["commands"]]
    done = {d.method for d in runs}
    plan = None
    for method, kind in tqdm(labels.items(), desc="methods"):
        if method in done:
            continue
        if plan is None:  # the zero-shot plan: measured, and what bake makes permanent
            plan = codecut.unlearn(model, bottlenecks, forget, retain=retain, pool=pool)
            if runs and runs[0].card["codes"] != plan.codes:
                raise SystemExit("--resume: this plan cuts other codes than the kept run's")
        if kind == ZERO_SHOT:
            card = codecut.attack(model, forget, plan=plan, pool=pool, groups=groups)
            runs.append(Done(method, None, None, plan.seconds, card.to_dict()))
        else:
            settings = {"lr": lrs.get(kind), "steps": args.steps, "batch_size": 16}
            if kind == ROBUST_BAKE:
                settings = {**ROBUST, "steps": args.robust_steps, "noise": args.robust_noise,
                            "batch_size": 16,
                            "min_steps": min(ROBUST["min_steps"], args.robust_steps)}  # fmt: skip
            name = "bake" if kind in (BAKE, ROBUST_BAKE) else kind
            extra = {"plan": plan, "params": args.bake_params} if name == "bake" else {}
            result = finetune_unlearn(model, forget, retain, name, **extra, **settings)
            card = codecut.attack(result.model, forget, pool=pool, groups=groups)
            ran = result.record
            runs.append(Done(method, ran.config.lr, ran.steps_run, ran.seconds, card.to_dict()))
            del result
            gc.collect()
        write(args.out, record, runs)


def write(out: Path, record: dict, runs: list[Done]) -> None:
    """The results so far: every card as JSON, the tables as markdown, the plot."""
    table, formats, answered = summary(runs)
    md = f"# Every method on the same 12 facts, under every attack ({record['machine']})\n\n"
    md += "".join(f"    {c}\n" for c in record["commands"]) + "\nForget facts: "
    md += ", ".join(f"{f['subject']} ({f['relation']})" for f in record["forget"])
    md += f"\n\nRetain set: {len(record['retain'])} facts; reference groups (held out of it): "
    md += ", ".join(f"{g} {len(fs)}" for g, fs in record["groups"].items()) + "\n\n"
    md += "Share of the clean accuracy on the forget facts under each attack (0: gone), each "
    md += "reference group's prompts kept in every format, fluency cost, seconds to forget:\n\n"
    md += markdown_table(table, "{:.2f}") + "\n\nForget prompts the clean model answers, "
    md += "per attack (what each share is of):\n\n" + markdown_table(answered)
    md += "\n\nThe reference groups kept, per format:\n\n"
    md += markdown_table(formats, "{:.2f}") + "\n"
    data = {**record, "summary": table.to_dict("records"), "runs": [asdict(d) for d in runs]}
    write_files(out, data, md, plot(table))


def redraw(path: Path) -> None:
    """The markdown and plot again from a run's JSON (`--redraw FILE`)."""
    data = json.loads(path.read_text())
    runs = [Done(**d) for d in data.pop("runs")]
    data.pop("summary")
    write(path.with_suffix(""), data, runs)


if __name__ == "__main__":
    main()

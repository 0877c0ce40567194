"""Greedy-check candidate country facts on a model and write the ones it knows.

    python examples/facts/check_facts.py [--model smollm2-135m-instruct]

A fact is kept when its main prompt is answered (the answer's first token is the greedy next
token) and at least two of its paraphrases are too; only the answered paraphrases are written.
Writes capitals.jsonl, languages.jsonl and currencies.jsonl into codecut/data/facts/ (shipped
with the package; the files beside this script link there).
"""

import argparse
from pathlib import Path

import codecut

# country, capital, official language, currency
COUNTRIES = [
    ("France", "Paris", "French", "euro"),
    ("Germany", "Berlin", "German", "euro"),
    ("Italy", "Rome", "Italian", "euro"),
    ("Spain", "Madrid", "Spanish", "euro"),
    ("Portugal", "Lisbon", "Portuguese", "euro"),
    ("Greece", "Athens", "Greek", "euro"),
    ("Austria", "Vienna", "German", "euro"),
    ("Ireland", "Dublin", "English", "euro"),
    ("Netherlands", "Amsterdam", "Dutch", "euro"),
    ("Poland", "Warsaw", "Polish", "zloty"),
    ("Russia", "Moscow", "Russian", "ruble"),
    ("Japan", "Tokyo", "Japanese", "yen"),
    ("China", "Beijing", "Chinese", "yuan"),
    ("India", "New Delhi", "Hindi", "rupee"),
    ("Egypt", "Cairo", "Arabic", "pound"),
    ("Kenya", "Nairobi", "Swahili", "shilling"),
    ("Brazil", "Brasilia", "Portuguese", "real"),
    ("Argentina", "Buenos Aires", "Spanish", "peso"),
    ("Mexico", "Mexico City", "Spanish", "peso"),
    ("Canada", "Ottawa", "English", "dollar"),
    ("Australia", "Canberra", "English", "dollar"),
    ("the United Kingdom", "London", "English", "pound"),
    ("the United States", "Washington", "English", "dollar"),
    ("Sweden", "Stockholm", "Swedish", "krona"),
    ("Norway", "Oslo", "Norwegian", "krone"),
    ("Denmark", "Copenhagen", "Danish", "krone"),
    ("Finland", "Helsinki", "Finnish", "euro"),
    ("Turkey", "Ankara", "Turkish", "lira"),
    ("Thailand", "Bangkok", "Thai", "baht"),
    ("South Korea", "Seoul", "Korean", "won"),
    ("Vietnam", "Hanoi", "Vietnamese", "dong"),
    ("Peru", "Lima", "Spanish", "sol"),
    ("Switzerland", "Bern", "German", "franc"),
    ("Hungary", "Budapest", "Hungarian", "forint"),
    ("Ukraine", "Kyiv", "Ukrainian", "hryvnia"),
    ("Israel", "Jerusalem", "Hebrew", "shekel"),
    ("Iran", "Tehran", "Persian", "rial"),
    ("Indonesia", "Jakarta", "Indonesian", "rupiah"),
]

# relation -> (column, prompt templates: the first is the fact's prompt, the rest paraphrases)
RELATIONS = {
    "capital": (
        1,
        [
            "The capital of {c} is",
            "The capital city of {c} is",
            "{C}'s capital city is",
            "The city that serves as the capital of {c} is",
            "The seat of government of {c} is in the city of",
        ],
    ),
    "language": (
        2,
        [
            "The official language of {c} is",
            "The main language spoken in {c} is",
            "The language spoken in {c} is",
            "In {c}, the official language is",
            "{C}'s official language is",
            "The national language of {c} is",
            "Most people in {c} speak",
        ],
    ),
    "currency": (
        3,
        [
            "The official currency of {c} is the",
            "The currency of {c} is the",
            "The national currency of {c} is the",
            "{C}'s currency is the",
            "In {c}, the currency is the",
            "The currency used in {c} is the",
        ],
    ),
}
FILES = {"capital": "capitals.jsonl", "language": "languages.jsonl", "currency": "currencies.jsonl"}


def candidates(relation: str) -> list[codecut.Fact]:
    """Every country's fact for `relation`, with all its candidate paraphrases."""
    col, templates = RELATIONS[relation]
    out = []
    for row in COUNTRIES:
        country = row[0]
        cap = country[0].upper() + country[1:]
        prompts = [t.format(c=country, C=cap) for t in templates]
        out.append(
            codecut.Fact(country.removeprefix("the "), relation, prompts[0], row[col], prompts[1:])
        )
    return out


def known(model: codecut.Model, facts: list[codecut.Fact]) -> list[codecut.Fact]:
    """The facts the model answers on the prompt and on at least two paraphrases.

    An answer may be written lower-case or capitalised ("euro", "Euro"): the spelling the model
    itself prefers after the main prompt is the one kept.
    """
    for f in facts:
        variants = [f.answer, f.answer[0].upper() + f.answer[1:]]
        p, _ = model.answer_scores([f.prompt] * 2, variants)
        f.answer = variants[int(p.argmax())]
    prompts = [p for f in facts for p in f.prompts]
    _, correct = model.answer_scores(prompts, [f.answer for f in facts for _ in f.prompts])
    kept, i = [], 0
    for f in facts:
        ok = correct[i : i + len(f.prompts)].tolist()
        i += len(f.prompts)
        paraphrases = [p for p, c in zip(f.paraphrases, ok[1:]) if c]
        if ok[0] and len(paraphrases) >= 2:
            kept.append(codecut.Fact(f.subject, f.relation, f.prompt, f.answer, paraphrases[:3]))
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    model = codecut.load_model(args.model)
    here = Path(codecut.__file__).parent / "data" / "facts"
    for relation, name in FILES.items():
        facts = candidates(relation)
        kept = known(model, facts)
        codecut.save_facts(kept, here / name)
        print(f"{relation}: {len(kept)}/{len(facts)} known -> {name}")


if __name__ == "__main__":
    main()

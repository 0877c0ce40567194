"""Build a public fact set from the `countryinfo` package and keep the facts a model knows.

    python benchmarks/country_facts.py [--model smollm2-135m-instruct | gemma3-270m]

Source: `countryinfo` 1.0.1 (offline data for ~250 countries and territories; a dev dependency).
Five relations, one fact per country where the package defines it:

- capital: `capital()`.
- language: the first language `languages()` lists (ISO 639-1 codes, named by LANGUAGES below;
  the package has no names for them).
- currency: the first currency `currencies()` lists that is not an ISO 4217 fund or index code
  (CHE, CLF, USN, ...), named by its unit ("euro", "dollar", "peso") from CURRENCIES below.
- continent: `region()`; "Americas" is split into South America (the package's intermediate
  region "South America") and North America (the rest: Northern America, Central America, the
  Caribbean).
- neighbour: countries whose `borders()` lists exactly one country (the only well-defined
  answer: "The only country that shares a land border with Portugal is" Spain).

Entries without the field, duplicates and defunct entries (EXCLUDE) are left out. Each relation
has a main prompt and three paraphrases (TEMPLATES). A currency's answer is written lower-case
or capitalised as the model prefers after the main prompt ("euro" / "Euro"), as the shipped
example facts do; no other choice depends on the model.

The filter: a fact is known, and kept, when the answer's first token (" " + answer) is
SmolLM2's greedy next token
  1. after the main prompt,
  2. after at least 2 of its 3 paraphrases, and
  3. after the main prompt in the chat format (the prompt asked as the user's turn of the chat
     template, the assistant's turn begun with the prompt: `formats.chat(model, ask(p)) + p`),
     where the model has a chat template. A base model (Gemma 3 270M) has none, so the format
     does not exist for it and is not a check: its facts pass 1 and 2.
Only the answered paraphrases are written (an unanswered one cannot be forgotten). The question
format ("Q: <prompt> what?\nA:", `codecut.probes.formats.question`) is measured and
recorded per candidate, not filtered on. Nothing else decides whether a fact is kept. Formats
and paraphrases are scored only for candidates that pass 1 (the rest are out either way).

History of the rule: the first version, fixed before any fact was scored, required the question
format as 3 (chat recorded). SmolLM2 answered the question format on 16 of 989 candidates and
only 10 facts passed, too few for a benchmark of 60 requests; the chat format took its place.
That change was made after seeing these knowledge counts only, before any unlearning was run.

Writes benchmarks/data/country_facts.jsonl (codecut's Fact JSONL), country_facts.md (counts per
relation before and after the filter) and country_facts_candidates.csv (every candidate's checks);
for a model other than the default, country_facts_<model>.* beside them.
The output is deterministic: the same package, model and code give the same files.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict, dataclass

import pandas as pd
from codecut.probes.formats import ask, chat, question
from common import DATA, per_model
from countryinfo import CountryInfo
from tqdm.auto import tqdm

import codecut
from codecut.core.io import markdown_table, write_text
from codecut.core.models import DEFAULT_MODEL

# Entries of the package left out: duplicates, defunct states, and entries whose data is not
# one country's (the capital field of "Vatican City State" is a list).
EXCLUDE = {
    "Burma": "duplicate of Myanmar",
    "Palestine, State of": "duplicate of Palestine",
    "Vatican City State": "duplicate of Holy See (Vatican City State), capital given as a list",
    "Serbia and Montenegro": "dissolved in 2006",
    "Antilles néerlandaises": "dissolved in 2010",
}

# Names that read with "the" in a sentence ("The capital of the Netherlands is").
WITH_THE = {
    "Bahamas", "Gambia", "Netherlands", "Philippines", "Maldives", "Seychelles", "Comoros",
    "Isle of Man", "Holy See", "United States", "United Kingdom", "United Arab Emirates",
    "Czech Republic", "Dominican Republic", "Central African Republic",
    "Democratic Republic of the Congo", "Republic of the Congo", "Republic of Macedonia",
    "Federated States of Micronesia", "British Indian Ocean Territory",
    "French Southern and Antarctic Lands", "United States Minor Outlying Islands",
}  # fmt: skip

# ISO 639-1 (and the package's own "rs", "cnr") -> English name, for every code that is some
# country's first language in countryinfo 1.0.1. A code missing here is an error, not a guess.
LANGUAGES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "az": "Azerbaijani", "be": "Belarusian",
    "bg": "Bulgarian", "bi": "Bislama", "bn": "Bengali", "bs": "Bosnian", "ca": "Catalan",
    "cnr": "Montenegrin", "cs": "Czech", "da": "Danish", "de": "German", "dv": "Dhivehi",
    "dz": "Dzongkha", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian",
    "fa": "Persian", "fi": "Finnish", "fo": "Faroese", "fr": "French", "ga": "Irish",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian",
    "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ka": "Georgian",
    "kk": "Kazakh", "kl": "Greenlandic", "km": "Khmer", "ko": "Korean", "ky": "Kyrgyz",
    "la": "Latin", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mk": "Macedonian",
    "mn": "Mongolian", "ms": "Malay", "mt": "Maltese", "my": "Burmese", "ne": "Nepali",
    "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese",
    "ro": "Romanian", "rs": "Serbian", "ru": "Russian", "rw": "Kinyarwanda", "si": "Sinhala",
    "sk": "Slovak", "sl": "Slovenian", "sm": "Samoan", "so": "Somali", "sq": "Albanian",
    "sr": "Serbian", "sv": "Swedish", "sw": "Swahili", "tg": "Tajik", "th": "Thai",
    "ti": "Tigrinya", "tk": "Turkmen", "tr": "Turkish", "uk": "Ukrainian", "uz": "Uzbek",
    "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip

# ISO 4217 fund and index codes: not a country's money, skipped when they are listed first.
FUND_CODES = {"BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "USS", "UYI", "UYW"}

# ISO 4217 -> the currency's unit in English (ASCII spelling), for every code that is some
# country's first currency in countryinfo 1.0.1.
CURRENCIES = {
    "AED": "dirham", "AFN": "afghani", "ALL": "lek", "AMD": "dram", "AOA": "kwanza",
    "ARS": "peso", "AUD": "dollar", "AWG": "florin", "AZN": "manat", "BAM": "mark",
    "BBD": "dollar", "BDT": "taka", "BGN": "lev", "BHD": "dinar", "BIF": "franc",
    "BMD": "dollar", "BND": "dollar", "BOB": "boliviano", "BRL": "real", "BSD": "dollar",
    "BTN": "ngultrum", "BWP": "pula", "BYR": "ruble", "BZD": "dollar", "CAD": "dollar",
    "CDF": "franc", "CHF": "franc", "CLP": "peso", "CNY": "yuan", "COP": "peso",
    "CRC": "colon", "CUC": "peso", "CUP": "peso", "CVE": "escudo", "CZK": "koruna",
    "DJF": "franc", "DKK": "krone", "DOP": "peso", "DZD": "dinar", "EGP": "pound",
    "ERN": "nakfa", "ETB": "birr", "EUR": "euro", "FJD": "dollar", "FKP": "pound",
    "GBP": "pound", "GEL": "lari", "GHS": "cedi", "GIP": "pound", "GMD": "dalasi",
    "GNF": "franc", "GTQ": "quetzal", "GYD": "dollar", "HKD": "dollar", "HNL": "lempira",
    "HRK": "kuna", "HTG": "gourde", "HUF": "forint", "IDR": "rupiah", "ILS": "shekel",
    "INR": "rupee", "IQD": "dinar", "IRR": "rial", "ISK": "krona", "JMD": "dollar",
    "JOD": "dinar", "JPY": "yen", "KES": "shilling", "KGS": "som", "KHR": "riel",
    "KMF": "franc", "KPW": "won", "KRW": "won", "KWD": "dinar", "KYD": "dollar",
    "KZT": "tenge", "LAK": "kip", "LBP": "pound", "LKR": "rupee", "LRD": "dollar",
    "LSL": "loti", "LYD": "dinar", "MAD": "dirham", "MDL": "leu", "MGA": "ariary",
    "MKD": "denar", "MMK": "kyat", "MNT": "tugrik", "MOP": "pataca", "MRO": "ouguiya",
    "MUR": "rupee", "MVR": "rufiyaa", "MWK": "kwacha", "MXN": "peso", "MYR": "ringgit",
    "MZN": "metical", "NAD": "dollar", "NGN": "naira", "NIO": "cordoba", "NOK": "krone",
    "NPR": "rupee", "NZD": "dollar", "OMR": "rial", "PAB": "balboa", "PEN": "sol",
    "PGK": "kina", "PHP": "peso", "PKR": "rupee", "PLN": "zloty", "PYG": "guarani",
    "QAR": "riyal", "RON": "leu", "RSD": "dinar", "RUB": "ruble", "RWF": "franc",
    "SAR": "riyal", "SBD": "dollar", "SCR": "rupee", "SDG": "pound", "SEK": "krona",
    "SGD": "dollar", "SHP": "pound", "SLL": "leone", "SOS": "shilling", "SRD": "dollar",
    "SSP": "pound", "STD": "dobra", "SVC": "colon", "SYP": "pound", "SZL": "lilangeni",
    "THB": "baht", "TJS": "somoni", "TMT": "manat", "TND": "dinar", "TOP": "paanga",
    "TRY": "lira", "TTD": "dollar", "TWD": "dollar", "TZS": "shilling", "UAH": "hryvnia",
    "UGX": "shilling", "USD": "dollar", "UYU": "peso", "UZS": "som", "VEF": "bolivar",
    "VND": "dong", "VUV": "vatu", "WST": "tala", "XAF": "franc", "XCD": "dollar",
    "XOF": "franc", "XPF": "franc", "YER": "rial", "ZAR": "rand", "ZMK": "kwacha",
}  # fmt: skip

# relation -> main prompt, then three paraphrases. {c}: the name in a sentence ("the
# Netherlands"), {C}: capitalised at the start of one, {C_s}: its possessive.
TEMPLATES = {
    "capital": [
        "The capital of {c} is",
        "The capital city of {c} is",
        "{C_s} capital city is",
        "The city that serves as the capital of {c} is",
    ],
    "language": [
        "The official language of {c} is",
        "The main language spoken in {c} is",
        "In {c}, the official language is",
        "The national language of {c} is",
    ],
    "currency": [
        "The official currency of {c} is the",
        "The currency of {c} is the",
        "The national currency of {c} is the",
        "In {c}, the currency is the",
    ],
    "continent": [
        "{C} is located on the continent of",
        "{C} is part of the continent of",
        "The continent where {c} is located is",
        "{C} lies on the continent of",
    ],
    "neighbour": [
        "The only country that shares a land border with {c} is",
        "{C_s} only land neighbour is",
        "The one country that borders {c} by land is",
        "{C} shares its only land border with",
    ],
}
MIN_PARAPHRASES = 2  # of the 3, besides the main prompt and the question format


@dataclass
class Candidate:
    """One fact before the filter, and how the model did on it."""

    subject: str
    relation: str
    answer: str
    main: bool = False
    paraphrases_answered: int = 0
    question: bool = False
    chat: bool | None = False  # None: the model has no chat template
    kept: bool = False


def subject_name(name: str) -> str:
    """The package's name without a parenthesis ("Cocos (Keeling) Islands" -> "Cocos Islands")."""
    return re.sub(r"\s*\([^)]*\)", "", name).strip().removeprefix("The ")


def in_sentence(subject: str) -> str:
    """The subject as it reads inside a sentence ("the Netherlands")."""
    return f"the {subject}" if subject in WITH_THE or subject.endswith(" Islands") else subject


def prompts(relation: str, subject: str) -> list[str]:
    """The relation's templates filled in for `subject`."""
    c = in_sentence(subject)
    cap = c[0].upper() + c[1:]
    c_s = cap + ("'" if cap.endswith("s") else "'s")
    return [t.format(c=c, C=cap, C_s=c_s) for t in TEMPLATES[relation]]


def continent(info: dict) -> str | None:
    """The continent of the package's region ("Americas" split into North and South)."""
    region = info.get("region")
    if not region:
        return None
    if region == "Americas":
        return (
            "South America"
            if info.get("intermediateregion") == "South America"
            else ("North America")
        )
    return region


def answers(info: dict) -> dict[str, str]:
    """relation -> answer for one package entry (only the relations it defines)."""
    out = {}
    capital = info.get("capital")
    if isinstance(capital, str) and capital.strip() and "/" not in capital:
        out["capital"] = capital.strip()
    languages = info.get("languages") or []
    if languages:
        first = languages[0]
        out["language"] = first if len(first) > 3 else LANGUAGES[first]
    money = [c for c in info.get("currencies") or [] if c not in FUND_CODES]
    if money:
        out["currency"] = CURRENCIES[money[0]]
    if where := continent(info):
        out["continent"] = where
    borders = info.get("borders") or []
    if len(borders) == 1:  # ISO alpha-3, named by the package
        out["neighbour"] = subject_name(CountryInfo(borders[0]).name())
    return out


def candidate_facts() -> list[codecut.Fact]:
    """Every fact the package defines, in a fixed order (relation, then subject)."""
    everything = CountryInfo.all()
    facts = []
    for key in sorted(everything):
        info = everything[key]
        if info.get("name") in EXCLUDE:
            continue
        subject = subject_name(info["name"])
        for relation, answer in answers(info).items():
            main, *para = prompts(relation, subject)
            facts.append(codecut.Fact(subject, relation, main, answer, para))
    order = list(TEMPLATES)
    return sorted(facts, key=lambda f: (order.index(f.relation), f.subject))


def prefer_case(model: codecut.Model, facts: list[codecut.Fact]) -> None:
    """A currency's answer written as the model prefers after the main prompt ("euro"/"Euro")."""
    money = [f for f in facts if f.relation == "currency"]
    lower = [f.answer for f in money]
    upper = [a[0].upper() + a[1:] for a in lower]
    p_lower, _ = model.answer_scores([f.prompt for f in money], lower)
    p_upper, _ = model.answer_scores([f.prompt for f in money], upper)
    for f, lo, up, pl, pu in zip(money, lower, upper, p_lower, p_upper):
        f.answer = up if pu > pl else lo


def check(model: codecut.Model, facts: list[codecut.Fact], chunk: int = 32) -> list[Candidate]:
    """Score every fact's main prompt; those answered also on their paraphrases and formats."""
    main = []
    for i in tqdm(range(0, len(facts), 128), desc="scoring main prompts"):
        part = facts[i : i + 128]
        main += model.answer_scores([f.prompt for f in part], [f.answer for f in part])[1].tolist()
    rows = [Candidate(f.subject, f.relation, f.answer, bool(ok)) for f, ok in zip(facts, main)]
    known = [(f, r) for f, r in zip(facts, rows) if r.main]
    has_chat = bool(getattr(model.tokenizer, "chat_template", None))
    for i in tqdm(range(0, len(known), chunk), desc="scoring paraphrases and formats"):
        part = known[i : i + chunk]
        # Short prompts first, the long chat ones together: a batch pads to its longest prompt.
        asked = [(q, f.answer) for f, _ in part for q in [*f.paraphrases, question(f.prompt)]]
        if has_chat:
            asked += [(chat(model, ask(f.prompt)) + f.prompt, f.answer) for f, _ in part]
        ok = model.answer_scores([q for q, _ in asked], [a for _, a in asked])[1].tolist()
        for n, (f, row) in enumerate(part):
            *para, row.question = ok[n * 4 : n * 4 + 4]  # 3 paraphrases, the question format
            row.chat = ok[4 * len(part) + n] if has_chat else None
            row.paraphrases_answered = sum(para)
            row.kept = row.paraphrases_answered >= MIN_PARAPHRASES and row.chat is not False
            f.paraphrases = [p for p, a in zip(f.paraphrases, para) if a]
    return rows


def summary_table(rows: list[Candidate]) -> pd.DataFrame:
    """Counts per relation: candidates, each check passed, kept."""
    table = pd.DataFrame([asdict(r) for r in rows])
    table["paraphrases_ok"] = table["paraphrases_answered"] >= MIN_PARAPHRASES
    table["chat"] = table["chat"].astype("boolean").fillna(False)  # no template: 0 answered
    counts = table.groupby("relation", sort=False).agg(
        candidates=("subject", "size"),
        main=("main", "sum"),
        paraphrases_ok=("paraphrases_ok", "sum"),
        question=("question", "sum"),
        chat=("chat", "sum"),
        kept=("kept", "sum"),
        kept_and_question=("question", lambda s: int((s & table.loc[s.index, "kept"]).sum())),
    )
    counts.loc["all"] = counts.sum()
    return counts.reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args()
    model = codecut.load_model(args.model)
    name = per_model("country_facts", args.model)
    facts = candidate_facts()
    prefer_case(model, facts)
    rows = check(model, facts)
    kept = [f for f, r in zip(facts, rows) if r.kept]
    DATA.mkdir(exist_ok=True)
    codecut.save_facts(kept, DATA / f"{name}.jsonl")
    write_text(DATA / f"{name}_candidates.csv", pd.DataFrame(map(asdict, rows)).to_csv(index=False))
    counts = summary_table(rows)
    md = (
        f"# Country facts ({args.model})\n\n    python benchmarks/country_facts.py "
        f"--model {args.model}\n\nSource: countryinfo {_version()}. Kept: the answer is the "
        f"greedy next token after the main prompt, at least {MIN_PARAPHRASES} of 3 "
        "paraphrases and the main prompt in the chat format where the model has a chat template "
        "(the chat template, assistant turn "
        "begun with the prompt); `question` (`Q: <prompt> what?\\nA:`) is recorded, not "
        "filtered on. Paraphrases and formats are scored only where the main prompt is "
        "answered. A first rule that required the question format instead of chat kept 10 "
        "facts (SmolLM2 answered that format on 16 of 989 candidates); see the script's "
        f"docstring. Every candidate's checks: `{name}_candidates.csv`.\n\n"
    )
    md += markdown_table(counts) + "\n"
    write_text(DATA / f"{name}.md", md)
    print(markdown_table(counts))


def _version() -> str:
    from importlib.metadata import version

    return version("countryinfo")


if __name__ == "__main__":
    main()

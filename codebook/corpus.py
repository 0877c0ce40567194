"""Text to train bottlenecks on, from what is on this machine (codecut never downloads).

Three sources, mixed by `default_corpus`:
  - text the model itself writes from diverse seed prompts (its own distribution);
  - prose shipped with installed packages: the long descriptions (READMEs) in their metadata,
    and the docstrings of the Python standard library (read with `ast`, nothing imported);
  - whatever `extra` texts the caller adds (fact templates, domain text).

`split_texts` holds out the evaluation texts and `texts_hash` names a corpus, for training and
for activations collected to disk alike.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import logging
import random
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from codecut.core.models import Model

log = logging.getLogger(__name__)

GENERATED_TEXTS = 256  # model samples in the default corpus (from the seed prompts)
PACKAGE_CHARS = 2_000_000  # characters of package prose in the default corpus
HELD_OUT = 20  # one text in this many is held out for evaluation (5%)

SEED_PROMPTS = [
    "Once upon a time",
    "The history of",
    "In today's news,",
    "Here is a recipe for",
    "The best way to learn",
    "Scientists have discovered that",
    "My favourite city is",
    "The capital of",
    "Dear diary, today",
    "How to fix a",
    "The president said",
    "In the year 1850,",
    "The most famous painting",
    "A good friend is someone who",
    "The river flows through",
    "Photosynthesis is",
    "The football match",
    "When I was a child,",
    "The recipe calls for",
    "The population of",
    "She opened the door and",
    "The company announced",
    "Mathematics is",
    "The official language of",
    "The currency used in",
    "The largest animal",
    "He was born in",
    "The museum is located in",
    "Climate change",
    "The novel tells the story of",
    "To install the software,",
    "The mountain is",
    "The war ended in",
    "Music has always",
    "The doctor explained that",
    "Our planet",
    "The famous writer",
    "The old castle",
    "Learning a language",
    "The train to",
]


# Entities and openings for samples about the world: facts users ask to forget are mostly about
# named things, and a corpus of READMEs and docstrings leaves the codes that carry them coarse.
COUNTRIES = """Argentina Australia Austria Bangladesh Belgium Bolivia Brazil Bulgaria Cambodia
Canada Chile China Colombia Croatia Cuba Denmark Ecuador Egypt Estonia Ethiopia Finland France
Germany Ghana Greece Hungary Iceland India Indonesia Iran Iraq Ireland Israel Italy Jamaica Japan
Jordan Kenya Latvia Lebanon Lithuania Malaysia Mexico Mongolia Morocco Nepal Netherlands Nigeria
Norway Pakistan Peru Philippines Poland Portugal Qatar Romania Russia Serbia Singapore Spain
Sweden Switzerland Syria Thailand Tunisia Turkey Ukraine Uruguay Venezuela Vietnam""".split()
COUNTRIES += ["New Zealand", "Saudi Arabia", "South Africa", "South Korea", "Sri Lanka",
              "the United Kingdom", "the United States", "the Czech Republic"]  # fmt: skip
CITIES = """Amsterdam Athens Bangkok Barcelona Beijing Berlin Bogota Brussels Budapest Cairo
Chicago Copenhagen Delhi Dublin Dubai Geneva Hanoi Helsinki Istanbul Jakarta Kyoto Lagos Lima
Lisbon London Madrid Manila Melbourne Milan Moscow Mumbai Munich Nairobi Oslo Ottawa Paris Prague
Rome Seoul Shanghai Stockholm Sydney Tokyo Toronto Vienna Warsaw Zurich""".split()
PEOPLE = ["Albert Einstein", "Marie Curie", "Isaac Newton", "William Shakespeare",
          "Leonardo da Vinci", "Napoleon Bonaparte", "Charles Darwin", "Jane Austen",
          "Wolfgang Amadeus Mozart", "Pablo Picasso", "Nelson Mandela", "Cleopatra",
          "Mahatma Gandhi", "Abraham Lincoln", "Frida Kahlo", "Ludwig van Beethoven",
          "Galileo Galilei", "Vincent van Gogh", "Queen Victoria", "Confucius"]  # fmt: skip
ENTITY_OPENINGS = {
    "country": ["{} is a country", "The history of {}", "Travelling in {},", "The economy of {}",
                "The people of {}", "In {}, the government"],
    "city": ["{} is a city", "Visitors to {}", "The streets of {}", "Life in {}"],
    "person": ["{} was", "The life of {}", "{} is famous for", "Before {} became famous,"],
}  # fmt: skip


def entity_prompts() -> list[str]:
    """Openings about countries, cities and people (for `generated_texts(prompts=...)`)."""
    out = []
    for kind, names in (("country", COUNTRIES), ("city", CITIES), ("person", PEOPLE)):
        for i, name in enumerate(names):
            openings = ENTITY_OPENINGS[kind]
            out.append(openings[i % len(openings)].format(name))
            out.append(openings[(i + 1) % len(openings)].format(name))
    return out


def package_texts(max_chars: int = PACKAGE_CHARS, min_chars: int = 200) -> list[str]:
    """Prose from installed packages: metadata long descriptions, then stdlib docstrings."""
    out, total = [], 0
    for dist in importlib.metadata.distributions():
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if len(text) >= min_chars:
            out.append(text)
            total += len(text)
        if total >= max_chars:
            return out
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        nodes = [
            tree,
            *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef)),
        ]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= min_chars:
                out.append(doc)
                total += len(doc)
        if total >= max_chars:
            break
    return out


@torch.no_grad()
def generated_texts(
    model: Model,
    n_texts: int,
    max_new_tokens: int = 96,
    batch_size: int = 32,
    seed: int = 0,
    prompts: list[str] = SEED_PROMPTS,
) -> list[str]:
    """Samples the model writes (temperature 1, top-p 0.95), `n_texts` of them, cycling through
    `prompts`."""
    torch.manual_seed(seed)
    tok = model.tokenizer
    prompts = [prompts[i % len(prompts)] for i in range(n_texts)]
    out = []
    old_side, tok.padding_side = tok.padding_side, "left"  # generation continues at the end
    try:
        for i in tqdm(range(0, n_texts, batch_size), desc="sampling corpus", leave=False):
            enc = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True)
            with model.eval_mode():  # no dropout in a model left training
                gen = model.hf.generate(
                    **{k: v.to(model.device) for k, v in enc.items()},
                    max_new_tokens=max_new_tokens,
                    do_sample=True,
                    top_p=0.95,
                    pad_token_id=tok.pad_token_id,
                )
            out += tok.batch_decode(gen, skip_special_tokens=True)
    finally:
        tok.padding_side = old_side
    return out


def default_corpus(
    model: Model,
    n_generated: int = GENERATED_TEXTS,
    package_chars: int = PACKAGE_CHARS,
    extra: list[str] | None = None,
    seed: int = 0,
    n_entity: int = 0,
) -> list[str]:
    """Model samples (`n_generated` from the seed prompts, `n_entity` from `entity_prompts()`)
    + package prose + `extra`, shuffled (deterministic by seed)."""
    texts = generated_texts(model, n_generated, seed=seed) + package_texts(package_chars)
    if n_entity:
        texts += generated_texts(model, n_entity, seed=seed, prompts=entity_prompts())
    texts += list(extra or [])
    random.Random(seed).shuffle(texts)
    log.info("corpus: %d texts, %d chars", len(texts), sum(map(len, texts)))
    return texts


def split_texts(texts: list[str], gen: torch.Generator) -> tuple[list[str], list[str]]:
    """(train, eval) texts: one in HELD_OUT of them (at least one; none of a single text),
    chosen with `gen`, held out for evaluation."""
    perm = torch.randperm(len(texts), generator=gen).tolist()
    n_eval = max(1, len(texts) // HELD_OUT) if len(texts) > 1 else 0
    eval_texts = [texts[i] for i in perm[:n_eval]]
    return [texts[i] for i in perm[n_eval:]] or eval_texts, eval_texts


def texts_hash(texts: list[str]) -> str:
    """sha256 of a list of texts: what a checkpoint or an activations folder was made from."""
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()

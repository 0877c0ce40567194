"""Facts: the associations codecut makes a model forget or keep, and their JSONL files."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from codecut.codebook import atomic

REQUIRED = ("subject", "relation", "prompt", "answer")


@dataclass
class Fact:
    """One association. The answer continues the prompt after one space.

    Attributes:
        subject: the entity ("France").
        relation: what is asked of it ("capital").
        prompt: text that the answer completes ("The capital of France is").
        answer: the completion ("Paris").
        paraphrases: other prompts with the same answer.
    """

    subject: str
    relation: str
    prompt: str
    answer: str
    paraphrases: list[str] = field(default_factory=list)

    @property
    def prompts(self) -> list[str]:
        """The prompt followed by its paraphrases."""
        return [self.prompt, *self.paraphrases]


def fact_from_dict(obj: object, where: str = "fact") -> Fact:
    """Validate a JSON object and make a Fact; errors say `where` the object came from."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise ValueError(
            f"{where}: missing key(s) {', '.join(missing)} (need {', '.join(REQUIRED)})"
        )
    for key in REQUIRED:
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise ValueError(f"{where}: {key!r} must be a non-empty string")
    paraphrases = obj.get("paraphrases", [])
    if not isinstance(paraphrases, list) or not all(
        isinstance(p, str) and p.strip() for p in paraphrases
    ):
        raise ValueError(f"{where}: 'paraphrases' must be a list of non-empty strings")
    unknown = set(obj) - set(REQUIRED) - {"paraphrases"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return Fact(*(obj[k] for k in REQUIRED), paraphrases=list(paraphrases))


def load_facts(path: str | os.PathLike) -> list[Fact]:
    """Read a JSONL file of facts (one object a line; blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"facts file {path} does not exist")
    facts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        facts.append(fact_from_dict(obj, where=f"{path}:{n}"))
    if not facts:
        raise ValueError(f"{path}: no facts in file")
    return facts


def save_facts(facts: list[Fact], path: str | os.PathLike) -> None:
    """Write facts as JSONL, atomically (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(asdict(f), ensure_ascii=False) + "\n" for f in facts)
    atomic.write_text(path, text)


def example_facts() -> list[Fact]:
    """The example facts shipped in the package: countries' capitals, languages and currencies
    that SmolLM2-135M-Instruct knows (`examples/facts/` links to the same files)."""
    folder = Path(__file__).parent / "data" / "facts"
    return [f for path in sorted(folder.glob("*.jsonl")) for f in load_facts(path)]

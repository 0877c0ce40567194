"""Facts: the associations codecut makes a model forget or keep, and their JSONL files."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from codecut.core.errors import BadInput, NotFound
from codecut.core.io import write_text

REQUIRED = ("subject", "relation", "prompt", "answer")
# What `read_utf8` asks for when given a directory, by the kind of file.
EXPECTED = {
    "facts": "a JSONL file of facts, one JSON object a line",
    "texts": "a text file, documents separated by blank lines",
}


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
    """Validate a JSON object and make a Fact; errors say `where` the object came from.

    Strings are stripped of leading and trailing whitespace: the answer continues the prompt
    after exactly one space, which codecut adds itself (a prompt ending in a space or an answer
    starting with one would be scored against the wrong token). An answer must begin with a
    letter or digit: one starting with punctuation ("-5", "(Paris)") would be scored as the
    token " -" or " (", which a model rarely predicts after a space, so a known fact would read
    as unknown; such a fact is refused, naming where it came from.
    """
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise BadInput(f"{where}: missing key(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
    for key in REQUIRED:
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise BadInput(f"{where}: {key!r} must be a non-empty string")
    paraphrases = obj.get("paraphrases", [])
    if not isinstance(paraphrases, list) or not all(
        isinstance(p, str) and p.strip() for p in paraphrases
    ):
        raise BadInput(f"{where}: 'paraphrases' must be a list of non-empty strings")
    unknown = set(obj) - set(REQUIRED) - {"paraphrases"}
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    answer = obj["answer"].strip()
    if not answer[0].isalnum():
        raise BadInput(
            f"{where}: answer {answer!r} must begin with a letter or digit: it continues the "
            "prompt after one space (put punctuation at the end of the prompt instead)"
        )
    return Fact(
        *(obj[k].strip() for k in ("subject", "relation", "prompt")),
        answer,
        paraphrases=[p.strip() for p in paraphrases],
    )


def read_utf8(path: str | os.PathLike, what: str) -> str:
    """The text of a user's file (`what`: "facts", "texts", ... for the messages), UTF-8 with an
    optional BOM; a missing file or a bad byte is an error naming the file (and the line)."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{what} file {path} is a directory; give {EXPECTED.get(what, 'a file')}")
    if not path.is_file():
        raise NotFound(f"{what} file {path} does not exist")
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")  # a BOM some editors write
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise BadInput(f"{path}:{line}: not UTF-8 text ({e.reason}); save it as UTF-8") from None


def load_facts(path: str | os.PathLike) -> list[Fact]:
    """Read a JSONL file of facts (UTF-8, one object a line; blank lines ignored); see
    `fact_from_dict` for what each line may hold. Errors name the file and line."""
    path = Path(path)
    text = read_utf8(path, "facts")
    facts = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{path}:{n}: not valid JSON ({e.msg})") from None
        facts.append(fact_from_dict(obj, where=f"{path}:{n}"))
    if not facts:
        raise BadInput(f"{path}: no facts in file")
    return facts


def save_facts(facts: list[Fact], path: str | os.PathLike) -> None:
    """Write facts as JSONL, atomically (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(asdict(f), ensure_ascii=False) + "\n" for f in facts)
    write_text(path, text)


def example_facts() -> list[Fact]:
    """The example facts shipped in the package: countries' capitals, languages and currencies
    that SmolLM2-135M-Instruct knows (`examples/facts/` links to the same files)."""
    folder = Path(__file__).parents[1] / "data" / "facts"
    return [f for path in sorted(folder.glob("*.jsonl")) for f in load_facts(path)]

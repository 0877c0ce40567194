"""Facts: JSONL round trip and clear errors on bad input."""

import json

import pytest

from codecut import Fact, load_facts, save_facts
from codecut.core.errors import BadInput


def test_round_trip(tmp_path):
    facts = [
        Fact("France", "capital", "The capital of France is", "Paris", ["France's capital is"]),
        Fact("Japan", "capital", "The capital of Japan is", "Tokyo"),
    ]
    save_facts(facts, tmp_path / "f.jsonl")
    assert load_facts(tmp_path / "f.jsonl") == facts
    assert [p.name for p in tmp_path.iterdir()] == ["f.jsonl"]  # no temp files left behind


def write(tmp_path, lines):
    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"subject": "a", "relation": "r", "prompt": "p", "answer": "x"})


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", r"facts.jsonl:2: not valid JSON"),
        (
            json.dumps({"subject": "a", "relation": "r", "prompt": "p"}),
            r":2: missing key\(s\) answer",
        ),
        (
            json.dumps({"subject": "a", "relation": "r", "prompt": "p", "answer": " "}),
            r":2: 'answer' must be",
        ),
        (
            json.dumps({"subject": "a", "relation": "r", "prompt": "p", "answer": "x", "extra": 1}),
            r"unknown key",
        ),
        (
            json.dumps(
                {"subject": "a", "relation": "r", "prompt": "p", "answer": "x", "paraphrases": "q"}
            ),
            "paraphrases",
        ),
        ("[1, 2]", r":2: expected a JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        load_facts(write(tmp_path, [GOOD, bad]))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_facts(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no facts"):
        load_facts(write(tmp_path, [""]))


def test_blank_lines_are_skipped(tmp_path):
    assert len(load_facts(write(tmp_path, [GOOD, "", GOOD]))) == 2


def test_non_utf8_file_names_file_and_line(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_bytes((GOOD + "\n").encode() + GOOD.replace('"x"', '"Z\xfcrich"').encode("latin-1"))
    with pytest.raises(BadInput, match=r"facts.jsonl:2: not UTF-8"):
        load_facts(path)


def test_answers_are_stripped_and_must_start_with_a_letter_or_digit(tmp_path):
    fact = {"subject": " a", "relation": "r ", "prompt": "The p is ", "answer": " Paris "}
    (loaded,) = load_facts(write(tmp_path, [json.dumps({**fact, "paraphrases": [" q "]})]))
    assert loaded == Fact("a", "r", "The p is", "Paris", ["q"])
    assert load_facts(write(tmp_path, [json.dumps({**fact, "answer": "1989"})]))[0].answer == "1989"
    assert (
        load_facts(write(tmp_path, [json.dumps({**fact, "answer": "Zürich"})]))[0].answer
        == "Zürich"
    )
    for bad in ("-5", "(Paris)", ".com"):
        with pytest.raises(BadInput, match=r"facts.jsonl:2: answer .* letter or digit"):
            load_facts(write(tmp_path, [GOOD, json.dumps({**fact, "answer": bad})]))

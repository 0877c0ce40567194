"""The command line: help, eval output and one-line errors."""

import json
import re
from pathlib import Path

import pytest
from codecut.codebook.config import BottleneckConfig

from codecut import Bottleneck, load_bottleneck, save_facts
from codecut.cli import main, parser
from codecut.core.errors import BadInput, NotFound


def test_help_lists_working_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "eval"):
        assert command in out


def test_every_command_has_help(capsys):
    commands = parser()._subparsers._group_actions[0].choices
    for name in commands:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0


def test_the_readme_cli_table_matches_the_parser():
    """Every command of the parser has a row in the README's CLI table, every flag a row names
    is one of its command's, and the fine-tuning methods listed are the library's."""
    from codecut.probes.finetune.losses import METHODS

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `codecut (\w+)([^`]*)` \|(.*)\|$", readme, flags=re.M)
    commands = parser()._subparsers._group_actions[0].choices
    assert sorted(name for name, _, _ in rows) == sorted(commands)
    for name, usage, what in rows:
        known = {o for a in commands[name]._actions for o in a.option_strings}
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", usage + what))
        assert named <= known, (name, named - known)
    usage = next(u for n, u, _ in rows if n == "finetune")
    listed = re.search(r"--method ([\w\\|]+)", usage).group(1).split("\\|")
    assert listed == list(METHODS)


def test_eval_json_shape(world, tmp_path, capsys):
    model, w = world
    facts = w.facts("all")[:3]
    save_facts(facts, tmp_path / "f.jsonl")
    assert (
        main(["eval", "--model", model.name, "--facts", str(tmp_path / "f.jsonl"), "--json"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"facts", "summary"}
    assert len(out["facts"]) == 3
    first = out["facts"][0]
    assert set(first) == {
        "subject",
        "relation",
        "prompt",
        "answer",
        "correct",
        "p_answer",
        "paraphrases",
    }
    assert first["correct"] is True and 0 < first["p_answer"] <= 1
    assert len(first["paraphrases"]) == len(facts[0].paraphrases)
    assert set(first["paraphrases"][0]) == {"prompt", "correct", "p_answer"}
    assert out["summary"]["n_facts"] == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--model", "nope", "--facts", "{facts}"], "unknown model 'nope'"),
        (["eval", "--model", "{model}", "--facts", "/no/such.jsonl"], "does not exist"),
        (
            ["eval", "--model", "{model}", "--facts", "{facts}", "--strict"],
            "--strict needs --bottleneck",
        ),
        (["demo", "--subject", "Atlantis"], "no example fact (Atlantis, capital)"),
        (["demo", "--model", "nope"], "unknown model 'nope': the demo runs"),
    ],
)
def test_errors_are_one_line_and_exit_2(world, tmp_path, capsys, argv, message):
    model, w = world
    save_facts(w.facts()[:1], tmp_path / "f.jsonl")
    argv = [a.format(facts=tmp_path / "f.jsonl", model=model.name) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("codecut: error:") and message in err and "\n" not in err


def test_no_partial_files_on_error(tmp_path):
    assert main(["eval", "--model", "nope", "--facts", str(Path(tmp_path) / "x.jsonl")]) == 2
    assert list(tmp_path.iterdir()) == []


def test_unlearn_writes_a_plan_that_eval_applies(world, world_bottleneck, tmp_path, capsys):
    model, w = world
    facts = w.facts("all")
    target = next(f for f in facts if f.subject == "Findar" and f.relation == "color")
    save_facts([target], tmp_path / "forget.jsonl")
    near = [f for f in facts if f is not target and f.relation == target.relation]
    near += [f for f in facts if f is not target and f.subject == target.subject]
    save_facts(near, tmp_path / "retain.jsonl")  # its neighbours, as unlearn picks by default
    world_bottleneck.save(tmp_path / "bn")
    plan = tmp_path / "plan.json"
    argv = ["unlearn", "--model", model.name, "--bottleneck", str(tmp_path / "bn")]
    argv += ["--forget", str(tmp_path / "forget.jsonl"), "--retain", str(tmp_path / "retain.jsonl")]
    assert main([*argv, "--out", str(plan)]) == 0
    assert "plan written to" in capsys.readouterr().out
    argv = ["eval", "--model", model.name, "--facts", str(tmp_path / "forget.jsonl")]
    assert main([*argv, "--plan", str(plan), "--bottleneck", str(tmp_path / "bn"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["facts"][0]["correct"] is False
    assert not any(p["correct"] for p in out["facts"][0]["paraphrases"])


def test_train_writes_a_bottleneck_from_a_text_file(world, tmp_path, capsys):
    model, w = world
    (tmp_path / "corpus.txt").write_text("\n\n".join(w.sentences()))
    out = tmp_path / "bn"
    argv = ["train", "--model", model.name, "--hook", "blocks.2.hook_out", "--codes", "64"]
    argv += ["--k", "4", "--tokens", "4096", "--texts", str(tmp_path / "corpus.txt")]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert metrics["l0"] <= 4 and 0 < metrics["fvu"] < 1
    bn = load_bottleneck(out)
    assert (bn.hook, bn.n_codes, bn.cfg.k) == ("blocks.2.hook_out", 64, 4)
    assert main([*argv, "--out", str(out)]) == 2  # an existing result is never overwritten
    (tmp_path / "empty.txt").write_text("\n\n")
    argv[-1] = str(tmp_path / "empty.txt")
    assert main([*argv, "--out", str(tmp_path / "other")]) == 2
    assert "holds no text" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_a_bug_is_one_line_naming_its_traceback_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CODECUT_CACHE", str(tmp_path))

    def broken(args):
        raise RuntimeError("something\nwent wrong")

    monkeypatch.setattr("codecut.cli.cmd_eval", broken)
    assert main(["eval", "--model", "m", "--facts", "f.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        "codecut: error: internal error (a bug): RuntimeError: something went wrong; "
        "traceback written to "
    )
    log = Path(err.strip().rsplit("traceback written to ", 1)[1])
    assert log.is_file() and log.parent == tmp_path / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text


def test_ctrl_c_is_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("codecut.cli.cmd_eval", interrupted)
    assert main(["eval", "--model", "m", "--facts", "f.jsonl"]) == 2
    assert capsys.readouterr().err == "codecut: error: interrupted\n"


@pytest.mark.parametrize(
    "error",
    [TypeError("a programming error"), ValueError("x"), FileNotFoundError("y"), IndexError("z")],
)
def test_builtin_errors_are_bugs_not_bad_input(error, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CODECUT_CACHE", str(tmp_path))

    def broken(args):
        raise error

    monkeypatch.setattr("codecut.cli.cmd_eval", broken)
    assert main(["eval", "--model", "m", "--facts", "f.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"codecut: error: internal error (a bug): {type(error).__name__}: ")
    assert err.count("\n") == 1


def test_bad_input_files_are_one_line(tmp_path, capsys):
    (tmp_path / "latin1.jsonl").write_bytes(b'{"subject": "Z\xfcrich"}\n')
    (tmp_path / "latin1.txt").write_bytes(b"some text\n\nZ\xfcrich\n")
    train = ["train", "--model", "m", "--hook", "h", "--out", str(tmp_path / "out"), "--texts"]
    for argv, message in [
        (["eval", "--model", "m", "--facts", str(tmp_path / "latin1.jsonl")], "latin1.jsonl:1:"),
        (["eval", "--model", "m", "--facts", str(tmp_path / "none.jsonl")], "does not exist"),
        ([*train, str(tmp_path / "latin1.txt")], "latin1.txt:3: not UTF-8"),
        ([*train, str(tmp_path / "no.txt")], "texts file"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("codecut: error: ") and err.count("\n") == 1 and message in err


def error_line(err: str) -> str:
    """The one error line of a failed command (after any progress bars on stderr)."""
    assert err.endswith("\n") and err.count("codecut: error:") == 1
    line = err.splitlines()[-1]
    assert line.startswith("codecut: error: ")
    return line


def test_eval_shows_a_dash_for_facts_without_paraphrases(world, tmp_path, capsys):
    model, w = world
    fact = w.facts("all")[0]
    fact.paraphrases = []
    save_facts([fact, w.facts("all")[1]], tmp_path / "f.jsonl")
    assert main(["eval", "--model", model.name, "--facts", str(tmp_path / "f.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out
    rows = out.splitlines()[1:3]
    assert rows[0].split()[-1] == "-" and rows[1].split()[-1].endswith("%")


def test_unknown_hook_lists_the_residual_hooks(world, tmp_path, capsys):
    model, w = world
    last = f"blocks.{model.n_layers - 1}.hook_out"
    with pytest.raises(BadInput, match=rf"blocks\.0\.hook_out \.\. {last} \("):
        model.check_hook("blocks.99.hook_out")
    argv = ["train", "--model", model.name, "--hook", "blocks.99.hook_out", "--codes", "64"]
    assert main([*argv, "--k", "4", "--tokens", "512", "--out", str(tmp_path / "bn")]) == 2
    err = capsys.readouterr().err
    line = error_line(err)
    assert f"residual-stream hooks are blocks.0.hook_out .. {last}" in line and "mlp" not in line


def test_a_prompt_longer_than_the_context_is_refused(world, tmp_path, capsys):
    model, w = world
    limit = model.hf.config.max_position_embeddings
    assert model.max_length == limit
    fact = w.facts("all")[0]
    fact.prompt = " ".join(["the"] * 100_000) + " " + fact.prompt
    save_facts([fact], tmp_path / "f.jsonl")
    assert main(["eval", "--model", model.name, "--facts", str(tmp_path / "f.jsonl")]) == 2
    err = capsys.readouterr().err
    line = error_line(err)
    assert line.startswith("codecut: error: prompt 'the the")
    assert f"tokens long; {model.name} reads at most {limit}" in line
    with pytest.raises(BadInput, match=f"reads at most {limit}"):
        model.tokenize(["a", " ".join(["the"] * (limit + 1))])
    assert model.tokenize([" ".join(["the"] * (limit - 1))])["input_ids"].shape[1] <= limit


def test_a_bottleneck_without_its_stats_file_says_so(world, tmp_path, capsys):
    model, w = world
    bn = Bottleneck(BottleneckConfig("topk", model.d_model, 16, k=2, hook="blocks.1.hook_out"))
    bn.save(tmp_path / "bn")
    (tmp_path / "bn" / "code_stats.safetensors").unlink()
    with pytest.raises(NotFound, match=r"code_stats.safetensors is missing"):
        load_bottleneck(tmp_path / "bn")
    save_facts(w.facts("all")[:1], tmp_path / "f.jsonl")
    argv = ["eval", "--model", model.name, "--facts", str(tmp_path / "f.jsonl")]
    assert main([*argv, "--bottleneck", str(tmp_path / "bn")]) == 2
    err = capsys.readouterr().err
    line = error_line(err)
    assert "code_stats.safetensors is missing" in line and "damaged" not in line


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: COMMAND (see `codecut --help`)"),
        (["train"], "required: --out (see `codecut train --help`)"),  # --model: or --activations
        (["train", "--model", "m", "--hook", "h", "--out", "o", "--codes", "x"], "invalid int"),
        (["eval", "--model", "m", "--facts", "f", "--nope"], "unrecognized arguments: --nope"),
    ],
)
def test_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("codecut: error: ") and err.count("\n") == 1 and message in err

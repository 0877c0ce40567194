"""Bad input, tried as a careless user would (issue 28, item 4): each is refused with one line
that says what to do, before any long work (the model is never loaded), leaving no file."""

import json
import math

import pytest
from codecut.codebook import bottleneck as bottleneck_module
from codecut.codebook import saefile
from codecut.codebook.config import BottleneckConfig
from codecut.probes.attacks.card import AttackCard, Row
from codecut.probes.selector import unlearn as unlearn_module
from tqdm import tqdm

import codecut
from codecut import Bottleneck, Fact, load_bottleneck, load_facts, save_facts
from codecut.cli import main
from codecut.core.errors import BadInput, CodecutError

FACT = Fact("Findar", "color", "The color of Findar is", "red", ["Findar's color is"])
OTHER = Fact("Gomex", "color", "The color of Gomex is", "blue")


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: every check here must come before it."""

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(codecut, "load_model", load_model)
    monkeypatch.setattr("codecut.api.load_model", load_model)


@pytest.fixture
def bottleneck(tmp_path) -> str:
    """A tiny bottleneck directory (no model needed to read it)."""
    bn = Bottleneck(BottleneckConfig("topk", 16, 32, k=2, hook="blocks.1.hook_out"))
    bn.save(tmp_path / "bn")
    return str(tmp_path / "bn")


@pytest.fixture
def facts(tmp_path) -> str:
    save_facts([FACT], tmp_path / "f.jsonl")
    return str(tmp_path / "f.jsonl")


def error_line(capsys) -> str:
    """The one error line of a failed command."""
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("codecut: error:") == 1, err
    line = err.splitlines()[-1]
    assert line.startswith("codecut: error: ")
    return line


def files(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_unlearn_out_that_is_a_directory_fails_first(tmp_path, no_model, facts, capsys):
    before = files(tmp_path)
    argv = ["unlearn", "--model", "m", "--forget", facts, "--out", str(tmp_path)]
    assert main(argv) == 2
    line = error_line(capsys)
    assert f"--out {tmp_path} is a directory; give a file path such as" in line
    assert files(tmp_path) == before


def test_attack_plot_under_a_file_fails_before_the_attack(tmp_path, no_model, facts, capsys):
    (tmp_path / "notes").write_text("a file, not a folder")
    plot = tmp_path / "notes" / "card.png"
    argv = ["attack", "--model", "m", "--facts", facts, "--plot", str(plot)]
    assert main(argv) == 2
    assert f"{tmp_path / 'notes'} is a file, not a folder" in error_line(capsys)
    assert main([*argv[:-1], str(tmp_path)]) == 2
    assert "is a directory" in error_line(capsys)


def test_attack_prints_the_card_before_plotting(tmp_path, facts, monkeypatch, capsys):
    row = Row("format", "question", "forget", "accuracy", n=2, clean=1.0, plan=0.0)
    card = AttackCard("m", [FACT], {}, None, {}, [row], 1.0)
    monkeypatch.setattr(codecut, "load_model", lambda spec, device=None: spec)
    monkeypatch.setattr(codecut, "attack", lambda *args, **kwargs: card)

    def broken_plot(path):
        raise OSError("disk full")

    monkeypatch.setattr(card, "plot", broken_plot)
    argv = ["attack", "--model", "m", "--facts", facts, "--plot", str(tmp_path / "card.png")]
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert "question" in out and "facts attacked: 1" in out  # the card survives the plot
    assert main([*argv, "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["rows"][0]["variant"] == "question"


def test_bottleneck_config_is_checked_against_the_header_before_allocating(bottleneck, monkeypatch):
    cfg_file = f"{bottleneck}/cfg.json"
    cfg = json.loads(open(cfg_file).read())
    built = []

    class Spy(Bottleneck):
        def __init__(self, cfg):
            super().__init__(cfg)
            built.append(self.W_enc.device.type)

    monkeypatch.setattr(bottleneck_module, "Bottleneck", Spy)  # what load_bottleneck builds
    for d_sae in (999_999, 1_000_000_000):
        cfg["d_sae"] = d_sae
        with open(cfg_file, "w") as f:
            json.dump(cfg, f)
        with pytest.raises(saefile.BottleneckFileError) as e:
            load_bottleneck(bottleneck)
        message = str(e.value)
        assert "\n" not in message and "sae_weights.safetensors does not match" in message
        assert f"W_enc has [16, 32], the config (d_in, d_sae) implies [16, {d_sae}]" in message
        assert built == []  # the shapes were checked from the config: no tensor was made


def test_retain_holding_only_the_forget_fact_is_refused(bottleneck, no_model, facts, capsys):
    with pytest.raises(BadInput, match="every retain fact has a forget fact's subject"):
        codecut.unlearn("m", load_bottleneck(bottleneck), [FACT], retain=[FACT])
    with pytest.raises(BadInput, match="every retain fact"):
        unlearn_module.unlearn(object(), load_bottleneck(bottleneck), [FACT], retain=FACT)
    argv = ["unlearn", "--model", "m", "--bottleneck", bottleneck, "--forget", facts]
    assert main([*argv, "--retain", facts, "--out", f"{bottleneck}/../plan.json"]) == 2
    assert "every retain fact has a forget fact's subject and relation" in error_line(capsys)


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon"])
def test_max_seconds_is_refused_while_parsing(value, no_model, capsys):
    argv = ["unlearn", "--model", "m", "--forget", "f.jsonl", "--out", "p.json"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--max-seconds", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"argument --max-seconds: '{value}': give a number of seconds > 0" in err


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan", "much"])
def test_retain_budget_is_refused_while_parsing(value, no_model, capsys):
    argv = ["unlearn", "--model", "m", "--forget", "f.jsonl", "--out", "p.json"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--retain-budget", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"argument --retain-budget: '{value}': give a share of accuracy in [0, 1]" in err


def test_a_bad_plan_is_refused_before_the_model_loads(tmp_path, no_model, facts, capsys):
    argv = ["eval", "--model", "m", "--facts", facts, "--plan"]
    assert main([*argv, str(tmp_path / "none.json")]) == 2
    assert "plan file" in error_line(capsys)
    assert main([*argv, facts]) == 2  # a facts file, not a plan
    assert "not a codecut plan" in error_line(capsys)


@pytest.mark.parametrize(
    "error, shown",
    [
        (BadInput("bad input"), "codecut: error: bad input"),
        (RuntimeError("a bug"), "codecut: error: internal error (a bug): RuntimeError: a bug;"),
    ],
)
def test_the_error_starts_on_a_line_of_its_own_after_a_bar(
    error, shown, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CODECUT_CACHE", str(tmp_path))

    def fails_midway(args):  # as collecting or training fails: its bar is left open
        bar = tqdm(total=10, desc="activations", leave=False)
        bar.update(3)
        raise error

    monkeypatch.setattr("codecut.cli.cmd_eval", fails_midway)
    assert main(["eval", "--model", "m", "--facts", "f.jsonl"]) == 2
    lines = terminal(capsys.readouterr().err)
    assert lines[-1].startswith(shown)  # not after the bar's text


def terminal(text: str) -> list[str]:
    """The lines a terminal shows for `text` (a carriage return goes back to the line's start,
    what follows overwrites it), trailing blanks stripped, blank lines left out."""
    lines, line, col = [], [], 0
    for ch in text:
        if ch == "\n":
            lines.append("".join(line))
            line, col = [], 0
        elif ch == "\r":
            col = 0
        else:
            line[col : col + 1] = [ch]
            col += 1
    lines.append("".join(line))
    return [s.rstrip() for s in lines if s.strip()]


def test_a_directory_of_facts_says_so(tmp_path, no_model, capsys):
    with pytest.raises(BadInput, match="is a directory; give a JSONL file of facts"):
        load_facts(tmp_path)
    assert main(["eval", "--model", "m", "--facts", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert f"facts file {tmp_path} is a directory; give a JSONL file" in line
    assert "does not exist" not in line


def test_duplicate_forget_facts_are_searched_once(bottleneck, monkeypatch, caplog):
    seen = []

    def evaluate(model, facts):  # the first use of the facts: stop there
        seen.append(list(facts))
        raise CodecutError("stop")

    monkeypatch.setattr(unlearn_module, "evaluate", evaluate)
    with pytest.raises(CodecutError, match="stop"):
        unlearn_module.unlearn(object(), load_bottleneck(bottleneck), [FACT, OTHER, FACT])
    assert seen == [[FACT, OTHER]]
    assert "1 repeated forget fact(s) left out" in caplog.text


def test_a_single_fact_is_a_list_of_one(bottleneck, monkeypatch):
    seen = []

    def evaluate(model, facts):
        seen.append(list(facts))
        raise CodecutError("stop")

    monkeypatch.setattr(unlearn_module, "evaluate", evaluate)
    monkeypatch.setattr("codecut.api.load_model", lambda model, device=None: model)
    with pytest.raises(CodecutError, match="stop"):
        codecut.unlearn(object(), load_bottleneck(bottleneck), forget=FACT)
    assert seen == [[FACT]]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr", "-1"], "--lr must be > 0, got -1.0"),
        (["--lr", "nan"], "--lr must be > 0"),
        (["--steps", "0"], "--steps must be a whole number >= 1"),
        (["--batch-size", "0"], "--batch-size must be a whole number >= 1"),
        (["--params", "some"], "--params 'some': use"),
        (["--method", "graddiff"], "--method graddiff needs --retain facts"),
        (["--method", "bake"], "--method bake needs a --plan"),
        (["--method", "nope"], "unknown --method 'nope'"),
    ],
)
def test_finetune_errors_name_the_flags(extra, message, tmp_path, no_model, facts, capsys):
    argv = ["finetune", "--model", "m", "--method", "npo", "--forget", facts]
    assert main([*argv, "--out", str(tmp_path / "out"), *extra]) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_finetune_out_that_is_not_empty_names_the_flag(tmp_path, no_model, facts, capsys):
    argv = ["finetune", "--model", "m", "--method", "npo", "--forget", facts]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} exists and is not empty" in error_line(capsys)


def test_library_messages_keep_the_argument_names():
    with pytest.raises(BadInput, match=r"^lr must be > 0"):
        codecut.finetune_unlearn("m", [FACT], lr=math.nan)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_codes", 0, "SelectConfig.max_codes must be a whole number >= 1, got 0"),
        ("patience", 2.5, "SelectConfig.patience must be a whole number >= 1"),
        (
            "condition_candidates",
            -1,
            "SelectConfig.condition_candidates must be a whole number >= 0",
        ),
        ("retain_budget", 1.5, "SelectConfig.retain_budget must be a share in [0, 1], got 1.5"),
        ("slack", float("nan"), "SelectConfig.slack must be a share in [0, 1]"),
        ("penalty", -1.0, "SelectConfig.penalty must be a finite number >= 0"),
        ("min_log_odds", float("inf"), "SelectConfig.min_log_odds must be a finite number >= 0"),
        ("formats", ("chat", "poem"), "SelectConfig.formats: unknown ['poem']; known: question"),
        ("formats", "chat", "SelectConfig.formats: unknown"),
        ("max_seconds", -5, "SelectConfig.max_seconds must be None or seconds >= 0, got -5"),
    ],
)
def test_select_config_refuses_what_the_search_cannot_use(field, value, message):
    from codecut.probes.selector.config import SelectConfig

    with pytest.raises(BadInput) as e:
        SelectConfig(**{field: value})
    assert message in str(e.value)
    assert SelectConfig(max_seconds=0.0).max_seconds == 0.0  # no time: the search returns at once

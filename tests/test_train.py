"""Training arguments and checkpoints: bad requests fail before anything is loaded or collected,
and a checkpoint is used only with the arguments it was made with; the CLI's defaults are
TrainConfig's; the code statistics are returned by the evaluation and set by training."""

import json

import pytest
import torch
from codecut.codebook import train
from codecut.codebook.activations import collect_activations
from codecut.codebook.metrics import evaluate_bottleneck
from codecut.codebook.train import TrainConfig

from codecut import load_bottleneck, train_bottleneck
from codecut.cli import main, parser
from codecut.core.errors import BadInput

HOOK = "blocks.2.hook_out"


@pytest.mark.parametrize(
    "args, message",
    [
        ({"n_codes": 0}, "n_codes must be a positive whole number, got 0"),
        ({"k": 0}, "k must be a positive whole number, got 0"),
        ({"tokens": 0}, "tokens must be a positive whole number, got 0"),
        ({"tokens": -5}, "tokens must be a positive whole number, got -5"),
        ({"n_codes": 64, "k": 128}, "k 128 is more than n_codes 64"),
        ({"n_codes": 8.5}, "n_codes must be"),
        ({"unique_tokens": 0}, "unique_tokens must be"),
        ({"kind": "relu"}, "can train 'topk' or 'codebook'"),
    ],
)
def test_bad_arguments_fail_before_the_model_loads(args, message, tmp_path):
    # "no-such-model" would fail to load: the arguments are checked first.
    args = {"n_codes": 64, "k": 4, "tokens": 4096, **args}
    with pytest.raises(BadInput, match=message):
        train_bottleneck("no-such-model", hook=HOOK, out=tmp_path / "bn", **args)
    assert not (tmp_path / "bn").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--codes", "0"], "--codes must be a positive whole number, got 0"),
        (["--k", "0"], "--k must be a positive whole number, got 0"),
        (["--tokens", "0"], "--tokens must be a positive whole number, got 0"),
        (["--tokens", "-1"], "--tokens must be"),
        (["--k", "128", "--codes", "64"], "--k 128 is more than --codes 64"),
    ],
)
def test_cli_names_the_bad_flag(flags, message, tmp_path, capsys):
    argv = ["train", "--model", "no-such-model", "--hook", HOOK, "--out", str(tmp_path / "bn")]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("codecut: error: ") and message in err and err.count("\n") == 1
    if flags[0] == "--codes":
        assert "--k" not in err
    assert not (tmp_path / "bn").exists()


def small(model, w, out, hook=HOOK, **kw):
    """A seconds-long training run on the world."""
    kw = {"n_codes": 64, "k": 4, "tokens": 2048, "batch_size": 256, **kw}
    return train_bottleneck(model, hook=hook, texts=w.sentences(), out=out, **kw)


def test_checkpoint_refuses_other_arguments_and_resumes_with_the_same(world, tmp_path, monkeypatch):
    model, w = world
    out = tmp_path / "bn"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # stopped after collecting and training: the checkpoint stays

    with monkeypatch.context() as m:
        m.setattr(train, "evaluate_bottleneck", crash)
        with pytest.raises(KeyboardInterrupt):
            small(model, w, out)
    ckpt = out / "checkpoint"
    assert (ckpt / "activations.pt").is_file()
    source = json.loads((ckpt / "source.json").read_text())
    assert source["hook"] == HOOK and source["model"] == model.name
    assert (source["n_codes"], source["k"], source["tokens"], source["seed"]) == (64, 4, 2048, 0)
    assert len(source["texts_sha256"]) == 64

    def no_collecting(*args, **kwargs):
        raise AssertionError("collected activations before refusing")

    with monkeypatch.context() as m:
        m.setattr(train, "collect_activations", no_collecting)
        for change, message in [
            ({"hook": "blocks.1.hook_out"}, "hook='blocks.2.hook_out' (now 'blocks.1.hook_out')"),
            ({"n_codes": 128}, "n_codes=64 (now 128)"),
            ({"seed": 1}, "seed=0 (now 1)"),
        ]:
            with pytest.raises(BadInput, match="made with other arguments") as e:
                small(model, w, out, **change)
            assert message in str(e.value) and "delete" in str(e.value)
        with pytest.raises(BadInput, match=r"texts_sha256="):
            train_bottleneck(
                model,
                hook=HOOK,
                n_codes=64,
                k=4,
                tokens=2048,
                batch_size=256,
                texts=["a b"],
                out=out,
            )

    bn = small(model, w, out)  # the same arguments resume and finish
    assert not ckpt.exists()
    assert (bn.hook, bn.n_codes) == (HOOK, 64)
    assert load_bottleneck(out).content_hash == bn.content_hash


def test_a_checkpoint_that_records_nothing_is_refused(world, tmp_path):
    model, w = world
    (tmp_path / "bn" / "checkpoint").mkdir(parents=True)
    (tmp_path / "bn" / "checkpoint" / "activations.pt").write_bytes(b"old")
    with pytest.raises(BadInput, match="does not record what it was made from.*delete"):
        small(model, w, tmp_path / "bn")


def test_tokens_0_leaves_nothing_behind(world, tmp_path):
    model, w = world
    out = tmp_path / "bn"
    with pytest.raises(BadInput, match="tokens"):
        small(model, w, out, tokens=0)
    assert not out.exists()
    assert small(model, w, out).n_codes == 64  # a re-run with sane arguments works


def test_the_cli_defaults_are_train_configs():
    args = parser().parse_args(["train", "--out", "x"])
    c = TrainConfig()
    assert (args.kind, args.codes, args.k, args.tokens) == (c.kind, c.n_codes, c.k, c.tokens)


def test_statistics_are_returned_and_training_sets_them(world, tmp_path):
    model, w = world
    bn = small(model, w, tmp_path / "bn")
    assert bn.has_stats  # training set them on the bottleneck, and saved them with it
    assert torch.equal(load_bottleneck(tmp_path / "bn").act_mean, bn.act_mean)
    x = collect_activations(model, HOOK, w.sentences(), 2048).x
    before = {name: t.clone() for name, t in bn.state_dict().items()}
    stats, metrics = evaluate_bottleneck(model, bn, x, x[:512], [])
    for name, t in bn.state_dict().items():
        assert torch.equal(t, before[name])  # returned, not written into the bottleneck
    assert stats.fire_rate.shape == stats.act_mean.shape == (64,)
    assert metrics.eval_activations == 512 and "ce_clean" not in metrics.to_dict()


def test_the_default_hook_is_the_same_depth_in_any_model():
    """40% of the way through: SmolLM2's layer 12 of 30 (chosen by measurement), Gemma 3
    270M's layer 7 of 18, the 4-layer test world's layer 2."""
    from types import SimpleNamespace

    from codecut.codebook.train import default_hook

    hooks = [default_hook(SimpleNamespace(n_layers=n)) for n in (30, 18, 4)]
    assert hooks == ["blocks.12.hook_out", "blocks.7.hook_out", "blocks.2.hook_out"]

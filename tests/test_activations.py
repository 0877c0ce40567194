"""Activations on disk: `collect_to_disk` writes shards + manifest (the activations that
`collect_activations` gathers in memory), resumes after an interruption, refuses other
arguments; training from the shards matches direct training on the same activations; the
`collect` and `train --activations` commands."""

import json

import pytest
import torch
from codecut.codebook import activations, corpus, train
from codecut.codebook.activations import ActivationShards, Manifest, collect_to_disk
from safetensors.torch import load_file

from codecut import train_bottleneck
from codecut.cli import main
from codecut.core.errors import BadInput

HOOK = "blocks.2.hook_out"
SMALL = {"n_codes": 64, "k": 4, "batch_size": 256}


def collect(model, w, out, **kw):
    kw = {"tokens": 600, "shard_tokens": 256, **kw}
    return collect_to_disk(model, kw.pop("hook", HOOK), out=out, texts=w.sentences(), **kw)


def all_rows(folder) -> torch.Tensor:
    shards = ActivationShards(folder)
    return torch.cat([shards.load(i) for i in range(len(shards.sizes))])


def test_collect_writes_shards_and_a_manifest_of_the_training_activations(world, tmp_path):
    model, w = world
    m = collect(model, w, tmp_path / "acts")
    files = sorted(p.name for p in (tmp_path / "acts").iterdir())
    assert files == [
        "manifest.json",
        "shard-00000.safetensors",
        "shard-00001.safetensors",
        "shard-00002.safetensors",
    ]
    assert [s.positions for s in m.shards] == [256, 256, 88]
    saved = json.loads((tmp_path / "acts" / "manifest.json").read_text())
    assert saved["model"] == model.name and saved["hook"] == HOOK and saved["complete"]
    assert (saved["d_model"], saved["tokens"], saved["dtype"]) == (model.d_model, 600, "bf16")
    assert len(saved["texts_sha256"]) == 64 and saved["codecut_version"]
    assert Manifest.read(tmp_path / "acts") == m
    # The same activations (outliers left out with the same limit) as direct training collects.
    train_texts, _ = corpus.split_texts(w.sentences(), torch.Generator().manual_seed(0))
    direct = activations.collect_activations(model, HOOK, train_texts, 600)
    assert m.norm_limit == direct.norm_limit
    assert torch.equal(all_rows(tmp_path / "acts"), direct.x)
    assert sum(s.tokens for s in m.shards) == len(direct.x)


def test_an_interrupted_collection_resumes_to_the_same_shards(world, tmp_path, interrupt_at):
    model, w = world
    whole = collect(model, w, tmp_path / "whole")
    interrupt_at(activations, "_write_shard", 2)  # Ctrl-C as the second shard is written
    with pytest.raises(KeyboardInterrupt):
        collect(model, w, tmp_path / "cut")
    cut = Manifest.read(tmp_path / "cut")
    assert len(cut.shards) == 1 and not cut.complete
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [
        "manifest.json",
        "shard-00000.safetensors",
    ]  # no temp file left behind
    with pytest.raises(BadInput, match="not finished"):
        ActivationShards(tmp_path / "cut")

    resumed = collect(model, w, tmp_path / "cut")
    assert resumed == whole
    for s in whole.shards:
        a, b = load_file(tmp_path / "whole" / s.file), load_file(tmp_path / "cut" / s.file)
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["norms"], b["norms"])


def test_a_collection_with_other_arguments_is_refused(world, tmp_path):
    model, w = world
    collect(model, w, tmp_path / "acts", tokens=300)
    for change, message in [
        ({"hook": "blocks.1.hook_out"}, "hook='blocks.2.hook_out' (now 'blocks.1.hook_out')"),
        ({"dtype": "fp32"}, "dtype='bf16' (now 'fp32')"),
        ({"tokens": 400}, "tokens=300 (now 400)"),
    ]:
        # checked before the model is used: None would fail
        with pytest.raises(BadInput, match="collected with other arguments") as e:
            collect(None, w, tmp_path / "acts", **{"tokens": 300, **change})
        assert message in str(e.value)
    with pytest.raises(BadInput, match="texts_sha256="):
        collect_to_disk(model, HOOK, 300, tmp_path / "acts", texts=["a b c"], shard_tokens=256)
    with pytest.raises(BadInput, match="tokens must be a positive whole number"):
        collect(None, w, tmp_path / "new", tokens=0)
    assert not (tmp_path / "new").exists()


def weights(bn) -> dict[str, torch.Tensor]:
    return dict(bn.state_dict())


def test_training_from_shards_matches_direct_training(world, tmp_path):
    model, w = world
    collect(model, w, tmp_path / "acts", tokens=2048, shard_tokens=4096)  # one shard
    args = {**SMALL, "tokens": 4096, "seed": 0}
    direct = train_bottleneck(model, hook=HOOK, texts=w.sentences(), unique_tokens=2048, **args)
    with_model = train_bottleneck(model, texts=w.sentences(), activations=tmp_path / "acts", **args)
    without = train_bottleneck(activations=tmp_path / "acts", **args)
    # Tolerance: the same float operations in the same order, so equal up to 1e-6.
    for bn in (with_model, without):
        assert bn.hook == HOOK and bn.cfg.d_in == model.d_model
        for name, value in weights(direct).items():
            torch.testing.assert_close(weights(bn)[name], value, rtol=1e-6, atol=1e-6)
    assert with_model.cfg.extra["metrics"] == direct.cfg.extra["metrics"]
    assert "ce_clean" not in without.cfg.extra["metrics"]  # no model: no CE
    assert (
        with_model.cfg.extra["train"]["unique_tokens"] == direct.cfg.extra["train"]["unique_tokens"]
    )
    with pytest.raises(BadInput, match="texts differ"):
        train_bottleneck(model, texts=["x y"], activations=tmp_path / "acts", **args)
    with pytest.raises(BadInput, match="are at 'blocks.2.hook_out'"):
        train_bottleneck(hook="blocks.1.hook_out", activations=tmp_path / "acts", **args)


def test_streamed_training_over_shards_reads_them_each_epoch_and_resumes(
    world, tmp_path, monkeypatch, interrupt_at
):
    model, w = world
    collect(model, w, tmp_path / "acts", tokens=1200, shard_tokens=300)
    args = {**SMALL, "tokens": 4096, "activations": tmp_path / "acts", "checkpoint_every": 4}
    loads = []
    load = ActivationShards.load

    def counted(self, i):
        loads.append(i)
        return load(self, i)

    monkeypatch.setattr(ActivationShards, "load", counted)
    whole = train_bottleneck(out=tmp_path / "whole", **args)
    assert len(set(loads)) == 4 and len(loads) > 4  # every shard read, again each epoch

    interrupt_at(train, "_step_unit_norm", 10)
    with pytest.raises(KeyboardInterrupt):
        train_bottleneck(out=tmp_path / "cut", **args)
    source = json.loads((tmp_path / "cut" / "checkpoint" / "source.json").read_text())
    assert source["activations"] == str((tmp_path / "acts").resolve())
    resumed = train_bottleneck(out=tmp_path / "cut", **args)
    for name, value in weights(whole).items():
        torch.testing.assert_close(weights(resumed)[name], value, rtol=1e-6, atol=1e-6)


def test_cli_collect_and_train_from_activations(world, tmp_path, capsys):
    model, w = world
    texts = tmp_path / "texts.txt"
    texts.write_text("\n\n".join(w.sentences()))
    acts = str(tmp_path / "acts")
    argv = ["collect", "--model", model.name, "--hook", HOOK, "--out", acts, "--texts", str(texts)]
    assert main([*argv, "--tokens", "512", "--shard-tokens", "256"]) == 0
    assert "in 2 shards" in capsys.readouterr().out
    out = str(tmp_path / "bn")
    train_argv = ["train", "--activations", acts, "--codes", "64", "--k", "4", "--tokens", "1024"]
    assert main([*train_argv, "--out", out, "--json"]) == 0
    assert "fvu" in json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert ActivationShards(acts).manifest.hook == HOOK

    for bad, message in [
        ([*argv[:-4], "--out", str(tmp_path / "x"), "--tokens", "0"], "--tokens must be"),
        (
            [*argv[:-4], "--out", str(tmp_path / "x"), "--tokens", "5", "--shard-tokens", "0"],
            "--shard-tokens must be",
        ),  # fmt: skip
        ([*argv, "--tokens", "512", "--shard-tokens", "128"], "shard_tokens=256 (now 128)"),
        (
            [*train_argv, "--out", str(tmp_path / "b2"), "--activations", str(tmp_path / "none")],
            "holds no manifest.json",
        ),  # fmt: skip
        (
            ["train", "--codes", "64", "--k", "4", "--out", str(tmp_path / "b3")],
            "--model and --hook are needed",
        ),  # fmt: skip
    ]:
        assert main(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("codecut: error: ") and message in err and err.count("\n") == 1

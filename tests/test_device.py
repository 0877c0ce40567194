"""The device plumbing, on the CPU: `--device` on every command that runs a model, `device=` on
the public functions, a one-line error for a device the machine lacks, and the hot paths (an
attached forward with a plan, a training step) making every tensor where their inputs are,
with no host sync. A GPU is never needed: a tensor made without `device=` or a `.cpu()` in a
hot path is caught here by watching the calls, as it would break or stall on CUDA."""

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from codecut.codebook import Ablation, attach
from codecut.codebook.distributed import SINGLE
from codecut.codebook.train import TrainConfig, _Objective, _step_unit_norm
from torch.overrides import TorchFunctionMode

import codecut
from codecut import api as codecut_api
from codecut.cli import main, parser
from codecut.core.errors import BadInput
from codecut.core.models import resolve_device

ROOT = str(Path(__file__).resolve().parents[1])
FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.tensor,
             torch.as_tensor, torch.randperm, torch.rand, torch.randn, torch.randint, torch.eye,
             torch.linspace}  # fmt: skip
# Calls that wait for the device (a host sync) or copy to the host.
SYNCS = {torch.Tensor.cpu, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__,
         torch.Tensor.__int__, torch.Tensor.__float__}  # fmt: skip
MODEL_COMMANDS = ("demo", "eval", "train", "collect", "unlearn", "attack", "finetune")


class Watch(TorchFunctionMode):
    """Records each call made from codecut's own code (not tests, not libraries) that makes a
    tensor without naming its device, or waits for the device, as (file, line, call)."""

    def __init__(self):
        super().__init__()
        self.found: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        caller = sys._getframe(1).f_code.co_filename
        ours = caller.startswith(ROOT) and not caller.startswith(f"{ROOT}/tests")
        if ours and "/.venv/" not in caller:
            made_off = func in FACTORIES and kwargs.get("device") is None
            if made_off or func in SYNCS:
                where = f"{Path(caller).relative_to(ROOT)}:{sys._getframe(1).f_lineno}"
                self.found[(where, func.__name__)] += 1
        return func(*args, **kwargs)


def test_the_watch_sees_a_tensor_made_off_the_device_and_a_sync():
    # It must not be blind: a factory call without a device and an .item(), from codecut's
    # code (here codecut.core.models, which makes one in `answer_scores`), are reported.
    x = torch.ones(2)
    with Watch() as w:
        torch.zeros(2, device=x.device)  # from a test: not codecut's code
        exec(compile("torch.zeros(2); x.sum().item()", f"{ROOT}/codebook/fake.py", "exec"))
    assert sorted(w.found) == [("codebook/fake.py:1", "item"), ("codebook/fake.py:1", "zeros")]


def test_an_attached_forward_with_a_plan_makes_nothing_off_the_device(world, world_bottleneck):
    model, w = world
    facts = w.facts("all")[:8]
    batch = model.tokenize([f.prompt for f in facts])
    cuts = [
        Ablation([1, 2, 3], mode="clamp", c=4.0, when=[5]),
        Ablation([7], mode="zero"),
        Ablation([9], mode="next"),
    ]
    with attach(model, world_bottleneck, ablations=cuts):  # set up outside the watch
        model(batch["input_ids"], batch["attention_mask"])  # checks the ablations once
        with Watch() as watch:
            model(batch["input_ids"], batch["attention_mask"])
    assert dict(watch.found) == {}


def test_a_training_step_makes_nothing_off_the_device(world_bottleneck):
    bn = world_bottleneck.__class__(world_bottleneck.cfg)
    bn.load_state_dict(world_bottleneck.state_dict())
    config = TrainConfig(n_codes=bn.n_codes, k=bn.cfg.k, batch_size=64, tokens=64)
    objective = _Objective(bn, config, SINGLE)
    opt = torch.optim.Adam(bn.parameters(), lr=1e-4)
    x = torch.randn(64, bn.cfg.d_in)
    last_fired = torch.zeros(bn.n_codes, dtype=torch.long)
    objective(x, 64, last_fired, 64)  # warm: first calls may set things up
    with Watch() as watch:
        loss, _, _ = objective(x, 64, last_fired, 10**9)  # late: dead codes, AuxK runs too
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _step_unit_norm(bn, opt)
    # Whether any code is dead (AuxK runs) and how many: the step's two syncs, by design (the
    # AuxK top-k needs its k on the host).
    assert sorted((where.split(":")[0], call) for where, call in watch.found) == [
        ("codebook/train.py", "__bool__"),
        ("codebook/train.py", "__int__"),
    ]


def test_devices_are_checked_before_anything_loads():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(BadInput, match=r"^device 'gpu': use cpu, cuda or cuda:N$"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(BadInput, match="device cuda: there is no CUDA GPU on this machine"):
            resolve_device("cuda")


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_command_that_runs_a_model_takes_a_device(command):
    commands = parser()._subparsers._group_actions[0].choices
    assert "--device" in {o for a in commands[command]._actions for o in a.option_strings}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_a_device_the_machine_lacks_is_one_line_before_loading(
    command, monkeypatch, tmp_path, capsys
):
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the device was refused")

    monkeypatch.setattr(codecut, "load_model", load_model)
    monkeypatch.setattr("codecut.api.load_model", load_model)
    fact = codecut.Fact("Findar", "color", "The color of Findar is", "red")
    codecut.save_facts([fact], tmp_path / "f.jsonl")
    f, out = str(tmp_path / "f.jsonl"), str(tmp_path / "out")
    argv = {
        "demo": [],
        "eval": ["--model", "m", "--facts", f],
        "train": ["--model", "m", "--hook", "h", "--out", out],
        "collect": ["--model", "m", "--hook", "h", "--tokens", "10", "--out", out],
        "unlearn": ["--model", "m", "--bottleneck", "b", "--forget", f, "--out", out + ".json"],
        "attack": ["--model", "m", "--facts", f],
        "finetune": ["--model", "m", "--method", "ga", "--forget", f, "--out", out],
    }[command]
    assert main([command, *argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "codecut: error: --device cuda: there is no CUDA GPU on this machine; use cpu"


def test_the_device_reaches_the_model_and_the_bottleneck(world, world_bottleneck, monkeypatch):
    model, w = world
    asked = []
    real = codecut_api.load_model

    def spy(spec, device=None, **kw):
        asked.append(device)
        return real(spec, device=device, **kw)

    monkeypatch.setattr(codecut_api, "load_model", spy)
    facts = w.facts("all")[:2]
    codecut.evaluate(model, facts, bottleneck=world_bottleneck, device="cpu")
    codecut.evaluate(model, facts)
    assert asked == [torch.device("cpu"), None]  # None: a Model stays where it is
    assert model.device == world_bottleneck.W_enc.device == torch.device("cpu")
    with pytest.raises(BadInput, match="device 'tpu'"):
        codecut.evaluate(model, facts, device="tpu")

"""Attaching leaves things as found: no per-forward checks, no hooks piling up on a user's HF
model, its train/eval mode untouched; evaluate with a plan gives before and after."""

import pytest
import torch
from codecut.codebook import Ablation, Bottleneck, BottleneckConfig, attach
from codecut.codebook.ablation import AblationList
from transformers import AutoModelForCausalLM

import codecut
from codecut.core.errors import BadInput, BadType
from codecut.core.models import decoder_layers, load_model

HOOK = "blocks.2.hook_out"


@pytest.fixture(scope="module")
def bn(world):
    """A random TopK bottleneck at layer 2 of the world model (mechanics only, no training)."""
    torch.manual_seed(0)
    b = Bottleneck(BottleneckConfig(kind="topk", d_in=128, n_codes=64, k=4, hook=HOOK))
    with torch.no_grad():
        b.W_enc.normal_()
        b.W_dec.normal_()
        b.fire_rate.fill_(0.1)
        b.act_mean.fill_(1.0)
    return b


def _forward(model, world, n=4):
    batch = model.tokenize([f.prompt for f in world[1].facts()[:n]])
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"])


def test_ablations_are_checked_when_installed_not_every_forward(world, bn, monkeypatch):
    model, _ = world
    calls = []
    check = Ablation.check
    monkeypatch.setattr(Ablation, "check", lambda self, b: (calls.append(1), check(self, b)))
    stats = []
    has_stats = Bottleneck.has_stats
    monkeypatch.setattr(
        Bottleneck, "has_stats", property(lambda b: stats.append(1) or has_stats.fget(b))
    )
    with attach(model, bn, ablations=[Ablation([1], mode="clamp")]) as handle:
        installed = len(calls)
        assert installed >= 1
        for _ in range(3):
            _forward(model, world)
        assert (
            len(calls) == installed
        )  # no check, no has_stats read (a host sync on GPU) per forward
        assert len(stats) == installed
        handle.ablations.append(Ablation([2]))
        assert len(calls) == installed + 1
        _forward(model, world)
        _forward(model, world)
        assert len(calls) == installed + 1
        handle.ablations[0].codes.append(3)  # an in-place edit is noticed (plain Python compare)
        _forward(model, world)
        assert len(calls) > installed + 1


def test_bad_ablations_are_refused_on_append_not_mid_forward(world, bn):
    model, _ = world
    with attach(model, bn) as handle:
        with pytest.raises(BadInput, match="out of range for 64 codes"):
            handle.ablations.append(Ablation([64]))
        with pytest.raises(BadInput, match="out of range"):
            handle.ablations.extend([Ablation([1]), Ablation([1], when=[99])])
        with pytest.raises(BadInput, match="out of range"):
            handle.ablations.insert(0, Ablation([70]))
        with pytest.raises(BadInput, match="out of range"):
            handle.ablations[:] = [Ablation([70])]
        with pytest.raises(BadType, match="Ablation objects"):
            handle.ablations.append({"codes": [1]})
        assert handle.ablations == []  # nothing half-added
        handle.ablations = [Ablation([5])]  # a plain list assigned is checked too
        assert isinstance(handle.ablations, AblationList)
        with pytest.raises(BadInput, match="out of range"):
            handle.ablations = [Ablation([500])]
        handle.ablations[0].codes[0] = 100  # edited in place: refused at the next forward
        with pytest.raises(BadInput, match=r"code ids \[100\] out of range"):
            _forward(model, world)


def test_code_tensors_are_made_once_per_device():
    a = Ablation([3, 5])
    t = a.codes_on(torch.device("cpu"))
    assert t is a.codes_on(torch.device("cpu")) and t.tolist() == [3, 5]
    a.codes.append(7)
    assert a.codes_on(torch.device("cpu")).tolist() == [3, 5, 7]


def _hook_counts(hf):
    return [len(layer._forward_hooks) for layer in decoder_layers(hf)]


def test_bare_hf_model_is_left_as_found(world, bn):
    bridged, w = world
    hf = AutoModelForCausalLM.from_pretrained(bridged.name)
    hf.train()  # the user's model, in training mode
    facts = w.facts()[:4]
    codecut.evaluate(hf, facts)  # installs codecut's hook points once (one inert hook per layer)
    counts = _hook_counts(hf)
    assert hf.training and all(m.training for m in hf.modules())
    for _ in range(5):
        table = codecut.evaluate(hf, facts)
        with codecut.attach(hf, bn, ablations=[Ablation([1])]):
            pass
        codecut.evaluate(hf, facts, bottleneck=bn)
    assert _hook_counts(hf) == counts
    assert not hf._forward_pre_hooks  # the attachment's own hook is gone
    assert hf.training and all(m.training for m in hf.modules())
    # measured in eval mode all the same: the same numbers as the model in eval mode
    ref = codecut.evaluate(AutoModelForCausalLM.from_pretrained(bridged.name).eval(), facts)
    assert table["p_answer"].tolist() == pytest.approx(ref["p_answer"].tolist(), abs=1e-6)
    # the hook points still work after all that
    model = load_model(hf)
    seen = []
    h = model.hook_dict[HOOK].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    _forward(model, world)
    h.remove()
    assert len(seen) == 1


def test_generation_of_a_model_left_training_has_no_dropout(world):
    """`Model.generate` runs in eval mode and gives the model back in training mode."""
    bridged, w = world
    hf = AutoModelForCausalLM.from_pretrained(bridged.name)
    for layer in decoder_layers(hf):
        layer.self_attn.attention_dropout = 0.9  # dropout that would scramble the answer
    prompt = w.facts()[0].prompt
    want = load_model(hf).generate(prompt, max_new_tokens=4)  # loaded in eval mode
    hf.train()
    model = load_model(hf, tokenizer=bridged.tokenizer)
    assert [model.generate(prompt, max_new_tokens=4) for _ in range(3)] == [want] * 3
    assert hf.training

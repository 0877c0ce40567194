"""Bottlenecks on the synthetic world: attach, strict mode, ablation, generation, files."""

import json

import pytest
import torch
from codecut.codebook import (
    Ablation,
    Bottleneck,
    BottleneckConfig,
    BottleneckFileError,
    attach,
    load_bottleneck,
    train_bottleneck,
)
from codecut.codebook.corpus import (
    CITIES,
    COUNTRIES,
    ENTITY_OPENINGS,
    PEOPLE,
    entity_prompts,
)
from codecut.probes.evaluate import fact_accuracy
from transformers import AutoModelForCausalLM

from codecut.core.models import Model

HOOK = "blocks.2.hook_out"


@pytest.fixture(scope="module")
def bn(world_bottleneck):
    """The committed TopK bottleneck of the world (1024 codes, k=16): what these tests check
    must not hinge on a training run's bits (training is held to bounds: the codebook kind
    below, test_cli.py, test_train.py)."""
    return world_bottleneck


@pytest.fixture(scope="module", params=["bridge", "hf"])
def model(request, world):
    """The world model through the TransformerBridge, and a fresh plain-HF copy of it."""
    bridged, _ = world
    if request.param == "bridge":
        return bridged
    return Model(AutoModelForCausalLM.from_pretrained(bridged.name), bridged.tokenizer)


def _batch(model, world, n=6):
    prompts = [f.prompt for f in world[1].facts()[:n]]
    prompts[1] += " and also more words here"  # uneven lengths: the batch is padded
    return model.tokenize(prompts)


def _hook_output(model, handle_fn, batch):
    """What leaves the hook point (after the bottleneck) for `batch`, with `handle_fn` applied."""
    seen = []
    with handle_fn():  # registered after the bottleneck's hook, so it sees its output
        h = model.hook_dict[HOOK].register_forward_hook(lambda m, a, o: seen.append(o.detach()))
        try:
            model(batch["input_ids"], batch["attention_mask"])
        finally:
            h.remove()
    return seen[0]


def test_error_term_gives_identical_logits(model, bn, world):
    batch = _batch(model, world)
    clean = model(batch["input_ids"], batch["attention_mask"])
    with attach(model, bn) as handle:
        out = model(batch["input_ids"], batch["attention_mask"])
        assert handle.codes.indices.shape[-1] == 16
    assert torch.equal(out, clean)  # exact, not just within 1e-5


def test_legacy_hook_name_is_the_same_point(model, bn, world):
    batch = _batch(model, world)
    canonical = _hook_output(model, lambda: attach(model, bn, error_term=False), batch)
    legacy = _hook_output(
        model, lambda: attach(model, bn, hook="blocks.2.hook_resid_post", error_term=False), batch
    )
    assert torch.equal(canonical, legacy)


def test_code_values_get_gradients(model, bn, world):
    batch = _batch(model, world)
    with attach(model, bn) as handle:
        logits = model(batch["input_ids"], batch["attention_mask"])
        (grad,) = torch.autograd.grad(logits[0, -1].log_softmax(-1)[5], handle.codes.values)
    assert grad.shape == handle.codes.values.shape and grad.abs().sum() > 0


def test_strict_mode_keeps_fact_accuracy(model, bn, world):
    facts = world[1].facts("train") + world[1].facts("heldout")
    clean = fact_accuracy(model, facts)
    with attach(model, bn, error_term=False):
        strict = fact_accuracy(model, facts)
    assert strict >= clean - 0.03, (clean, strict)


def test_special_tokens_pass_through_strict(model, bn, world):
    batch = _batch(model, world)
    clean = _hook_output(model, torch.no_grad, batch)
    strict = _hook_output(model, lambda: attach(model, bn, error_term=False), batch)
    special = ~batch["attention_mask"].bool()
    special[:, 0] = True  # BOS
    assert torch.equal(strict[special], clean[special])
    assert not torch.allclose(strict[~special], clean[~special])


def test_zero_ablation_removes_exactly_that_codes_contribution(model, bn, world):
    batch = _batch(model, world)
    with attach(model, bn) as handle:
        model(batch["input_ids"], batch["attention_mask"])
        codes, active = handle.codes, handle.active
    code = int(codes.indices[0, 2, 0])  # the strongest code at some ordinary position
    value = torch.where(codes.indices == code, codes.values, 0).sum(-1).detach() * active
    base = _hook_output(model, lambda: attach(model, bn), batch)
    cut = _hook_output(model, lambda: attach(model, bn, ablations=[Ablation([code])]), batch)
    expected = -value[..., None] * bn.W_dec[code].detach()
    torch.testing.assert_close(cut - base, expected, atol=1e-5, rtol=0)
    assert (value > 0).any()


def test_hooks_removed_after_exception(model, bn):
    point = model.hook_dict[HOOK]
    before = (len(point._forward_hooks), len(model.hf._forward_pre_hooks))
    with pytest.raises(RuntimeError, match="boom"):
        with attach(model, bn):
            assert len(point._forward_hooks) == before[0] + 1
            raise RuntimeError("boom")
    assert (len(point._forward_hooks), len(model.hf._forward_pre_hooks)) == before
    handle = attach(model, bn)
    handle.remove()
    handle.remove()  # idempotent
    assert (len(point._forward_hooks), len(model.hf._forward_pre_hooks)) == before


def test_weights_bit_identical_after_detach(model, bn, world):
    before = {k: v.clone() for k, v in model.hf.state_dict().items()}
    batch = _batch(model, world)
    with attach(model, bn, error_term=False, ablations=[Ablation([1, 2, 3], mode="clamp", c=4.0)]):
        model(batch["input_ids"], batch["attention_mask"])
        model.generate(world[1].facts()[0].prompt, max_new_tokens=3)
    after = model.hf.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_kv_cache_generation_attached(model, bn, world):
    prompt = world[1].facts()[0].prompt
    clean = model.generate(prompt, max_new_tokens=4)
    lengths = []
    with attach(model, bn):
        h = model.hook_dict[HOOK].register_forward_hook(lambda m, a, o: lengths.append(o.shape[1]))
        try:
            assert model.generate(prompt, max_new_tokens=4) == clean
        finally:
            h.remove()
    assert len(lengths) > 1 and set(lengths[1:]) == {1}  # cached steps see one position
    with attach(model, bn, error_term=False, ablations=[Ablation(list(range(50)))]):
        assert isinstance(model.generate(prompt, max_new_tokens=4), str)


def _first_fire(codes, code, row):
    """First position in `row` where `code` is active, or None."""
    where = ((codes.indices[row] == code) & (codes.values[row] > 0)).any(-1).nonzero()
    return int(where[0]) if len(where) else None


def test_conditional_ablation_fires_only_after_condition(model, bn, world):
    batch = model.tokenize([f"{p} {f.answer}" for f in world[1].facts()[:8] for p in f.prompts[:1]])
    with attach(model, bn) as handle:
        model(batch["input_ids"], batch["attention_mask"])
        codes = handle.codes
    mask = batch["attention_mask"].bool()
    codes = codes._replace(values=codes.values * mask[..., None])  # pads are passed through
    # Find (row, A, B): A first fires at t0 > 1; B fires both before t0 and at/after t0.
    found = None
    for row in range(codes.indices.shape[0]):
        for a in codes.indices[row, 3:6].flatten().tolist():
            t0 = _first_fire(codes, a, row)
            if t0 is None or t0 < 2:
                continue
            for b in codes.indices[row, 1].tolist():
                fires = ((codes.indices[row] == b) & (codes.values[row] > 0)).any(-1)
                if fires[1:t0].any() and fires[t0:].any() and b != a:
                    found = row, a, b, t0, fires
                    break
            if found:
                break
        if found:
            break
    assert found, "no suitable code pair in the world sentences"
    row, a, b, t0, fires = found
    base = _hook_output(model, lambda: attach(model, bn), batch)
    cut = _hook_output(model, lambda: attach(model, bn, ablations=[Ablation([b], when=[a])]), batch)
    changed = (cut - base)[row].abs().amax(-1) > 1e-6
    assert not changed[:t0].any()  # B fired before A: untouched there
    assert changed[t0:].any()
    assert torch.equal(changed[t0:], fires[t0:].to(changed.device))


@pytest.mark.parametrize("fact, seed", [(3, 0), (7, 1), (11, 2), (19, 3)])
def test_conditional_ablation_across_kv_cache_steps(model, bn, world, fact, seed):
    """Generation with a KV cache keeps the per-sequence state: the same tokens as cache-free
    generation with the same conditional ablation (several prompts and random cuts)."""
    prompt = world[1].facts()[fact].prompt
    batch = model.tokenize([prompt])
    with attach(model, bn) as handle:
        model(batch["input_ids"], batch["attention_mask"])
        first = handle.codes.indices[0, 1, 0].item()  # fires early in the prompt
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randperm(bn.n_codes, generator=gen)[:170].tolist()
    ablation = Ablation(codes, mode="clamp", c=2.0, when=[first])
    with attach(model, bn, error_term=False, ablations=[ablation]):
        cached = model.generate(prompt, max_new_tokens=4)
        assert cached == model.generate(prompt, max_new_tokens=4, use_cache=False)
        ids = batch["input_ids"]
        for _ in range(4):  # a plain loop through Model.__call__ (the bridge, when there is one)
            ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    uncached = model.tokenizer.decode(
        ids[0, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )
    assert cached == uncached


def test_next_mode_keeps_k_codes_without_the_cut_one(model, bn, world):
    batch = _batch(model, world)
    with attach(model, bn) as handle:
        model(batch["input_ids"], batch["attention_mask"])
        clean = handle.codes
    code = int(clean.indices[0, 2, 0])
    x = _hook_output(model, torch.no_grad, batch)
    from codecut.codebook.ablation import apply_ablations

    wide = bn.encode(x, k=17)
    out = apply_ablations(wide, 16, [Ablation([code], mode="next")], [None], bn.act_mean)
    assert out.indices.shape[-1] == 16
    assert not (out.indices == code).any()
    hit = (clean.indices == code).any(-1)
    assert torch.equal(out.indices[~hit], wide.indices[..., :16][~hit])
    assert torch.equal(out.indices[hit][:, -1], wide.indices[hit][:, 16])


def test_clamp_sets_minus_c_times_typical(bn):
    x = torch.randn(5, bn.cfg.d_in) * 3
    codes = bn.encode(x)
    code = int(codes.indices[0, 0])
    from codecut.codebook.ablation import apply_ablations

    out = apply_ablations(codes, 16, [Ablation([code], mode="clamp", c=4.0)], [None], bn.act_mean)
    assert out.values[0, 0].item() == pytest.approx(-4.0 * bn.act_mean[code].item())
    assert torch.equal(
        out.values[1:][codes.indices[1:] != code], codes.values[1:][codes.indices[1:] != code]
    )


def test_min_value_scope(bn):
    from codecut.codebook.ablation import apply_ablations

    x = torch.randn(50, bn.cfg.d_in) * 3
    codes = bn.encode(x)
    code = int(codes.indices[0, 0])
    value = torch.where(codes.indices == code, codes.values, 0).sum(-1)
    limit = value[value > 0].median().item()
    out = apply_ablations(codes, 16, [Ablation([code], min_value=limit)], [None], bn.act_mean)
    after = torch.where(out.indices == code, out.values, 0).sum(-1)
    assert torch.equal(after[value > limit], torch.zeros_like(after[value > limit]))
    assert torch.equal(after[value <= limit], value[value <= limit])


def test_ablation_json_round_trip_and_validation(bn):
    a = Ablation([3, 5], mode="clamp", c=2.5, min_value=0.1, when=[7])
    assert Ablation.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    with pytest.raises(ValueError, match="mode"):
        Ablation([1], mode="explode")
    with pytest.raises(ValueError, match="out of range"):
        Ablation([10_000]).check(bn)
    with pytest.raises(ValueError, match="unknown Ablation key"):
        Ablation.from_dict({"codes": [1], "strength": 2})


def test_save_load_round_trip_exact_and_sae_lens_reads_it(bn, tmp_path):
    from sae_lens import SAE

    bn.save(tmp_path / "bn")
    back = load_bottleneck(tmp_path / "bn")
    assert back.content_hash == bn.content_hash
    for name, t in bn.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name
    assert back.cfg.hook == HOOK and back.cfg.extra["metrics"] == bn.cfg.extra["metrics"]
    sae = SAE.load_from_disk(tmp_path / "bn")
    x = torch.randn(7, bn.cfg.d_in) * 3
    torch.testing.assert_close(sae(x), bn(x).detach(), atol=1e-4, rtol=1e-4)
    bn.save(tmp_path / "bf16", dtype=torch.bfloat16)
    half = load_bottleneck(tmp_path / "bf16")
    assert (
        half.content_hash
        == json.loads((tmp_path / "bf16" / "cfg.json").read_text())["codecut"]["content_hash"]
    )


def test_interrupted_training_resumes_to_the_same_weights(world, tmp_path, interrupt_at):
    import codecut.codebook.train as train

    model, w = world
    args = dict(n_codes=64, k=4, tokens=20 * 256, texts=w.sentences(), batch_size=256)
    whole = train_bottleneck(model, hook=HOOK, kind="topk", out=tmp_path / "whole", **args)

    interrupt_at(train, "_step_unit_norm", 13)
    with pytest.raises(KeyboardInterrupt):
        train_bottleneck(
            model, hook=HOOK, kind="topk", out=tmp_path / "cut", checkpoint_every=5, **args
        )
    assert (tmp_path / "cut" / "checkpoint" / "state.pt").exists()
    assert not (tmp_path / "cut" / "cfg.json").exists()  # nothing half-written
    resumed = train_bottleneck(model, hook=HOOK, kind="topk", out=tmp_path / "cut", **args)
    assert not (tmp_path / "cut" / "checkpoint").exists()
    assert resumed.cfg.extra["train"]["steps"] == 20
    for name, t in whole.state_dict().items():
        assert torch.equal(t, resumed.state_dict()[name]), name


def test_codebook_kind_trains_and_round_trips(world, tmp_path):
    from sae_lens import SAE

    model, w = world
    cb = train_bottleneck(
        model,
        hook=HOOK,
        kind="codebook",
        n_codes=256,
        k=8,
        tokens=30_000,
        texts=w.sentences(),
        batch_size=512,
    )
    assert cb.cfg.extra["metrics"]["fvu"] < 0.5
    cb.save(tmp_path / "cb")
    sae = SAE.load_from_disk(tmp_path / "cb")
    x = torch.randn(4, cb.cfg.d_in)
    torch.testing.assert_close(sae(x), cb(x).detach(), atol=1e-4, rtol=1e-4)
    with attach(model, load_bottleneck(tmp_path / "cb"), ablations=[Ablation([0], mode="next")]):
        model.generate(w.facts()[0].prompt, max_new_tokens=2)


@pytest.mark.parametrize("arch", ["standard", "jumprelu", "topk"])
def test_reads_sae_lens_directories(arch, tmp_path):
    from sae_lens import (
        JumpReLUSAE,
        JumpReLUSAEConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
    )

    cls, cfg_cls, extra = {
        "standard": (StandardSAE, StandardSAEConfig, {}),
        "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {}),
        "topk": (TopKSAE, TopKSAEConfig, {"k": 5}),
    }[arch]
    torch.manual_seed(0)
    sae = cls(cfg_cls(d_in=16, d_sae=40, **extra))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
        if arch == "jumprelu":
            sae.threshold.uniform_(0, 2)
    sae.cfg.metadata.hook_name = HOOK
    sae.save_model(tmp_path / arch)
    ours = load_bottleneck(tmp_path / arch)
    assert ours.kind == {"standard": "relu"}.get(arch, arch) and ours.hook == HOOK
    x = torch.randn(6, 16)
    torch.testing.assert_close(ours(x).detach(), sae(x).detach(), atol=1e-4, rtol=1e-4)


def test_corrupt_files_are_clear_errors(bn, tmp_path):
    bn.save(tmp_path / "bn")
    weights = tmp_path / "bn" / "sae_weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(BottleneckFileError, match="sae_weights.safetensors.*(corrupt|truncated)"):
        load_bottleneck(tmp_path / "bn")
    flipped = bytearray(data)
    flipped[-100] ^= 0xFF  # a damaged weight, same size
    weights.write_bytes(bytes(flipped))
    with pytest.raises(BottleneckFileError, match="content hash"):
        load_bottleneck(tmp_path / "bn")
    (tmp_path / "bn" / "cfg.json").write_text("{not json")
    with pytest.raises(BottleneckFileError, match="cfg.json"):
        load_bottleneck(tmp_path / "bn")
    with pytest.raises(BottleneckFileError, match="cfg.json is missing"):
        load_bottleneck(tmp_path)
    with pytest.raises(FileNotFoundError, match="no bottleneck"):
        load_bottleneck("no-such-bottleneck")


def test_wrong_width_or_hook_is_a_clear_error(world, bn, tmp_path):
    model, _ = world
    narrow = Bottleneck(BottleneckConfig(kind="topk", d_in=64, n_codes=32, k=4, hook=HOOK))
    narrow.save(tmp_path / "narrow")
    with pytest.raises(ValueError, match=r"narrow.*width 64.*d_model 128"):
        attach(model, load_bottleneck(tmp_path / "narrow"))
    with pytest.raises(ValueError, match="unknown hook"):
        attach(model, bn, hook="blocks.99.hook_out")
    assert not model.hook_dict[HOOK]._forward_hooks  # nothing half-installed


def test_entity_prompts_give_every_name_two_distinct_openings():
    prompts = entity_prompts()
    assert len(prompts) == len(set(prompts))
    for kind, names in (("country", COUNTRIES), ("city", CITIES), ("person", PEOPLE)):
        for name in names:
            mine = [p for p in prompts if p.replace(name, "{}") in ENTITY_OPENINGS[kind]]
            assert len(mine) == 2, name

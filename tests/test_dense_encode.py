"""Dense-activation kinds (relu, jumprelu) never go through the top-k kernel, and encode as before."""

import pytest
import torch
from codecut.codebook import Ablation, Bottleneck, BottleneckConfig, Codes
from codecut.codebook import bottleneck as bottleneck_module
from codecut.codebook.ablation import apply_ablations
from codecut.codebook.bottleneck import choose_encode
from codecut.codebook.config import KINDS
from codecut.kernels import topk_encode_ref


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("kernels", ["triton", "torch"])
def test_dense_kinds_never_choose_the_topk_kernel(monkeypatch, device, kernels):
    monkeypatch.setattr(bottleneck_module, "backend", lambda d: kernels)
    for k in (None, 1, 32, 128, 16384):
        assert choose_encode("relu", k, device) == "dense"
        assert choose_encode("jumprelu", k, device) == "dense"
    for kind in ("topk", "codebook"):
        assert choose_encode(kind, 32, device) == f"{kernels}_topk"
        assert choose_encode(kind, 128, device) == f"{kernels}_topk"
        assert choose_encode(kind, 129, device) == "torch_topk"  # past what the kernel is built for
    with pytest.raises(ValueError, match="unknown bottleneck kind"):
        choose_encode("gated", 4, device)


def test_cpu_default_is_the_torch_reference():
    assert choose_encode("topk", 32, "cpu") == "torch_topk"
    assert {choose_encode(kind, 8, "cpu") for kind in KINDS} == {"torch_topk", "dense"}


def _random(kind: str, n: int = 200, d: int = 24, seed: int = 0) -> Bottleneck:
    torch.manual_seed(seed)
    bn = Bottleneck(BottleneckConfig(kind=kind, d_in=d, n_codes=n))
    with torch.no_grad():
        for p in bn.parameters():
            p.normal_()
        bn.W_enc.mul_(0.2)
        bn.b_enc.sub_(2.0)  # sparse: a handful of codes active per position
        if kind == "jumprelu":
            bn.threshold.uniform_(0, 2)
    return bn


def _old_encode(bn: Bottleneck, x: torch.Tensor) -> Codes:
    """The path dense kinds took before: an n-wide top-k, then as many slots as needed."""
    x = x - bn.b_dec
    out = topk_encode_ref(x, bn.W_enc, bn.b_enc, bn.cfg.n_codes)
    floor = bn.threshold[out.indices] if bn.kind == "jumprelu" else 0.0
    active = out.values > floor
    slots = max(int((active.flip(-1).cumsum(-1) > 0).sum(-1).max()), 1)
    values = torch.where(active, out.values.relu(), torch.zeros_like(out.values))
    return Codes(values[..., :slots], out.indices[..., :slots])


def _dense(codes: Codes, n: int) -> torch.Tensor:
    out = torch.zeros(*codes.indices.shape[:-1], n, dtype=codes.values.dtype)
    return out.scatter_add(-1, codes.indices, codes.values)


@pytest.mark.parametrize("kind", ["relu", "jumprelu"])
def test_dense_path_matches_the_old_reference_and_skips_the_kernel(kind, monkeypatch):
    bn = _random(kind)
    x = torch.randn(3, 7, bn.cfg.d_in)
    old = _old_encode(bn, x)

    def no_topk(*args, **kwargs):
        raise AssertionError("a dense kind reached the top-k encode")

    monkeypatch.setattr(bottleneck_module, "topk_encode", no_topk)
    monkeypatch.setattr(bottleneck_module, "topk_encode_ref", no_topk)
    new = bn.encode(x)
    active = (new.values > 0).sum(-1)
    assert new.values.shape[-1] == max(int(active.max()), 1)  # only the slots that are needed
    assert 0 < int(active.max()) < bn.n_codes // 4
    torch.testing.assert_close(_dense(new, bn.n_codes), _dense(old, bn.n_codes))
    assert (new.values[..., :-1] >= new.values[..., 1:]).all()  # ranked, strongest first
    with torch.no_grad():
        torch.testing.assert_close(bn.decode(new), bn.decode(old))
    # an ablation acts on the same codes as before
    code = int(new.indices[0, 0, 0])
    for codes in (new, old):
        cut = apply_ablations(codes, None, [Ablation([code])], [None], bn.act_mean)
        assert not (cut.indices == code)[cut.values > 0].any()
    cut_new = apply_ablations(new, None, [Ablation([code])], [None], bn.act_mean)
    cut_old = apply_ablations(old, None, [Ablation([code])], [None], bn.act_mean)
    torch.testing.assert_close(bn.decode(cut_new), bn.decode(cut_old))


def test_dense_path_keeps_gradients():
    bn = _random("relu")
    x = torch.randn(4, bn.cfg.d_in, requires_grad=True)
    codes = bn.encode(x)
    codes.values.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

"""The networks: sizes and depths of Section 5, and the equations they implement."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rlcsc.inference import for_inference
from rlcsc.models.drrn import DRRN, DRRNConfig
from rlcsc.models.rlcsc import RLCSC, RLCSCConfig
from rlcsc.models.vdsr import VDSR, VDSRConfig


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_and_depths_of_section_5() -> None:
    assert n_params(RLCSC()) == 1_329_408  # the paper's "about 1,329k" (setting i, any K): no biases
    assert RLCSC().depth == 30
    assert n_params(RLCSC(RLCSCConfig(recursions=15))) == 1_329_408  # S is shared: K adds nothing
    assert n_params(RLCSC(RLCSCConfig(recursions=15, codes=128))) == 592_128  # setting ii, "approximately 592k"
    assert n_params(RLCSC(RLCSCConfig(bias=True))) == 1_330_305  # a bias on every convolution: 897 more
    assert n_params(RLCSC(RLCSCConfig(recursions=15, codes=128, bias=True))) == 592_769
    assert [RLCSC(RLCSCConfig(recursions=k)).depth for k in (15, 20, 25, 48)] == [20, 25, 30, 53]
    assert DRRN(DRRNConfig(units=9)).depth == 20 and DRRN(DRRNConfig(units=25)).depth == 52


def test_forward_equals_unrolled_equations_8_to_12() -> None:
    torch.manual_seed(0)
    model = RLCSC(RLCSCConfig(recursions=4, features=6, codes=10, bias=True)).double()
    for conv in (model.f0, model.f1, model.w1, model.s, model.w2, model.h):
        torch.nn.init.normal_(conv.bias, 0, 0.1)  # non-zero thresholds, so biases are exercised
    x = torch.rand(2, 1, 13, 11, dtype=torch.float64)

    def conv(t, layer):
        return F.conv2d(t, layer.weight, layer.bias, padding=1)

    y = F.relu(conv(F.relu(conv(x, model.f0)), model.f1))  # eq. 8
    z = F.relu(conv(y, model.w1))  # z_0
    codes = [z]
    for _ in range(4):  # eq. 9 with h = ReLU (eq. 10), S shared
        z = F.relu(conv(y, model.w1) + conv(z, model.s))
        codes.append(z)
    r = conv(F.relu(conv(z, model.w2)), model.h)  # eq. 11
    torch.testing.assert_close(model(x), x + r, rtol=0, atol=1e-12)  # eq. 12
    got = model.sparse_codes(x, keep_all=True)
    assert len(got) == 5 and all(torch.equal(a, b) for a, b in zip(got, codes))
    assert all((c >= 0).all() for c in got)


def out_of_place(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """RL-CSC's eqs. 8-12 or VDSR's layers as written before their sums and ReLUs worked in place."""
    if isinstance(model, VDSR):
        h = x
        for conv in model.convs[:-1]:
            h = F.relu(conv(h))
        return x + model.convs[-1](h)
    y = F.relu(model.f1(F.relu(model.f0(x))))
    wy = model.w1(y)
    z = F.relu(wy)
    for _ in range(model.cfg.recursions):
        z = F.relu(wy + model.s(z))
    return x + model.h(F.relu(model.w2(z)))


def test_the_in_place_forward_is_the_out_of_place_one_bit_for_bit() -> None:
    """The in-place sums and ReLUs change no bit of RL-CSC's or VDSR's output, in fp32 channels-last as the
    CPU runs inference, nor of the gradients that training computes through them."""
    torch.manual_seed(0)
    x = torch.rand(2, 1, 23, 19)
    for model in (RLCSC(RLCSCConfig(recursions=3, features=8, codes=16)), VDSR(VDSRConfig(layers=5, features=8))):
        grads = []
        for forward in (model, lambda x, model=model: out_of_place(model, x)):
            model.zero_grad()
            forward(x).square().sum().backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        assert all(torch.equal(a, b) for a, b in zip(*grads))
        model = for_inference(model, "cpu")
        with torch.no_grad():
            assert torch.equal(model(x), out_of_place(model, x))


def test_without_biases_every_convolution_is_bias_free() -> None:
    model = RLCSC(RLCSCConfig(recursions=2, features=4, codes=8))
    assert all(conv.bias is None for conv in (model.f0, model.f1, model.w1, model.s, model.w2, model.h))


def test_zero_initialised_residual_branch_returns_the_input() -> None:
    model = RLCSC(RLCSCConfig(recursions=3, features=8, codes=16, bias=True))
    model.zero_last_layer()
    x = torch.rand(3, 1, 20, 17)
    assert torch.equal(model(x), x)
    plain = RLCSC(RLCSCConfig(recursions=3, features=8, codes=16, residual=False))
    plain.zero_last_layer()
    assert torch.equal(plain(x), torch.zeros_like(x))
    drrn = DRRN(DRRNConfig(units=2, features=8))
    drrn.zero_last_layer()
    assert torch.equal(drrn(x), x)


def test_he_initialisation_variance_uses_fan_out() -> None:
    torch.manual_seed(1)
    model = RLCSC()
    for layer, fan_out in ((model.s, 9 * 256), (model.w2, 9 * 128), (model.f1, 9 * 128)):
        assert abs(layer.weight.var().item() / (2 / fan_out) - 1) < 0.02
    assert abs(model.s.weight.mean().item()) < 1e-3


def test_drrn_shares_its_residual_unit_weights() -> None:
    def convs(m: DRRN) -> int:
        return sum(p.numel() for n, p in m.named_parameters() if "conv" in n or "entry" in n or "exit.1" in n)

    assert convs(DRRN(DRRNConfig(units=9))) == convs(DRRN(DRRNConfig(units=25)))


def test_drrn_forward_equals_its_recursive_block_unrolled() -> None:
    """Tai et al.'s B1U`units`: H_0 = entry(x); H_u = G(H_(u-1)) + H_0 with G = conv_b(ReLU(BN(conv_a(ReLU(BN(.))))))
    the same two convolutions in every unit (own BN per unit); out = x + exit_conv(ReLU(BN(H_U)))."""
    torch.manual_seed(0)
    model = DRRN(DRRNConfig(units=3, features=5)).double().eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        for t in (bn.weight, bn.bias, bn.running_mean):
            torch.nn.init.normal_(t, 0, 0.5)
        torch.nn.init.uniform_(bn.running_var, 0.5, 2)
    for conv in (model.entry, model.conv_a, model.conv_b, model.exit[1]):
        torch.nn.init.normal_(conv.bias, 0, 0.1)
    x = torch.rand(2, 1, 12, 10, dtype=torch.float64)

    def conv(t: torch.Tensor, layer: torch.nn.Conv2d) -> torch.Tensor:
        return F.conv2d(t, layer.weight, layer.bias, padding=1)

    def act(t: torch.Tensor, pre: torch.nn.Sequential) -> torch.Tensor:
        bn = pre[0]
        return F.relu(F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))

    h0 = conv(x, model.entry)
    h = h0
    for u in range(3):
        h = conv(act(conv(act(h, model.act_a[u]), model.conv_a), model.act_b[u]), model.conv_b) + h0
    want = x + conv(act(h, model.exit[0]), model.exit[1])
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, rtol=0, atol=1e-12)


def test_rlcsc_inner_layers_are_the_convolutional_lista() -> None:
    model = RLCSC(RLCSCConfig(recursions=2, features=4, codes=8))
    assert model.inner_layers() == (model.w1, model.s, model.w2)  # eqs. 9-11; F0, F1 and H stay fp32

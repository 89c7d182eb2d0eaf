"""Losses: dL/dreadout against numerical derivatives of the loss value, numerical safety, plug-ins."""

import types

import numpy as np
import pytest

from eventprop.engine import ReadoutGrads
from eventprop.errors import UserError
from eventprop.events import batch_from_arrays
from eventprop.losses import (FirstSpikeLoss, Loss, LossResult, SpikeCountRegulariser, cross_entropy, get_loss,
                              value_and_grad, LOSS_NAMES)
from eventprop.network import InitSpec, LayerSpec, NetworkSpec, OutputSpec, init_params


def fake_fw(B=4, C=3, N=10, seed=0, spiking=False):
    rng = np.random.default_rng(seed)
    trace = rng.normal(size=(B, N, C))
    fs = rng.uniform(0, N * 1.0, size=(B, C))
    if spiking:
        fs[0, 1] = np.inf
        fs[1, :] = np.inf
    return types.SimpleNamespace(
        integral=rng.normal(size=(B, C)), vmax=rng.normal(size=(B, C)), trace=trace, first_spike=fs,
        batch=types.SimpleNamespace(n_steps=N), spec=types.SimpleNamespace(dt=1.0),
    )


READOUT = {"xentropy": "trace", "sum": "integral", "sum_exp": "integral", "sum_linear": "integral",
           "sum_sigmoid": "integral", "sum_input": "integral", "max": "vmax", "first_spike": "first_spike",
           "first_spike_inv": "first_spike"}


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_readout_gradient_matches_numerical(name):
    loss = get_loss(name, tau0=2.0, tau1=5.0, alpha=0.01)
    fw = fake_fw(spiking=name.startswith("first"))
    labels = np.array([0, 2, 1, 1])
    res = loss(fw, labels)
    key = READOUT[name]
    g = getattr(res.grads, key)
    x = getattr(fw, key)
    num = np.zeros_like(x)
    h = 1e-6
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        if not np.isfinite(x[i]):
            continue
        old = x[i]
        x[i] = old + h
        lp = loss(fw, labels).value
        x[i] = old - h
        lm = loss(fw, labels).value
        x[i] = old
        num[i] = (lp - lm) / (2 * h)
    if key == "trace":
        # the trace gradient is the density dl/dV(t_n) of L = int l dt; the trapezoid value's
        # derivative with respect to the sample V(t_n) is that density times the quadrature weight
        qw = np.full(x.shape[1], fw.spec.dt)
        qw[[0, -1]] *= 0.5
        g = g * qw[None, :, None]
    finite = np.isfinite(x)
    np.testing.assert_allclose(g[finite], num[finite], rtol=1e-5, atol=1e-8)
    assert res.pred.shape == (4,)
    assert np.isfinite(res.value)


def test_phantom_spike_only_for_the_label():
    loss = FirstSpikeLoss(tau0=1.0, tau1=3.0, alpha=1e-3)
    fw = fake_fw(spiking=True)
    res = loss(fw, np.array([1, 0, 2, 2]))
    g = res.grads.first_spike
    assert g[0, 1] > 0  # label neuron silent: phantom gradient pushes it earlier
    assert g[1, 0] > 0 and g[1, 1] == 0 and g[1, 2] == 0  # only the label's phantom
    assert res.pred[1] == -1  # no output spike: no decision


@pytest.mark.parametrize("name", ["sum", "max", "xentropy", "first_spike", "first_spike_inv"])
def test_numerically_safe_for_extreme_readouts(name):
    loss = get_loss(name)
    fw = fake_fw(spiking=name.startswith("first"))
    for k in ("integral", "vmax", "trace"):
        setattr(fw, k, getattr(fw, k) * 1e6)
    fw.first_spike = np.where(np.isfinite(fw.first_spike), fw.first_spike * 1e5, np.inf)
    fw.batch.n_steps = 10**6
    res = loss(fw, np.array([0, 1, 2, 0]))
    assert np.isfinite(res.value)
    for v in vars(res.grads).values():
        if v is not None and not isinstance(v, list):
            assert np.all(np.isfinite(v))


def test_labels_out_of_range_is_a_user_error():
    with pytest.raises(UserError, match="out of range"):
        get_loss("sum")(fake_fw(), np.array([0, 1, 3, 0]))


def test_cross_entropy_matches_definition():
    z = np.array([[1.0, 2.0, 3.0]])
    ce, g = cross_entropy(z, np.array([2]))
    p = np.exp(z) / np.exp(z).sum()
    assert np.isclose(ce[0], -np.log(p[0, 2]))
    np.testing.assert_allclose(g, p - np.array([[0, 0, 1]]))


def test_regulariser_value_and_gradient():
    reg = SpikeCountRegulariser(k_upper=2.0, k_lower=0.5, nu=3.0)
    counts = [np.array([[1, 6], [3, 6]])]  # nbar = [2, 6]
    val, g = reg(counts)
    assert np.isclose(val, 0.5 * 0.5 * 1 + 0.5 * 2.0 * 9)
    np.testing.assert_allclose(g[0], [[0.5 * -1 / 2, 2.0 * 3 / 2]] * 2)


class SumAsUserLoss(Loss):
    """The documented plug-in route: a user re-implements L_sum from readouts."""

    name = "my_sum"
    readout = "integral"

    def __call__(self, fw, labels):
        z = fw.integral - fw.integral.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        B = len(labels)
        per = -np.log(p[np.arange(B), labels])
        g = p.copy()
        g[np.arange(B), labels] -= 1
        return LossResult(per.mean(), ReadoutGrads(integral=g / B), fw.integral.argmax(1), per)


def test_user_defined_loss_plugs_into_the_engine():
    spec = NetworkSpec(4, [LayerSpec(6, recurrent=True)], OutputSpec(3), dt=1.0)
    params = init_params(spec, InitSpec(input_mean=1.0, input_sd=0.5, rec_sd=0.3, out_sd=0.5), seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    lists = [(rng.integers(0, 25, 20), rng.integers(0, 4, 20)) for _ in range(3)]
    lists = [(np.unique(s * 4 + u) // 4, np.unique(s * 4 + u) % 4) for s, u in lists]
    batch = batch_from_arrays(lists, [0, 1, 2], 30, 1.0)
    v1, g1, _, _ = value_and_grad(spec, params, batch, SumAsUserLoss())
    v2, g2, _, _ = value_and_grad(spec, params, batch, get_loss("sum"))
    assert np.isclose(v1, v2)
    assert sum(np.abs(g).sum() for g in g1.values()) > 0
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-10, atol=1e-14)


def test_loss_output_kind_mismatch_is_a_config_error():
    spec = NetworkSpec(4, [LayerSpec(3)], OutputSpec(2, kind="li"), dt=1.0)
    params = init_params(spec, seed=0)
    batch = batch_from_arrays([(np.array([1]), np.array([0]))], [0], 5, 1.0)
    with pytest.raises(UserError, match="lif"):
        value_and_grad(spec, params, batch, get_loss("first_spike"))

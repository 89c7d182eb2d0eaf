"""Learned time constants: dL/dtau_mem and dL/dtau_syn of hidden neurons.

* Against the discrete algorithm: central differences (float64) of the engine's own forward
  pass, on networks where its weight gradients are exact too (feed-forward, recurrent, per-neuron
  time constants, two hidden layers with spiking outputs): agreement to ~1e-8.
* Against the exact continuous-time simulator in the regime users train in (reduced spoken-dev
  problems of tests/test_gradient_long.py, T = 1000-1400 ms, dt = 1 ms): the directional slope
  of the exact loss along the engine's -gradient, within 30 % as for the weights (observed
  0.6-7 %), converging as dt shrinks.
* Training: model.learn_tau makes them parameters (checkpointed, clamped at 3 ms / 1 ms).
"""

import numpy as np
import pytest

from eventprop.engine import ReadoutGrads, backward, forward
from eventprop.errors import ConfigError
from eventprop.events import batch_from_arrays
from eventprop.network import InitSpec, LayerSpec, NetworkSpec, OutputSpec, check_params, init_params

def _random_batch(rng, B, N, n_in):
    """B samples of 10-40 input spikes on the 1 ms grid (at most one per channel and step)."""
    lists = []
    for _ in range(B):
        k = rng.integers(10, 40)
        key = np.unique(rng.integers(0, N - 5, k) * n_in + rng.integers(0, n_in, k))
        lists.append((key // n_in, key % n_in))
    return batch_from_arrays(lists, [0] * B, N, 1.0)


NETS = {  # name -> (hidden layers (size, recurrent), output kind, input weight mean[, hidden neuron model])
    "ffwd": ([(4, False)], "li", 1.5),
    "recurrent": ([(6, True)], "li", 1.0),
    "two_hidden_lif_out": ([(5, True), (4, False)], "lif", 1.5),
    "alif_recurrent": ([(6, True)], "li", 1.5, "alif"),
    "alif_two_lif_out": ([(5, True), (4, False)], "lif", 2.0, "alif"),
}


def _case(name, seed=3):
    layers, out, w_in, *model = NETS[name]
    neuron = model[0] if model else "lif"
    rng = np.random.default_rng(seed)
    taus = [(rng.uniform(10, 30, h), rng.uniform(2, 8, h)) for h, _ in layers]
    n_in, B, N = 5, 3, 60

    def spec_of(taus):
        hid = [LayerSpec(h, tm, ts, 1.0, r, neuron, 50.0, 0.4) for (h, r), (tm, ts) in zip(layers, taus)]
        return NetworkSpec(n_in, hid, OutputSpec(2, out, 20.0, 5.0), dt=1.0)

    params = init_params(spec_of(taus), InitSpec(input_mean=w_in, input_sd=w_in / 2, hidden_mean=1.5, hidden_sd=0.8,
                                                 rec_mean=0.0, rec_sd=0.5, out_mean=1.5 if out == "lif" else 0.4,
                                                 out_sd=0.8), seed=1, dtype=np.float64)
    batch = _random_batch(rng, B, N, n_in)
    gi = rng.normal(size=(B, 2))

    def loss(taus):
        fw = forward(spec_of(taus), params, batch)
        if out == "lif":
            return float((np.where(np.isfinite(fw.first_spike), fw.first_spike, 0.0) * gi).sum()), fw
        return float((fw.integral * gi).sum()), fw

    def grads(fw):
        if out == "lif":
            return backward(fw, ReadoutGrads(first_spike=np.where(np.isfinite(fw.first_spike), gi, 0.0)), taus=True)
        return backward(fw, ReadoutGrads(gi), taus=True)

    return taus, loss, grads


@pytest.mark.parametrize("name", list(NETS))
def test_tau_gradient_is_the_derivative_of_the_discrete_algorithm(name):
    taus, loss, grads = _case(name)
    v, fw = loss(taus)
    assert all(c.sum() > 5 for c in fw.spike_counts[:-1]), "every hidden layer must spike"
    g = grads(fw)
    h = 1e-6
    for l, (tm, ts) in enumerate(taus):
        for which, key in ((0, f"tau_mem{l}"), (1, f"tau_syn{l}")):
            fd = np.zeros(len(tm))
            for j in range(len(tm)):
                plus = [(a.copy(), b.copy()) for a, b in taus]
                minus = [(a.copy(), b.copy()) for a, b in taus]
                plus[l][which][j] += h
                minus[l][which][j] -= h
                fd[j] = (loss(plus)[0] - loss(minus)[0]) / (2 * h)
            scale = np.abs(fd).max()
            assert scale > 1e-4
            np.testing.assert_allclose(g[key], fd, rtol=0, atol=1e-6 * scale + 1e-9, err_msg=key)


@pytest.mark.parametrize("arch,loss_name", [("recurrent", "sum_exp"), ("ffwd", "xentropy"), ("two_hidden", "sum_exp"),
                                            ("recurrent", "first_spike"), ("alif_recurrent", "sum_exp")])
def test_tau_gradient_matches_the_exact_simulator_in_long_trials(arch, loss_name):
    from eventprop import gradcheck as gc
    from test_gradient_long import problem

    p = problem(arch, loss_name)
    for l, h in enumerate(list(p.spec.hidden) + [p.spec.output]):  # hidden and output layers
        p.params[f"tau_mem{l}"] = np.full(h.size, float(np.mean(h.tau_mem)))
        p.params[f"tau_syn{l}"] = np.full(h.size, float(np.mean(h.tau_syn)))
    groups = [k for k in p.params if k.startswith("tau_")]
    r = gc.check(p, 1.0, extra_dts=(0.25,), groups=groups)
    print(f"\n{arch} {loss_name}, T = {p.T:g} ms\n{r.table()}")
    assert p.T >= 1000.0
    for grp in r.groups:
        assert grp.exact < 0, f"{grp.name}: a step along -gradient must lower the exact loss"
        assert grp.rel_err(1.0) <= 0.3, f"{grp.name}: {grp.rel_err(1.0):.1%}"
        assert grp.rel_err(0.25) <= grp.rel_err(1.0) + 0.01, f"{grp.name}: error grows as dt shrinks"


def test_learned_time_constants_train_and_are_checkpointed(tmp_path):
    from eventprop.config import resolve
    from eventprop.io import load_npz
    from eventprop.train import run

    cfg = resolve(None, ["data.n_val=100", "data.limit_train=200", "data.limit_test=100", "model.dt_ms=0.5",
                         "model.hidden=[20]", "train.lr=5e-2", "train.epochs=2", "model.learn_tau=true"])
    s = run(cfg, tmp_path / "r", quiet=True, log=lambda *a: None)
    ck = load_npz(tmp_path / "r" / "checkpoint.npz")
    tm, ts = ck["param/tau_mem0"], ck["param/tau_syn0"]
    assert tm.shape == (20,) and ts.shape == (20,)
    assert np.abs(tm - 20.0).max() > 1e-3 and np.abs(ts - 5.0).max() > 1e-3  # they moved
    assert tm.min() >= 3.0 and ts.min() >= 1.0
    assert np.isfinite(s["test_accuracy"])
    # a later run may start from them; the learned values are what the network then uses
    import csv

    rows = list(csv.DictReader(open(tmp_path / "r" / "metrics.csv")))
    assert "grad_norm_tau_mem0" in rows[0] and float(rows[-1]["grad_norm_tau_mem0"]) > 0


def test_bad_time_constant_parameters_are_one_line_errors():
    spec = NetworkSpec(3, [LayerSpec(4)], OutputSpec(2))
    params = init_params(spec)
    params["tau_mem0"] = np.array([20.0, -1.0, 20.0, 20.0])
    with pytest.raises(ConfigError, match=r"tau_mem0.*> 0 ms"):
        check_params(spec, params)
    params["tau_mem0"] = np.full(5, 20.0)
    with pytest.raises(ConfigError, match=r"tau_mem0.*shape \(5,\), expected \(4,\)"):
        check_params(spec, params)


OUT_CASES = {  # output kind, readout, input / output weight means (a regime where the weight gradients are exact)
    "li_integral": ("li", "integral", 1.5, 0.4),
    "li_exp_weight": ("li", "exp", 1.5, 0.4),
    "lif_first_spike": ("lif", "first_spike", 0.8, 1.0),
}


@pytest.mark.parametrize("name", list(OUT_CASES))
def test_output_tau_gradient_is_the_derivative_of_the_discrete_algorithm(name):
    """Learned output time constants: the integral readout's coefficients and sub-step areas
    depend on them explicitly; spiking outputs are handled like hidden neurons."""
    from eventprop.engine import ReadoutWeight

    out, readout, w_in, w_out = OUT_CASES[name]
    N, n_in, B, H, C = 60, 5, 3, 5, 3
    rng = np.random.default_rng(3)
    taus = [rng.uniform(10, 30, H), rng.uniform(2, 8, H), rng.uniform(10, 30, C), rng.uniform(2, 8, C)]

    def spec_of(t):
        return NetworkSpec(n_in, [LayerSpec(H, t[0], t[1], 1.0, False)], OutputSpec(C, out, t[2], t[3]), dt=1.0)

    params = init_params(spec_of(taus), InitSpec(input_mean=w_in, input_sd=0.75, out_mean=w_out, out_sd=0.8),
                         seed=1, dtype=np.float64)
    batch = _random_batch(rng, B, N, n_in)
    gi = rng.normal(size=(B, C))
    weight = ReadoutWeight(np.exp(-np.arange(N + 1) / N), 1.0 / N) if readout == "exp" else None

    def loss(t):
        fw = forward(spec_of(t), params, batch, weight=weight)
        if out == "lif":
            return float((np.where(np.isfinite(fw.first_spike), fw.first_spike, 0.0) * gi).sum()), fw
        return float((fw.integral * gi).sum()), fw

    v, fw = loss(taus)
    if out == "lif":
        assert np.isfinite(fw.first_spike).sum() >= 6
        g = backward(fw, ReadoutGrads(first_spike=np.where(np.isfinite(fw.first_spike), gi, 0.0)), taus=True,
                     out_taus=True)
    else:
        g = backward(fw, ReadoutGrads(gi), taus=True, out_taus=True)
    h = 1e-6
    for k, key in enumerate(["tau_mem0", "tau_syn0", "tau_mem1", "tau_syn1"]):
        fd = np.zeros(len(taus[k]))
        for j in range(len(taus[k])):
            p = [x.copy() for x in taus]
            m = [x.copy() for x in taus]
            p[k][j] += h
            m[k][j] -= h
            fd[j] = (loss(p)[0] - loss(m)[0]) / (2 * h)
        scale = np.abs(fd).max()
        assert scale > 1e-3, key
        np.testing.assert_allclose(g[key], fd, rtol=0, atol=1e-6 * scale, err_msg=key)


def test_output_tau_with_the_max_loss_is_refused_in_one_line(tmp_path):
    from eventprop.config import resolve
    from eventprop.train import run

    cfg = resolve(None, ["loss.name=max", "model.learn_out_tau=true", "train.epochs=1"])
    with pytest.raises(ConfigError, match="learn_out_tau.*max loss"):
        run(cfg, tmp_path / "r", quiet=True, log=lambda *a: None)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# learned input delays (one per network input)

@pytest.mark.parametrize("arch,loss_name", [("recurrent", "sum_exp"), ("ffwd", "xentropy")])
def test_input_delay_gradient_matches_the_exact_simulator(arch, loss_name):
    """dL/dd_i = sum over channel i's arrivals of sum_j w_ij (lambda_V - lambda_I)_j: against the
    exact simulator's slope along the engine's -gradient (delays on the grid, so the engine sees
    the exact simulator's arrivals), T = 1000-1400 ms, dt = 1 ms."""
    from eventprop import gradcheck as gc
    from test_gradient_long import problem

    p = problem(arch, loss_name)
    p.params["delay_in"] = np.random.default_rng(0).integers(0, 30, p.spec.n_in).astype(float)
    r = gc.check(p, 1.0, extra_dts=(0.25,), groups=["delay_in"])
    print(f"\n{arch} {loss_name}\n{r.table()}")
    grp = r.groups[0]
    assert grp.exact < 0 and grp.rel_err(1.0) <= 0.1, f"{grp.rel_err(1.0):.1%}"


def test_learned_input_delays_train_and_must_reach_the_batch(tmp_path):
    from eventprop.config import resolve
    from eventprop.errors import UserError
    from eventprop.events import make_batch
    from eventprop.io import load_npz
    from eventprop.train import load_run, run

    cfg = resolve(None, ["data.n_val=100", "data.limit_train=200", "data.limit_test=100", "model.dt_ms=0.5",
                         "model.hidden=[20]", "train.lr=0.5", "train.epochs=2", "model.learn_delays=true",
                         "model.max_delay_ms=5", "data.trial_ms=40"])
    run(cfg, tmp_path / "r", quiet=True, log=lambda *a: None)
    d = load_npz(tmp_path / "r" / "checkpoint.npz")["param/delay_in"]
    assert d.shape == (5,) and d.min() >= 0.0 and d.max() <= 5.0
    init = np.random.default_rng([0, 77]).uniform(0.0, 5.0, 5).astype(np.float32)
    assert np.abs(d - init).max() > 1e-3  # they were learned
    cfg2, spec, params, data, loss, n_steps = load_run(tmp_path / "r")
    batch = make_batch(data["test"], np.arange(4), spec.dt, n_steps)  # without the delays
    with pytest.raises(UserError, match="input_delays"):
        forward(spec, params, batch)

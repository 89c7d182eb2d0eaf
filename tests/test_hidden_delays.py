"""Axonal delays of hidden neurons (params 'delay<l>'): a spike emitted at t_c reaches every target
at t_c + d, with its exact sub-step effect; dL/dd from the arrivals' adjoints (docs/method.md)."""

import numpy as np
import pytest

from eventprop.engine import ReadoutGrads, ReadoutWeight, backward, forward
from eventprop.network import LayerSpec
from reference import reference_run
from test_engine_reference import make_case, ref_inputs


def _with_delays(spec, params, lo, hi, seed=3):
    rng = np.random.default_rng(seed)
    p = dict(params)
    for l, h in enumerate(spec.hidden):
        p[f"delay{l}"] = rng.uniform(lo, hi, h.size).astype(params["ff0"].dtype)
    return p


@pytest.mark.parametrize("name", ["recurrent", "two_hidden_rec", "lif_out", "alif_rec"])
def test_zero_delays_give_the_undelayed_network_exactly(name):
    spec, params, batch, rg, weight, _ = make_case(name, 0, np.float64)
    fw = forward(spec, params, batch, weight=ReadoutWeight(*weight), trace=True)
    g = backward(fw, rg)
    p0 = _with_delays(spec, params, 0.0, 0.0)
    f0 = forward(spec, p0, batch, weight=ReadoutWeight(*weight), trace=True)
    g0 = backward(f0, rg)
    for a, b in [(fw.integral, f0.integral), (fw.vmax, f0.vmax), (fw.trace, f0.trace), (fw.first_spike, f0.first_spike)]:
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fw.spike_counts, f0.spike_counts):
        np.testing.assert_array_equal(a, b)
    for k in g:
        np.testing.assert_allclose(g0[k], g[k], rtol=1e-12, atol=1e-14 * (np.abs(g[k]).max() + 1e-30), err_msg=k)
    assert all(f"delay{l}" in g0 for l in range(len(spec.hidden)))


@pytest.mark.parametrize("name,lo,hi", [("recurrent", 0.0, 5.0), ("recurrent", 0.0, 30.0), ("two_hidden_rec", 0.0, 3.0),
                                        ("lif_out", 0.5, 8.0), ("alif_rec", 0.0, 5.0), ("burst_rec", 0.0, 2.0)])
def test_delayed_engine_matches_reference(name, lo, hi):
    spec, params, batch, rg, weight, lists = make_case(name, 1, np.float64, n_steps=60)
    params = _with_delays(spec, params, lo, hi)
    fw = forward(spec, params, batch, weight=ReadoutWeight(*weight), trace=True)
    grads = backward(fw, rg)
    N = batch.n_steps
    total = {k: np.zeros_like(v, dtype=np.float64) for k, v in params.items()}
    n_arr = 0
    for b in range(batch.ptr.shape[0]):
        ref = reference_run(spec, params, ref_inputs(lists, b, N), N, weight=weight, g_int=rg.integral[b],
                            g_max=rg.vmax[b], g_trace=rg.trace[b], g_spk=rg.first_spike[b],
                            g_counts=[g[b] for g in rg.spike_counts])
        st, nid, d = fw.tape(b)
        ref_sp = [(s, fw.layout.noff[l] + i) for (s, l, i, _, _) in ref["spikes"]]
        assert sorted(zip(st.tolist(), nid.tolist())) == sorted(ref_sp)
        np.testing.assert_allclose(sorted(d), sorted(x[3] for x in ref["spikes"]), rtol=1e-10)
        if spec.output.kind == "li":
            np.testing.assert_allclose(fw.integral[b], ref["integral"], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(fw.vmax[b], ref["vmax"], rtol=1e-10)
        else:
            np.testing.assert_allclose(fw.first_spike[b], ref["first_spike"], rtol=1e-10)
        n_arr += int(fw.spikes.a_n[b])
        for k in total:
            total[k] += ref["grads"][k]
    assert n_arr > 20
    for k in total:
        scale = np.abs(total[k]).max() + 1e-30
        np.testing.assert_allclose(grads[k], total[k], rtol=1e-8, atol=1e-9 * scale, err_msg=k)
    assert np.abs(grads["delay0"]).max() > 0


def test_delay_gradient_is_the_derivative_of_the_discrete_algorithm():
    """Feed-forward into the output (no hidden spike can be pushed over threshold by a delayed
    arrival, so the discrete algorithm is smooth in the delays): central differences of the engine."""
    spec, params, batch, rg, weight, _ = make_case("ffwd", 0, np.float64, n_steps=80)
    params = _with_delays(spec, params, 0.0, 5.0)
    rng = np.random.default_rng(2)
    gi, gm = rng.normal(size=rg.integral.shape), rng.normal(size=rg.integral.shape) * 0.3

    def loss(p):
        fw = forward(spec, p, batch)
        return float((fw.integral * gi).sum() + (fw.vmax * gm).sum()), fw

    v, fw = loss(params)
    g = backward(fw, ReadoutGrads(integral=gi, vmax=gm))
    h = 1e-6
    fd = np.zeros(spec.hidden[0].size)
    for j in range(fd.size):
        plus, minus = dict(params), dict(params)
        plus["delay0"] = params["delay0"].copy()
        minus["delay0"] = params["delay0"].copy()
        plus["delay0"][j] += h
        minus["delay0"][j] -= h
        fd[j] = (loss(plus)[0] - loss(minus)[0]) / (2 * h)
    scale = np.abs(fd).max()
    assert scale > 1e-4
    np.testing.assert_allclose(g["delay0"], fd, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("arch,loss_name", [("recurrent", "sum_exp"), ("ffwd", "xentropy"), ("recurrent", "max"),
                                            ("alif_recurrent", "sum_exp")])
def test_delay_gradient_matches_the_exact_simulator_in_long_trials(arch, loss_name):
    from eventprop import gradcheck as gc
    from test_gradient_long import problem

    p = problem(arch, loss_name)
    rng = np.random.default_rng(5)
    for l, h in enumerate(p.spec.hidden):
        p.params[f"delay{l}"] = rng.uniform(0.5, 20.0, h.size)
    groups = [k for k in p.params if k.startswith("delay")] + ["ff0"]
    r = gc.check(p, 1.0, extra_dts=(0.25,), groups=groups)
    print(f"\n{arch} {loss_name} with delays, T = {p.T:g} ms\n{r.table()}")
    assert p.T >= 1000.0
    for grp in r.groups:
        assert grp.exact < 0, f"{grp.name}: a step along -gradient must lower the exact loss"
        assert grp.rel_err(1.0) <= 0.3, f"{grp.name}: {grp.rel_err(1.0):.1%}"
        assert grp.rel_err(0.25) <= grp.rel_err(1.0) + 0.01, f"{grp.name}: error grows as dt shrinks"


def test_bad_delays_are_one_line_errors():
    from eventprop.errors import ConfigError
    from eventprop.network import NetworkSpec, OutputSpec, init_params

    spec = NetworkSpec(3, [LayerSpec(4)], OutputSpec(2))
    p = init_params(spec)
    for bad in (np.full(3, 1.0), np.array([1.0, -1.0, 0.0, 2.0]), np.array([1.0, np.nan, 0.0, 2.0])):
        with pytest.raises(ConfigError, match="delay0"):
            forward(spec, {**p, "delay0": bad}, None)


def test_learned_hidden_delays_train_resume_and_stay_in_range(tmp_path):
    from eventprop.config import resolve
    from eventprop.io import load_npz
    from eventprop.train import run

    sets = ["data.n_val=100", "data.limit_train=200", "data.limit_test=100", "model.dt_ms=0.5", "model.hidden=[20]",
            "model.recurrent=true", "train.lr=5e-2", "model.learn_hidden_delays=true", "model.max_hidden_delay_ms=4",
            "model.neuron=alif"]
    s = run(resolve(None, sets + ["train.epochs=2"]), tmp_path / "r", quiet=True, log=lambda *a: None)
    d0 = load_npz(tmp_path / "r" / "checkpoint.npz")["param/delay0"]
    assert d0.shape == (20,) and d0.min() >= 0.0 and d0.max() <= 4.0
    assert np.isfinite(s["test_accuracy"])
    # two epochs, then a third by --resume: the numbers of three epochs in one go
    run(resolve(None, sets + ["train.epochs=3"]), tmp_path / "r", resume=True, quiet=True, log=lambda *a: None)
    s3 = run(resolve(None, sets + ["train.epochs=3"]), tmp_path / "one", quiet=True, log=lambda *a: None)
    a = load_npz(tmp_path / "r" / "checkpoint.npz")["param/delay0"]
    b = load_npz(tmp_path / "one" / "checkpoint.npz")["param/delay0"]
    np.testing.assert_array_equal(a, b)
    assert np.abs(b - d0).max() > 1e-4  # they moved
    assert np.isfinite(s3["test_accuracy"])

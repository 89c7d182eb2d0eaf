"""The numba engine against the slow NumPy reference of the same discrete algorithm."""

import numpy as np
import pytest

from eventprop.engine import ReadoutGrads, ReadoutWeight, backward, forward
from eventprop.events import batch_from_arrays
from eventprop.network import InitSpec, LayerSpec, NetworkSpec, OutputSpec, init_params
from reference import reference_run

STRONG = InitSpec(input_mean=1.2, input_sd=0.6, hidden_mean=1.0, hidden_sd=0.8, rec_mean=0.0, rec_sd=0.5,
                  out_mean=0.4, out_sd=0.8)

CASES = {
    "ffwd": dict(hidden=[LayerSpec(7)], out="li"),
    "recurrent": dict(hidden=[LayerSpec(7, recurrent=True)], out="li"),
    "two_hidden_rec": dict(hidden=[LayerSpec(6, recurrent=True), LayerSpec(5, tau_mem=15.0, tau_syn=3.0)], out="li"),
    "per_neuron_tau": dict(hidden=[LayerSpec(5, tau_mem=np.linspace(10, 30, 5), tau_syn=np.array([5.0, 2, 8, 5, 20]),
                                             recurrent=True)], out="li"),
    "lif_out": dict(hidden=[LayerSpec(8, recurrent=True)], out="lif"),
    # many neurons crossing in the same step, each spike moving the others' crossings (the
    # candidate updates of the forward pass, warm-started Newton included)
    "burst_rec": dict(hidden=[LayerSpec(40, recurrent=True)], out="li"),
    # adaptive LIF (eventprop.neurons.alif): the threshold rises by adapt at each spike
    "alif_rec": dict(hidden=[LayerSpec(7, recurrent=True, neuron="alif", tau_adapt=100.0, adapt=0.3)], out="li"),
    "alif_two": dict(hidden=[LayerSpec(6, recurrent=True, neuron="alif", tau_adapt=60.0, adapt=0.4),
                             LayerSpec(5, tau_mem=15.0, tau_syn=3.0, neuron="alif", tau_adapt=150.0, adapt=0.2)],
                     out="li"),
    "alif_lif_out": dict(hidden=[LayerSpec(8, recurrent=True, neuron="alif", tau_adapt=30.0, adapt=0.5)], out="lif"),
    "alif_burst": dict(hidden=[LayerSpec(30, tau_mem=np.linspace(10, 30, 30), recurrent=True, neuron="alif",
                                         tau_adapt=80.0, adapt=0.2)], out="li"),
}


def make_case(name, seed, dtype, n_steps=40, B=5, n_in=6, C=3):
    c = CASES[name]
    out = OutputSpec(C, kind=c["out"], tau_mem=20.0, tau_syn=5.0)
    spec = NetworkSpec(n_in=n_in, hidden=c["hidden"], output=out, dt=1.0)
    init = STRONG
    if c["out"] == "lif":
        init = InitSpec(**{**STRONG.__dict__, "out_mean": 1.5, "out_sd": 1.0})
    params = init_params(spec, init, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    lists = []
    for b in range(B):
        k = rng.integers(5, 60)
        key = np.unique(rng.integers(0, n_steps - 5, k) * n_in + rng.integers(0, n_in, k))
        lists.append((key // n_in, key % n_in))
    batch = batch_from_arrays(lists, rng.integers(0, C, B), n_steps, 1.0)
    rg = ReadoutGrads(
        integral=rng.normal(size=(B, C)), vmax=rng.normal(size=(B, C)), trace=rng.normal(size=(B, n_steps + 1, C)) * 0.1,
        first_spike=rng.normal(size=(B, C)) * 0.1,
        spike_counts=[rng.normal(size=(B, h.size)) * 0.05 for h in spec.hidden],
    )
    # a weight that is neither constant, linear nor exponential, with a decay factor on top
    t = np.arange(n_steps + 1)
    weight = (1.0 + 0.5 * np.sin(t / 7.0), 1.0 / n_steps)
    return spec, params, batch, rg, weight, lists


def ref_inputs(lists, b, n_steps):
    steps, units = lists[b]
    return [units[steps == n] for n in range(n_steps)]


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_engine_matches_reference_float64(name, seed):
    spec, params, batch, rg, weight, lists = make_case(name, seed, np.float64)
    fw = forward(spec, params, batch, weight=ReadoutWeight(*weight), trace=True)
    grads = backward(fw, rg)
    B, N = batch.ptr.shape[0], batch.n_steps
    total = {k: np.zeros_like(v, dtype=np.float64) for k, v in params.items()}
    n_spikes_total = 0
    for b in range(B):
        ref = reference_run(
            spec, params, ref_inputs(lists, b, N), N, weight=weight, g_int=rg.integral[b], g_max=rg.vmax[b],
            g_trace=rg.trace[b], g_spk=rg.first_spike[b], g_counts=[g[b] for g in rg.spike_counts],
        )
        # identical spikes (step, neuron) and identical d
        st, nid, d = fw.tape(b)
        lay = fw.layout
        ref_sp = [(s, lay.noff[l] + i) for (s, l, i, _, _) in ref["spikes"]]
        assert sorted(zip(st.tolist(), nid.tolist())) == sorted(ref_sp)
        n_spikes_total += len(ref_sp)
        np.testing.assert_allclose(sorted(d), sorted(x[3] for x in ref["spikes"]), rtol=1e-10)
        np.testing.assert_allclose(sorted(fw.spikes.delta[b, : len(st)]), sorted(x[4] for x in ref["spikes"]), rtol=1e-9,
                                   atol=1e-12)
        if spec.output.kind == "li":
            np.testing.assert_allclose(fw.integral[b], ref["integral"], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(fw.vmax[b], ref["vmax"], rtol=1e-10)
            np.testing.assert_allclose(fw.trace[b], ref["trace"], rtol=1e-10, atol=1e-12)
        else:
            np.testing.assert_allclose(fw.first_spike[b], ref["first_spike"], rtol=1e-10)
        for l in range(len(spec.hidden)):
            np.testing.assert_array_equal(fw.spike_counts[l][b], ref["counts"][l])
        for k in total:
            total[k] += ref["grads"][k]
    assert n_spikes_total > 0
    for k in total:
        scale = np.abs(total[k]).max() + 1e-30
        np.testing.assert_allclose(grads[k], total[k], rtol=1e-9, atol=1e-10 * scale, err_msg=k)
    # the gradient is not trivially zero
    assert sum(np.abs(g).sum() for g in grads.values()) > 0


@pytest.mark.parametrize("name", ["recurrent", "two_hidden_rec", "lif_out", "alif_two"])
def test_engine_float32_close_to_reference(name):
    """float32 engine vs the float64 reference, sample by sample: float32 rounding of the in-step
    coefficients can flip a spike that grazes threshold, so one sample in five may differ in its
    spikes; every sample with the same spikes must have the reference's gradient."""
    spec, params, batch, rg, weight, lists = make_case(name, 5, np.float32)
    N = batch.n_steps
    same_spikes = 0
    for b in range(batch.ptr.shape[0]):
        one = batch_from_arrays([lists[b]], batch.labels[b : b + 1], N, 1.0)
        rgb = ReadoutGrads(integral=rg.integral[b : b + 1], vmax=rg.vmax[b : b + 1], trace=rg.trace[b : b + 1],
                           first_spike=rg.first_spike[b : b + 1], spike_counts=[g[b : b + 1] for g in rg.spike_counts])
        fw = forward(spec, params, one, weight=ReadoutWeight(*weight), trace=True)
        grads = backward(fw, rgb)
        ref = reference_run(
            spec, params, ref_inputs(lists, b, N), N, weight=weight, g_int=rg.integral[b], g_max=rg.vmax[b],
            g_trace=rg.trace[b], g_spk=rg.first_spike[b], g_counts=[g[b] for g in rg.spike_counts],
        )
        st, nid, _ = fw.tape(0)
        ref_sp = [(s, fw.layout.noff[l] + i) for (s, l, i, _, _) in ref["spikes"]]
        if sorted(zip(st.tolist(), nid.tolist())) != sorted(ref_sp):
            continue
        same_spikes += 1
        for k in grads:
            scale = np.abs(ref["grads"][k]).max()
            # float32 rounding of spike times is amplified by the jump factors (1 + theta/d) along
            # chains of spikes: a few 1e-4 of the largest gradient in these strongly driven networks
            np.testing.assert_allclose(grads[k], ref["grads"][k], rtol=5e-4, atol=5e-4 * scale + 1e-12, err_msg=k)
    assert same_spikes >= batch.ptr.shape[0] - 1


_THREADS_SNIPPET = """
import hashlib, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_engine_reference import make_case
from eventprop.engine import ReadoutWeight, backward, forward
import numba
spec, params, batch, rg, weight, _ = make_case("recurrent", 3, np.float32, B=13)
fw = forward(spec, params, batch, weight=ReadoutWeight(*weight), trace=True)
g = backward(fw, rg)
print(numba.get_num_threads(), hashlib.sha256(b"".join(g[k].tobytes() for k in sorted(g))).hexdigest())
"""


def test_deterministic_across_thread_counts():
    """Separate processes with 1 and 2 numba threads give bit-identical gradients."""
    import os
    import subprocess
    import sys

    code = _THREADS_SNIPPET.format(tests=os.path.dirname(os.path.abspath(__file__)))
    out = []
    for n in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=n)
        env.pop("EVENTPROP_THREADS", None)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        out.append(r.stdout.split())
    assert [o[0] for o in out] == ["1", "2"]  # the processes really ran with different thread counts
    assert out[0][1] == out[1][1]


def test_tape_grows_instead_of_dropping_spikes():
    # many spikes per sample: more than the initial tape capacity (several per neuron and step,
    # about 70 per step in all; 12 steps: the NumPy reference takes ~0.6 s per step here)
    spec = NetworkSpec(n_in=4, hidden=[LayerSpec(30)], output=OutputSpec(2), dt=1.0)
    params = init_params(spec, InitSpec(input_mean=3.0, input_sd=0.1), seed=0, dtype=np.float64)
    N = 12
    lists = [(np.repeat(np.arange(N), 4), np.tile(np.arange(4), N))]
    batch = batch_from_arrays(lists, [0], N, 1.0)
    fw = forward(spec, params, batch)
    ref = reference_run(spec, params, [np.arange(4)] * N, N)
    assert fw.n_spikes[0] == len(ref["spikes"]) > 64 * 4


def test_grazing_spikes_never_give_non_finite_gradients():
    """SHD-shaped input in a recurrent net where many spikes graze the threshold; with an absurdly
    small grazing floor the jump factors compound, and the bound on lambda_V keeps everything finite."""
    from eventprop.bench import shd_like
    from eventprop.events import make_batch
    from eventprop.losses import get_loss, value_and_grad

    ds = shd_like(4, 1500, 1.0, 8000, seed=1)
    batch = make_batch(ds, np.arange(4), 1.0, 1500)
    # exact crossings graze far less than the old back-dated ones: a large floor (0.5) makes many
    # spikes count as grazing, an absurdly small one (1e-12) leaves the jump factors unbounded
    for eps in (1e-12, 1e-2, 0.5):
        spec = NetworkSpec(700, [LayerSpec(128, recurrent=True)], OutputSpec(20), dt=1.0, grazing_eps=eps)
        params = init_params(spec, InitSpec(input_mean=0.013, input_sd=0.01, rec_sd=0.05), seed=0)
        v, grads, _, fw = value_and_grad(spec, params, batch, get_loss("sum_exp"))
        if eps == 0.5:
            assert fw.grazing > 0
        assert np.isfinite(v) and all(np.all(np.isfinite(g)) for g in grads.values())


def test_tape_is_sized_exactly_after_one_overflow(monkeypatch):
    """A sample with far more spikes than the tape holds costs one rerun, not a regrowth loop."""
    from eventprop.engine import _kernels
    from eventprop.engine.cpu import CPUBackend

    calls = []
    real = _kernels.forward_batch
    monkeypatch.setattr(_kernels, "forward_batch", lambda *a: calls.append(1) or real(*a))
    spec = NetworkSpec(n_in=4, hidden=[LayerSpec(30)], output=OutputSpec(2), dt=1.0)
    params = init_params(spec, InitSpec(input_mean=3.0, input_sd=0.1), seed=0, dtype=np.float64)
    N = 400
    batch = batch_from_arrays([(np.repeat(np.arange(N), 4), np.tile(np.arange(4), N))], [0], N, 1.0)
    be = CPUBackend()
    be.cap = 16
    fw = forward(spec, params, batch, backend=be)
    assert fw.n_spikes[0] > 50 * 16 and len(calls) == 2 and be.cap == fw.n_spikes[0]


def test_layout_notices_an_in_place_change_of_a_large_tau_array():
    """The layout cache is keyed on content: numpy abbreviates the repr of arrays over 1000 values."""
    from eventprop.engine import layout

    tau = np.full(1500, 20.0)
    spec = NetworkSpec(n_in=3, hidden=[LayerSpec(1500, tau_mem=tau)], output=OutputSpec(2), dt=1.0)
    a = layout(spec, np.float64).alpha.copy()
    tau[700] = 5.0  # in place
    b = layout(spec, np.float64).alpha
    assert b[700] != a[700] and b[699] == a[699]

"""The backend seam: selection, errors, and the contract every backend must meet.

The contract: on the engine's test networks (feed-forward, recurrent, two hidden layers,
per-neuron time constants, LIF outputs, same-step bursts) and every readout, a backend gives the
CPU backend's spikes (same tape) and readouts and gradients to the precision of the dtype.
``BACKENDS`` lists what is checked here: cpu always, cuda under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) or on a real device when one is usable. Under the simulator
(tests/test_cuda_sim.py runs this module so, in a subprocess) the sizes are smaller: every
simulated GPU thread is a Python thread.
"""

import os
import sys

import numpy as np
import pytest

from eventprop.engine.registry import cuda_usable, get_backend
from eventprop.engine import ReadoutWeight, backward, forward
from eventprop.errors import UserError
from eventprop.neurons import MODELS
from test_engine_reference import CASES, make_case

BACKENDS = ["cpu"] + (["cuda"] if cuda_usable() else [])
SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"
SIZES = dict(B=2, n_steps=24) if SIM else dict(B=3, n_steps=30)
if SIM:  # the simulator's threads meet at every barrier: switch between them often
    sys.setswitchinterval(1e-4)


def run(backend, name, seed, dtype, B=SIZES["B"], n_steps=SIZES["n_steps"]):
    """forward + backward of a test case on ``backend``."""
    spec, params, batch, rg, (wv, rate), _ = make_case(name, seed, dtype, n_steps=n_steps, B=B)
    w = ReadoutWeight(wv, rate)
    fw = forward(spec, params, batch, weight=w, trace=True, backend=backend)
    g = backward(fw, rg)
    return fw, g


def _supported(backend, name):
    """Whether ``backend`` runs the case's neuron models (eventprop.neurons.MODELS)."""
    return all(backend in MODELS[h.neuron].backends for h in CASES[name]["hidden"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_backend_contract(backend, name):
    dtype = np.float32
    if not _supported(backend, name):  # a one-line error, not a wrong answer
        with pytest.raises(UserError, match="cpu backend only"):
            run(backend, name, 0, dtype)
        return
    ref_fw, ref_g = run("cpu", name, 0, dtype)
    fw, g = run(backend, name, 0, dtype)
    assert fw.backend == backend
    for b in range(fw.batch.batch_size):
        st, nid, d = fw.tape(b)
        rst, rnid, rd = ref_fw.tape(b)
        # the same spikes: same neurons at the same steps (order within a step may differ)
        assert sorted(zip(st.tolist(), nid.tolist())) == sorted(zip(rst.tolist(), rnid.tolist()))
    tol = dict(rtol=2e-4, atol=2e-5)
    for k in ("integral", "vmax", "tmax", "first_spike"):
        np.testing.assert_allclose(getattr(fw, k), getattr(ref_fw, k), **tol, err_msg=k)
    np.testing.assert_allclose(fw.trace, ref_fw.trace, **tol)
    # a maximum that sits both at a grid sample t_n and at a kink at the same instant (a spike
    # emitted exactly at t_n, delta = dt, reaching the output at t_{n+1}) is a tie in exact
    # arithmetic, decided by the last bit of exp(); the two choices are different one-sided
    # derivatives. Where the backends chose differently (same time and value), the max readout's
    # gradient is left out of the comparison for that output.
    o, ro = fw.outputs, ref_fw.outputs
    tie = (o.tmax != ro.tmax) | (o.mx_ref != ro.mx_ref)
    if tie.any():
        spec, params, batch, rg, _, _ = make_case(name, 0, dtype, **SIZES)
        rg.vmax[tie] = 0.0
        ref_g, g = backward(ref_fw, rg), backward(fw, rg)
    for k in ref_g:
        scale = max(float(np.abs(ref_g[k]).max()), 1e-6)
        np.testing.assert_allclose(g[k] / scale, ref_g[k] / scale, rtol=0, atol=5e-4, err_msg=k)


def test_the_spec_names_its_backend():
    """No process-wide default: a NetworkSpec carries its backend, a Forward the object that ran it."""
    import dataclasses

    from eventprop.errors import ConfigError

    spec, params, batch, rg, (wv, rate), _ = make_case("ffwd", 0, np.float32, **SIZES)
    assert spec.backend == "cpu"
    fw = forward(dataclasses.replace(spec, backend="auto"), params, batch, weight=ReadoutWeight(wv, rate))
    assert fw.backend == ("cuda" if cuda_usable() else "cpu") and fw.backend_impl.name == fw.backend
    assert set(backward(fw, rg)) == set(params)
    with pytest.raises(ConfigError, match="model.backend: expected one of auto, cpu, cuda, got 'gpu'"):
        dataclasses.replace(spec, backend="gpu")


def test_backend_objects_hold_their_own_state():
    """No module-level state: each get_backend call makes a new object; the engine keeps one per
    spec (so its grown tape capacity carries over between batches) and the names a spec may give
    are the registry's."""
    from eventprop.engine import backend_for
    from eventprop.engine.registry import LOADERS
    from eventprop.network import BACKENDS as NAMES

    assert set(NAMES) == set(LOADERS) | {"auto"}
    assert get_backend("cpu") is not get_backend("cpu")
    spec, params, batch, rg, (wv, rate), _ = make_case("ffwd", 0, np.float32, **SIZES)
    be = backend_for(spec)
    assert backend_for(spec) is be and backend_for(spec, "cpu") is be
    fw = forward(spec, params, batch)
    assert fw.backend_impl is be
    other = make_case("ffwd", 0, np.float32, **SIZES)[0]
    assert backend_for(other) is not be


def test_unknown_backend_is_one_line():
    with pytest.raises(UserError, match="unknown backend 'gpu'; expected one of auto, cpu, cuda"):
        get_backend("gpu")


@pytest.mark.skipif(cuda_usable(), reason="a CUDA device (or the simulator) is usable here")
def test_cuda_without_a_device_is_one_line_with_the_extra():
    with pytest.raises(UserError) as e:
        get_backend("cuda")
    assert "pip install 'eventprop[cuda]'" in str(e.value) and "\n" not in str(e.value)
    assert get_backend("auto").name == "cpu"


@pytest.mark.skipif(cuda_usable(), reason="a CUDA device (or the simulator) is usable here")
def test_cli_train_with_cuda_and_no_device_fails_in_one_line(tmp_path):
    from click.testing import CliRunner

    from eventprop.cli import main

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--set", "model.backend=cuda", "--set", "train.epochs=1", "--out", str(out)])
    assert r.exit_code != 0 and "eventprop[cuda]" in r.output and "Traceback" not in r.output
    assert not (out / "checkpoint.npz").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_contract_float64(backend):
    ref_fw, ref_g = run("cpu", "recurrent", 1, np.float64)
    fw, g = run(backend, "recurrent", 1, np.float64)
    assert fw.integral.dtype == np.float64
    for b in range(fw.batch.batch_size):
        st, nid, _ = fw.tape(b)
        rst, rnid, _ = ref_fw.tape(b)
        assert sorted(zip(st.tolist(), nid.tolist())) == sorted(zip(rst.tolist(), rnid.tolist()))
    for k in ("integral", "vmax", "first_spike"):
        np.testing.assert_allclose(getattr(fw, k), getattr(ref_fw, k), rtol=1e-9, atol=1e-12, err_msg=k)
    for k in ref_g:
        scale = max(float(np.abs(ref_g[k]).max()), 1e-12)
        np.testing.assert_allclose(g[k] / scale, ref_g[k] / scale, rtol=0, atol=1e-9, err_msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["recurrent", "two_hidden_rec", "alif_rec"])
def test_backend_contract_delays_and_time_constants(backend, name):
    """Hidden axonal delays (some arrivals inside the emitting step, some steps later), and the
    gradients of the time constants (hidden and output) and of the input delays."""
    dtype = np.float32

    def go(be):
        spec, params, batch, rg, (wv, rate), _ = make_case(name, 0, dtype, **SIZES)
        rng = np.random.default_rng(7)
        for l, h in enumerate(spec.hidden):
            params[f"delay{l}"] = rng.uniform(0.3, 4.0, h.size).astype(dtype)
        rg.vmax[:] = 0.0  # (output time constants: not with a max readout)
        fw = forward(spec, params, batch, weight=ReadoutWeight(wv, rate), trace=True, backend=be)
        return fw, backward(fw, rg, taus=True, out_taus=True, delays=True)

    ref_fw, ref_g = go("cpu")
    fw, g = go(backend)
    np.testing.assert_array_equal(fw.n_spikes, ref_fw.n_spikes)
    assert ref_fw.n_spikes.sum() > 0
    np.testing.assert_allclose(fw.integral, ref_fw.integral, rtol=2e-4, atol=2e-5)
    assert {"delay0", "tau_mem0", "tau_syn0", "delay_in"} <= set(ref_g)
    assert set(g) == set(ref_g)
    for k in ref_g:
        scale = max(float(np.abs(ref_g[k]).max()), 1e-6)
        np.testing.assert_allclose(g[k] / scale, ref_g[k] / scale, rtol=0, atol=5e-4, err_msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_grows_the_tape_and_records(backend):
    """A tape too small for the batch is rerun at the exact size (no spike dropped); ``record``."""
    spec, params, batch, rg, (wv, rate), _ = make_case("recurrent", 0, np.float32, **SIZES)
    be = get_backend(backend)
    be.cap = 1  # a backend object of one's own, starting with room for one spike per sample
    fw = forward(spec, params, batch, weight=ReadoutWeight(wv, rate), trace=True, backend=be)
    assert fw.backend_impl is be and be.cap == fw.n_spikes.max()
    ref_fw, ref_g = run("cpu", "recurrent", 0, np.float32)
    np.testing.assert_array_equal(fw.n_spikes, ref_fw.n_spikes)
    assert fw.spikes.step.shape[1] >= fw.n_spikes.max() > 1
    _, lamV, lamI = backward(fw, rg, record=1)
    _, rV, rI = backward(ref_fw, rg, record=1)
    scale = float(np.abs(rV).max())
    np.testing.assert_allclose(lamV / scale, rV / scale, rtol=0, atol=5e-4)


def test_every_model_has_the_interface():
    """Each neuron model module has the interface the kernels call (eventprop.neurons.hooks), with
    the same arguments, and its MODELS entry agrees with it (code, adaptation state)."""
    import importlib
    import inspect

    from eventprop.neurons import hooks

    codes = sorted(m.code for m in MODELS.values())
    assert codes == list(range(len(MODELS)))
    for name, m in MODELS.items():
        mod = importlib.import_module(f"eventprop.neurons.{name}")
        assert hooks.ADAPTS[m.code] == mod.ADAPTS == m.adapts, name
        for f in ("crossing", "slope_at_spike", "level_at_spike", "adjoint_jump"):
            got = list(inspect.signature(getattr(mod, f).py_func).parameters)
            want = list(inspect.signature(getattr(hooks, f).py_func).parameters)[1:]  # (less the model code)
            assert got == want, (name, f)

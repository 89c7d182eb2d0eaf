"""The backend seam: selection, errors, and the contract every backend must meet.

The contract: on the engine's test networks (feed-forward, recurrent, two hidden layers,
per-neuron time constants, LIF outputs, same-step bursts) and every readout, a backend gives the
CPU backend's spikes (same tape) and readouts and gradients to the precision of the dtype.
``BACKENDS`` lists what is checked here: cpu always, cuda under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) or on a real device when one is usable.
"""

import numpy as np
import pytest

from eventprop.backend import cuda_usable, get_backend, set_backend
from eventprop.engine import ReadoutWeight, backward, forward
from eventprop.errors import UserError
from test_engine_reference import CASES, make_case

BACKENDS = ["cpu"] + (["cuda"] if cuda_usable() else [])


def run(backend, name, seed, dtype, B=3, n_steps=30):
    spec, params, batch, rg, (wv, rate), _ = make_case(name, seed, dtype, n_steps=n_steps, B=B)
    w = ReadoutWeight(wv, rate)
    fw = forward(spec, params, batch, weight=w, trace=True, backend=backend)
    g = backward(fw, rg)
    return fw, g


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_backend_contract(backend, name):
    dtype = np.float32
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
    for k in ref_g:
        scale = max(float(np.abs(ref_g[k]).max()), 1e-6)
        np.testing.assert_allclose(g[k] / scale, ref_g[k] / scale, rtol=0, atol=5e-4, err_msg=k)


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
    set_backend("cpu")

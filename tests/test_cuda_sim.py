"""The cuda backend's contract (tests/test_backend.py) under numba's CUDA simulator, without a GPU.

The simulator must be switched on before numba.cuda is first imported, so the contract runs in a
subprocess with ``NUMBA_ENABLE_CUDASIM=1``. Needs numba-cuda (``pip install -e '.[cuda]'``):
skipped when it is not installed, unless ``EVENTPROP_REQUIRE_CUDA_SIM=1`` says that it must be
(CI), in which case that is a failure.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _need_numba_cuda():
    if importlib.util.find_spec("numba_cuda") is None:
        if os.environ.get("EVENTPROP_REQUIRE_CUDA_SIM") == "1":
            pytest.fail("numba-cuda is not installed but EVENTPROP_REQUIRE_CUDA_SIM=1: pip install -e '.[cuda]'")
        pytest.skip("numba-cuda not installed (pip install -e '.[cuda]')")


def _sim_env():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def test_cuda_backend_contract_under_the_simulator():
    _need_numba_cuda()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda and (contract or grows)",
                        str(HERE / "test_backend.py")], env=_sim_env(), cwd=HERE.parent, capture_output=True, text=True,
                       timeout=900)
    tail = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail and "error" not in tail, tail


def test_gpu_bench_dry_run_under_the_simulator(tmp_path):
    _need_numba_cuda()
    env = _sim_env()
    env["OUT"] = str(tmp_path)
    r = subprocess.run([sys.executable, str(HERE.parent / "scripts" / "gpu_bench.py"), "--dry-run"], env=env, cwd=HERE.parent,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (tmp_path / "gpu_bench.json").exists()


def test_cuda_kernels_compile_for_a_device(tmp_path):
    """What the simulator runs must also compile for a GPU (tests/cuda_ptx.py)."""
    _need_numba_cuda()
    sig = tmp_path / "types.pkl"
    r = subprocess.run([sys.executable, str(HERE / "cuda_ptx.py"), "types", str(sig)], env=_sim_env(), cwd=HERE.parent,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    env = {k: v for k, v in _sim_env().items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, str(HERE / "cuda_ptx.py"), "compile", str(sig)], env=env, cwd=HERE.parent,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert r.stdout.count("characters of PTX") == 2, r.stdout

"""Compile the cuda backend's kernels for a real GPU without one (tests/test_cuda_sim.py).

``python tests/cuda_ptx.py types FILE`` (under NUMBA_ENABLE_CUDASIM=1): runs the backend contract's
networks through the cuda backend and writes the numba types of every kernel launch's arguments
to FILE. ``python tests/cuda_ptx.py compile FILE`` (simulator off): compiles each kernel for those
types to PTX (compute capability 8.0) with numba-cuda's real compiler (NVVM, from the cuda extra's
nvidia-cuda-nvcc wheel), so that what runs under the simulator also compiles for a device:
device functions must not allocate, call NumPy ufuncs on scalars, and so on. numba-cuda asks the
current device for its compute capability when it compiles a called device function; with no
device here, that query is answered with 8.0.
"""

import pickle
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNELS = ("_forward_kernel", "_backward_kernel")


def collect(path):
    import numpy as np
    from numba import typeof

    import eventprop.engine.cuda as C
    from eventprop.engine import ReadoutWeight, backward, forward
    from test_engine_reference import CASES, make_case

    sigs = {}

    class Recorder:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, cfg):
            def launch(*args):
                sigs.setdefault(self.name, set()).add(tuple(typeof(a) for a in args))
                return self.kernel[cfg](*args)
            return launch

    for name in KERNELS:
        setattr(C, name, Recorder(name, getattr(C, name)))
    for case in CASES:
        spec, params, batch, rg, (wv, rate), _ = make_case(case, 0, np.float32, n_steps=12, B=2)
        backward(forward(spec, params, batch, weight=ReadoutWeight(wv, rate), trace=True, backend="cuda"), rg)
    with open(path, "wb") as f:
        pickle.dump(sigs, f)
    print({k: len(v) for k, v in sigs.items()})


def compile_all(path):
    import numba.cuda.dispatcher as dispatcher

    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(8, 0))
    from numba import cuda

    import eventprop.engine.cuda as C

    with open(path, "rb") as f:
        sigs = pickle.load(f)
    assert set(sigs) == set(KERNELS), sigs.keys()
    for name, ss in sigs.items():
        for sig in ss:
            t = time.time()
            ptx, _ = cuda.compile_ptx(getattr(C, name).py_func, sig, cc=(8, 0))
            assert ".entry" in ptx
            print(f"{name}: {len(ptx)} characters of PTX in {time.time() - t:.1f} s", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    {"types": collect, "compile": compile_all}[sys.argv[1]](sys.argv[2])

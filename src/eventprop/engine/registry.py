"""The backend registry: which backends exist and how each is loaded (on demand).

A backend is an object with the two methods of :class:`eventprop.engine.contract.Backend`.
:func:`get_backend` makes a new one each call (its module is imported only then); the object
holds its own state (the tape capacity it has grown to), so callers that run many batches keep
one: the engine keeps it on the network spec it ran (``engine.backend_for``) and hands it to the
backward pass through the :class:`~eventprop.engine.Forward` it returns. Nothing here is mutable.

The names a spec may give (``NetworkSpec.backend``) are ``eventprop.network.BACKENDS``; the test
suite checks that they are this registry's names plus ``auto``.
"""

from __future__ import annotations

from ..errors import UserError
from ..network import BACKENDS
from .contract import Backend


def cuda_usable() -> bool:
    """Whether numba-cuda is installed and sees a device (or its simulator is switched on)."""
    try:
        from numba import cuda
    except ImportError:  # pragma: no cover
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - driver errors
        return False


def _load_cpu() -> Backend:
    from .cpu import CPUBackend

    return CPUBackend()


def _load_cuda() -> Backend:
    if not cuda_usable():
        raise UserError("backend 'cuda': no usable CUDA device (needs an NVIDIA GPU and driver, and numba-cuda: "
                        "pip install 'eventprop[cuda]'); use model.backend=cpu or auto")
    from .cuda import CUDABackend

    return CUDABackend()


LOADERS = {"cpu": _load_cpu, "cuda": _load_cuda}
"""Each backend's loader; to add a backend, implement the contract in a module of this package,
add its loader here and its name to ``eventprop.network.BACKENDS``, and run the contract tests
(tests/test_backend.py) on it."""


def resolve(name: str) -> str:
    """The concrete backend a name selects (``auto``: cuda when a device is usable, else cpu);
    a one-line error for an unknown name."""
    name = str(name)
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "cuda" if cuda_usable() else "cpu"
    return name


def get_backend(name: str = "cpu") -> Backend:
    """A new backend object called ``name`` (``auto``, ``cpu`` or ``cuda``; a NetworkSpec names
    its own, ``spec.backend``). A clear one-line error when cuda is asked for and cannot run."""
    return LOADERS[resolve(name)]()

"""The backend seam: what the engine hands a backend, what it gets back, and the backends.

:func:`eventprop.engine.forward` and :func:`eventprop.engine.backward` do everything that does
not depend on the hardware (checking inputs, the network layout, readout weights and their
quadrature coefficients, turning loss gradients into arrays) and call a :class:`Backend` with
named bundles of flat arrays. A backend runs the simulation and the adjoint pass on them and
returns host (NumPy) arrays, so that losses, optimisers and analyses never see the device.

Bundles (``NamedTuple``\\ s of arrays, defined in eventprop.contract; numba compiles them as
structs, so the CPU kernels take them as they are):

``NetArrays``       the network: flat weights ``W`` and the per-layer / per-neuron layout
                    (``engine.Layout``: sizes, offsets, thresholds, time constants, propagators).
``InputSpikes``     the batch's input spikes as per-step CSR (``SpikeBatch.ptr``/``units``).
``ReadoutWeights``  the integral readout's in-step weight (w_a, w_b, edecay) and its exact
                    quadrature coefficients (rcoef with the weight's rate, tcoef without).
``Tape``            what the forward pass records per spike: grid step of arrival, neuron, d
                    (tau_m dV/dt just before the spike, floored; tau_m d(V - A)/dt for alif), delta
                    (arrival - emission time), ``n``, the spikes per sample (counted even past the
                    tape's capacity), and ``aux`` (alif: the adaptation at each spike).
``ForwardOutputs``  readouts and statistics: integral, vmax (with its step, kink reference,
                    delta and slope), trace, first-spike time and step, spike counts, grazing.
``ReadoutGradArrays`` dL/dreadout: integral, vmax, trace, first_spike, and dL_reg/dn per neuron.

A backend implements two methods (see :class:`Backend`):

* ``forward(net, inp, ro, n_steps, dt, grazing_eps, want_trace, want_max) -> (Tape, ForwardOutputs)``
  must never drop a spike (size the tape from the spike count and rerun, or grow it);
* ``backward(net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, record, want) -> BackwardResult``:
  dW flat like ``net.W``, hits (bounded adjoint values), the adjoint traces of sample ``record``
  (or None), and what the ``GradRequest`` asks for: with ``want.tau`` (a ``TauRequest``: the
  per-neuron propagator derivatives over dt, and the output's readout-coefficient derivatives)
  dL/dtau_m, dL/dtau_s of every hidden neuron (and output neuron, when ``want.tau.out``) as
  (neurons, 2); with ``want.n_delay_inputs`` > 0, dL/d(delay) of every network input; when
  ``net.has_dly`` (axonal delays of hidden neurons), dL/d(delay) per neuron. A backend that
  cannot compute something raises a one-line UserError.

Both must give the CPU backend's spikes and gradients to the precision of the dtype; the
contract tests (tests/test_backend.py) run every backend on the same networks. ``cpu`` is the
numba kernel backend (``_kernels.py``); ``cuda`` (``_cuda.py``, the ``cuda`` extra) runs on an
NVIDIA GPU through numba-cuda. ``auto`` is cuda when a device is usable, else cpu. To add a
backend: implement the two methods, register it in :func:`get_backend`, and add it to the
contract tests.
"""

from __future__ import annotations

import numpy as np

from .contract import (  # noqa: F401 (the contract, re-exported: eventprop.backend is where users look)
    FORWARD_COUNTERS, Backend, BackwardResult, DelayGrad, GradRequest, TauRequest, ForwardOutputs, InputSpikes, NetArrays, ReadoutGradArrays,
    ReadoutWeights, TauGrad, Tape, allocate_forward, sized_tape_run)
from .errors import UserError

N_CHUNKS = 8  # fixed number of sample chunks on the CPU: results do not depend on the thread count


class CPUBackend:
    """The numba kernels (``_kernels.py``): samples spread over a fixed number of chunks
    (threads), each simulated serially and event by event."""

    name = "cpu"
    _cap = [64]  # grows to the largest tape seen, so later calls need no rerun

    def forward(self, net, inp, ro, n_steps, dt, grazing_eps, want_trace, want_max):
        from . import _kernels

        B = inp.ptr.shape[0]
        dtype = net.W.dtype.type

        NL, n_sch = _kernels.arrival_buffers(net, dt)

        def run(tape, fo):
            _kernels.forward_batch(net, inp, ro, tape, fo, n_steps, dtype(dt), dtype(grazing_eps), bool(want_trace),
                                   bool(want_max), min(N_CHUNKS, max(B, 1)), NL, n_sch)
            return tape, fo

        return sized_tape_run(self, B, int(net.sizes[-1]), int(net.sizes.sum()), n_steps, dtype, want_trace, run,
                              bool(net.ada.any()), bool(net.has_dly))

    def backward(self, net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, record, want=GradRequest()):
        tau, delays = want.tau, int(want.n_delay_inputs)
        from . import _kernels

        B = inp.ptr.shape[0]
        NT = int(net.sizes.sum())
        n_chunks = min(N_CHUNKS, max(B, 1))
        dt_ = net.W.dtype
        dWc = np.empty((n_chunks, net.W.shape[0]), dtype=dt_)
        hits = np.zeros(n_chunks, dtype=np.int64)
        dW = np.empty(net.W.shape[0], dtype=dt_)
        if record is not None:
            rec_V = np.zeros((n_steps + 1, NT), dtype=dt_)
            rec_I = np.zeros((n_steps + 1, NT), dtype=dt_)
        else:
            rec_V = rec_I = np.zeros((1, 1), dtype=dt_)
        if tau is not None:
            tg = TauGrad(True, tau.dem, tau.dkm, tau.dks, tau.des, np.zeros((n_chunks, NT, 2), np.float64), bool(tau.out),
                         np.ascontiguousarray(tau.dco, np.float64), np.ascontiguousarray(tau.dtco, np.float64))
        else:
            z = np.zeros(1, dt_)
            zc = np.zeros((2, 4, 1), np.float64)
            tg = TauGrad(False, z, z, z, z, np.zeros((n_chunks, 0, 2), np.float64), False, zc, zc)
        dg = DelayGrad(bool(delays), np.zeros((n_chunks, int(delays)), np.float64),
                       np.zeros((n_chunks, NT if net.has_dly else 0), np.float64))
        _kernels.backward_batch(net, inp, ro, tape, fo, gr, n_steps, dt_.type(inv_T), bool(use_trace), dWc, dW,
                                -1 if record is None else int(record), rec_V, rec_I, hits, tg, dg)
        dtau = tg.dtau.sum(axis=0) if tau is not None else None  # chunks in a fixed order
        dd = dg.dd.sum(axis=0) if delays else None
        ddh = dg.dh.sum(axis=0) if net.has_dly else None  # chunks in a fixed order
        return BackwardResult(dW, int(hits.sum()), (rec_V if record is not None else None), (rec_I if record is not None else None),
                dtau, dd, ddh)


BACKENDS = ("auto", "cpu", "cuda")


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


def _load_cuda() -> Backend:
    if not cuda_usable():
        raise UserError("backend 'cuda': no usable CUDA device (needs an NVIDIA GPU and driver, and numba-cuda: "
                        "pip install 'eventprop[cuda]'); use model.backend=cpu or auto")
    from ._cuda import CUDABackend

    return CUDABackend()


# the registry: each backend's loader, called on demand (a backend's module is imported only then)
LOADERS = {"cpu": lambda: _CPU, "cuda": _load_cuda}


def get_backend(name: str = "cpu") -> Backend:
    """The backend called ``name`` (``auto``, ``cpu`` or ``cuda``; a NetworkSpec names its own,
    ``spec.backend``). A clear one-line error when cuda is asked for and cannot run."""
    name = str(name)
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name == "auto":
        name = "cuda" if cuda_usable() else "cpu"
    return LOADERS[name]()


_CPU = CPUBackend()

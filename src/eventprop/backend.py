"""The backend seam: what the engine hands a backend, what it gets back, and the backends.

:func:`eventprop.engine.forward` and :func:`eventprop.engine.backward` do everything that does
not depend on the hardware (checking inputs, the network layout, readout weights and their
quadrature coefficients, turning loss gradients into arrays) and call a :class:`Backend` with
named bundles of flat arrays. A backend runs the simulation and the adjoint pass on them and
returns host (NumPy) arrays, so that losses, optimisers and analyses never see the device.

Bundles (``NamedTuple``\\ s of arrays; numba compiles them as structs, so the CPU kernels take
them as they are):

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
* ``backward(net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, record, tau=None)
  -> (dW, hits, lamV, lamI, dtau)`` with dW flat like ``net.W``, hits the number of bounded
  adjoint values, the adjoint traces of sample ``record`` (or None), and with ``tau`` (the
  per-neuron propagator derivatives (dem, dkm, dks, des) over dt) dL/dtau_m, dL/dtau_s of every
  hidden neuron (and output neuron, when ``tau[4]``) as an array (neurons, 2), else None; with
  ``delays`` = n_in > 0, a sixth value: dL/d(delay) of every network input (n_in,), else None;
  seventh, when ``net.has_dly`` (axonal delays of hidden neurons), dL/d(delay) per neuron, else
  None. A backend that cannot compute them raises a one-line UserError.

Both must give the CPU backend's spikes and gradients to the precision of the dtype; the
contract tests (tests/test_backend.py) run every backend on the same networks. ``cpu`` is the
numba kernel backend (``_kernels.py``); ``cuda`` (``_cuda.py``, the ``cuda`` extra) runs on an
NVIDIA GPU through numba-cuda. ``auto`` is cuda when a device is usable, else cpu. To add a
backend: implement the two methods, register it in :func:`get_backend`, and add it to the
contract tests.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from .errors import UserError


class NetArrays(NamedTuple):
    W: np.ndarray  # flat weights, layout.offsets per array
    sizes: np.ndarray  # neurons per layer (hidden layers, then the output)
    noff: np.ndarray  # first global neuron index of each layer
    ff_off: np.ndarray  # offset in W of the connection into layer l (rows: presynaptic neurons)
    rec_off: np.ndarray  # offset in W of layer l's recurrent weights, -1 if none
    spiking: np.ndarray  # 1 for LIF layers, 0 for a leaky-integrator output
    thr: np.ndarray  # threshold per layer
    uni: np.ndarray  # 1 if all neurons of the layer share tau_m and tau_s
    alpha: np.ndarray  # per neuron e^{-dt/tau_m}
    beta: np.ndarray  # per neuron e^{-dt/tau_s}
    cfw: np.ndarray  # per neuron: V gained over dt from a unit I at the step start
    cbw: np.ndarray  # per neuron: the adjoint's lambda_V -> lambda_I coupling over dt
    tau_s: np.ndarray
    tau_m: np.ndarray
    ada: np.ndarray  # per layer: 1 for an adaptive (alif) layer (eventprop.neurons.alif)
    tau_a: np.ndarray  # per neuron adaptation time constant (1 where not adaptive)
    aa: np.ndarray  # per neuron e^{-dt/tau_a} (1 where not adaptive)
    binc: np.ndarray  # per neuron threshold increment per spike (0 where not adaptive)
    dly: np.ndarray  # float64 per neuron: axonal delay of its spikes (ms; 0 without delays)
    has_dly: bool  # some hidden layer has delays (the kernels' delayed-arrival path)


class InputSpikes(NamedTuple):
    ptr: np.ndarray  # int64 (B, n_steps + 1)
    units: np.ndarray  # int32


class ReadoutWeights(NamedTuple):
    w_a: np.ndarray  # (B, n_steps)
    w_b: np.ndarray  # (B, n_steps)
    edecay: float  # e^{-rate dt}
    rcoef: np.ndarray  # (4, C) quadrature coefficients with the weight's rate
    tcoef: np.ndarray  # (4, C) the same without it (trace losses)


class Tape(NamedTuple):
    step: np.ndarray  # int32 (B, cap): grid step at which the spike arrives
    nid: np.ndarray  # int32 (B, cap): global neuron index
    d: np.ndarray  # (B, cap): tau_m dV/dt just before the spike (floored at grazing_eps)
    delta: np.ndarray  # (B, cap): arrival time - emission time (ms)
    n: np.ndarray  # int64 (B,): spikes per sample
    aux: np.ndarray  # (B, cap): the adaptation A just before each spike of an alif neuron; (1, 1) without alif
    a_step: np.ndarray  # int32 (B, cap): with delays, the grid step at which each arrival is delivered
    a_src: np.ndarray  # int64 (B, cap): its spike's tape index
    a_delta: np.ndarray  # (B, cap): grid time - arrival time
    a_n: np.ndarray  # int64 (B,): arrivals per sample ((1, 1) arrays and (1,) without delays)


class ForwardOutputs(NamedTuple):
    integral: np.ndarray  # (B, C) int w V dt (not yet divided by T)
    vmax: np.ndarray  # (B, C)
    tmax: np.ndarray  # int64 (B, C) grid step of the maximum
    mx_ref: np.ndarray  # int64 (B, C) tape index of a kink maximum, -1 at a grid sample
    mx_delta: np.ndarray  # (B, C) its delta
    mx_slope: np.ndarray  # (B, C) tau_m dV/dt there
    trace: np.ndarray  # (B, n_steps + 1, C), or (1, 1, 1) when not wanted
    fs_time: np.ndarray  # float64 (B, C) first spike time, inf if none
    fs_step: np.ndarray  # int64 (B, C) its arrival step, -1 if none
    counts: np.ndarray  # int32 (B, neurons) spike counts
    graze: np.ndarray  # int64 (B,) spikes whose d was floored
    counters: np.ndarray  # int64 (B, N_COUNTERS): what the forward pass did (see FORWARD_COUNTERS)


class ReadoutGradArrays(NamedTuple):
    integral: np.ndarray  # (B, C)
    vmax: np.ndarray  # (B, C)
    trace: np.ndarray  # (B, n_steps + 1, C), or (1, 1, 1)
    first_spike: np.ndarray  # (B, C)
    spike_counts: np.ndarray  # (B, neurons)


class TauGrad(NamedTuple):
    want: bool  # compute dL/dtau_m, dL/dtau_s of the hidden neurons
    dem: np.ndarray  # per neuron, over one step dt: d e^{-dt/tau_m} / d tau_m
    dkm: np.ndarray  # d kappa(dt) / d tau_m
    dks: np.ndarray  # d kappa(dt) / d tau_s
    des: np.ndarray  # d e^{-dt/tau_s} / d tau_s
    dtau: np.ndarray  # float64 (n_chunks, neurons, 2) accumulators (backend's own layout)
    out: bool  # also the output neurons' (then nu is carried for them too)
    dco: np.ndarray  # (2, 4, C): d(rcoef)/d(tau_m, tau_s) of the output neurons (integral readout)
    dtco: np.ndarray  # (2, 4, C): d(tcoef)/d(tau_m, tau_s) (trace readout)


class DelayGrad(NamedTuple):
    want: bool  # compute dL/d(delay) of every network input (learned input delays)
    dd: np.ndarray  # float64 (n_chunks, n_in) accumulators
    dh: np.ndarray  # float64 (n_chunks, neurons): dL/d(axonal delay) per neuron, with delays (else (n_chunks, 0))


class Backend(Protocol):
    name: str

    def forward(self, net: NetArrays, inp: InputSpikes, ro: ReadoutWeights, n_steps: int, dt: float,
                grazing_eps: float, want_trace: bool, want_max: bool) -> tuple[Tape, ForwardOutputs]: ...

    def backward(self, net: NetArrays, inp: InputSpikes, ro: ReadoutWeights, tape: Tape, fo: ForwardOutputs,
                 gr: ReadoutGradArrays, n_steps: int, inv_T: float, use_trace: bool,
                 record: int | None, tau: tuple | None = None, delays: int = 0
                 ) -> tuple[np.ndarray, int, np.ndarray | None, np.ndarray | None, np.ndarray | None,
                            np.ndarray | None, np.ndarray | None]: ...


# what the CPU forward pass counts per sample (ForwardOutputs.counters; engine.Forward.counters())
FORWARD_COUNTERS = ("solves", "solver_iterations", "no_root", "solver_failures", "retests", "spikes", "arrivals",
                    "max_spikes_in_a_step")


def allocate_forward(B: int, C: int, NT: int, n_steps: int, cap: int, dtype, want_trace: bool, aux: bool = False,
                     arrivals: bool = False):
    """Zeroed host arrays of a forward pass (a backend may allocate its own); ``aux``: the
    network has adaptive neurons (the tape keeps their adaptation per spike); ``arrivals``: it
    has axonal delays (an arrival tape beside the spike tape)."""
    ca = (B, cap) if arrivals else (1, 1)
    tape = Tape(np.zeros((B, cap), np.int32), np.zeros((B, cap), np.int32), np.zeros((B, cap), dtype),
                np.zeros((B, cap), dtype), np.zeros(B, np.int64), np.zeros((B, cap) if aux else (1, 1), dtype),
                np.zeros(ca, np.int32), np.zeros(ca, np.int64), np.zeros(ca, dtype),
                np.zeros(B if arrivals else 1, np.int64))
    fo = ForwardOutputs(
        np.zeros((B, C), dtype), np.zeros((B, C), dtype), np.zeros((B, C), np.int64), np.zeros((B, C), np.int64),
        np.zeros((B, C), dtype), np.zeros((B, C), dtype),
        np.zeros((B, n_steps + 1, C) if want_trace else (1, 1, 1), dtype),
        np.zeros((B, C), np.float64), np.zeros((B, C), np.int64), np.zeros((B, NT), np.int32), np.zeros(B, np.int64),
        np.zeros((B, len(FORWARD_COUNTERS)), np.int64),
    )
    return tape, fo


def sized_tape_run(owner, B: int, C: int, NT: int, n_steps: int, dtype, want_trace: bool, run, aux: bool = False,
                   arrivals: bool = False):
    """``run(tape, fo) -> (tape, fo)`` on freshly allocated host arrays with the tape capacity
    ``owner._cap[0]``; when a sample had more spikes than that (the kernels count every spike
    and keep simulating), once more with exactly enough room, so no spike is ever dropped and
    there is no regrowth loop. ``owner._cap`` remembers the largest tape seen."""
    cap = owner._cap[0]
    for _attempt in range(2):
        tape, fo = run(*allocate_forward(B, C, NT, n_steps, cap, dtype, want_trace, aux, arrivals))
        if B == 0 or tape.n.max() <= cap:
            break
        cap = int(tape.n.max())
        owner._cap[0] = max(owner._cap[0], cap)
    return tape, fo


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

    def backward(self, net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, record, tau=None, delays=0):
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
        if tau is not None:  # (dem, dkm, dks, des, out, dco, dtco)
            tg = TauGrad(True, *tau[:4], np.zeros((n_chunks, NT, 2), np.float64), bool(tau[4]),
                         np.ascontiguousarray(tau[5], np.float64), np.ascontiguousarray(tau[6], np.float64))
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
        return (dW, int(hits.sum()), (rec_V if record is not None else None), (rec_I if record is not None else None),
                dtau, dd, ddh)


BACKENDS = ("auto", "cpu", "cuda")
_default = ["cpu"]


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


def get_backend(name: str | None = None) -> Backend:
    """The backend called ``name`` (``auto``, ``cpu`` or ``cuda``; None: the process default,
    :func:`set_backend`). A clear one-line error when cuda is asked for and cannot run."""
    name = _default[0] if name is None else str(name)
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name == "auto":
        name = "cuda" if cuda_usable() else "cpu"
    if name == "cpu":
        return _CPU
    if not cuda_usable():
        raise UserError("backend 'cuda': no usable CUDA device (needs an NVIDIA GPU and driver, and numba-cuda: "
                        "pip install 'eventprop[cuda]'); use model.backend=cpu or auto")
    from ._cuda import CUDABackend

    return CUDABackend()


def set_backend(name: str) -> None:
    """The backend that forward/backward use when none is named (``cpu`` at start)."""
    get_backend(name)  # checks it
    _default[0] = str(name)


_CPU = CPUBackend()

"""The backend contract: what the engine hands a backend, what it gets back, and the helpers every
backend shares.

:func:`eventprop.engine.forward` and :func:`eventprop.engine.backward` do everything that does
not depend on the hardware (checking inputs, the network layout, readout weights and their
quadrature coefficients, turning loss gradients into arrays) and call a :class:`Backend` with
named bundles of flat arrays. A backend runs the simulation and the adjoint pass on them and
returns host (NumPy) arrays, so that losses, optimisers and analyses never see the device.

Bundles (``NamedTuple``\\ s of arrays, defined here; numba compiles them as
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
contract tests (tests/test_backend.py) run every backend on the same networks. ``cpu``
(``engine/cpu.py``) runs the numba kernels of ``engine/_kernels.py``; ``cuda`` (``engine/cuda.py``,
the ``cuda`` extra) compiles the same kernels' source for an NVIDIA GPU through numba-cuda.
``auto`` is cuda when a device is usable, else cpu. To add a backend: implement the two methods
in a module of this package, register its loader in ``engine/registry.py``, and add it to the
contract tests.

The package, bottom up: ``contract`` (this module: imports nothing of eventprop), ``_kernels``
(the per-sample passes; the neuron models of eventprop.neurons), ``cpu`` and ``cuda`` (the
backends: the contract and the kernels), ``registry`` (loads a backend on demand) and the
package itself (``eventprop.engine``: the user-facing forward and backward).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np


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
    model: np.ndarray  # per layer: the neuron model's code (eventprop.neurons.MODELS; the kernels ask eventprop.neurons.hooks)
    ada: np.ndarray  # per layer: 1 when the model has the threshold adaptation A (alif; MODELS[...].adapts)
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
    dtau: np.ndarray  # float64 (n_chunks, 2, neurons) accumulators (backend's own layout)
    out: bool  # also the output neurons' (then nu is carried for them too)
    dco: np.ndarray  # (2, 4, C): d(rcoef)/d(tau_m, tau_s) of the output neurons (integral readout)
    dtco: np.ndarray  # (2, 4, C): d(tcoef)/d(tau_m, tau_s) (trace readout)


class DelayGrad(NamedTuple):
    want: bool  # compute dL/d(delay) of every network input (learned input delays)
    dd: np.ndarray  # float64 (n_chunks, n_in) accumulators
    dh: np.ndarray  # float64 (n_chunks, neurons): dL/d(axonal delay) per neuron, with delays (else (n_chunks, 0))


class TauRequest(NamedTuple):
    """What a backend needs to compute dL/dtau_m, dL/dtau_s (engine.tau_step_derivatives and
    engine.readout_coef_derivs)."""
    dem: np.ndarray  # per neuron, over one step dt: d e^{-dt/tau_m} / d tau_m
    dkm: np.ndarray  # d kappa(dt) / d tau_m
    dks: np.ndarray  # d kappa(dt) / d tau_s
    des: np.ndarray  # d e^{-dt/tau_s} / d tau_s
    out: bool  # also the output neurons'
    dco: np.ndarray  # (2, 4, C): d(rcoef)/d(tau_m, tau_s) of the output neurons (integral readout)
    dtco: np.ndarray  # (2, 4, C): d(tcoef)/d(tau_m, tau_s) (trace readout)


class GradRequest(NamedTuple):
    """Which gradients a backward pass computes beyond dL/dW."""
    tau: TauRequest | None = None  # the time constants'
    n_delay_inputs: int = 0  # > 0: dL/d(delay) of each of this many network inputs


class BackwardResult(NamedTuple):
    dW: np.ndarray  # flat, like NetArrays.W
    hits: int  # how often an adjoint value was bounded
    lamV: np.ndarray | None  # (n_steps + 1, neurons) adjoint traces of the recorded sample, else None
    lamI: np.ndarray | None
    dtau: np.ndarray | None  # (neurons, 2) dL/dtau_m, dL/dtau_s with GradRequest.tau, else None
    d_delay_in: np.ndarray | None  # (n_in,) with GradRequest.n_delay_inputs, else None
    d_delay_hidden: np.ndarray | None  # (neurons,) dL/d(axonal delay) when NetArrays.has_dly, else None


class Backend(Protocol):
    name: str

    def forward(self, net: NetArrays, inp: InputSpikes, ro: ReadoutWeights, n_steps: int, dt: float,
                grazing_eps: float, want_trace: bool, want_max: bool) -> tuple[Tape, ForwardOutputs]: ...

    def backward(self, net: NetArrays, inp: InputSpikes, ro: ReadoutWeights, tape: Tape, fo: ForwardOutputs,
                 gr: ReadoutGradArrays, n_steps: int, inv_T: float, use_trace: bool,
                 record: int | None, want: GradRequest = GradRequest()) -> BackwardResult: ...


# what the CPU forward pass counts per sample (ForwardOutputs.counters; engine.Forward.counters())
FORWARD_COUNTERS = ("solves", "solver_iterations", "no_root", "solver_failures", "retests", "spikes", "arrivals",
                    "max_spikes_in_a_step", "bounds")


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
    ``owner.cap``; when a sample had more spikes than that (the kernels count every spike
    and keep simulating), once more with exactly enough room, so no spike is ever dropped and
    there is no regrowth loop. ``owner.cap`` remembers the largest tape seen."""
    cap = owner.cap
    for _attempt in range(2):
        tape, fo = run(*allocate_forward(B, C, NT, n_steps, cap, dtype, want_trace, aux, arrivals))
        if B == 0 or tape.n.max() <= cap:
            break
        cap = int(tape.n.max())
        owner.cap = max(owner.cap, cap)
    return tape, fo

"""The EventProp engine: forward pass with a spike tape, and the exact-gradient adjoint pass.

Contract (backend-neutral: the hardware-specific part is a backend object, ``cpu`` or ``cuda``,
given named bundles of flat arrays; see eventprop.engine.contract)::

    fw = forward(spec, params, batch, weight=None, trace=False)   # readouts + tape
    grads = backward(fw, ReadoutGrads(...))                       # dL/dW for every weight

The engine knows *readouts*, not losses (the paper's extended EventProp, Appendix A): a loss maps
readouts to (value, dL/dreadout, prediction) and the backward pass is driven by dL/dreadout.

Algorithm (dt grid t_n = n dt, n = 0..N, trial length T = N dt; spikes at sub-step times)
-----------------------------------------------------------------------------------------
The state is advanced exactly between grid points; spikes keep their exact (sub-step) times.
kappa(u) = tau_s/(tau_m - tau_s)(e^{-u/tau_m} - e^{-u/tau_s}) is V after a unit current jump.

Forward, at grid time t_n, then over step n (from t_n to t_{n+1}):

1. Input spikes of bin n arrive at t_n (I += w).
2. Readout samples at t_n: the trace V(t_n) and the running maximum (with ``max_kinks``, also V
   just before each hidden-spike arrival at the output, where a maximum sits when an inhibitory
   spike turns V down: value, time and tau_m dV/dt there).
3. Integral readout over step n, exactly: with the in-step weight e^{-r u}(a_n + b_n u/dt)
   (``ReadoutWeight``), int w V dt over the step = a_n (P0 V + Q0 I) + b_n (P1 V + Q1 I) from
   the state at t_n^+ (``readout_coefs``). A leaky-integrator output then moves to t_{n+1} at
   once; a hidden spike emitted at t_c in the step reaches it there with the effect it would have
   had from t_c on (I += w e^{-delta/tau_s}, V += w kappa(delta), delta = t_{n+1} - t_c) and adds
   w w(t_{n+1}) int_0^delta kappa to the integral (the sliver the step's free evolution missed).
4. The step's events in time order, exactly. A spiking layer's trajectory over the step is held
   in coefficient form, V(u) = e^{-u/tau_m} (P + Q g(u)), I(u) = Q e^{-u/tau_s},
   g(u) = kappa(u) e^{u/tau_m} (P = V(t_n), Q = I(t_n) at the start). The next event is the
   earliest threshold crossing of any spiking neuron (or, with delays, a pending arrival). At a
   spike of neuron i at t_c = t_n + u: V_i -> 0 (P_i = -Q_i g(u)); tape entry (step n+1, i, d,
   delta = dt - u) with d = I(t_c) - theta = tau_m dV/dt(t_c^-) (floored at grazing_eps, counted in
   ``fw.grazing``); its arrival (at t_c + d_i with axonal delays) is a current jump w at that
   time on every target: Q += w e^{u/tau_s}, P += w e^{u/tau_m} g(-u), one pass over the weight
   row that also re-tests every target (a proven necessary test on its state at the step's end,
   then a lower bound on its next crossing). A neuron may spike again in the same step. The
   crossing times are found lazily: the smallest bound is solved exactly (eventprop.neurons:
   a bracketed Newton that always ends on a true root or proves there is none), then the search
   is repeated. At the end, V <- alpha P + c Q, I <- beta Q. For spiking outputs the first spike
   time t_c is the readout.

Backward, from t_N down to t_0; adjoints lambda_V, lambda_I start at 0; dL/dV = -tau_m lambda_V and
dL/dI = -tau_s lambda_I. At each grid time t_m, with lambda at t_m^+:

1. Max readout at the grid sample t_m: lambda_V,k -= dL/dmax_k / tau_m.
2. Input spikes arriving at t_m: dL/dw_ij -= tau_s,j lambda_I,j.
3. Spikes detected at t_m, latest emission first. For each, the targets' adjoints at t_c^+ are
   those at t_m propagated back over delta (for an LI output including the readout sources over
   [t_c, t_m]); dL/dw_ij -= tau_s,j lambda_I,j(t_c^+) (Table 1 (v)); the jump
   J = (theta lambda_V,i(t_c^+) + sum_j w_ij (lambda_V,j - lambda_I,j)(t_c^+) + dL/dt_i) / d minus,
   for hidden neurons, dL_reg/dn_i / (theta tau_m); dL/dt_i holds the first-spike loss term and,
   for a maximum sitting just before this spike's arrival, dL/dmax_k dV_k/dt(t_c^-). The jump
   happens at t_c; at t_m it is applied as the state that free backward evolution over delta
   takes to (J, 0): lambda_V,i += J e^{delta/tau_m}, lambda_I,i -= J c_b(delta)/(e^{-delta/tau_m}
   e^{-delta/tau_s}) (and a maximum's kick at t_c^- likewise). Applying each jump at once lets
   the earlier spikes of the same step see it, as the forward pass let them move its crossing.
   |lambda| is bounded by 1e15 (near-grazing jump factors can compound).
4. Phantom spikes (t_N only): a spiking output neuron that never spiked but has dL/dt != 0 gets
   lambda_V += (dL/dt) / theta, as if it had spiked at T with d = theta (Methods 4.1).
5. Exact backward integration to t_{m-1} with the continuous sources of step m-1 integrated
   exactly: lambda_I <- beta lambda_I + c_b lambda_V, lambda_V <- alpha lambda_V, then
   lambda_V,k -= dL/dR_k (a P0 + b P1) / (T tau_m), lambda_I,k -= dL/dR_k (a Q0 + b Q1) / (T tau_s)
   (the discrete adjoint of forward step 3), plus the same for a per-time loss density
   dl/dV(t) (``trace``), linear between its grid values.

Everything is exact for the continuous-time model except that input spikes are binned to the
grid and the max readout misses smooth maxima between grid samples (O(dt^2) in value): for inputs
on the grid the spikes are those of an exact event-driven simulation (eventprop.exact; the tests
check 1e-12 ms). The finite-difference tests measure the rest (docs/gradient-checks.md).

Adaptive neurons (``LayerSpec.neuron = "alif"``, eventprop.neurons.alif) use the same steps with
the threshold theta + A (A jumps by ``adapt`` at the neuron's spikes and decays with tau_adapt),
d = tau_m d(V - A)/dt at the spike and their own adjoint jump (lambda_A). Axonal delays of hidden
neurons (``params['delay<l>']``) separate a spike's emission (reset, own jump) from its arrival at
t_c + d, an event of the step it falls in (forward step 4); in the backward pass the arrival forms
the weight gradients and the feedback (= dL/d(arrival time), hence dL/dd) that the emission's jump
uses (docs/method.md).

The tape holds (step, neuron, d, delta) per spike (plus A per spike with alif, and an arrival
tape with delays): memory grows with spikes, not with trial length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .registry import get_backend, resolve
from .contract import (FORWARD_COUNTERS, ForwardOutputs, GradRequest, InputSpikes, NetArrays, ReadoutGradArrays, ReadoutWeights, Tape,
                       TauRequest)
from ..errors import UserError
from ..events import SpikeBatch
from ..network import NetworkSpec, check_params, with_param_taus
from ..neurons import MODELS

__all__ = ["forward", "backward", "Forward", "ReadoutGrads", "ReadoutWeight", "Layout", "layout", "set_threads",
           "Tape", "backend_for", "get_backend"]


@dataclass
class Layout:
    """The network as flat arrays (see backend.NetArrays for the fields)."""

    sizes: np.ndarray
    noff: np.ndarray
    ff_off: np.ndarray
    rec_off: np.ndarray
    spiking: np.ndarray
    thr: np.ndarray
    uni: np.ndarray  # per layer: 1 if all its neurons share tau_m and tau_s
    alpha: np.ndarray
    beta: np.ndarray
    cfw: np.ndarray
    cbw: np.ndarray
    tau_s: np.ndarray
    tau_m: np.ndarray
    model: np.ndarray  # per layer: the neuron model's code (eventprop.neurons.MODELS, .hooks)
    ada: np.ndarray  # per layer: 1 when the model has the threshold adaptation A (alif)
    tau_a: np.ndarray  # per neuron (1 where not adaptive)
    aa: np.ndarray  # per neuron e^{-dt/tau_a}
    binc: np.ndarray  # per neuron threshold increment per spike (0 where not adaptive)
    names: list[str]
    shapes: list[tuple[int, int]]
    offsets: list[int]
    n_weights: int


def _per_neuron(x, n):
    a = np.asarray(x, dtype=np.float64)
    return np.full(n, float(a)) if a.ndim == 0 else a.astype(np.float64)


def layout(spec: NetworkSpec, dtype=np.float32) -> Layout:
    """Flat arrays describing the network for the kernels (cached on the spec per dtype)."""
    cache = spec.__dict__.setdefault("_layout_cache", {})
    key = (np.dtype(dtype).str, _spec_key(spec))
    if key not in cache:
        cache.clear()
        cache[key] = _make_layout(spec, dtype)
    return cache[key]


def _spec_key(spec: NetworkSpec) -> tuple:
    """Everything the layout depends on, by content (array values, not their abbreviated repr)."""
    def val(x):
        a = np.asarray(x, dtype=np.float64)
        return a.tobytes() if a.ndim else float(a)

    layers = [(h.size, val(h.tau_mem), val(h.tau_syn), h.threshold, h.recurrent, h.neuron, float(h.tau_adapt),
               float(h.adapt)) for h in spec.hidden]
    o = spec.output
    return (spec.n_in, tuple(layers), (o.size, o.kind, val(o.tau_mem), val(o.tau_syn), o.threshold), spec.dt,
            spec.grazing_eps)


def _make_layout(spec: NetworkSpec, dtype) -> Layout:
    layers = [h for h in spec.hidden] + [spec.output]
    sizes = np.array([ly.size for ly in layers], dtype=np.int64)
    noff = np.zeros(len(layers), dtype=np.int64)
    noff[1:] = np.cumsum(sizes)[:-1]
    tm = np.concatenate([_per_neuron(ly.tau_mem, ly.size) for ly in layers])
    ts = np.concatenate([_per_neuron(ly.tau_syn, ly.size) for ly in layers])
    dt = spec.dt
    alpha = np.exp(-dt / tm)
    beta = np.exp(-dt / ts)
    same = np.abs(tm - ts) < 1e-9 * tm
    with np.errstate(divide="ignore", invalid="ignore"):
        cfw = np.where(same, dt / tm * alpha, ts / (tm - ts) * (alpha - beta))
        cbw = np.where(same, dt / ts * beta, tm / (tm - ts) * (alpha - beta))
    shapes = spec.param_shapes()
    names = list(shapes)
    offsets, off = [], 0
    for k in names:
        offsets.append(off)
        off += shapes[k][0] * shapes[k][1]
    ff_off = np.array([offsets[names.index(f"ff{l}")] for l in range(len(layers))], dtype=np.int64)
    rec_off = np.array(
        [offsets[names.index(f"rec{l}")] if f"rec{l}" in shapes else -1 for l in range(len(layers))], dtype=np.int64
    )
    spiking = np.array([1] * len(spec.hidden) + [1 if spec.output.kind == "lif" else 0], dtype=np.int64)
    thr = np.array([ly.threshold for ly in layers], dtype=dtype)
    uni = np.array([int(np.all(tm[o : o + n] == tm[o]) and np.all(ts[o : o + n] == ts[o]))
                    for o, n in zip(noff, sizes)], dtype=np.int64)
    models = [MODELS[getattr(ly, "neuron", "lif")] for ly in layers]  # (the output layer: lif or li)
    model = np.array([m.code for m in models], dtype=np.int64)
    ada = np.array([int(m.adapts) for m in models], dtype=np.int64)
    tau_a = np.concatenate([np.full(ly.size, float(ly.tau_adapt) if a else 1.0) for ly, a in zip(layers, ada)])
    binc = np.concatenate([np.full(ly.size, float(ly.adapt) if a else 0.0) for ly, a in zip(layers, ada)])
    aa = np.where(np.repeat(ada, sizes) == 1, np.exp(-dt / tau_a), 1.0)  # 1 where not adaptive
    f = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    return Layout(
        sizes, noff, ff_off, rec_off, spiking, thr, uni, f(alpha), f(beta), f(cfw), f(cbw), f(ts), f(tm),
        model, ada, f(tau_a), f(aa), f(binc), names, [shapes[k] for k in names], offsets, off,
    )


def flatten(spec: NetworkSpec, params: dict[str, np.ndarray], dtype=np.float32) -> np.ndarray:
    shapes = spec.param_shapes()
    return np.concatenate([np.asarray(params[k], dtype=dtype).ravel() for k in shapes])


def unflatten(lay: Layout, flat: np.ndarray) -> dict[str, np.ndarray]:
    return {
        k: flat[o : o + s[0] * s[1]].reshape(s).copy() for k, s, o in zip(lay.names, lay.shapes, lay.offsets)
    }


@dataclass(frozen=True)
class ReadoutWeight:
    """The weight w(t) of the integral readout R_k = (1/T) int_0^T w(t) V_k(t) dt.

    ``values`` holds w at the grid times t_0..t_N, shape (N+1,) or (B, N+1) (per sample); within
    step n the weight is w(t_n + u) = e^{-rate u} (w_n + (w_{n+1} e^{rate dt} - w_n) u/dt), i.e.
    linear interpolation times an exponential factor. This is exact for w = 1, for linear w
    (rate 0) and for w = e^{-t/tau} (rate 1/tau); for any other smooth w the quadrature error is
    O(dt^2 w'') per unit time.
    """

    values: np.ndarray
    rate: float = 0.0


_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)


def _kappa(u, tm, ts):
    """V(u) of a neuron at rest that receives a unit current jump at u = 0 (stable for tm ~ ts)."""
    r = 1.0 / ts - 1.0 / tm
    x = r * u
    small = np.abs(x) < 1e-8
    h = np.where(small, 1.0 - x / 2.0, -np.expm1(-np.where(small, 1.0, x)) / np.where(small, 1.0, x))
    return np.exp(-u / tm) * (u / tm) * h


def readout_coefs(tau_m, tau_s, dt, rate=0.0) -> np.ndarray:
    """(4, C) coefficients of the exact per-step integral readout.

    Over step n, from the state (V_n, I_n) at t_n^+ the free solution is
    V(t_n + u) = V_n e^{-u/tau_m} + I_n kappa(u); with the in-step weight
    e^{-rate u} (a + b u/dt) the integral over the step is
    a (P0 V_n + Q0 I_n) + b (P1 V_n + Q1 I_n), where P0, P1 = int e^{-rate u} {1, u/dt} e^{-u/tau_m} du
    and Q0, Q1 = int e^{-rate u} {1, u/dt} kappa(u) du over [0, dt]. The integrands are smooth
    exponentials: 16-point Gauss-Legendre gives them to rounding error.
    """
    tm = np.atleast_1d(np.asarray(tau_m, dtype=np.float64))
    ts = np.atleast_1d(np.asarray(tau_s, dtype=np.float64))
    u = 0.5 * dt * (_GL_X + 1.0)[:, None]
    wq = (0.5 * dt * _GL_W)[:, None] * np.exp(-rate * u)
    em = np.exp(-u / tm[None, :])
    kap = _kappa(u, tm[None, :], ts[None, :])
    lin = u / dt
    return np.stack([(wq * em).sum(0), (wq * lin * em).sum(0), (wq * kap).sum(0), (wq * lin * kap).sum(0)])


def _weight_arrays(weight, B, N, dt, dtype):
    """Per-step (a_n, b_n) of the in-step weight e^{-rate u}(a_n + b_n u/dt), and the rate."""
    if weight is None:
        return np.ones((B, N), dtype=dtype), np.zeros((B, N), dtype=dtype), 0.0
    if not isinstance(weight, ReadoutWeight):
        weight = ReadoutWeight(np.asarray(weight, dtype=np.float64))
    v = np.asarray(weight.values, dtype=np.float64)
    if v.shape not in ((N + 1,), (B, N + 1)):
        raise UserError(f"readout weight: shape {v.shape}, expected w at t_0..t_N: ({N + 1},) or ({B}, {N + 1})")
    if not np.all(np.isfinite(v)) or not np.isfinite(weight.rate):
        raise UserError("readout weight: values and rate must be finite")
    v = np.broadcast_to(v, (B, N + 1))
    a = v[:, :-1]
    b = v[:, 1:] * np.exp(weight.rate * dt) - a
    return np.ascontiguousarray(a, dtype=dtype), np.ascontiguousarray(b, dtype=dtype), float(weight.rate)


@dataclass
class Forward:
    """Result of :func:`forward`: readouts per sample, spike statistics and the tape."""

    spec: NetworkSpec
    batch: SpikeBatch
    integral: np.ndarray  # (B, C) weighted time average (1/T) int_0^T w(t) V(t) dt, exact; LI output
    vmax: np.ndarray  # (B, C) max of V over the grid samples and the kinks (just before spike arrivals); LI output
    tmax: np.ndarray  # (B, C) time of the maximum in ms (first occurrence); LI output
    trace: np.ndarray | None  # (B, N+1, C) V(t_0..t_N) when requested; LI output
    first_spike: np.ndarray  # (B, C) first spike time in ms, inf if none; LIF output
    spike_counts: list[np.ndarray]  # per hidden layer (B, H); then output (B, C)
    grazing: int  # number of spikes whose d was clamped to grazing_eps
    weight: tuple  # (a, b, rate): the in-step weight of the integral readout (see ReadoutWeight)
    bound_hits: int = 0  # set by backward: adjoint values bounded at 1e15 (the gradient is then unreliable)
    # what the backward pass needs (see engine.contract)
    layout: Layout = field(repr=False, default=None)
    net: NetArrays = field(repr=False, default=None)
    inputs: InputSpikes = field(repr=False, default=None)
    readout_weights: ReadoutWeights = field(repr=False, default=None)
    spikes: Tape = field(repr=False, default=None)
    outputs: ForwardOutputs = field(repr=False, default=None)
    backend: str = "cpu"  # the name of the backend that ran it
    backend_impl: object = field(repr=False, default=None)  # the backend object itself (backward runs on it)
    delay_layers: tuple = ()  # hidden layers with axonal delays (params 'delay<l>')

    def counters(self) -> dict[str, int]:
        """What the forward pass did, summed over the batch (names: backend.FORWARD_COUNTERS;
        max_spikes_in_a_step is the maximum): crossing solves, solver iterations, bounds proven
        root-free, solver failures, neurons re-tested after an arrival, spikes, arrivals, and the
        re-tested neurons that passed the necessary test and got a lower bound (bounds)."""
        c = self.outputs.counters
        return {k: int(c[:, i].max() if k.startswith("max_") else c[:, i].sum()) for i, k in enumerate(FORWARD_COUNTERS)}

    @property
    def n_spikes(self) -> np.ndarray:
        """Recorded spikes per sample (hidden and spiking output)."""
        return self.spikes.n.copy()

    def tape(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Spikes of sample b: (step of arrival, global neuron index, d)."""
        t = self.spikes
        n = t.n[b]
        return t.step[b, :n].copy(), t.nid[b, :n].copy(), t.d[b, :n].copy()

    def spike_times(self, b: int) -> np.ndarray:
        """Emission times (ms, sub-step) of the tape's spikes of sample b, in tape order."""
        st, _, _ = self.tape(b)
        return st * self.spec.dt - self.spikes.delta[b, : len(st)].astype(np.float64)

    def hidden_spikes(self, b: int, layer: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Spike times (ms, sub-step) and neuron indices of hidden layer ``layer`` in sample b."""
        st, nid, _ = self.tape(b)
        lo = self.layout.noff[layer]
        hi = lo + self.layout.sizes[layer]
        m = (nid >= lo) & (nid < hi)
        return self.spike_times(b)[m], nid[m] - lo


@dataclass
class ReadoutGrads:
    """dL/dreadout for each readout a loss uses (None = not used)."""

    integral: np.ndarray | None = None  # (B, C)
    vmax: np.ndarray | None = None  # (B, C)
    trace: np.ndarray | None = None  # (B, N+1, C): density dl/dV_k at t_0..t_N of L = int l(V(t), t) dt
    first_spike: np.ndarray | None = None  # (B, C); nonzero for a non-spiking neuron = phantom spike
    spike_counts: list[np.ndarray] | None = None  # per hidden layer (B, H): dL_reg/dn (pseudo-gradient)


def _check_batch(spec: NetworkSpec, batch: SpikeBatch) -> None:
    if not isinstance(batch, SpikeBatch):
        raise UserError(f"forward: expected a SpikeBatch, got {type(batch).__name__}")
    B = batch.ptr.shape[0]
    if batch.ptr.ndim != 2 or batch.ptr.shape[1] != batch.n_steps + 1:
        raise UserError(f"batch.ptr: shape {batch.ptr.shape}, expected (B, n_steps + 1) = ({B}, {batch.n_steps + 1})")
    if abs(batch.dt - spec.dt) > 1e-12 * spec.dt:
        raise UserError(f"batch.dt = {batch.dt} ms differs from the network's dt = {spec.dt} ms")
    if len(batch.units) and (batch.units.min() < 0 or batch.units.max() >= spec.n_in):
        raise UserError(f"batch.units: unit {int(batch.units.max())} out of range; the network has {spec.n_in} inputs")
    if B and (batch.ptr[:, 0].min() < 0 or batch.ptr[:, -1].max() > len(batch.units) or np.any(np.diff(batch.ptr, axis=1) < 0)):
        raise UserError("batch.ptr: must be non-decreasing indices into batch.units")


def forward(
    spec: NetworkSpec,
    params: dict[str, np.ndarray],
    batch: SpikeBatch,
    weight: np.ndarray | None = None,
    trace: bool = False,
    dtype=None,
    max_kinks: bool = True,
    backend=None,
) -> Forward:
    """Simulate a batch and record what the backward pass needs.

    weight: w(t) of the weighted-integral readout: a :class:`ReadoutWeight`, or w at t_0..t_N,
            shape (N+1,) or (B, N+1) (linear in between); default 1.
    trace:  also return the output voltage trace V(t_0..t_N) (needed by per-time losses).
    dtype:  float32 (default: the dtype of the parameters) or float64.
    max_kinks: the max readout also considers the output voltage just before every hidden-spike
            arrival (where a maximum sits when an inhibitory spike turns V down), besides the grid
            samples; needed for an exact max-loss gradient, costs a little time; off: grid only.
    backend: ``cpu``, ``cuda`` or ``auto`` (default: the spec's, ``spec.backend``), or a backend
            object of one's own (``get_backend(name)``); the Forward keeps it for the backward pass.
    """
    check_params(spec, params)
    _check_batch(spec, batch)
    be = backend_for(spec, backend)
    spec = with_param_taus(spec, params)  # learned time constants, if the parameters hold any
    if "delay_in" in params:  # learned input delays are applied when the batch is built
        want = np.rint(np.asarray(params["delay_in"], np.float64) / spec.dt)
        got = None if batch.input_delays is None else np.rint(np.asarray(batch.input_delays) / batch.dt)
        if got is None or got.shape != want.shape or np.any(got != want):
            raise UserError("the batch was not built with the network's input delays: "
                            "make_batch(..., input_delays=params['delay_in'])")
    if dtype is None:
        dtype = np.float64 if all(params[k].dtype == np.float64 for k in spec.param_shapes()) else np.float32
    lay = layout(spec, dtype)
    net = _net_arrays(lay, flatten(spec, params, dtype), hidden_delays(lay, params))
    B, N = batch.ptr.shape[0], batch.n_steps
    w_a, w_b, rate = _weight_arrays(weight, B, N, spec.dt, dtype)
    oo = int(lay.noff[-1])
    coefs = [np.ascontiguousarray(readout_coefs(lay.tau_m[oo:], lay.tau_s[oo:], spec.dt, r), dtype=dtype)
             for r in (rate, 0.0)]
    ro = ReadoutWeights(w_a, w_b, float(np.exp(-rate * spec.dt)), *coefs)
    inp = InputSpikes(np.ascontiguousarray(batch.ptr, dtype=np.int64), np.ascontiguousarray(batch.units, dtype=np.int32))
    tape, fo = be.forward(net, inp, ro, N, float(spec.dt), float(spec.grazing_eps), bool(trace), bool(max_kinks))
    integral = fo.integral * dtype(1.0 / (N * spec.dt)) if N else fo.integral
    counts = fo.counts
    spike_counts = [counts[:, lay.noff[l] : lay.noff[l] + lay.sizes[l]].copy() for l in range(len(lay.sizes))]
    return Forward(
        spec=spec, batch=batch, integral=integral, vmax=fo.vmax, tmax=fo.tmax.astype(np.float64) * spec.dt - fo.mx_delta,
        trace=fo.trace if trace else None, first_spike=fo.fs_time, spike_counts=spike_counts,
        grazing=int(fo.graze.sum()), weight=(w_a, w_b, rate), layout=lay, net=net, inputs=inp, readout_weights=ro,
        spikes=tape, outputs=fo, backend=be.name, backend_impl=be,
        delay_layers=tuple(l for l in range(len(spec.hidden)) if f"delay{l}" in params),
    )


def readout_coef_derivs(tau_m, tau_s, dt, rate=0.0) -> np.ndarray:
    """(2, 4, C): derivatives of :func:`readout_coefs` with respect to tau_m (first) and tau_s,
    by the same quadrature of the differentiated integrands."""
    tm = np.atleast_1d(np.asarray(tau_m, dtype=np.float64))[None, :]
    ts = np.atleast_1d(np.asarray(tau_s, dtype=np.float64))[None, :]
    u = 0.5 * dt * (_GL_X + 1.0)[:, None]
    wq = (0.5 * dt * _GL_W)[:, None] * np.exp(-rate * u)
    lin = u / dt
    from ..neurons.lif import _dprop

    d = np.array([[_dprop(float(x), float(a), float(b)) for a, b in zip(tm[0], ts[0])] for x in u[:, 0]])
    dem, dkm, dks = d[..., 0], d[..., 1], d[..., 2]  # (nodes, C) each
    z = np.zeros(tm.shape[1])
    dm = np.stack([(wq * dem).sum(0), (wq * lin * dem).sum(0), (wq * dkm).sum(0), (wq * lin * dkm).sum(0)])
    ds = np.stack([z, z, (wq * dks).sum(0), (wq * lin * dks).sum(0)])
    return np.stack([dm, ds])


def tau_step_derivatives(lay: Layout, dt: float) -> tuple:
    """Per neuron, the derivatives of the one-step propagator [[e_m, kappa], [0, e_s]] with
    respect to tau_m and tau_s: (de_m/dtau_m, dkappa/dtau_m, dkappa/dtau_s, de_s/dtau_s)."""
    from ..neurons.lif import _dprop

    d = np.array([_dprop(dt, float(tm), float(ts)) for tm, ts in zip(lay.tau_m, lay.tau_s)], dtype=np.float64)
    d = d.reshape(-1, 4)
    return tuple(np.ascontiguousarray(d[:, k], dtype=lay.alpha.dtype) for k in range(4))


def hidden_delays(lay: Layout, params: dict) -> np.ndarray | None:
    """Per neuron (all layers, float64) the axonal delays of ``params['delay<l>']``, or None when
    no hidden layer has any."""
    keys = [f"delay{l}" for l in range(len(lay.sizes) - 1)]
    if not any(k in params for k in keys):
        return None
    d = np.zeros(int(lay.sizes.sum()), np.float64)
    for l, k in enumerate(keys):
        if k in params:
            d[lay.noff[l] : lay.noff[l] + lay.sizes[l]] = np.asarray(params[k], np.float64)
    return d


def _net_arrays(lay: Layout, W: np.ndarray, dly: np.ndarray | None = None) -> NetArrays:
    return NetArrays(W, lay.sizes, lay.noff, lay.ff_off, lay.rec_off, lay.spiking, lay.thr, lay.uni, lay.alpha,
                     lay.beta, lay.cfw, lay.cbw, lay.tau_s, lay.tau_m, lay.model, lay.ada, lay.tau_a, lay.aa, lay.binc,
                     np.zeros(1, np.float64) if dly is None else dly, dly is not None)


def backward(fw: Forward, g: ReadoutGrads, record: int | None = None, taus: bool = False, out_taus: bool = False,
             delays: bool = False):
    """EventProp adjoint pass. Returns dL/dW as a dict shaped like the parameters.

    record: a sample index whose lambda_V / lambda_I traces (shape (N+1, neurons), index m = t_m)
    are also returned as ``(grads, lamV, lamI)``, for analysis.
    taus: also dL/dtau_mem and dL/dtau_syn (per neuron, ms) of every hidden layer, as
    ``tau_mem<l>`` / ``tau_syn<l>`` entries of the dict (docs/method.md, learned time constants);
    out_taus: also of the output layer (``tau_mem<L>``, L = number of hidden layers); not with a
    max readout (the maximum at a kink depends on them explicitly).
    delays: also dL/d(delay) of every network input (ms), as ``delay_in`` (the batch's arrival
    times move with the delays: dL/dt_a = sum_j w_j (lambda_V - lambda_I)_j at each arrival).
    """
    lay, W = fw.layout, fw.net.W
    B, N = fw.batch.ptr.shape[0], fw.batch.n_steps
    C = fw.spec.output.size
    NT = int(lay.sizes.sum())

    def arr(x, shape):
        if x is None:
            return np.zeros(shape, dtype=W.dtype)
        x = np.asarray(x)
        if x.shape != shape:
            raise UserError(f"readout gradient has shape {x.shape}, expected {shape}")
        if not np.all(np.isfinite(x)):
            raise UserError("readout gradient contains NaN or infinite values")
        return np.ascontiguousarray(x, dtype=W.dtype)

    use_trace = g.trace is not None
    reg = np.zeros((B, NT), dtype=W.dtype)
    if g.spike_counts is not None:
        for l, gl in enumerate(g.spike_counts):
            if gl is None:
                continue
            H = int(lay.sizes[l])
            gl = np.broadcast_to(np.asarray(gl, dtype=W.dtype), (B, H))
            reg[:, lay.noff[l] : lay.noff[l] + H] = gl
    gr = ReadoutGradArrays(arr(g.integral, (B, C)), arr(g.vmax, (B, C)),
                           arr(g.trace, (B, N + 1, C)) if use_trace else np.zeros((1, 1, 1), dtype=W.dtype),
                           arr(g.first_spike, (B, C)), reg)
    be = fw.backend_impl if fw.backend_impl is not None else get_backend(fw.backend)  # (a Forward built by hand)
    if out_taus and not taus:
        raise UserError("backward: out_taus needs taus=True")
    if out_taus and g.vmax is not None and np.any(np.asarray(g.vmax) != 0):
        raise UserError("learning the output time constants is not supported with the max readout")
    tau = None
    if taus:
        oo = int(lay.noff[-1])
        rate = fw.weight[2]
        tau = TauRequest(*tau_step_derivatives(lay, fw.spec.dt), bool(out_taus),
                         readout_coef_derivs(lay.tau_m[oo:], lay.tau_s[oo:], fw.spec.dt, rate),
                         readout_coef_derivs(lay.tau_m[oo:], lay.tau_s[oo:], fw.spec.dt, 0.0))
    want = GradRequest(tau, fw.spec.n_in if delays else 0)
    res = be.backward(fw.net, fw.inputs, fw.readout_weights, fw.spikes, fw.outputs, gr, N, 1.0 / (N * fw.spec.dt),
                      use_trace, record, want)
    fw.bound_hits = int(res.hits)
    grads = unflatten(lay, res.dW)
    if delays:
        grads["delay_in"] = res.d_delay_in.astype(W.dtype)
    ddh, dtau = res.d_delay_hidden, res.dtau
    if ddh is not None:  # axonal delays of hidden neurons: their gradients, for the layers that have them
        for l in range(len(lay.sizes) - 1):
            if l in fw.delay_layers:
                o, n = int(lay.noff[l]), int(lay.sizes[l])
                grads[f"delay{l}"] = ddh[o : o + n].astype(W.dtype)
    if taus:
        for l in range(len(lay.sizes) - (0 if out_taus else 1)):
            o, n = int(lay.noff[l]), int(lay.sizes[l])
            grads[f"tau_mem{l}"] = dtau[o : o + n, 0].astype(W.dtype)
            grads[f"tau_syn{l}"] = dtau[o : o + n, 1].astype(W.dtype)
    if record is not None:
        return grads, res.lamV, res.lamI
    return grads


def backend_for(spec: NetworkSpec, name=None):
    """The backend object that runs ``spec`` (``name``, default ``spec.backend``): made once per
    spec and concrete backend and kept on the spec (as its layout is), so that its state (the tape
    capacity it has grown to) carries over from batch to batch without any module-level state.
    A backend object given as ``name`` is used as it is."""
    if name is not None and not isinstance(name, str):
        return name
    key = resolve(spec.backend if name is None else name)
    cache = spec.__dict__.setdefault("_backends", {})
    if key not in cache:
        cache[key] = get_backend(key)
    return cache[key]


def set_threads(n: int | None) -> None:
    """Limit the engine's threads (None: numba's default, all cores)."""
    import numba

    top = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(min(max(int(n or top), 1), top))  # results do not depend on the count


if os.environ.get("EVENTPROP_THREADS"):
    set_threads(int(os.environ["EVENTPROP_THREADS"]))

"""An exact continuous-time, event-driven simulator of the engine's networks (float64; slow, for checks).

Written independently of the engine (no dt grid anywhere): it is the dt -> 0 limit of the
discrete algorithm in eventprop.engine, and finite differences of its loss are the exact
gradient that EventProp is supposed to compute.

Model (per neuron, between events)::

    tau_m dV/dt = -V + I,    tau_s dI/dt = -I

with the analytic solution, s = time since the last event,

    I(s) = I0 e^{-s/tau_s}
    V(s) = V0 e^{-s/tau_m} + I0 tau_s/(tau_m - tau_s) (e^{-s/tau_m} - e^{-s/tau_s})
         = V0 e^{-s/tau_m} + I0 e^{-s/tau_m} (s/tau_m) h(r s),   r = 1/tau_s - 1/tau_m,
           h(x) = (1 - e^{-x}) / x  (h(0) = 1),

the second form being valid (and accurate) also for tau_m == tau_s. Spiking neurons reset V to 0
when V reaches the threshold theta; a spike of neuron i at time s makes the current of each
target j jump by w_ij at s + d_i, d_i >= 0 the neuron's axonal delay (params["delay<l>"], shape
(H_l,), hidden layers only; zero for layers without the entry and for the output, whose spikes go
nowhere). Input spikes do the same with the rows of ff0, without delay.

Delayed spikes: the emission resets the neuron at t_c as always, and the arrival at t_a = t_c + d_i
is an event of its own, kept in a time-ordered queue until then (arrivals at t_a >= T are never
delivered). A spike with d_i == 0 is delivered at its emission, as if there were no queue.

Threshold crossings: between two events V(s) = A e^{-s/tau_m} + B e^{-s/tau_s}, so
e^{s/tau_m} dV/ds = -A/tau_m - (B/tau_s) e^{-r s} is monotone in s: dV/ds has at most one zero,
V at most one interior extremum. Hence, with V(0) < theta on an interval [0, S]:

* V(S) >= theta: exactly one crossing in [0, S] (two crossings would need two extrema);
* V(S) < theta: a crossing exists iff V has an interior maximum s* (dV/ds > 0 at 0, < 0 at S)
  with V(s*) >= theta, and then the crossing is the unique root in [0, s*].

Adaptive LIF ("alif", hidden layers only): a third state A (all states zero at t = 0) with

    tau_a dA/dt = -A,    A(s) = A0 e^{-s/tau_a},

an adaptive threshold (the neuron spikes when V - A reaches theta, i.e. V = theta + A), and at its
spike V -> 0, A -> A + beta (I unchanged; the targets' currents jump as for a LIF spike). beta = 0
is the LIF neuron; LIF layers never take the alif code path. Here g(s) = V(s) - A(s) - theta and

    p(s) = e^{s/tau_m} dg/ds = c0 + c1 e^{-r1 s} + c2 e^{-r2 s},   r1 = 1/tau_s - 1/tau_m,
                                                                    r2 = 1/tau_a - 1/tau_m,
    dp/ds = -I0/(tau_m tau_s) e^{-r1 s} - r2 (A0/tau_a) e^{-r2 s}

(the second line holds for tau_m == tau_s too). dp/ds has at most one zero s_c, in closed form
(none if tau_a == tau_s or tau_a == tau_m: then it has one sign), so dg/ds has at most one zero on
each of [0, s_c] and [s_c, S] (found by brentq on a sign change, evaluated directly, without the
e^{s/tau_m} factor), g at most two interior extrema, and g is monotone between consecutive ones:
the first crossing is the root in the first of these pieces whose right end has g >= 0. (Since
g -> -theta < 0 for s -> inf, g even has at most one up-crossing on [0, inf).) No fallback is
needed for equal time constants, and nearly equal ones only make s_c inaccurate where dp/ds is
~0 anyway. With A0 = 0 (no spike yet, or beta = 0) the LIF routine is used, so beta = 0 gives
the LIF layer's results bit for bit. The cheap LIF pre-filter compares its bound of V with
theta + A0 e^{-S/tau_a} <= theta + A(s) on [0, S], so it never skips a crossing.

Roots are found with scipy.optimize.brentq to ~1e-15 ms. Events are processed in time order:
the next one is the earliest of the next input spike, the earliest pending arrival (first on a
tie with an input) and the earliest threshold crossing before both (an arrival changes the
trajectories, so crossings are searched only up to it). Other exactly simultaneous events
(measure zero) are not treated specially.

Readouts over [0, T] (output layer): the weighted time average (1/T) int w(t) V_k(t) dt for any
number of weight functions, the continuous maximum of V_k and its time, the time average of the
per-time cross-entropy (1/T) int CE(softmax(V(t)), label) dt (Gauss-Legendre quadrature on
pieces of at most ``QUAD_PIECE`` ms of every inter-event interval, where V is smooth), the value
V_k(T), and the first spike time of spiking output neurons (inf if none).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
from scipy.optimize import brentq

QUAD_NODES = 20
QUAD_PIECE = 1.0  # ms
_GL_X, _GL_W = np.polynomial.legendre.leggauss(QUAD_NODES)
_XTOL = 1e-15
_RTOL = 4 * np.finfo(float).eps


def _h(x):
    """(1 - e^{-x}) / x, accurate near 0."""
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < 1e-8
    xs = np.where(small, 1.0, x)
    return np.where(small, 1.0 - x / 2.0, -np.expm1(-xs) / xs)


def propagate(V0, I0, s, tm, ts):
    """State (V, I) after a free evolution of s ms from (V0, I0). Broadcasts."""
    em = np.exp(-s / tm)
    r = 1.0 / ts - 1.0 / tm
    V = V0 * em + I0 * em * (s / tm) * _h(r * s)
    I = I0 * np.exp(-s / ts)
    return V, I


def _hs(x):
    """Scalar (1 - e^{-x}) / x."""
    return 1.0 - x / 2.0 if abs(x) < 1e-8 else -math.expm1(-x) / x


def _v(s, V0, I0, tm, ts):
    """Scalar V(s) (the same formula as propagate, with math instead of numpy: the hot path)."""
    em = math.exp(-s / tm)
    return V0 * em + I0 * em * (s / tm) * _hs((1.0 / ts - 1.0 / tm) * s)


def _dv(s, V0, I0, tm, ts):
    return (I0 * math.exp(-s / ts) - _v(s, V0, I0, tm, ts)) / tm


def v_upper_bound(V0, I0, tm, S):
    """An upper bound of V on [0, S] (vectorised): V0 e^{-s/tm} <= max(V0, 0) and the current's
    contribution I0 kappa(s) with 0 <= kappa(s) <= min(s/tm, 1)."""
    return np.maximum(V0, 0.0) + np.maximum(I0, 0.0) * np.minimum(S / tm, 1.0)


def interior_extremum(V0, I0, tm, ts, S):
    """The time s* in (0, S) where dV/ds changes sign, or None (at most one exists)."""
    d0 = (I0 - V0) / tm
    dS = _dv(S, V0, I0, tm, ts)
    if d0 == 0.0 or dS == 0.0 or (d0 > 0) == (dS > 0):
        return None
    return brentq(_dv, 0.0, S, args=(V0, I0, tm, ts), xtol=_XTOL, rtol=_RTOL, maxiter=500)


def crossing_time(V0, I0, tm, ts, theta, S):
    """First s in [0, S] with V(s) = theta (None if V stays below theta on [0, S])."""
    if V0 >= theta:
        return 0.0
    f = lambda s: _v(s, V0, I0, tm, ts) - theta  # noqa: E731
    if f(S) >= 0.0:
        return brentq(f, 0.0, S, xtol=_XTOL, rtol=_RTOL, maxiter=500)
    if (I0 - V0) <= 0.0:  # not rising at 0: no interior maximum
        return None
    s_star = interior_extremum(V0, I0, tm, ts, S)
    if s_star is None or f(s_star) < 0.0:
        return None
    return brentq(f, 0.0, s_star, xtol=_XTOL, rtol=_RTOL, maxiter=500)


# ---------------------------------------------------------------------- alif neurons
def _g_alif(s, V0, I0, A0, tm, ts, ta, theta):
    """Scalar g(s) = V(s) - A(s) - theta of an alif neuron (>= 0: at or above its threshold)."""
    return _v(s, V0, I0, tm, ts) - A0 * math.exp(-s / ta) - theta


def _dg_alif(s, V0, I0, A0, tm, ts, ta, theta):
    """Scalar dg/ds = dV/ds + A(s)/tau_a (theta unused: the signature of _g_alif, for brentq)."""
    return _dv(s, V0, I0, tm, ts) + A0 / ta * math.exp(-s / ta)


def alif_split(I0, A0, tm, ts, ta, S):
    """The zero s_c in (0, S) of dp/ds, p(s) = e^{s/tm} dg/ds (None if there is none there).

    dp/ds = -k1 e^{-r1 s} - k2 e^{-r2 s} with k1 = I0/(tm ts), k2 = r2 A0/ta (module docstring),
    so -k2/k1 = e^{(r2 - r1) s_c}, r2 - r1 = 1/ta - 1/ts. No zero when k1 or k2 vanishes
    (I0 = 0, A0 = 0, ta == tm) or ta == ts: dp/ds then keeps one sign on all of [0, S].
    """
    k1 = I0 / (tm * ts)
    k2 = (1.0 / ta - 1.0 / tm) * A0 / ta
    d = 1.0 / ta - 1.0 / ts
    if k1 == 0.0 or k2 == 0.0 or d == 0.0:
        return None
    x = -k2 / k1
    if not x > 0.0:
        return None
    s_c = math.log(x) / d
    return s_c if 0.0 < s_c < S else None


def alif_crossing_time(V0, I0, A0, tm, ts, ta, theta, S):
    """First s in [0, S] with V(s) - A(s) = theta for an alif neuron (None if it stays below).

    p = e^{s/tm} dg/ds is monotone on [0, s_c] and on [s_c, S] (alif_split), so dg/ds has at most
    one sign change on each: those are the extrema of g. g is monotone between consecutive knots
    (0, s_c, the extrema, S); with g < 0 at the left end of the first piece, the first piece whose
    right end has g >= 0 holds exactly one root, the first crossing. (Knots that are no extremum,
    such as s_c itself, only split a monotone piece in two and do no harm.)
    A0 == 0 (before the neuron's first spike, or beta = 0) is the LIF case: crossing_time, so that
    an alif layer with beta = 0 gives bit for bit the spikes of the LIF layer.
    """
    if A0 == 0.0:
        return crossing_time(V0, I0, tm, ts, theta, S)
    args = (V0, I0, A0, tm, ts, ta, theta)
    if _g_alif(0.0, *args) >= 0.0:
        return 0.0
    s_c = alif_split(I0, A0, tm, ts, ta, S)
    knots = [0.0, S] if s_c is None else [0.0, s_c, S]
    extrema = []
    for a, b in zip(knots[:-1], knots[1:]):
        da, db = _dg_alif(a, *args), _dg_alif(b, *args)
        if (da > 0.0 and db < 0.0) or (da < 0.0 and db > 0.0):
            extrema.append(brentq(_dg_alif, a, b, args=args, xtol=_XTOL, rtol=_RTOL, maxiter=500))
    edges = sorted(knots + extrema)
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        if _g_alif(b, *args) >= 0.0:  # g(a) < 0: the previous piece ended below threshold
            return brentq(_g_alif, a, b, args=args, xtol=_XTOL, rtol=_RTOL, maxiter=500)
    return None


def _per_neuron(x, n):
    a = np.asarray(x, dtype=np.float64)
    return np.full(n, float(a)) if a.ndim == 0 else a.astype(np.float64).copy()


@dataclass
class SimResult:
    """Everything one exact simulation of one sample yields."""

    integrals: dict  # name -> (C,) (1/T) int_0^T w(t) V_k(t) dt
    vmax: np.ndarray  # (C,) max over [0, T] of V_k
    tmax: np.ndarray  # (C,) time of the maximum
    xent: float  # (1/T) int_0^T CE(softmax(V(t)), label) dt  (nan without a label)
    v_end: np.ndarray  # (C,) V_k(T)
    first_spike: np.ndarray  # (C,) first spike time of a spiking output neuron, inf if none
    spikes: list  # per layer (hidden..., output): list of (time, neuron) in time order
    counts: list  # per layer: (size,) spike counts
    # min over all spikes of tau_m d(V - A)/dt at the crossing: I - theta for LIF neurons,
    # I - theta - A + A tau_m/tau_a for alif ones (A = A just before the spike)
    min_slope: float
    n_events: int = 0
    # what the maximum of V_k sits on: ("smooth",) an interior maximum (dV/dt = 0), ("end",) t = T,
    # ("start",) t = 0, ("input",) an input arrival, ("spike", layer, neuron, occurrence) the
    # arrival of that spike (a kink: V rises before it, falls after it; occurrence counts the
    # neuron's spikes from 0), ("emit", layer, neuron, occurrence) the emission of a delayed spike
    # (V is smooth there: no kink)
    vmax_event: list = field(default_factory=list)
    vmax_slope: np.ndarray | None = None  # (C,) dV_k/dt just before the time of the maximum


class ExactNetwork:
    """The continuous-time network for a given spec (eventprop.network.NetworkSpec) and params."""

    def __init__(self, spec, params):
        self.spec = spec
        layers = list(spec.hidden) + [spec.output]
        self.L = len(spec.hidden)
        self.sizes = [int(ly.size) for ly in layers]
        self.tm = [_per_neuron(ly.tau_mem, ly.size) for ly in layers]
        self.ts = [_per_neuron(ly.tau_syn, ly.size) for ly in layers]
        self.theta = [float(ly.threshold) for ly in layers]
        self.spiking = [True] * self.L + [spec.output.kind == "lif"]
        self.rec = [bool(getattr(h, "recurrent", False)) for h in spec.hidden] + [False]
        # adaptive (alif) hidden layers: tau_a (ms, per neuron) and beta; the output is never alif
        self.alif = [getattr(h, "neuron", "lif") == "alif" for h in spec.hidden] + [False]
        self.ta = [_per_neuron(getattr(ly, "tau_adapt", 100.0), ly.size) if a else None
                   for ly, a in zip(layers, self.alif)]
        self.beta = [float(getattr(ly, "adapt", 0.1)) if a else 0.0 for ly, a in zip(layers, self.alif)]
        # per-neuron axonal delays (ms) of the hidden layers that have a "delay<l>" entry; None: all zero
        params = dict(params)
        self.delay = [None] * (self.L + 1)
        for l in range(self.L):
            d = params.pop(f"delay{l}", None)
            if d is None:
                continue
            d = np.asarray(d, dtype=np.float64)
            assert d.shape == (self.sizes[l],), (f"delay{l}", d.shape, self.sizes[l])
            assert np.all(np.isfinite(d)) and np.all(d >= 0.0), f"delay{l} must be finite and >= 0: {d}"
            self.delay[l] = d
        self.W = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        expected = spec.param_shapes()
        assert set(expected) == set(self.W), (sorted(expected), sorted(self.W))
        for k, shp in expected.items():
            assert self.W[k].shape == shp, (k, self.W[k].shape, shp)

    # ------------------------------------------------------------------ readout helpers
    def _quad(self, t0, t1, V0, I0, weight_fns, T, label, acc):
        """Accumulate the readout integrals of the output layer over [t0, t1]."""
        L = self.L
        tm, ts = self.tm[L], self.ts[L]
        n_pieces = max(1, int(np.ceil((t1 - t0) / QUAD_PIECE - 1e-12)))
        edges = np.linspace(t0, t1, n_pieces + 1)
        half = 0.5 * (edges[1:] - edges[:-1])  # (pieces,)
        t = (edges[:-1, None] + half[:, None] * (_GL_X[None, :] + 1.0)).ravel()  # all nodes
        wq = (half[:, None] * _GL_W[None, :]).ravel()
        Vn, _ = propagate(V0[None, :], I0[None, :], (t - t0)[:, None], tm[None, :], ts[None, :])  # (nodes, C)
        for name, fn in weight_fns.items():
            wt = np.ones_like(t) if fn is None else np.asarray(fn(t, T), dtype=np.float64)
            acc["int"][name] += (wq * wt) @ Vn
        if label is not None:
            m = Vn.max(axis=1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(Vn - m).sum(axis=1))
            acc["xent"] += wq @ (lse - Vn[:, label])

    def _track_max(self, t0, S, V0, I0, acc, end_event):
        """Update the running maximum of each output voltage with the interval [t0, t0 + S].

        end_event says what ends the interval: ("spike", layer, neuron, occurrence) (the arrival
        of that spike), ("emit", layer, neuron, occurrence) (the emission of a delayed spike),
        ("input",) or ("end",). A maximum at the end of an interval that a spike arrival ends is a
        kink of V (the spike's current jump turns V down), not a smooth maximum.
        """
        L = self.L
        cand = np.nonzero(v_upper_bound(V0, I0, self.tm[L], S) > acc["vmax"])[0]
        for k in cand:
            tm, ts = self.tm[L][k], self.ts[L][k]
            vS, iS = propagate(V0[k], I0[k], S, tm, ts)
            cands = [(S, float(vS), end_event, float((iS - vS) / tm))]
            s_star = interior_extremum(V0[k], I0[k], tm, ts, S)
            if s_star is not None:
                cands.append((s_star, _v(s_star, V0[k], I0[k], tm, ts), ("smooth",), 0.0))
            for s, v, ev, slope in cands:
                if v > acc["vmax"][k]:
                    acc["vmax"][k] = v
                    acc["tmax"][k] = t0 + s
                    acc["vmax_event"][k] = ev
                    acc["vmax_slope"][k] = slope

    # ------------------------------------------------------------------ simulation
    def _deliver(self, I, l, i):
        """The arrival of a spike of neuron i of hidden layer l: its targets' currents jump."""
        if l < self.L:
            I[l + 1] += self.W[f"ff{l + 1}"][i]
        if self.rec[l]:
            I[l] += self.W[f"rec{l}"][i]

    def simulate(self, times, units, T, label=None, weight_fns=None, want_max=True, first_output_only=False) -> SimResult:
        """Simulate one sample over [0, T].

        times, units: input spike times (ms) and input units; spikes at t >= T are ignored.
        label: class for the cross-entropy readout (optional; computed only when given).
        weight_fns: name -> w(t, T) (vectorised) or None for w = 1; default {"sum": None}.
        want_max: track the maximum of each output voltage (vmax, tmax, what it sits on).
        first_output_only: spiking output neurons stop after their first spike (all a first-spike
        readout needs; outputs feed nothing back), which saves most of the work when they fire fast.
        """
        weight_fns = {"sum": None} if weight_fns is None else dict(weight_fns)
        L = self.L
        nL = L + 1
        C = self.sizes[L]
        V = [np.zeros(s) for s in self.sizes]
        I = [np.zeros(s) for s in self.sizes]
        A = [np.zeros(s) if self.alif[l] else None for l, s in enumerate(self.sizes)]  # adaptation
        times = np.asarray(times, dtype=np.float64)
        units = np.asarray(units, dtype=np.int64)
        order = np.argsort(times, kind="stable")
        times, units = times[order], units[order]
        keep = times < T
        times, units = times[keep], units[keep]
        spikes = [[] for _ in range(nL)]
        n_sp = [np.zeros(n, dtype=np.int64) for n in self.sizes]
        first = np.full(C, np.inf)
        acc = {"int": {k: np.zeros(C) for k in weight_fns}, "xent": 0.0,
               "vmax": np.zeros(C), "tmax": np.zeros(C),  # V(0) = 0 is a candidate of the max
               "vmax_event": [("start",)] * C, "vmax_slope": np.zeros(C)}
        min_slope = np.inf
        t = 0.0
        q = 0  # next input spike
        pending = []  # heap of the delayed arrivals to come: (t_a, layer, neuron, occurrence)
        n_events = 0
        while True:
            t_in = times[q] if q < len(times) else T
            # the next arrival if it comes no later than the next input (it goes first on a tie)
            arr = pending[0] if pending and pending[0][0] <= t_in else None
            S = (t_in if arr is None else arr[0]) - t
            # earliest threshold crossing before the next input or arrival event
            best = None
            if S > 0:
                for l in range(nL):
                    if not self.spiking[l]:
                        continue
                    # only neurons that can reach threshold before the next input (a cheap bound;
                    # for alif, A decreases between events: theta + A(s) >= theta + A(S) on [0, S])
                    vb = v_upper_bound(V[l], I[l], self.tm[l], S)
                    if self.alif[l]:
                        near = vb >= self.theta[l] + A[l] * np.exp(-S / self.ta[l])
                    else:
                        near = vb >= self.theta[l]
                    if first_output_only and l == L:
                        near &= ~np.isfinite(first)
                    cand = np.nonzero(near)[0]
                    for i in cand:
                        lim = S if best is None else best[0]
                        if lim <= 0.0:
                            continue
                        if self.alif[l]:
                            s = alif_crossing_time(V[l][i], I[l][i], A[l][i], self.tm[l][i], self.ts[l][i],
                                                   self.ta[l][i], self.theta[l], lim)
                        else:
                            s = crossing_time(V[l][i], I[l][i], self.tm[l][i], self.ts[l][i], self.theta[l], lim)
                        if s is not None and (best is None or s < best[0]):
                            best = (s, l, i)
            step = S if best is None else best[0]
            # readouts over [t, t + step] from the output state at t
            if step > 0:
                self._quad(t, t + step, V[L], I[L], weight_fns, T, label, acc)
                if best is not None:
                    delayed = self.delay[best[1]] is not None and self.delay[best[1]][best[2]] != 0.0
                    end_event = ("emit" if delayed else "spike", best[1], best[2], int(n_sp[best[1]][best[2]]))
                elif arr is not None:
                    end_event = ("spike",) + arr[1:]
                else:
                    end_event = ("input",) if q < len(times) else ("end",)
                if want_max:
                    self._track_max(t, step, V[L], I[L], acc, end_event)
                for l in range(nL):
                    V[l], I[l] = propagate(V[l], I[l], step, self.tm[l], self.ts[l])
                    if self.alif[l]:
                        A[l] = A[l] * np.exp(-step / self.ta[l])
            t = t + step
            n_events += 1
            if best is not None:
                _, l, i = best
                if self.alif[l]:
                    a_c = A[l][i]  # tau_m d(V - A)/dt = I - V + A tau_m/tau_a with V = theta + A
                    min_slope = min(min_slope, I[l][i] - self.theta[l] - a_c + a_c * self.tm[l][i] / self.ta[l][i])
                    A[l][i] += self.beta[l]
                else:
                    min_slope = min(min_slope, I[l][i] - self.theta[l])
                V[l][i] = 0.0
                spikes[l].append((t, i))
                occurrence = int(n_sp[l][i])
                n_sp[l][i] += 1
                if l == L and not np.isfinite(first[i]):
                    first[i] = t
                d = 0.0 if self.delay[l] is None else self.delay[l][i]
                if d == 0.0:
                    self._deliver(I, l, i)
                elif t + d < T:  # later arrivals are never delivered
                    heapq.heappush(pending, (t + d, l, i, occurrence))
                continue
            if arr is not None:
                heapq.heappop(pending)
                self._deliver(I, arr[1], arr[2])
                t = arr[0]
                continue
            if q < len(times):
                # every input spike at this time arrives now
                while q < len(times) and times[q] == t_in:
                    I[0] += self.W["ff0"][units[q]]
                    q += 1
                t = t_in
                continue
            break  # reached T
        counts = [np.bincount(np.array([i for _, i in sp], dtype=np.int64), minlength=self.sizes[l])
                  for l, sp in enumerate(spikes)]
        ints = {k: v / T for k, v in acc["int"].items()}
        xent = acc["xent"] / T if label is not None else float("nan")
        return SimResult(ints, acc["vmax"], acc["tmax"], xent, V[L].copy(), first, spikes, counts, min_slope, n_events,
                         acc["vmax_event"], acc["vmax_slope"])


# ---------------------------------------------------------------------- losses
LI_LOSSES = ("xentropy", "sum", "sum_exp", "sum_linear", "sum_sigmoid", "max")
LIF_LOSSES = ("first_spike", "first_spike_inv")


def weight_fns_for(losses):
    """name -> w(t, T) for the integral readouts the given eventprop loss objects need."""
    out = {}
    for loss in losses:
        if loss.readout == "integral":
            out[loss.name] = getattr(loss, "weight_fn", None)
    return out


def loss_from_results(loss, results, labels, T):
    """Batch-mean value of an eventprop.losses loss object on exact readouts.

    Integral, max and first-spike losses reuse the loss object itself (it only reads the
    readout arrays); the time-averaged cross-entropy is computed from the continuous trace.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if loss.readout == "trace":
        return float(np.mean([r.xent for r in results]))
    fw = SimpleNamespace(batch=SimpleNamespace(n_steps=1), spec=SimpleNamespace(dt=float(T)))
    if loss.readout == "integral":
        fw.integral = np.array([r.integrals[loss.name] for r in results])
    elif loss.readout == "vmax":
        fw.vmax = np.array([r.vmax for r in results])
    elif loss.readout == "first_spike":
        fw.first_spike = np.array([r.first_spike for r in results])
    else:
        raise ValueError(f"unsupported readout {loss.readout!r}")
    return float(loss(fw, labels).value)


def simulate_batch(spec, params, samples, T, losses=(), want_max=None, first_output_only=None):
    """Exact simulation of every sample; samples: list of (times, units, label).

    Only the readouts the losses need are computed (the maximum also when ``want_max``)."""
    net = ExactNetwork(spec, params)
    wf = weight_fns_for(losses)
    xent = any(loss.readout == "trace" for loss in losses)
    if want_max is None:
        want_max = any(loss.readout == "vmax" for loss in losses)
    first_only = first_output_only
    if first_only is None:
        first_only = bool(losses) and all(loss.readout == "first_spike" for loss in losses)
    return [net.simulate(t, u, T, label=lab if xent else None, weight_fns=wf, want_max=want_max,
                         first_output_only=first_only) for (t, u, lab) in samples]


def loss_values(spec, params, samples, T, losses, want_max=None, first_output_only=None):
    """name -> batch-mean loss for each loss object, from one exact simulation per sample."""
    res = simulate_batch(spec, params, samples, T, losses, want_max, first_output_only)
    labels = [s[2] for s in samples]
    return {loss.name: loss_from_results(loss, res, labels, T) for loss in losses}, res


def loss_value(spec, params, samples, T, loss):
    """Batch-mean value of one loss (an eventprop.losses object) under the exact dynamics."""
    return loss_values(spec, params, samples, T, [loss])[0][loss.name]


# ---------------------------------------------------------------------- finite differences
def _signature(results):
    """What must not change between w + h and w - h: every neuron's spike count."""
    return [tuple(tuple(int(x) for x in c) for c in r.counts) for r in results]


@dataclass
class FDResult:
    grads: dict  # loss name -> dict like params
    base_values: dict  # loss name -> value at params
    base_results: list  # SimResult per sample at params
    unstable: list  # (param name, index) whose +-h changed a spike count (or the argmax time)
    extra: dict = field(default_factory=dict)  # name -> grads of extra functionals


def fd_gradients(spec, params, samples, T, losses, h=1e-5, extra_fns=None, keys=None):
    """Central differences of every loss (and of optional extra functionals
    f(results) -> float) with respect to every entry of params (weights and any "delay<l>"
    arrays), from 2 simulations per entry; keys: only these params (default all; the others'
    grads stay 0).

    A delay below h (typically 0) cannot go to d - h: it gets the one-sided second-order
    difference (4 f(d + h) - f(d + 2h) - 3 f(d)) / (2h), the derivative from the right.
    """
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    keys = list(params) if keys is None else list(keys)
    extra_fns = extra_fns or {}
    base_vals, base_res = loss_values(spec, params, samples, T, losses, want_max=True, first_output_only=False)
    base_extra = {name: f(base_res) for name, f in extra_fns.items()}
    sig0 = _signature(base_res)
    tmax0 = np.array([r.tmax for r in base_res])
    grads = {loss.name: {k: np.zeros_like(v) for k, v in params.items()} for loss in losses}
    eg = {name: {k: np.zeros_like(v) for k, v in params.items()} for name in extra_fns}
    unstable = []
    for k in keys:
        for idx in np.ndindex(params[k].shape):
            vals = []
            evals = []
            ok = True
            one_sided = k.startswith("delay") and params[k][idx] < h  # a delay must stay >= 0
            for step in ((h, 2 * h) if one_sided else (h, -h)):
                p2 = {kk: vv.copy() for kk, vv in params.items()}
                p2[k][idx] += step
                v, res = loss_values(spec, p2, samples, T, losses, want_max=True, first_output_only=False)
                if _signature(res) != sig0:
                    ok = False
                if spec.output.kind == "li" and np.max(np.abs(np.array([r.tmax for r in res]) - tmax0)) > 1e-3:
                    ok = False  # the maximum jumped to another local maximum
                vals.append(v)
                evals.append({name: f(res) for name, f in extra_fns.items()})
            if not ok:
                unstable.append((k, idx))
            if one_sided:
                diff = lambda f1, f2, f0: (4.0 * f1 - f2 - 3.0 * f0) / (2 * h)  # noqa: E731
            else:
                diff = lambda f1, f2, f0: (f1 - f2) / (2 * h)  # noqa: E731
            for loss in losses:
                grads[loss.name][k][idx] = diff(vals[0][loss.name], vals[1][loss.name], base_vals[loss.name])
            for name in extra_fns:
                eg[name][k][idx] = diff(evals[0][name], evals[1][name], base_extra[name])
    return FDResult(grads, base_vals, base_res, unstable, eg)

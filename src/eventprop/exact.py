"""An exact continuous-time, event-driven simulator of the engine's networks (float64; slow, for checks).

Written independently of the engine (no dt grid anywhere): it is the dt -> 0 limit of the
discrete algorithm in eventprop/engine.py, and finite differences of its loss are the exact
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
target j jump by w_ij at the same time s (zero transmission delay). Input spikes do the same
with the rows of ff0.

Threshold crossings: between two events V(s) = A e^{-s/tau_m} + B e^{-s/tau_s}, so
e^{s/tau_m} dV/ds = -A/tau_m - (B/tau_s) e^{-r s} is monotone in s: dV/ds has at most one zero,
V at most one interior extremum. Hence, with V(0) < theta on an interval [0, S]:

* V(S) >= theta: exactly one crossing in [0, S] (two crossings would need two extrema);
* V(S) < theta: a crossing exists iff V has an interior maximum s* (dV/ds > 0 at 0, < 0 at S)
  with V(s*) >= theta, and then the crossing is the unique root in [0, s*].

Roots are found with scipy.optimize.brentq to ~1e-15 ms. Events are processed in time order;
exactly simultaneous events (measure zero) are not treated specially.

Readouts over [0, T] (output layer): the weighted time average (1/T) int w(t) V_k(t) dt for any
number of weight functions, the continuous maximum of V_k and its time, the time average of the
per-time cross-entropy (1/T) int CE(softmax(V(t)), label) dt (Gauss-Legendre quadrature on
pieces of at most ``QUAD_PIECE`` ms of every inter-event interval, where V is smooth), the value
V_k(T), and the first spike time of spiking output neurons (inf if none).
"""

from __future__ import annotations

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
    min_slope: float  # min over all spikes of tau_m dV/dt at the crossing (= I - theta)
    n_events: int = 0
    # what the maximum of V_k sits on: ("smooth",) an interior maximum (dV/dt = 0), ("end",) t = T,
    # ("start",) t = 0, ("input",) an input arrival, ("spike", layer, neuron, occurrence) the
    # arrival of that spike (a kink: V rises before it, falls after it)
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

        end_event says what ends the interval: ("spike", layer, neuron, occurrence), ("input",)
        or ("end",). A maximum at the end of an interval that a spike ends is a kink of V
        (the spike's current jump turns V down), not a smooth maximum.
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
        n_events = 0
        while True:
            t_in = times[q] if q < len(times) else T
            S = t_in - t
            # earliest threshold crossing before the next input event
            best = None
            if S > 0:
                for l in range(nL):
                    if not self.spiking[l]:
                        continue
                    # only neurons that can reach threshold before the next input (a cheap bound)
                    near = v_upper_bound(V[l], I[l], self.tm[l], S) >= self.theta[l]
                    if first_output_only and l == L:
                        near &= ~np.isfinite(first)
                    cand = np.nonzero(near)[0]
                    for i in cand:
                        lim = S if best is None else best[0]
                        if lim <= 0.0:
                            continue
                        s = crossing_time(V[l][i], I[l][i], self.tm[l][i], self.ts[l][i], self.theta[l], lim)
                        if s is not None and (best is None or s < best[0]):
                            best = (s, l, i)
            step = S if best is None else best[0]
            # readouts over [t, t + step] from the output state at t
            if step > 0:
                self._quad(t, t + step, V[L], I[L], weight_fns, T, label, acc)
                if best is not None:
                    end_event = ("spike", best[1], best[2], int(n_sp[best[1]][best[2]]))
                else:
                    end_event = ("input",) if q < len(times) else ("end",)
                if want_max:
                    self._track_max(t, step, V[L], I[L], acc, end_event)
                for l in range(nL):
                    V[l], I[l] = propagate(V[l], I[l], step, self.tm[l], self.ts[l])
            t = t + step
            n_events += 1
            if best is not None:
                _, l, i = best
                min_slope = min(min_slope, I[l][i] - self.theta[l])
                V[l][i] = 0.0
                spikes[l].append((t, i))
                n_sp[l][i] += 1
                if l == L and not np.isfinite(first[i]):
                    first[i] = t
                if l < L:
                    I[l + 1] += self.W[f"ff{l + 1}"][i]
                if self.rec[l]:
                    I[l] += self.W[f"rec{l}"][i]
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


def fd_gradients(spec, params, samples, T, losses, h=1e-5, extra_fns=None):
    """Central differences of every loss (and of optional extra functionals
    f(results) -> float) with respect to every weight, from 2 simulations per weight."""
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    extra_fns = extra_fns or {}
    base_vals, base_res = loss_values(spec, params, samples, T, losses, want_max=True, first_output_only=False)
    sig0 = _signature(base_res)
    tmax0 = np.array([r.tmax for r in base_res])
    grads = {loss.name: {k: np.zeros_like(v) for k, v in params.items()} for loss in losses}
    eg = {name: {k: np.zeros_like(v) for k, v in params.items()} for name in extra_fns}
    unstable = []
    for k, P in params.items():
        for idx in np.ndindex(P.shape):
            vals = []
            evals = []
            ok = True
            for sgn in (1.0, -1.0):
                p2 = {kk: vv.copy() for kk, vv in params.items()}
                p2[k][idx] += sgn * h
                v, res = loss_values(spec, p2, samples, T, losses, want_max=True, first_output_only=False)
                if _signature(res) != sig0:
                    ok = False
                if spec.output.kind == "li" and np.max(np.abs(np.array([r.tmax for r in res]) - tmax0)) > 1e-3:
                    ok = False  # the maximum jumped to another local maximum
                vals.append(v)
                evals.append({name: f(res) for name, f in extra_fns.items()})
            if not ok:
                unstable.append((k, idx))
            for loss in losses:
                grads[loss.name][k][idx] = (vals[0][loss.name] - vals[1][loss.name]) / (2 * h)
            for name in extra_fns:
                eg[name][k][idx] = (evals[0][name] - evals[1][name]) / (2 * h)
    return FDResult(grads, base_vals, base_res, unstable, eg)

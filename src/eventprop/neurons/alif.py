"""The adaptive LIF neuron's pieces (used by the CPU kernels, eventprop._kernels).

Model (docs/method.md, "Neuron models"): state (V, I, A), between events

    tau_m dV/dt = -V + I,    tau_s dI/dt = -I,    tau_a dA/dt = -A,

a spike when V - A reaches theta from below (an adaptive threshold theta + A), and at the spike
V -> 0, A -> A + beta (I unchanged). With beta = 0 it is the LIF neuron. The event function is
g = V - A - theta; tau_m dg/dt just before a spike, D = I - theta - A + A tau_m / tau_a, takes the
place of the LIF's I - theta everywhere (the tape stores it, floored as for LIF, and A at the spike).

Adjoint (lambda_V = -p_V / tau_m as for LIF, and lambda_A = -p_A / tau_m with p the costate):
between events lambda_A decays backward with e^{-s/tau_a} and is coupled to nothing; at a spike,
with the adjoints just after it and Y the LIF's feedback and readout terms,

    lambda_V^- - lambda_V^+ = ((theta + A (1 - tau_m / tau_a)) lambda_V^+ - (tau_m beta / tau_a) lambda_A^+ + Y) / D
    lambda_A^- = lambda_A^+ - lambda_V^-

(the general jump of a hybrid system's costate with event function g and jump map V+ = 0,
A+ = A + beta; theta + A (1 - tau_m / tau_a) = I - D; with A = 0, beta = 0 the first line is the
LIF's jump (theta lambda_V + Y) / (I - theta)).

The crossing inside a step follows the LIF rule (eventprop.neurons.lif._first_crossing) with g in
place of V - theta: already above; above at the end (the root); or rising at the start and falling
at the end with a maximum above threshold (the root before the maximum).
"""

import numpy as np
from numba import njit

from .lif import _kap, _kap_e


@njit(cache=True, inline="always")
def count_near(V, I, A, th, qm):
    """How many neurons of a block may have reached the adaptive threshold th + A during the step
    (the LIF block test, eventprop.neurons.lif._count_near, on V - A)."""
    c = 0
    for j in range(V.shape[0]):
        v = V[j]
        c += v - A[j] + qm[j] * max(v - I[j], 0.0) >= th
    return c


@njit(cache=True)
def g_and_slope(u, v, i, a, th, tm, ts, ta):
    """g(u) = V(u) - A(u) - theta on the free trajectory from (v, i, a) at u = 0 (u may be negative),
    and tau-free slope dg/du."""
    em = np.exp(-u / tm)
    es = np.exp(-u / ts)
    V = v * em + i * _kap_e(u, tm, ts, em, es)
    A = a * np.exp(-u / ta)
    return V - A - th, (i * es - V) / tm + A / ta


@njit(cache=True)
def _root(lo, hi, glo, ghi, v, i, a, th, tm, ts, ta):
    """The u in [lo, hi] with g(u) = 0, given g(lo) < 0 <= g(hi): Newton steps inside a bracket that
    shrinks with every evaluation (bisection when a step leaves it)."""
    width = hi - lo
    x = lo + width * (-glo) / (ghi - glo) if ghi > glo else 0.5 * (lo + hi)
    for _ in range(100):
        gx, dg = g_and_slope(x, v, i, a, th, tm, ts, ta)
        if gx >= 0.0:
            hi = x
        else:
            lo = x
        if gx == 0.0 or hi - lo <= 1e-15 * width:
            break
        xn = x - gx / dg if dg > 0.0 else -1.0
        if not (lo < xn < hi):
            xn = 0.5 * (lo + hi)
        if abs(xn - x) <= 1e-14 * width:
            x = xn
            break
        x = xn
    return x


@njit(cache=True)
def first_crossing(v, i, a, th, tm, ts, ta, span):
    """First u in [0, span] at which the free trajectory from (V, I, A) = (v, i, a) reaches
    V - A = theta; -1 if none (float64 whatever the engine's dtype)."""
    v = float(v)
    i = float(i)
    a = float(a)
    th = float(th)
    tm = float(tm)
    ts = float(ts)
    ta = float(ta)
    span = float(span)
    g0, d0 = g_and_slope(0.0, v, i, a, th, tm, ts, ta)
    if g0 >= 0.0:
        return 0.0
    g1, d1 = g_and_slope(span, v, i, a, th, tm, ts, ta)
    if g1 >= 0.0:
        return _root(0.0, span, g0, g1, v, i, a, th, tm, ts, ta)
    if not (d0 > 0.0 and d1 < 0.0):
        return -1.0  # not rising at the start or not falling at the end: no maximum inside
    lo = 0.0
    hi = span
    for _ in range(60):  # the maximum: where the slope changes sign
        mid = 0.5 * (lo + hi)
        if g_and_slope(mid, v, i, a, th, tm, ts, ta)[1] > 0.0:
            lo = mid
        else:
            hi = mid
    us = 0.5 * (lo + hi)
    gs = g_and_slope(us, v, i, a, th, tm, ts, ta)[0]
    if gs < 0.0:
        return -1.0
    return _root(0.0, us, g0, gs, v, i, a, th, tm, ts, ta)


@njit(cache=True)
def sliver_crossing(v, i, a, th, tm, ts, ta, smax):
    """For a neuron pushed to V - A >= theta at grid time t by spikes emitted up to smax before t: the
    s in [0, smax] at which its trajectory (free evolution backward from (v, i, a)) crossed."""
    v = float(v)
    i = float(i)
    a = float(a)
    th = float(th)
    tm = float(tm)
    ts = float(ts)
    ta = float(ta)
    if g_and_slope(0.0, v, i, a, th, tm, ts, ta)[0] < 0.0:
        return 0.0
    if g_and_slope(-smax, v, i, a, th, tm, ts, ta)[0] >= 0.0:
        return smax
    lo = 0.0
    hi = smax
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if g_and_slope(-mid, v, i, a, th, tm, ts, ta)[0] >= 0.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@njit(cache=True, inline="always")
def slope_at_spike(ic, ac, th, tm, ta):
    """D = tau_m d(V - A)/dt just before a spike with current ic and adaptation ac (V = theta + ac)."""
    return ic - th - ac + ac * tm / ta


@njit(cache=True, inline="always")
def adjoint_jump(lvp, lap, ac, d, y, th, tm, ta, beta):
    """The jumps of (lambda_V, lambda_A) at the spike, from their values just after it (lvp, lap),
    A just before it (ac), the tape's D and the feedback y (module docstring)."""
    jv = ((th + ac * (1.0 - tm / ta)) * lvp - (tm * beta / ta) * lap + y) / d
    return jv, -(lvp + jv)

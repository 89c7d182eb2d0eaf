"""The adaptive LIF neuron's pieces (used by the CPU kernels, eventprop.engine._kernels).

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

The crossing after an event is the first root of g on the rest of the step, found exactly
(``first_crossing``: g is split at its extrema, at most two, into monotone pieces); since A only
decays between the neuron's own spikes, V must reach theta + min(A) first, and the kernels use
the LIF tests with that threshold to rule most neurons out cheaply.
"""

import math

import numpy as np
from numba import njit

from .lif import _kap, _kap_e


@njit(cache=True)
def g_and_slope(u, v, i, a, th, tm, ts, ta):
    """g(u) = V(u) - A(u) - theta on the free trajectory from (v, i, a) at u = 0 (u may be negative),
    and tau-free slope dg/du."""
    em = math.exp(-u / tm)
    es = math.exp(-u / ts)
    V = v * em + i * _kap_e(u, tm, ts, em, es)
    A = a * math.exp(-u / ta)
    return V - A - th, (i * es - V) / tm + A / ta


@njit(cache=True)
def _root(lo, hi, glo, ghi, v, i, a, th, tm, ts, ta, cnt):
    """The u in [lo, hi] with g(u) = 0, given g(lo) < 0 <= g(hi) and one sign change of g there:
    Newton steps inside a bracket that shrinks with every evaluation (bisection when a step leaves
    it). cnt as lif._crossing."""
    cnt[0] += 1
    width = hi - lo
    x = lo + width * (-glo) / (ghi - glo) if ghi > glo else 0.5 * (lo + hi)
    tol = 1e-12 * width
    for it in range(1, 101):
        gx, dg = g_and_slope(x, v, i, a, th, tm, ts, ta)
        if gx >= 0.0:
            hi = x
        else:
            lo = x
        xn = x - gx / dg if dg > 0.0 else -1.0
        if not (lo <= xn <= hi):
            xn = 0.5 * (lo + hi)
        if gx == 0.0 or abs(xn - x) <= tol or hi - lo <= tol:
            cnt[1] += it
            return min(max(xn, lo), hi) if gx != 0.0 else x
        x = xn
    cnt[1] += 100
    cnt[3] += 1
    return hi


@njit(cache=True)
def _slope_zero(lo, hi, v, i, a, th, tm, ts, ta):
    """The u in (lo, hi) where dg/du changes sign (dg/du has one sign change there): bisection."""
    slo = g_and_slope(lo, v, i, a, th, tm, ts, ta)[1] > 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if (g_and_slope(mid, v, i, a, th, tm, ts, ta)[1] > 0.0) == slo:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@njit(cache=True)
def first_crossing(v, i, a, th, tm, ts, ta, span, cnt):
    """First u in [0, span] at which the free trajectory from (V, I, A) = (v, i, a) reaches
    V - A = theta; -1 if none (proven), float64 whatever the engine's dtype.

    g = V - A - theta is a sum of three exponentials and can have two extrema in a span. With
    p(u) = e^{u/tau_m} dg/du, dp/du = -k1 e^{-u/tau_s} - k2 e^{-u/tau_a} (k1 = i/(tau_m tau_s),
    k2 = (1/tau_a - 1/tau_m) a/tau_a) has at most one zero u_c, so dg/du has at most one sign
    change on [0, u_c] and on [u_c, span]: the extrema of g. Between consecutive knots (0, u_c,
    the extrema, span) g is monotone, and the first piece whose right end has g >= 0 holds the
    first crossing, a single sign change for the bracketed Newton of _root."""
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
    k1 = i / (tm * ts)
    k2 = (1.0 / ta - 1.0 / tm) * a / ta
    dd = 1.0 / ta - 1.0 / ts
    uc = -1.0
    if k1 != 0.0 and k2 != 0.0 and dd != 0.0 and -k2 / k1 > 0.0:
        uc = math.log(-k2 / k1) / dd
        if not 0.0 < uc < span:
            uc = -1.0
    # the pieces in order: [0, uc] and [uc, span] (or [0, span]), each split at its slope zero;
    # knots x > lo in turn: the first with g(x) >= 0 closes the bracket [lo, x]
    lo = 0.0  # left end of the current piece
    glo = g0
    e0 = 0.0  # left end of the current segment, and g's slope there
    se = d0
    for q in range(2):
        if q == 1 and uc <= 0.0:
            break
        hi = uc if (q == 0 and uc > 0.0) else span
        ghi, shi = g_and_slope(hi, v, i, a, th, tm, ts, ta)
        z = -1.0
        if (se > 0.0 and shi < 0.0) or (se < 0.0 and shi > 0.0):
            z = _slope_zero(e0, hi, v, i, a, th, tm, ts, ta)
        for k in range(2):
            x = z if k == 0 else hi
            if x > lo:
                gx = g_and_slope(x, v, i, a, th, tm, ts, ta)[0] if k == 0 else ghi
                if gx >= 0.0:
                    return _root(lo, x, glo, gx, v, i, a, th, tm, ts, ta, cnt)
                lo = x
                glo = gx
        e0 = hi
        se = shi
    cnt[2] += 1
    return -1.0


# ---- the model interface (eventprop.neurons.hooks; the same names and arguments as lif's)

ADAPTS = True  # has the threshold-adaptation state A (the kernels decay it, jump it by beta, tape it)


@njit(cache=True)
def crossing(v, i, a, v1, i1, th, tm, ts, ta, span, cnt):
    """``first_crossing`` (the end state v1, i1 is not needed)."""
    return first_crossing(v, i, a, th, tm, ts, ta, span, cnt)


@njit(cache=True, inline="always")
def level_at_spike(th, ac):
    """V just before the reset: theta + A."""
    return th + ac


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

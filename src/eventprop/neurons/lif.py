"""The LIF neuron's pieces (used by the CPU kernels, eventprop._kernels).

Model: tau_m dV/dt = -V + I, tau_s dI/dt = -I between events; a spike when V reaches theta from
below, then V -> 0 (I unchanged); every input or spike arrival makes I jump by its weight.

* propagator: e^{-u/tau_m}, e^{-u/tau_s} and kappa(u) (V at u after a unit current jump at rest)
  (``_kap``, ``_kap_e``, ``_kap_area``; per-neuron rows ``_decay_rows``/``_rates``);
* its derivatives in tau_m, tau_s, for learned time constants (``_dprop``, ``_dprop_r``);
* the threshold crossing inside a step (``_count_near`` block test, ``_first_crossing`` with
  ``_peak`` and ``_crossing``) and before a grid time (``_sliver_crossing``);
* the slope at a spike, d = tau_m dV/dt = I - theta (``slope_at_spike``), and the adjoint jump of
  lambda_V there, (theta lambda_V + feedback) / d (``adjoint_jump``); the reset V -> 0 is the
  kernels' (shared with eventprop.neurons.alif, which reduces to these with no adaptation).
"""

import numpy as np
from numba import njit

NEWTON_STEPS = 6  # at most this many refinements of a crossing time inside its step (see _crossing)


@njit(cache=True, inline="always")
def _kap(delta, tm, ts):
    """V at delta after a unit current jump into a neuron at rest (tau_m dV/dt = -V + I), in float64:
    e^{-delta/tm} (delta/tm) h(x), h(x) = (1 - e^{-x})/x, x = (1/ts - 1/tm) delta (no cancellation
    for small delta or tm ~ ts; valid for negative delta too)."""
    d = float(delta)
    tm = float(tm)
    ts = float(ts)
    x = (1.0 / ts - 1.0 / tm) * d
    h = 1.0 - 0.5 * x if abs(x) < 1e-8 else -np.expm1(-x) / x
    return np.exp(-d / tm) * (d / tm) * h


@njit(cache=True, inline="always")
def _kap_e(delta, tm, ts, em, es):
    """_kap(delta) from em = e^{-delta/tm} and es = e^{-delta/ts} (no further exp) when that is
    accurate, i.e. unless (1/ts - 1/tm) delta is tiny."""
    x = (1.0 / ts - 1.0 / tm) * delta
    if abs(x) > 1e-3:
        return ts / (tm - ts) * (em - es)
    return _kap(delta, tm, ts)


@njit(cache=True, inline="always")
def _kap_area(delta, tm, ts):
    """int_0^delta _kap(u) du = tau_s (1 - e^{-delta/tau_s}) - tau_m _kap(delta)."""
    return -float(ts) * np.expm1(-float(delta) / float(ts)) - float(tm) * _kap(delta, tm, ts)


@njit(cache=True)
def _dprop(h, tm, ts):
    """Derivatives of the propagator over h, Phi = [[e_m, kappa], [0, e_s]], with respect to tau_m
    and tau_s: (de_m/dtau_m, dkappa/dtau_m, dkappa/dtau_s, de_s/dtau_s), from
    kappa = e^{-h/tm} (h/tm) h(x), x = (1/ts - 1/tm) h (no cancellation for tm ~ ts)."""
    h = float(h)
    tm = float(tm)
    ts = float(ts)
    return _dprop_r(h, 1.0 / tm, 1.0 / ts, np.exp(-h / tm), np.exp(-h / ts), _kap(h, tm, ts))


@njit(cache=True)
def _decay_rows(ea, eb, ek, po, S, tau_m, tau_s, rt, delta):
    """ea[j] = e^{-delta/tau_m,j}, eb[j] = e^{-delta/tau_s,j}, ek[j] = kappa_j(delta) for neurons
    po..po+S-1 (rt: _rates). The exponentials by scaling and squaring a degree-9 Taylor
    polynomial (relative error below 1e-14): plain arithmetic over the row, which the compiler
    vectorises, instead of 2 S calls of exp; kappa from them, exactly (as _kap_e) where
    (1/tau_s - 1/tau_m) delta is tiny."""
    _vexp_neg(ea, po, S, delta, rt[0])
    _vexp_neg(eb, po, S, delta, rt[1])
    small = np.inf
    for j in range(po, po + S):
        ek[j] = rt[2, j] * (ea[j] - eb[j])
        small = min(small, abs(rt[3, j]))
    if small * delta <= 1e-3:  # rare: tau_m ~ tau_s, or a tiny delta
        for j in range(po, po + S):
            if abs(rt[3, j] * delta) <= 1e-3:
                ek[j] = _kap(delta, tau_m[j], tau_s[j])


@njit(cache=True)
def _rates(tau_m, tau_s):
    """Per-neuron constants of the non-uniform paths: 1/tau_m, 1/tau_s, tau_s/(tau_m - tau_s),
    1/tau_s - 1/tau_m, tau_m/tau_s."""
    NT = tau_m.shape[0]
    rt = np.empty((5, NT), dtype=np.float64)
    for j in range(NT):
        tm = float(tau_m[j])
        ts = float(tau_s[j])
        rt[0, j] = 1.0 / tm
        rt[1, j] = 1.0 / ts
        rt[2, j] = ts / (tm - ts) if tm != ts else 0.0
        rt[3, j] = 1.0 / ts - 1.0 / tm
        rt[4, j] = tm / ts
    return rt


@njit(cache=True, inline="always")
def _vexp_neg(out, lo, n, s, rate):
    m = 0.0
    for j in range(n):
        m = max(m, s * rate[lo + j])
    k = 0
    f = -s
    while m > 0.125:
        m *= 0.5
        f *= 0.5
        k += 1
    for j in range(n):
        z = f * rate[lo + j]
        out[lo + j] = 1.0 + z * (1.0 + z * (0.5 + z * (1.0 / 6.0 + z * (1.0 / 24.0 + z * (1.0 / 120.0 + z * (
            1.0 / 720.0 + z * (1.0 / 5040.0 + z * (1.0 / 40320.0 + z * (1.0 / 362880.0)))))))))
    for _ in range(k):
        for j in range(n):
            out[lo + j] *= out[lo + j]


@njit(cache=True, inline="always")
def _dh_e(x, emx):
    """h'(x) for h(x) = (1 - e^{-x})/x, given emx = e^{-x}: series below |x| = 0.05."""
    if abs(x) < 0.05:
        return -0.5 + x * (1.0 / 3.0 + x * (-0.125 + x * (1.0 / 30.0 + x * (-1.0 / 144.0 + x / 840.0))))
    return (emx * (1.0 + x) - 1.0) / (x * x)


@njit(cache=True, inline="always")
def _dprop_r(h, rm, rs, em, es, kap):
    """_dprop from the rates rm = 1/tau_m, rs = 1/tau_s, the decays em = e^{-h rm}, es = e^{-h rs}
    and kap = kappa(h) (no further exp, no division but es/em)."""
    g = em * (h * rm) * _dh_e((rs - rm) * h, es / em)
    dem = h * rm * rm * em
    dkm = kap * (h * rm * rm - rm) + g * h * rm * rm
    dks = -g * h * rs * rs
    des = h * rs * rs * es
    return dem, dkm, dks, des


@njit(cache=True, inline="always")
def _count_near(V, I, th, qm):
    """How many neurons of a block may have reached th during the step: V >= th now, or V falling at
    the end of the step (I < V) and close enough below th to have peaked above it inside the step
    (qm = 2 dt/tau_m: twice the excursion tau_m dV/dt can give over one step)."""
    c = 0
    for j in range(V.shape[0]):
        v = V[j]
        c += v + qm[j] * max(v - I[j], 0.0) >= th
    return c


@njit(cache=True)
def _peak(v0, i0, tm, ts, ub):
    """The time in (0, ub) where dV/du = 0, for a trajectory rising at 0 and falling at ub: closed form
    V(u) = (v0 + c i0) e^{-u/tm} - c i0 e^{-u/ts}, c = ts / (tm - ts); bisection when tm ~ ts."""
    if abs(tm - ts) > 1e-6 * tm:
        c = ts / (tm - ts)
        x = (v0 + c * i0) * ts / (c * i0 * tm)
        if x > 0.0:
            u = np.log(x) / (1.0 / ts - 1.0 / tm)
            if 0.0 <= u <= ub:
                return u
    lo = 0.0
    hi = ub
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if i0 * np.exp(-mid / ts) - (v0 * np.exp(-mid / tm) + i0 * _kap(mid, tm, ts)) > 0.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@njit(cache=True)
def _crossing(v0, i0, v1, th, tm, ts, dt, m1):
    """Time u in [0, dt] after t_n at which V(t_n + u) = v0 e^{-u/tm} + i0 kappa(u) reaches th, given
    V(t_n) = v0 < th <= V(t_n + dt) = v1 and the slope dV/du = m1 at dt: the root of the cubic
    Hermite interpolant of V (values and slopes at both ends; error O(dt^4)) as the starting
    point, then Newton steps on the exact trajectory (tau_m dV/du = I - V), which converge to
    rounding error, usually in one or two. (dt may also be the time of an interior maximum, m1 = 0,
    for a crossing that the grid does not see.) Computed in float64 whatever the engine's dtype."""
    v0 = float(v0)
    i0 = float(i0)
    th = float(th)
    tm = float(tm)
    ts = float(ts)
    dt = float(dt)
    v1 = float(v1)
    frac = (th - v0) / (v1 - v0)
    if not frac >= 0.0:  # also catches NaN from 0/0
        return 0.0
    if frac > 1.0:
        frac = 1.0
    # Hermite cubic p(s), s = u/dt: Newton on the polynomial from the linear guess (no exps)
    a0 = dt * (i0 - v0) / tm
    a1 = dt * float(m1)
    x = frac
    for _ in range(3):
        x2 = x * x
        x3 = x2 * x
        p = (2 * x3 - 3 * x2 + 1) * v0 + (x3 - 2 * x2 + x) * a0 + (3 * x2 - 2 * x3) * v1 + (x3 - x2) * a1 - th
        dp = (6 * x2 - 6 * x) * v0 + (3 * x2 - 4 * x + 1) * a0 + (6 * x - 6 * x2) * v1 + (3 * x2 - 2 * x) * a1
        if not dp > 0.0:
            x = frac
            break
        x = x - p / dp
        if not 0.0 <= x <= 1.0:
            x = frac
            break
    u = x * dt
    for _ in range(NEWTON_STEPS):
        em = np.exp(-u / tm)
        es = np.exp(-u / ts)
        v = v0 * em + i0 * _kap_e(u, tm, ts, em, es)
        slope = (i0 * es - v) / tm
        if not slope > 0.0:
            break
        u_new = u - (v - th) / slope
        if u_new < 0.0:
            u_new = 0.0
        elif u_new > dt:
            u_new = dt
        if abs(u_new - u) <= 1e-10 * dt:
            u = u_new
            break
        u = u_new
    return u


@njit(cache=True)
def _first_crossing(v, i, v1, i1, th, tm, ts, span):
    """First u in [0, span] at which the free trajectory from (V, I) = (v, i) reaches th; -1 if none.
    (v1, i1): the state at span."""
    if v >= th:
        return 0.0
    if v1 >= th:
        return _crossing(v, i, v1, th, tm, ts, span, (i1 - v1) / tm)
    if not i > v or not i1 < v1:
        return -1.0  # not rising at the start or not falling at the end: no maximum inside
    us = _peak(v, i, tm, ts, span)
    em = np.exp(-us / tm)
    es = np.exp(-us / ts)
    vs = v * em + i * _kap_e(us, tm, ts, em, es)
    if vs < th:
        return -1.0
    return _crossing(v, i, vs, th, tm, ts, us, 0.0)


@njit(cache=True)
def _sliver_crossing(v, i, th, tm, ts, smax):
    """For a neuron pushed to V = v >= th at grid time t by spikes emitted up to smax before t: the
    s in [0, smax] at which its trajectory (free evolution backward from (v, i)) crossed th."""
    if v < th:
        return 0.0
    if np.exp(smax / tm) * v + i * _kap(-smax, tm, ts) >= th:
        return smax
    lo = 0.0
    hi = smax
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if np.exp(mid / tm) * v + i * _kap(-mid, tm, ts) >= th:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@njit(cache=True, inline="always")
def slope_at_spike(ic, th):
    """d = tau_m dV/dt just before a spike with current ic (V = theta)."""
    return ic - th


@njit(cache=True, inline="always")
def adjoint_jump(lvp, d, y, th):
    """The jump of lambda_V at a spike, from its value just after it (lvp), the tape's d and the
    feedback y (the targets' sum_j w_ij (lambda_V,j - lambda_I,j) and loss terms in the spike time)."""
    return (th * lvp + y) / d

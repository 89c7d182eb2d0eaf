"""The LIF neuron's pieces (used by the CPU kernels, eventprop.engine._kernels).

Model: tau_m dV/dt = -V + I, tau_s dI/dt = -I between events; a spike when V reaches theta from
below, then V -> 0 (I unchanged); every input or spike arrival makes I jump by its weight.

* propagator: e^{-u/tau_m}, e^{-u/tau_s} and kappa(u) (V at u after a unit current jump at rest)
  (``_kap``, ``_kap_e``, ``_kap_area``; per-neuron rows ``_decay_rows``/``_rates``);
* its derivatives in tau_m, tau_s, for learned time constants (``_dprop``, ``_dprop_r``);
* the step's trajectory in coefficient form (``gfun``), the necessary crossing test
  (``may_cross``) and the first crossing after an event (``_first_crossing`` with ``_peak`` and
  the safeguarded ``_crossing``, which always returns a true root or proves there is none);
* the slope at a spike, d = tau_m dV/dt = I - theta (``slope_at_spike``), and the adjoint jump of
  lambda_V there, (theta lambda_V + feedback) / d (``adjoint_jump``); the reset V -> 0 is the
  kernels' (shared with eventprop.neurons.alif, which reduces to these with no adaptation).
"""

import math

import numpy as np
from numba import njit



@njit(cache=True, inline="always")
def _kap(delta, tm, ts):
    """V at delta after a unit current jump into a neuron at rest (tau_m dV/dt = -V + I), in float64:
    e^{-delta/tm} (delta/tm) h(x), h(x) = (1 - e^{-x})/x, x = (1/ts - 1/tm) delta (no cancellation
    for small delta or tm ~ ts; valid for negative delta too)."""
    d = float(delta)
    tm = float(tm)
    ts = float(ts)
    x = (1.0 / ts - 1.0 / tm) * d
    h = 1.0 - 0.5 * x if abs(x) < 1e-8 else -math.expm1(-x) / x
    return math.exp(-d / tm) * (d / tm) * h


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
    return -float(ts) * math.expm1(-float(delta) / float(ts)) - float(tm) * _kap(delta, tm, ts)


@njit(cache=True)
def _dprop(h, tm, ts):
    """Derivatives of the propagator over h, Phi = [[e_m, kappa], [0, e_s]], with respect to tau_m
    and tau_s: (de_m/dtau_m, dkappa/dtau_m, dkappa/dtau_s, de_s/dtau_s), from
    kappa = e^{-h/tm} (h/tm) h(x), x = (1/ts - 1/tm) h (no cancellation for tm ~ ts)."""
    h = float(h)
    tm = float(tm)
    ts = float(ts)
    return _dprop_r(h, 1.0 / tm, 1.0 / ts, math.exp(-h / tm), math.exp(-h / ts), _kap(h, tm, ts))


@njit(cache=True, fastmath={"nnan", "nsz"})
def _kap_rows(ek, ea, eb, rt, po, S):
    """ek = tau_s/(tau_m - tau_s) (ea - eb) over neurons po..po+S-1; returns min |1/tau_s - 1/tau_m|."""
    small = np.inf
    for j in range(S):
        n = _u(po + j)
        ek[n] = rt[2, n] * (ea[n] - eb[n])
        small = min(small, abs(rt[3, n]))
    return small


@njit(cache=True)
def _decay_rows(ea, eb, ek, po, S, tau_m, tau_s, rt, delta):
    """ea[j] = e^{-delta/tau_m,j}, eb[j] = e^{-delta/tau_s,j}, ek[j] = kappa_j(delta) for neurons
    po..po+S-1 (rt: _rates). The exponentials by scaling and squaring a degree-9 Taylor
    polynomial (relative error below 1e-14): plain arithmetic over the row, which the compiler
    vectorises, instead of 2 S calls of exp; kappa from them, exactly (as _kap_e) where
    (1/tau_s - 1/tau_m) delta is tiny."""
    _vexp_neg(ea, po, S, delta, rt[0])
    _vexp_neg(eb, po, S, delta, rt[1])
    small = _kap_rows(ek, ea, eb, rt, po, S)
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
def _u(i):
    """An index as unsigned (no negative-index wrap-around, so that the row loops vectorise)."""
    return np.uint64(i)


@njit(cache=True, fastmath={"nnan", "nsz"})
def _vexp(out, lo, n, s, rate):
    """out[lo + j] = e^{s rate[lo + j]} for j < n (either sign), by scaling and squaring a degree-9
    Taylor polynomial (relative error below 1e-14 for |s rate| up to about 10; a plain loop that
    vectorises, instead of n calls of exp)."""
    m = 0.0
    for j in range(n):
        m = max(m, abs(s * rate[_u(lo + j)]))
    k = 0
    f = s
    while m > 0.125:
        m *= 0.5
        f *= 0.5
        k += 1
    for j in range(n):
        z = f * rate[_u(lo + j)]
        out[_u(lo + j)] = 1.0 + z * (1.0 + z * (0.5 + z * (1.0 / 6.0 + z * (1.0 / 24.0 + z * (1.0 / 120.0 + z * (
            1.0 / 720.0 + z * (1.0 / 5040.0 + z * (1.0 / 40320.0 + z * (1.0 / 362880.0)))))))))
    for _ in range(k):
        for j in range(n):
            out[_u(lo + j)] *= out[_u(lo + j)]


@njit(cache=True, inline="always")
def _vexp_neg(out, lo, n, s, rate):
    """out[lo + j] = e^{-s rate[lo + j]} (_vexp)."""
    _vexp(out, lo, n, -s, rate)


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
def gfun(u, rm, rs):
    """g(u) = kappa(u) e^{u/tau_m} = (u/tau_m) h((1/tau_s - 1/tau_m) u), h(z) = (1 - e^{-z})/z, for
    either sign of u and with no cancellation when tau_m ~ tau_s (rm = 1/tau_m, rs = 1/tau_s).
    With it a step's trajectory is V(u) = e^{-u/tau_m} (P + Q g(u)), I(u) = Q e^{-u/tau_s}."""
    z = (rs - rm) * u
    if abs(z) < 1e-8:
        return u * rm * (1.0 - 0.5 * z)
    return -rm * math.expm1(-z) / (rs - rm)


@njit(cache=True, inline="always")
def may_cross(ve, ie, th, q):
    """Whether a trajectory that ends a span at (ve, ie) may have reached th inside it (a necessary
    condition; q = span/tau_m): V ends at or above th, or V falls at the end (ie < ve) from a peak
    that can be above th. At an interior peak V = I, and after it I >= ie (I decays to 0 from
    above when ie >= 0; a peak with I < 0 is below 0), so V_peak - ve <= q (V_peak - ie), i.e.
    V_peak <= (ve - q ie)/(1 - q) for q < 1 (no test for q >= 1)."""
    return ve >= th or (ie < ve and (ve - q * ie >= (1.0 - q) * th or q >= 1.0))


@njit(cache=True)
def _peak(v0, i0, tm, ts, ub):
    """The time in (0, ub) where dV/du = 0, for a trajectory rising at 0 and falling at ub: closed form
    V(u) = (v0 + c i0) e^{-u/tm} - c i0 e^{-u/ts}, c = ts / (tm - ts); bisection when tm ~ ts."""
    if abs(tm - ts) > 1e-6 * tm:
        c = ts / (tm - ts)
        x = (v0 + c * i0) * ts / (c * i0 * tm)
        if x > 0.0:
            u = math.log(x) / (1.0 / ts - 1.0 / tm)
            if 0.0 <= u <= ub:
                return u
    lo = 0.0
    hi = ub
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if i0 * math.exp(-mid / ts) - (v0 * math.exp(-mid / tm) + i0 * _kap(mid, tm, ts)) > 0.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


MAX_ITER = 80  # iterations of the safeguarded root search (bisection alone needs < 60 for 1e-15 dt)


@njit(cache=True)
def _crossing(v0, i0, v1, th, tm, ts, dt, m1, cnt):
    """The u in [0, dt] at which V(u) = v0 e^{-u/tm} + i0 kappa(u) reaches th, given V(0) = v0 < th
    <= V(dt) = v1, dV/du = m1 at dt, and that V - th changes sign once in [0, dt] (the callers
    ensure it: V has at most one extremum between events, and dt is the step's end or that
    extremum, a maximum, with m1 = 0). Start: the root of the cubic Hermite interpolant of V
    (values and slopes at both ends, O(dt^4)); then Newton steps on the exact trajectory kept
    inside a bracket [lo, hi] with V(lo) < th <= V(hi) that every evaluation shrinks (a step that
    leaves it, or a slope <= 0, bisects instead). It therefore always ends on a true root (to
    1e-12 dt), also at a peak that grazes th (linear convergence there). float64 throughout.
    cnt[0] += 1 per solve, cnt[1] += iterations, cnt[3] += 1 if it did not converge."""
    v0 = float(v0)
    i0 = float(i0)
    th = float(th)
    tm = float(tm)
    ts = float(ts)
    dt = float(dt)
    v1 = float(v1)
    cnt[0] += 1
    if not v1 > v0:
        return dt if v1 >= th else 0.0
    frac = (th - v0) / (v1 - v0)
    if frac > 1.0:
        frac = 1.0
    if not frac >= 0.0:
        frac = 0.0
    a0 = dt * (i0 - v0) / tm
    a1 = dt * float(m1)
    x = frac
    for _ in range(3):  # Newton on the Hermite cubic p(s), s = u/dt, from the linear guess (no exps)
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
    lo = 0.0
    hi = dt
    u = x * dt
    tol = 1e-12 * dt
    for it in range(1, MAX_ITER + 1):
        em = math.exp(-u / tm)
        es = math.exp(-u / ts)
        v = v0 * em + i0 * _kap_e(u, tm, ts, em, es)
        f = v - th
        if f >= 0.0:
            hi = u
        else:
            lo = u
        slope = (i0 * es - v) / tm
        un = u - f / slope if slope > 0.0 else -1.0
        if not (lo <= un <= hi):
            un = 0.5 * (lo + hi)
        if abs(un - u) <= tol or hi - lo <= tol:
            cnt[1] += it
            return min(max(un, lo), hi)
        u = un
    cnt[1] += MAX_ITER
    cnt[3] += 1
    return hi


@njit(cache=True)
def _first_crossing(v, i, v1, i1, th, tm, ts, span, cnt):
    """First u in [0, span] at which the free trajectory from (V, I) = (v, i) reaches th; -1 if there is
    none, which is then proven: (v1, i1) is the state at span, and V, having at most one extremum
    in the span, stays below th unless it ends above it or rises to an interior maximum above it."""
    if v >= th:
        return 0.0
    if v1 >= th:
        return _crossing(v, i, v1, th, tm, ts, span, (i1 - v1) / tm, cnt)
    if not i > v or not i1 < v1:
        cnt[2] += 1
        return -1.0  # not rising at the start or not falling at the end: no maximum inside
    us = _peak(v, i, tm, ts, span)
    em = math.exp(-us / tm)
    es = math.exp(-us / ts)
    vs = v * em + i * _kap_e(us, tm, ts, em, es)
    if vs < th:
        cnt[2] += 1
        return -1.0
    return _crossing(v, i, vs, th, tm, ts, us, 0.0, cnt)


# ---- the model interface (eventprop.neurons.hooks): the same names and arguments in every model
#      module; LIF has no adaptation, so it ignores a, ac, lap, ta and beta

ADAPTS = False  # no threshold-adaptation state A


@njit(cache=True)
def crossing(v, i, a, v1, i1, th, tm, ts, ta, span, cnt):
    """First u in [0, span] at which the free trajectory from (V, I) = (v, i) reaches th, -1 if
    provably none; (v1, i1): the state at span (``_first_crossing``)."""
    return _first_crossing(v, i, v1, i1, th, tm, ts, span, cnt)


@njit(cache=True, inline="always")
def slope_at_spike(ic, ac, th, tm, ta):
    """d = tau_m dV/dt just before a spike with current ic (V = theta)."""
    return ic - th


@njit(cache=True, inline="always")
def level_at_spike(th, ac):
    """V just before the reset (the size of the reset jump)."""
    return th


@njit(cache=True, inline="always")
def adjoint_jump(lvp, lap, ac, d, y, th, tm, ta, beta):
    """The jump of lambda_V at a spike (and 0 for lambda_A), from its value just after it (lvp),
    the tape's d and the feedback y (the targets' sum_j w_ij (lambda_V,j - lambda_I,j) and loss
    terms in the spike time)."""
    return (th * lvp + y) / d, 0.0

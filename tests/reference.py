"""A slow, obviously correct NumPy version of the engine's discrete algorithm (float64).

Written independently of the numba kernels, in matrix form, straight from the equations in
eventprop/engine.py's docstring. Used only by the tests.
"""

import numpy as np
from scipy.optimize import brentq


_GX, _GW = np.polynomial.legendre.leggauss(24)


def _free_v(V0, I0, u, tm, ts):
    """V after u ms of free evolution from (V0, I0): the textbook two-exponential solution."""
    if np.isclose(tm, ts, rtol=1e-9, atol=0):
        return V0 * np.exp(-u / tm) + I0 * (u / tm) * np.exp(-u / tm)
    return V0 * np.exp(-u / tm) + I0 * ts / (tm - ts) * (np.exp(-u / tm) - np.exp(-u / ts))


def _step_quad(f, dt):
    """int_0^dt f(u) du by 24-point Gauss-Legendre (f vectorised)."""
    u = 0.5 * dt * (_GX + 1.0)
    return float(np.sum(0.5 * dt * _GW * f(u)))


def _consts(tm, ts, dt):
    a = np.exp(-dt / tm)
    b = np.exp(-dt / ts)
    same = np.isclose(tm, ts, rtol=1e-9, atol=0)
    cf = np.where(same, dt / tm * a, ts / (tm - ts + same) * (a - b))
    cb = np.where(same, dt / ts * b, tm / (tm - ts + same) * (a - b))
    return a, b, cf, cb


def _first_crossing_ref(v, i, th, tm, ts, span, a=0.0, ta=np.inf):
    """First u in [0, span] where the free trajectory from (v, i) reaches th (roots by brentq).

    With an adaptation a (alif, decaying with ta) the threshold is th + a e^{-u/ta}; slope is
    then tau_m times the derivative of V - a e^{-u/ta} (a = 0 gives the LIF computation exactly).
    """
    f = lambda u: _free_v(v, i, u, tm, ts) - a * np.exp(-u / ta) - th  # noqa: E731
    if f(0.0) >= 0:
        return 0.0
    if f(span) >= 0:
        ub = span
    else:
        slope = lambda u: i * np.exp(-u / ts) - _free_v(v, i, u, tm, ts) + a * tm / ta * np.exp(-u / ta)  # noqa: E731
        if not (slope(0.0) > 0 > slope(span)):
            return None
        ub = brentq(slope, 0.0, span, xtol=1e-15, rtol=1e-15)
        if f(ub) < 0:
            return None
    return brentq(f, 0.0, ub, xtol=1e-15, rtol=1e-15)


def _cb(u, tm, ts):
    """Backward coefficient: lambda_I gains cb * lambda_V over u ms of free backward evolution."""
    if np.isclose(tm, ts, rtol=1e-9, atol=0):
        return u / ts * np.exp(-u / ts)
    return tm / (tm - ts) * (np.exp(-u / tm) - np.exp(-u / ts))


def reference_run(spec, params, inputs, n_steps, weight=None, g_int=None, g_max=None, g_trace=None,
                  g_spk=None, g_counts=None):
    """One sample. inputs: list over steps of arrays of input units.

    weight: None (w = 1) or (values at t_0..t_N, rate): in step n, w(t_n + u) =
    e^{-rate u} (w_n + (w_{n+1} e^{rate dt} - w_n) u/dt). g_trace: (N+1, C) density dl/dV at t_n,
    linear in between. Returns dict with readouts, spikes [(step, layer, idx, d, delta)],
    spike_adapt (per spike, the emitter's adaptation A just before it; 0 for LIF), spike_kind (per
    spike: 0 found inside a step, 1 pushed over threshold at a grid time by arrivals), grads.

    A spike detected at t_m was emitted at t_c = t_m - delta (linear interpolation of V); it is
    delivered at t_m with the effect it would have had from t_c on (I += w e^{-delta/tau_s},
    V += w kappa(delta)), the spiking neuron is reset at t_c, and a leaky-integrator output's
    readout integral gains w * w(t_m) * int_0^delta kappa. The backward pass evaluates EventProp's
    spike terms with the adjoints at t_c^+ (propagated back from t_m, with the output sources over
    [t_c, t_m]) and applies each jump at t_c.

    Adaptive hidden neurons (neuron == "alif") carry A (tau_a dA/dt = -A, A(0) = 0) and spike when
    V - A reaches theta; a spike resets V and adds beta = adapt to A. Their tape value is
    D = tau_m d(V - A)/dt just before the spike, = I_c - theta - A_c + A_c tau_m/tau_a, and the
    backward pass has lambda_A (lambda_A(t - s) = e^{-s/tau_a} lambda_A(t)), which jumps at the
    neuron's own spikes only.

    Axonal delays: a hidden layer l with params[f"delay{l}"] (per neuron, ms, >= 0) sends neuron
    i's spike emitted at t_c to all its targets at t_a = t_c + d_i (the reset stays at t_c; no
    entry: d = 0). An arrival is delivered at the first grid time t_g >= t_a, with delta_a =
    t_g - t_a, exactly as a zero-delay spike detected at t_g with delta = delta_a is now; inside
    the step before t_g it is an event at dt - delta_a that moves its targets' crossings, in time
    order with the crossings (an arrival goes first on a tie). Arrivals after T are never
    delivered. The backward pass handles a grid time's arrivals and emissions latest first (an
    arrival before an emission at the same time): an arrival computes the weight gradients and
    fb = dL/dt_a with the targets' adjoints at t_a^+ (+ the kinks pinned at it), adds it to
    dL/dd_i, and the emission's jump uses it (dt_a/dt_c = 1). out["arrivals"] lists the delivered
    arrivals (grid step, layer, idx, delta_a, spike index).
    """
    dt = spec.dt
    layers = list(spec.hidden) + [spec.output]
    L = len(spec.hidden)
    P = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    sizes = [ly.size for ly in layers]
    tm = [np.broadcast_to(np.asarray(ly.tau_mem, float), (ly.size,)).copy() for ly in layers]
    ts = [np.broadcast_to(np.asarray(ly.tau_syn, float), (ly.size,)).copy() for ly in layers]
    cons = [_consts(tm[l], ts[l], dt) for l in range(L + 1)]
    spiking = [True] * L + [spec.output.kind == "lif"]
    thr = [ly.threshold for ly in layers]
    alif = [getattr(ly, "neuron", "lif") == "alif" for ly in layers]
    ta = [float(ly.tau_adapt) if alif[l] else np.inf for l, ly in enumerate(layers)]
    beta = [float(ly.adapt) if alif[l] else 0.0 for l, ly in enumerate(layers)]
    N = n_steps
    T = N * dt
    C = sizes[L]
    delay = [P[f"delay{l}"] if f"delay{l}" in P else np.zeros(sizes[l]) for l in range(L)] + [np.zeros(C)]
    if weight is None:
        wv, w_rate = np.ones(N + 1), 0.0
    else:
        wv, w_rate = np.asarray(weight[0], float), float(weight[1])

    def omega(n):  # the weight inside step n as a function of u in [0, dt]
        a, b = wv[n], wv[n + 1] * np.exp(w_rate * dt) - wv[n]
        return lambda u: np.exp(-w_rate * u) * (a + b * u / dt)

    def targets(l, i):  # (target layer, weight row) of a spike of neuron i in layer l
        out = []
        if l < L:
            out.append((l + 1, P[f"ff{l + 1}"][i]))
        if f"rec{l}" in P:
            out.append((l, P[f"rec{l}"][i]))
        return out

    def kappa_area(delta, tmk, tsk):
        return _step_quad(lambda u: _free_v(0.0, 1.0, u, tmk, tsk), delta) if delta > 0 else 0.0

    V = [np.zeros(s) for s in sizes]
    I = [np.zeros(s) for s in sizes]
    A = [np.zeros(s) for s in sizes]  # adaptation (stays 0 in LIF layers)
    spikes = []  # (step, layer, idx, d, delta)
    adapt_c = []  # per spike: the emitter's A just before it
    by_step = {}  # grid step -> arrivals delivered there (layer, idx, delta_a, spike index), in delivery order
    sched = {}  # grid step -> arrivals of spikes from earlier steps, delivered there (same entries)
    trace = np.zeros((N + 1, C))  # V at t_0..t_N
    integral = np.zeros(C)
    first = np.full(C, np.inf)
    first_step = np.full(C, -1)
    mark = [np.full(sz, -1) for sz in sizes]  # grid time of each neuron's latest spike
    mx = [(-np.inf, 0, -1, 0.0, 0.0)] * C  # per output: (max, step, spike index of a kink or -1, delta, tau_m V')

    kinds = []  # per spike: 0 found at the end of a step, 1 pushed over threshold by arrivals

    def tape_d(l, i, ic, ac):  # tau_m d(V - A)/dt just before a spike, floored
        if not alif[l]:
            return max(ic - thr[l], spec.grazing_eps)
        return max(ic - thr[l] - ac + ac * tm[l][i] / ta[l], spec.grazing_eps)

    def schedule(g0, r, l, i, sidx):  # an arrival at t_{g0} + r (r > 0), at the first grid time >= it
        k = max(int(np.ceil(r / dt)), 1)
        if g0 + k <= N:  # arrivals after T are never delivered
            sched.setdefault(g0 + k, []).append((l, i, max(k * dt - r, 0.0), sidx))

    def record(n, l, i, d, delta, t_spike, kind, ac=0.0):
        spikes.append((n, l, i, d, delta))
        adapt_c.append(ac)
        kinds.append(kind)
        mark[l][i] = n
        if l == L and first_step[i] < 0:
            first_step[i] = n
            first[i] = t_spike

    def send_back_dated(n, l, i, sj, lst):  # the arrival of the spike just emitted at t_n - sj
        if delay[l][i] <= sj:  # still at t_n or before: delivered now
            lst.append((l, i, sj - delay[l][i], len(spikes) - 1))
        else:
            schedule(n, delay[l][i] - sj, l, i, len(spikes) - 1)

    for n in range(N + 1):
        # arrivals at t_n (with their sub-step effect): those of the step before, then those of
        # spikes that arrivals push over threshold here; then inputs
        lst = by_step.setdefault(n, [])
        smax, e = 0.0, 0
        while e < len(lst):
            for (l, i, delta, sidx) in lst[e:]:
                smax = max(smax, delta)
                if l == L - 1 and not spiking[L]:
                    # the output voltage just before this arrival (a kink): a candidate maximum
                    for k in range(C):
                        vc = _free_v(V[L][k], I[L][k], -delta, tm[L][k], ts[L][k])
                        if vc > mx[k][0]:
                            mx[k] = (vc, n, sidx, delta, I[L][k] * np.exp(delta / ts[L][k]) - vc)
                for (tl, row) in targets(l, i):
                    for j in range(sizes[tl]):
                        I[tl][j] += row[j] * np.exp(-delta / ts[tl][j])
                        V[tl][j] += row[j] * _free_v(0.0, 1.0, delta, tm[tl][j], ts[tl][j])
                    if tl == L and not spiking[L]:
                        w_end = omega(n - 1)(dt)
                        for k in range(C):
                            integral[k] += row[k] * w_end * kappa_area(delta, tm[L][k], ts[L][k])
            e = len(lst)
            # neurons these arrivals pushed over threshold crossed it inside the step: find when,
            # on the trajectory backward from t_n
            for l in range(L + 1):
                if not spiking[l]:
                    continue
                for i in range(sizes[l]):
                    if not alif[l] and V[l][i] >= thr[l] and mark[l][i] != n:
                        g = lambda s_, l=l, i=i: _free_v(V[l][i], I[l][i], -s_, tm[l][i], ts[l][i]) - thr[l]  # noqa: E731
                        sj = smax if g(smax) >= 0 else brentq(g, 0.0, smax, xtol=1e-15, rtol=1e-15)
                        ic = I[l][i] * np.exp(sj / ts[l][i])
                        record(n, l, i, max(ic - thr[l], spec.grazing_eps), sj, n * dt - sj, 1)
                        send_back_dated(n, l, i, sj, lst)
                        V[l][i] = _free_v(0.0, ic, sj, tm[l][i], ts[l][i])
                    elif alif[l] and V[l][i] - A[l][i] >= thr[l] and mark[l][i] != n:
                        # as above, with the threshold theta + A evolving backward too
                        g = lambda s_, l=l, i=i: (_free_v(V[l][i], I[l][i], -s_, tm[l][i], ts[l][i])  # noqa: E731
                                                  - A[l][i] * np.exp(s_ / ta[l]) - thr[l])
                        sj = smax if g(smax) >= 0 else brentq(g, 0.0, smax, xtol=1e-15, rtol=1e-15)
                        ic = I[l][i] * np.exp(sj / ts[l][i])
                        ac = A[l][i] * np.exp(sj / ta[l])
                        record(n, l, i, tape_d(l, i, ic, ac), sj, n * dt - sj, 1, ac)
                        send_back_dated(n, l, i, sj, lst)
                        V[l][i] = _free_v(0.0, ic, sj, tm[l][i], ts[l][i])
                        A[l][i] += beta[l] * np.exp(-sj / ta[l])
        if n < N:
            for u in inputs[n]:
                I[0] += P["ff0"][u]
        if n >= 1:
            trace[n] = V[L]
            for k in range(C):
                if V[L][k] > mx[k][0]:
                    mx[k] = (V[L][k], n, -1, 0.0, 0.0)
        if n == N:
            break
        if not spiking[L]:  # integral readout over [t_n, t_{n+1}] from the state at t_n^+
            om = omega(n)
            for k in range(C):
                v0, i0, tmk, tsk = V[L][k], I[L][k], tm[L][k], ts[L][k]
                integral[k] += _step_quad(lambda u: om(u) * _free_v(v0, i0, u, tmk, tsk), dt)
        Vold, Iold, Aold = [v.copy() for v in V], [c.copy() for c in I], [x.copy() for x in A]
        for l in range(L + 1):
            a, b, cf, _ = cons[l]
            V[l] = a * Vold[l] + cf * Iold[l]
            I[l] = b * Iold[l]
            if alif[l]:
                A[l] = np.exp(-dt / ta[l]) * Aold[l]
        # crossings during the step: candidates from the free trajectories, then in time order with
        # the arrivals due in the step, each arrival's current jump moving (or cancelling) its
        # targets' later crossings (an alif neuron's A is never moved by other spikes: at u it is
        # Aold e^{-u/tau_a})
        cand = {}  # (l, i) -> [crossing time in the step, v, i at u_last, u_last, voltage correction]
        for l in range(L + 1):
            if spiking[l]:
                for i in range(sizes[l]):
                    if alif[l]:
                        u = _first_crossing_ref(Vold[l][i], Iold[l][i], thr[l], tm[l][i], ts[l][i], dt,
                                                Aold[l][i], ta[l])
                    else:
                        u = _first_crossing_ref(Vold[l][i], Iold[l][i], thr[l], tm[l][i], ts[l][i], dt)
                    if u is not None:
                        cand[(l, i)] = [u, Vold[l][i], Iold[l][i], 0.0, 0.0]
        # arrivals due in the step: (time in the step, layer, idx, delta_a, spike index)
        pend = [(dt - da, l, i, da, sidx) for (l, i, da, sidx) in sched.pop(n + 1, [])]
        while cand or pend:
            q = min(range(len(pend)), key=lambda q: pend[q][0]) if pend else -1
            nxt = min(cand.items(), key=lambda kv: kv[1][0]) if cand else None
            if q >= 0 and (nxt is None or pend[q][0] <= nxt[1][0]):  # an arrival (first on a tie)
                ua, l, i, da, sidx = pend.pop(q)
                by_step.setdefault(n + 1, []).append((l, i, da, sidx))
                for (tl, row) in targets(l, i):
                    for (cl, cj), c in list(cand.items()):
                        if cl != tl or row[cj] == 0.0:
                            continue
                        s2 = ua - c[3]
                        tmc, tsc = tm[cl][cj], ts[cl][cj]
                        c[1], c[2] = _free_v(c[1], c[2], s2, tmc, tsc), c[2] * np.exp(-s2 / tsc) + row[cj]
                        c[3] = ua
                        c[4] += row[cj] * _free_v(0.0, 1.0, da, tmc, tsc)
                        if alif[cl]:
                            uu = _first_crossing_ref(c[1], c[2], thr[cl], tmc, tsc, dt - ua,
                                                     Aold[cl][cj] * np.exp(-ua / ta[cl]), ta[cl])
                        else:
                            uu = _first_crossing_ref(c[1], c[2], thr[cl], tmc, tsc, dt - ua)
                        if uu is None:
                            del cand[(cl, cj)]
                        else:
                            c[0] = ua + uu
                continue
            (l, i), (u, cv, ci, ul, corr) = nxt
            del cand[(l, i)]
            ic = ci * np.exp(-(u - ul) / ts[l][i])
            delta = dt - u
            if alif[l]:
                ac = Aold[l][i] * np.exp(-u / ta[l])
                record(n + 1, l, i, tape_d(l, i, ic, ac), delta, n * dt + u, 0, ac)
                A[l][i] = (ac + beta[l]) * np.exp(-delta / ta[l])
            else:
                record(n + 1, l, i, max(ic - thr[l], spec.grazing_eps), delta, n * dt + u, 0)
            V[l][i] = _free_v(0.0, ic, delta, tm[l][i], ts[l][i]) - corr  # reset at t_c
            # its arrival: in this step (with d = 0 at once, before any other event) or later
            if delay[l][i] <= delta:
                pend.append((min(u + delay[l][i], dt), l, i, delta - delay[l][i], len(spikes) - 1))
            else:
                schedule(n + 1, delay[l][i] - delta, l, i, len(spikes) - 1)
    out = {
        "integral": integral / T,
        "vmax": np.array([x[0] for x in mx]),
        "tmax_step": np.array([x[1] for x in mx]),
        "tmax": np.array([x[1] * dt - x[3] for x in mx]),
        "trace": trace,
        "first_spike": first,
        "spikes": spikes,
        "spike_adapt": np.array(adapt_c),
        "spike_kind": np.array(kinds, dtype=int),
        "arrivals": [(g, *a) for g in sorted(by_step) for a in by_step[g]],
        "counts": [np.array([sum(1 for s in spikes if s[1] == l and s[2] == i) for i in range(sizes[l])])
                   for l in range(L + 1)],
    }
    # ---------------- backward
    g_int = np.zeros(C) if g_int is None else np.asarray(g_int, float)
    g_max = np.zeros(C) if g_max is None else np.asarray(g_max, float)
    g_spk = np.zeros(C) if g_spk is None else np.asarray(g_spk, float)
    lV = [np.zeros(s) for s in sizes]
    lI = [np.zeros(s) for s in sizes]
    lA = [np.zeros(s) for s in sizes]  # adjoint of the adaptation (stays 0 in LIF layers)
    G = {k: np.zeros_like(v) for k, v in P.items()}
    fb_arr = {}  # spike index -> (fb, kink terms) of its delivered arrival
    for m in range(N, -1, -1):
        if m >= 1 and not spiking[L]:
            for k in range(C):
                if mx[k][1] == m and mx[k][2] < 0:
                    lV[L][k] -= g_max[k] / tm[L][k]
        if m < N:
            for u in inputs[m]:
                G["ff0"][u] -= ts[0] * lI[0]
        # the emissions detected at t_m and the arrivals delivered there, latest first (an arrival
        # before an emission at the same time): each sees the jumps of those after it
        here = sorted([(delta, sidx, 0) for (_, _, delta, sidx) in by_step.get(m, [])]
                      + [(sp[4], q, 1) for q, sp in enumerate(spikes) if sp[0] == m])
        kicks = []  # (output, kick on lambda_V at t_m - delta, delta): maxima at kinks
        w_end = omega(m - 1)(dt) if m >= 1 else 0.0
        jumps = []  # (layer, idx, jump at t_c, delta, jump of lambda_A at t_c)

        def adj_at(tl, j, delta):  # adjoints of neuron j of layer tl at t_m - delta (+)
            tmj, tsj = tm[tl][j], ts[tl][j]
            lv = np.exp(-delta / tmj) * lV[tl][j]
            li = np.exp(-delta / tsj) * lI[tl][j] + _cb(delta, tmj, tsj) * lV[tl][j]
            for (l2, i2, J, d2, _) in jumps:
                if (l2, i2) == (tl, j):
                    lv += np.exp(-(delta - d2) / tmj) * J
                    li += _cb(delta - d2, tmj, tsj) * J
            return lv, li

        def adj_a(tl, j, delta):  # lambda_A of neuron j of layer tl at t_m - delta (+)
            la = np.exp(-delta / ta[tl]) * lA[tl][j]
            for (l2, i2, _, d2, JA) in jumps:
                if (l2, i2) == (tl, j):
                    la += np.exp(-(delta - d2) / ta[tl]) * JA
            return la

        for (delta, sidx, emission) in here:
            _, l, i, d, _ = spikes[sidx]
            if not emission:
                # the arrival at t_m - delta: weight gradients and fb = dL/dt_a from the targets'
                # adjoints just after it
                fb = 0.0
                for (tl, row) in targets(l, i):
                    key = f"ff{l + 1}" if tl == l + 1 else f"rec{l}"
                    for j in range(sizes[tl]):
                        tmj, tsj = tm[tl][j], ts[tl][j]
                        lv, li = adj_at(tl, j, delta)
                        if tl == L and not spiking[L]:
                            src = g_int[j] / T * w_end + (g_trace[m, j] if g_trace is not None else 0.0)
                            lv -= src / tmj * _step_quad(lambda u: np.exp(-u / tmj), delta) if delta > 0 else 0.0
                            li -= src / tsj * kappa_area(delta, tmj, tsj)
                        for (kk, kick, d2) in kicks:
                            if tl == L and kk == j:
                                lv += np.exp(-(delta - d2) / tmj) * kick
                                li += _cb(delta - d2, tmj, tsj) * kick
                        fb += row[j] * (lv - li)
                        G[key][i, j] -= tsj * li
                pinned = [k for k in range(C)
                          if not spiking[L] and mx[k][1] == m and mx[k][2] == sidx and g_max[k] != 0]
                kink = 0.0
                for k in pinned:  # the maximum sits just before this arrival and moves with it
                    kink += g_max[k] * mx[k][4] / tm[L][k]
                fb_arr[sidx] = (fb, kink)
                if f"delay{l}" in G:
                    G[f"delay{l}"][i] += fb + kink
                kicks += [(k, -g_max[k] / tm[L][k], delta) for k in pinned]
                continue
            # the emission at t_m - delta (dt_a/dt_c = 1: its arrival's fb; 0 if never delivered)
            fb, kink = fb_arr.get(sidx, (0.0, 0.0))
            extra = (g_spk[i] if (l == L and first_step[i] == m) else 0.0) + kink
            own_v, _ = adj_at(l, i, delta)
            ja = 0.0
            if alif[l]:
                # V+ = 0, A+ = A_c + beta at V - A = theta: lambda_V jumps by jcore, lambda_A by
                # -(lambda_V(t_c^+) + jcore) = -lambda_V(t_c^-)
                ac, tmi = adapt_c[sidx], tm[l][i]
                own_a = adj_a(l, i, delta)
                j = ((thr[l] + ac * (1.0 - tmi / ta[l])) * own_v - (tmi * beta[l] / ta[l]) * own_a + fb + extra) / d
                ja = -(own_v + j)
            else:
                j = (thr[l] * own_v + fb + extra) / d
            if l < L and g_counts is not None:
                j -= g_counts[l][i] / (thr[l] * tm[l][i])
            jumps.append((l, i, j, delta, ja))
        if m == N and spiking[L]:
            for k in range(C):
                if first_step[k] < 0 and g_spk[k] != 0:
                    lV[L][k] += g_spk[k] / thr[L]
        if m >= 1:
            for l in range(L + 1):
                a, b, _, cb = cons[l]
                lI[l] = b * lI[l] + cb * lV[l]
                lV[l] = a * lV[l]
                if alif[l]:
                    lA[l] = np.exp(-dt / ta[l]) * lA[l]
            # each jump happened at t_c: it evolves backward over the rest of the step, dt - delta
            for (l, i, j, delta, ja) in jumps:
                rest = dt - delta
                lV[l][i] = np.clip(lV[l][i] + np.exp(-rest / tm[l][i]) * j, -1e15, 1e15)
                lI[l][i] = np.clip(lI[l][i] + _cb(rest, tm[l][i], ts[l][i]) * j, -1e15, 1e15)
                if alif[l]:
                    lA[l][i] = np.clip(lA[l][i] + np.exp(-rest / ta[l]) * ja, -1e15, 1e15)
            for (k, kick, delta) in kicks:
                rest = dt - delta
                lV[L][k] += np.exp(-rest / tm[L][k]) * kick
                lI[L][k] += _cb(rest, tm[L][k], ts[L][k]) * kick
            if not spiking[L]:
                # sources of step m-1: dL/dV and dL/dI at t_{m-1}^+ of that step's readout integral
                # (and of the per-time loss density), as lambda = -dL/dstate / tau
                n = m - 1
                om = omega(n)
                for k in range(C):
                    tmk, tsk = tm[L][k], ts[L][k]
                    if g_trace is not None:
                        G0, G1 = g_trace[n, k], g_trace[n + 1, k]
                        dens = lambda u, G0=G0, G1=G1: g_int[k] / T * om(u) + G0 + (G1 - G0) * u / dt  # noqa: E731
                    else:
                        dens = lambda u: g_int[k] / T * om(u)  # noqa: E731
                    dV = _step_quad(lambda u: dens(u) * _free_v(1.0, 0.0, u, tmk, tsk), dt)
                    dI = _step_quad(lambda u: dens(u) * _free_v(0.0, 1.0, u, tmk, tsk), dt)
                    lV[L][k] -= dV / tmk
                    lI[L][k] -= dI / tsk
        elif jumps:
            raise AssertionError("no spike can be detected at t_0")
    out["grads"] = G
    return out

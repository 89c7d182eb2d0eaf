"""A slow, obviously correct NumPy version of the engine's discrete algorithm (float64).

Written independently of the numba kernels, in matrix form, straight from the equations in
the docstring of eventprop.engine (src/eventprop/engine/__init__.py). Used only by the tests.
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


def _first_crossing(v, i, a, th, tm, ts, ta, span):
    """First s in [0, span] where the free trajectory from (V, I, A) = (v, i, a) reaches V - A = th
    from below (None if it stays below; 0 if it starts at or above). a = 0 (LIF, or alif before its
    first spike) is the LIF computation; A(s) = a e^{-s/ta}.

    Bracketing: g(s) = V(s) - A(s) - th and g' = (I(s) - V(s))/tm + A(s)/ta. With
    V(s) = c1 e^{-s/tm} + c2 e^{-s/ts}, p(s) = e^{s/tm} g'(s) = c0 + c1' e^{-r1 s} + c2' e^{-r2 s}
    (r1 = 1/ts - 1/tm, r2 = 1/ta - 1/tm) has p'(s) = -k1 e^{-r1 s} - k2 e^{-r2 s},
    k1 = i/(tm ts), k2 = r2 a/ta (also for tm == ts), = e^{-r1 s} h(s) with the monotone
    h(s) = -k1 - k2 e^{-(1/ta - 1/ts) s}: p' has at most one zero (a sign change of h), so on each
    piece between 0, that zero and span p is monotone and g' has at most one zero there (found by
    brentq on a sign change). Those zeros are g's extrema; g is monotone between consecutive
    knots, and the first piece whose right end has g >= 0 holds the first crossing (its left end
    has g < 0), found by brentq. LIF: k2 = 0, V has at most one extremum.
    """
    g = lambda s: _free_v(v, i, s, tm, ts) - a * np.exp(-s / ta) - th  # noqa: E731
    if g(0.0) >= 0:
        return 0.0
    # a cheap bound first: V(s) <= max(v, 0) + max(i, 0) min(s/tm, 1), A(s) >= min(a, a e^{-span/ta})
    if max(v, 0.0) + max(i, 0.0) * min(span / tm, 1.0) < th + min(a, a * np.exp(-span / ta)):
        return None
    dg = lambda s: (i * np.exp(-s / ts) - _free_v(v, i, s, tm, ts)) / tm + a / ta * np.exp(-s / ta)  # noqa: E731
    knots = [0.0, span]
    if a != 0.0:
        k1, k2 = i / (tm * ts), (1.0 / ta - 1.0 / tm) * a / ta
        h = lambda s: -k1 - k2 * np.exp(-(1.0 / ta - 1.0 / ts) * s)  # noqa: E731
        if h(0.0) * h(span) < 0:
            knots.insert(1, brentq(h, 0.0, span, xtol=1e-15, rtol=1e-15))
    extrema = []
    for lo, hi in zip(knots[:-1], knots[1:]):
        if dg(lo) * dg(hi) < 0:
            extrema.append(brentq(dg, lo, hi, xtol=1e-15, rtol=1e-15))
    edges = sorted(knots + extrema)
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi > lo and g(hi) >= 0:  # g(lo) < 0: the piece before ended below threshold
            return brentq(g, lo, hi, xtol=1e-15, rtol=1e-15)
    return None


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
    by_step = {}  # grid step -> arrivals delivered there (layer, idx, delta_a, spike index), in time order
    sched = {}  # grid step -> arrivals of spikes from earlier steps, delivered there (same entries)
    trace = np.zeros((N + 1, C))  # V at t_0..t_N
    integral = np.zeros(C)
    first = np.full(C, np.inf)
    first_step = np.full(C, -1)
    first_sidx = np.full(C, -1)  # spike index of each lif output's first spike
    mx = [(-np.inf, 0, -1, 0.0, 0.0)] * C  # per output: (max, step, spike index of a kink or -1, delta, tau_m V')
    evolving = [l for l in range(L + 1) if spiking[l]]  # the layers simulated exactly inside each step

    def tape_d(l, i, ic, ac):  # tau_m d(V - A)/dt just before a spike, floored
        if not alif[l]:
            return max(ic - thr[l], spec.grazing_eps)
        return max(ic - thr[l] - ac + ac * tm[l][i] / ta[l], spec.grazing_eps)

    def schedule(g0, r, l, i, sidx):  # an arrival at t_{g0} + r (r > 0), at the first grid time >= it
        k = max(int(np.ceil(r / dt)), 1)
        if g0 + k <= N:  # arrivals after T are never delivered
            sched.setdefault(g0 + k, []).append((l, i, max(k * dt - r, 0.0), sidx))

    def advance(s):  # free evolution of every neuron of the evolving layers over s ms
        for l in evolving:
            for i in range(sizes[l]):
                V[l][i], I[l][i] = (_free_v(V[l][i], I[l][i], s, tm[l][i], ts[l][i]),
                                    I[l][i] * np.exp(-s / ts[l][i]))
                A[l][i] *= np.exp(-s / ta[l])

    for n in range(N + 1):
        # a leaky-integrator output gets the arrivals of step n-1 at t_n, with the effect each would
        # have had from its time t_n - delta on (I += w e^{-delta/tau_s}, V += w kappa(delta)), the
        # voltage just before each a candidate maximum (a kink), the readout integral the sliver
        # w(t_n) int_0^delta kappa; in time order
        if n >= 1 and not spiking[L]:
            w_end = omega(n - 1)(dt)
            for (l, i, delta, sidx) in by_step.get(n, []):
                if l != L - 1:
                    continue
                for k in range(C):
                    vc = _free_v(V[L][k], I[L][k], -delta, tm[L][k], ts[L][k])
                    if vc > mx[k][0]:
                        mx[k] = (vc, n, sidx, delta, I[L][k] * np.exp(delta / ts[L][k]) - vc)
                row = P[f"ff{L}"][i]
                for k in range(C):
                    I[L][k] += row[k] * np.exp(-delta / ts[L][k])
                    V[L][k] += row[k] * _free_v(0.0, 1.0, delta, tm[L][k], ts[L][k])
                    integral[k] += row[k] * w_end * kappa_area(delta, tm[L][k], ts[L][k])
        if n < N:  # input spikes of bin n arrive at t_n
            for u in inputs[n]:
                I[0] += P["ff0"][u]
        if n >= 1:
            trace[n] = V[L]
            for k in range(C):
                if V[L][k] > mx[k][0]:
                    mx[k] = (V[L][k], n, -1, 0.0, 0.0)
        if n == N:
            break
        if not spiking[L]:  # integral readout over [t_n, t_{n+1}] from the state at t_n^+, then to t_{n+1}
            om = omega(n)
            for k in range(C):
                v0, i0, tmk, tsk = V[L][k], I[L][k], tm[L][k], ts[L][k]
                integral[k] += _step_quad(lambda u: om(u) * _free_v(v0, i0, u, tmk, tsk), dt)
            a, b, cf, _ = cons[L]
            V[L], I[L] = a * V[L] + cf * I[L], b * I[L]
        # the step (t_n, t_{n+1}], exactly and in time order: u is the time since t_n. Next event:
        # the earliest pending arrival or the earliest first crossing of any evolving neuron from
        # its current state (all re-found after every event), the arrival first on a tie.
        pend = [(dt - da, l, i, da, sidx) for (l, i, da, sidx) in sched.pop(n + 1, [])]
        u = 0.0
        while True:
            best = None  # (s, layer, idx): the earliest crossing, s ms after u
            for l in evolving:
                for i in range(sizes[l]):
                    s = _first_crossing(V[l][i], I[l][i], A[l][i], thr[l], tm[l][i], ts[l][i], ta[l], dt - u)
                    if s is not None and (best is None or s < best[0]):
                        best = (s, l, i)
            q = min(range(len(pend)), key=lambda q: pend[q][0]) if pend else -1
            if q >= 0 and (best is None or pend[q][0] <= u + best[0]):
                # an arrival at u_a: every target's current jumps by its weight
                ua, l, i, da, sidx = pend.pop(q)
                advance(max(ua - u, 0.0))
                u = max(ua, u)
                by_step.setdefault(n + 1, []).append((l, i, da, sidx))
                for (tl, row) in targets(l, i):
                    if spiking[tl]:  # (a leaky-integrator output gets it at t_{n+1}, above)
                        I[tl] += row
                continue
            if best is None:
                break
            # a spike of neuron i of layer l at u_c = u + s
            s, l, i = best
            advance(s)
            u = u + s
            delta = dt - u
            ic, ac = I[l][i], A[l][i]
            spikes.append((n + 1, l, i, tape_d(l, i, ic, ac), delta))
            adapt_c.append(ac)
            sidx = len(spikes) - 1
            if l == L and first_step[i] < 0:
                first_step[i], first[i], first_sidx[i] = n + 1, n * dt + u, sidx
            V[l][i] = 0.0
            A[l][i] += beta[l]
            # its arrival: at once (d = 0, before any other event), later in this step, or later
            if delay[l][i] <= delta:
                pend.append((min(u + delay[l][i], dt), l, i, delta - delay[l][i], sidx))
            else:
                schedule(n + 1, delay[l][i] - delta, l, i, sidx)
        advance(dt - u)
    out = {
        "integral": integral / T,
        "vmax": np.array([x[0] for x in mx]),
        "tmax_step": np.array([x[1] for x in mx]),
        "tmax": np.array([x[1] * dt - x[3] for x in mx]),
        "trace": trace,
        "first_spike": first,
        "spikes": spikes,
        "spike_adapt": np.array(adapt_c),
        "spike_kind": np.zeros(len(spikes), dtype=int),  # always 0: no spike is found at a grid time
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
            extra = (g_spk[i] if (l == L and first_sidx[i] == sidx) else 0.0) + kink  # first spike only
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

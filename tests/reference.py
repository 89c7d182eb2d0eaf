"""A slow, obviously correct NumPy version of the engine's discrete algorithm (float64).

Written independently of the numba kernels, in matrix form, straight from the equations in
eventprop/engine.py's docstring. Used only by the tests.
"""

import numpy as np

PINS = []  # (step, output) of every max pinned at spike arrivals, for test coverage checks

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


def reference_run(spec, params, inputs, n_steps, weight=None, g_int=None, g_max=None, g_trace=None,
                  g_spk=None, g_counts=None):
    """One sample. inputs: list over steps of arrays of input units.

    weight: None (w = 1) or (values at t_0..t_N, rate): in step n, w(t_n + u) =
    e^{-rate u} (w_n + (w_{n+1} e^{rate dt} - w_n) u/dt). g_trace: (N+1, C) density dl/dV at t_n,
    linear in between. Returns dict with readouts, spikes [(step, layer, idx, d)], and grads.
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
    N = n_steps
    T = N * dt
    if weight is None:
        wv, w_rate = np.ones(N + 1), 0.0
    else:
        wv, w_rate = np.asarray(weight[0], float), float(weight[1])

    def omega(n):  # the weight inside step n as a function of u in [0, dt]
        a, b = wv[n], wv[n + 1] * np.exp(w_rate * dt) - wv[n]
        return lambda u: np.exp(-w_rate * u) * (a + b * u / dt)

    V = [np.zeros(s) for s in sizes]
    I = [np.zeros(s) for s in sizes]
    spikes = []  # (step, layer, idx, d)
    by_step = {}
    trace = np.zeros((N + 1, sizes[L]))  # V at t_0..t_N
    itrace = np.zeros((N + 1, sizes[L]))
    integral = np.zeros(sizes[L])
    first = np.full(sizes[L], np.inf)
    first_step = np.full(sizes[L], -1)
    for n in range(N):
        # arrivals at t_n
        for u in inputs[n]:
            I[0] += P["ff0"][u]
        for (l, i) in by_step.get(n, []):
            if l < L:
                I[l + 1] += P[f"ff{l + 1}"][i]
            if f"rec{l}" in P:
                I[l] += P[f"rec{l}"][i]
        if not spiking[L]:  # integral readout over [t_n, t_{n+1}] from the state at t_n^+
            om = omega(n)
            for k in range(sizes[L]):
                v0, i0, tmk, tsk = V[L][k], I[L][k], tm[L][k], ts[L][k]
                integral[k] += _step_quad(lambda u: om(u) * _free_v(v0, i0, u, tmk, tsk), dt)
        for l in range(L + 1):
            a, b, cf, _ = cons[l]
            Vold, Iold = V[l].copy(), I[l].copy()
            V[l] = a * Vold + cf * Iold
            I[l] = b * Iold
            if spiking[l]:
                for i in np.nonzero(V[l] >= thr[l])[0]:
                    frac = max((thr[l] - Vold[i]) / (V[l][i] - Vold[i]), 0.0)
                    d = Iold[i] * np.exp(-frac * dt / ts[l][i]) - thr[l]
                    d = max(d, spec.grazing_eps)
                    spikes.append((n + 1, l, i, d))
                    by_step.setdefault(n + 1, []).append((l, i))
                    V[l][i] = 0.0
                    if l == L and first_step[i] < 0:
                        first_step[i] = n + 1
                        first[i] = (n + frac) * dt
        trace[n + 1] = V[L]
        itrace[n + 1] = I[L]
    out = {
        "integral": integral / T,
        "vmax": trace[1:].max(0),
        "tmax_step": trace[1:].argmax(0) + 1,
        "trace": trace,
        "first_spike": first,
        "spikes": spikes,
        "counts": [np.array([sum(1 for s in spikes if s[1] == l and s[2] == i) for i in range(sizes[l])])
                   for l in range(L + 1)],
    }
    # ---------------- backward
    C = sizes[L]
    g_int = np.zeros(C) if g_int is None else np.asarray(g_int, float)
    g_max = np.zeros(C) if g_max is None else np.asarray(g_max, float)
    g_spk = np.zeros(C) if g_spk is None else np.asarray(g_spk, float)
    lV = [np.zeros(s) for s in sizes]
    lI = [np.zeros(s) for s in sizes]
    G = {k: np.zeros_like(v) for k, v in P.items()}
    vmax = out["vmax"]
    imax = itrace[out["tmax_step"], np.arange(sizes[L])]
    for m in range(N, -1, -1):
        here = [s for s in spikes if s[0] == m]
        jumps = []
        # max pinned at spike arrivals (see engine docstring)
        pin = {}
        if not spiking[L]:
            arriving = [i for (_, l, i, _) in here if l == L - 1]
            for k in range(sizes[L]):
                if out["tmax_step"][k] != m or g_max[k] == 0 or not arriving:
                    continue
                wk = np.array([P[f"ff{L}"][i, k] for i in arriving])
                vdot = imax[k] - vmax[k]
                if vdot > 0 and vdot + wk.sum() <= 0 and wk[wk < 0].sum() < 0:
                    pin[k] = g_max[k] * vdot / tm[L][k] / wk[wk < 0].sum()
                    PINS.append((m, k))
        for (_, l, i, d) in here:
            fb = 0.0
            if l < L:
                Wr = P[f"ff{l + 1}"][i]
                fb += Wr @ (lV[l + 1] - lI[l + 1])
                G[f"ff{l + 1}"][i] -= ts[l + 1] * lI[l + 1]
            if f"rec{l}" in P:
                Wr = P[f"rec{l}"][i]
                fb += Wr @ (lV[l] - lI[l])
                G[f"rec{l}"][i] -= ts[l] * lI[l]
            extra = g_spk[i] if (l == L and first_step[i] == m) else 0.0
            if l == L - 1:
                for k, rate in pin.items():
                    if P[f"ff{L}"][i, k] < 0:
                        extra += rate * P[f"ff{L}"][i, k]
            j = (thr[l] * lV[l][i] + fb + extra) / d
            if l < L and g_counts is not None:
                j -= g_counts[l][i] / (thr[l] * tm[l][i])
            jumps.append((l, i, j))
        for (l, i, j) in jumps:
            lV[l][i] = np.clip(lV[l][i] + j, -1e15, 1e15)
        if m == N and spiking[L]:
            for k in range(C):
                if first_step[k] < 0 and g_spk[k] != 0:
                    lV[L][k] += g_spk[k] / thr[L]
        if m < N:
            for u in inputs[m]:
                G["ff0"][u] -= ts[0] * lI[0]
        if m >= 1 and not spiking[L]:
            lV[L] -= g_max * (out["tmax_step"] == m) / tm[L]
        if m >= 1:
            for l in range(L + 1):
                a, b, _, cb = cons[l]
                lI[l] = b * lI[l] + cb * lV[l]
                lV[l] = a * lV[l]
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
    out["grads"] = G
    return out

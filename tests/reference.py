"""A slow, obviously correct NumPy version of the engine's discrete algorithm (float64).

Written independently of the numba kernels, in matrix form, straight from the equations in
eventprop/engine.py's docstring. Used only by the tests.
"""

import numpy as np

PINS = []  # (step, output) of every max pinned at spike arrivals, for test coverage checks


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

    Returns dict with readouts, spikes [(step, layer, idx, d)], and grads (dict like params).
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
    w = np.ones(N) if weight is None else np.asarray(weight, float)

    V = [np.zeros(s) for s in sizes]
    I = [np.zeros(s) for s in sizes]
    spikes = []  # (step, layer, idx, d)
    by_step = {}
    trace = np.zeros((N, sizes[L]))
    itrace = np.zeros((N, sizes[L]))
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
        trace[n] = V[L]
        itrace[n] = I[L]
    out = {
        "integral": (dt / T) * (w[:, None] * trace).sum(0),
        "vmax": trace.max(0),
        "tmax_step": trace.argmax(0) + 1,
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
    imax = itrace[out["tmax_step"] - 1, np.arange(sizes[L])]
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
            src = g_int * w[m - 1] * dt / T + g_max * (out["tmax_step"] == m)
            if g_trace is not None:
                src = src + g_trace[m - 1]
            lV[L] -= src / tm[L]
        if m >= 1:
            for l in range(L + 1):
                a, b, _, cb = cons[l]
                lI[l] = b * lI[l] + cb * lV[l]
                lV[l] = a * lV[l]
    out["grads"] = G
    return out

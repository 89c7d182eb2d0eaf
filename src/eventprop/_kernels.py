"""Numba kernels of the EventProp engine (private; see engine.py for the contract and maths).

Everything is flat: neurons of all layers (hidden layers, then output) live in one state vector
with per-layer offsets ``noff``; all weight matrices live in one flat buffer ``W`` with per-layer
offsets ``ff_off`` (connection into layer l, rows = presynaptic neurons) and ``rec_off`` (-1 when
layer l is not recurrent). One sample is simulated serially; samples are spread over a fixed
number of chunks (``prange``), each with private gradient buffers, so results do not depend on
the number of threads.
"""

import numpy as np
from numba import njit, prange

NEWTON_STEPS = 4  # refinements of a crossing time inside its step (see _crossing)
LAMBDA_MAX = 1e15  # bound on |lambda_V|, |lambda_I| after a jump (see _backward_sample)


@njit(cache=True, inline="always")
def _add_row(dst, src):
    for j in range(dst.shape[0]):
        dst[j] += src[j]


@njit(cache=True, inline="always")
def _sub_row(dst, src):
    for j in range(dst.shape[0]):
        dst[j] -= src[j]


@njit(cache=True, fastmath={"reassoc", "contract", "nsz"})
def _dot(w, x):
    """sum_j w_j x_j (reassociated so that it vectorises)."""
    acc = x[0] - x[0]  # zero of the array's dtype (keeps float32 loops in float32)
    for j in range(w.shape[0]):
        acc += w[j] * x[j]
    return acc


@njit(cache=True)
def _layer_of(nid, noff, n_layers):
    l = 0
    while l + 1 < n_layers and nid >= noff[l + 1]:
        l += 1
    return l


@njit(cache=True, inline="always")
def _kap(delta, tm, ts):
    """V at delta after a unit current jump into a neuron at rest (tau_m dV/dt = -V + I)."""
    if abs(tm - ts) < 1e-9 * tm:
        return delta / tm * np.exp(-delta / tm)
    return ts / (tm - ts) * (np.exp(-delta / tm) - np.exp(-delta / ts))


@njit(cache=True, inline="always")
def _kap_area(delta, tm, ts):
    """int_0^delta _kap(u) du = tau_s (1 - e^{-delta/tau_s}) - tau_m _kap(delta)."""
    return ts * (1.0 - np.exp(-delta / ts)) - tm * _kap(delta, tm, ts)


@njit(cache=True, inline="always")
def _count_near(V, I, th, qm, qs):
    """How many neurons of a block may have reached th during the step: V >= th now, or V close
    enough below th that the trajectory could have peaked above it inside the step."""
    c = 0
    for j in range(V.shape[0]):
        v = V[j]
        i = I[j]
        margin = 2.0 * qm[j] * (abs(v - i) + qs[j] * abs(i) + qm[j] * abs(v))
        c += v + margin >= th
    return c


@njit(cache=True)
def _peak(v0, i0, tm, ts, ub):
    """The time in (0, ub) where dV/du = 0, for a trajectory rising at 0 and falling at ub (bisection)."""
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
def _crossing(v0, i0, v1, th, tm, ts, dt):
    """Time u in [0, dt] after t_n at which V(t_n + u) = v0 e^{-u/tm} + i0 kappa(u) reaches th, given
    V(t_n) = v0 < th <= V(t_n + dt) = v1: linear interpolation, then Newton steps on the exact
    trajectory (tau_m dV/du = I - V), which converge to rounding error in a few iterations.
    (dt may also be the time of an interior maximum, for a crossing that the grid does not see.)"""
    frac = (th - v0) / (v1 - v0)
    if not frac >= 0.0:  # also catches NaN from 0/0
        return 0.0
    if frac > 1.0:
        frac = 1.0
    u = frac * dt
    for _ in range(NEWTON_STEPS):
        em = np.exp(-u / tm)
        cur = i0 * np.exp(-u / ts)
        v = v0 * em + i0 * _kap(u, tm, ts)
        slope = (cur - v) / tm
        if not slope > 0.0:
            break
        u_new = u - (v - th) / slope
        if u_new < 0.0:
            u_new = 0.0
        elif u_new > dt:
            u_new = dt
        if u_new == u:
            break
        u = u_new
    return u


@njit(cache=True)
def _deliver(I, V, W, base, po, S, uniform, tau_m, tau_s, delta):
    """A spike emitted at t - delta reaches neurons po..po+S+1 at grid time t: their state at t becomes
    what it would be had the current jump (row W[base:base+S]) happened at t - delta."""
    if delta == 0.0:
        _add_row(I[po : po + S], W[base : base + S])
        return
    if uniform:
        bI = np.exp(-delta / tau_s[po])
        bV = _kap(delta, tau_m[po], tau_s[po])
        for j in range(S):
            w = W[base + j]
            I[po + j] += w * bI
            V[po + j] += w * bV
    else:
        for j in range(S):
            w = W[base + j]
            I[po + j] += w * np.exp(-delta / tau_s[po + j])
            V[po + j] += w * _kap(delta, tau_m[po + j], tau_s[po + j])


@njit(cache=True)
def _arrivals(
    b, n, n_steps, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, uni, tau_m, tau_s,
    w_a, w_b, edecay, V, I, prev_ids, prev_delta, n_prev, integral,
):
    """Everything that reaches the neurons at grid time t_n: input spikes of bin n, and the spikes
    detected at t_n (emitted at t_n - delta), each with its exact sub-step timing; for a
    leaky-integrator output also the readout integral over [t_n - delta, t_n] that the step's
    free evolution did not see (weight taken at t_n)."""
    n_layers = sizes.shape[0]
    L = n_layers - 1
    oo = noff[L]
    no = sizes[L]
    S0 = sizes[0]
    if n < n_steps:
        I0 = I[0:S0]
        for q in range(in_ptr[b, n], in_ptr[b, n + 1]):
            base = ff_off[0] + in_units[q] * S0
            _add_row(I0, W[base : base + S0])
    w_end = 0.0
    if n >= 1:
        w_end = (w_a[b, n - 1] + w_b[b, n - 1]) * edecay
    for e in range(n_prev):
        nid = prev_ids[e]
        delta = prev_delta[e]
        l = _layer_of(nid, noff, n_layers)
        i = nid - noff[l]
        if l < L:
            S = sizes[l + 1]
            base = ff_off[l + 1] + i * S
            _deliver(I, V, W, base, noff[l + 1], S, uni[l + 1], tau_m, tau_s, delta)
            if l + 1 == L and spiking[L] == 0 and delta > 0.0:
                for k in range(no):
                    integral[k] += W[base + k] * w_end * _kap_area(delta, tau_m[oo + k], tau_s[oo + k])
        if rec_off[l] >= 0:
            S = sizes[l]
            base = rec_off[l] + i * S
            _deliver(I, V, W, base, noff[l], S, uni[l], tau_m, tau_s, delta)


@njit(cache=True)
def _forward_sample(
    b, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni,
    alpha, beta, cfw, tau_s, tau_m, n_steps, dt, grazing_eps, w_a, w_b, edecay, rcoef, want_trace,
    V, I, qm, qs, prev_ids, cur_ids, prev_delta, cur_delta,
    tape_step, tape_id, tape_d, tape_delta, cap,
    integral, vmax, tmax, trace, fs_time, fs_step, counts,
):
    """Forward pass of sample b. Returns (number of spikes, grazing count).

    Spikes beyond the tape's capacity are counted but not written, and the simulation goes on
    (the spikes of the previous step are delivered from ``prev_ids``, not from the tape), so the
    returned count is exact and the caller can allocate the right tape in one go.
    """
    n_layers = sizes.shape[0]
    L = n_layers - 1
    NT = V.shape[0]
    oo = noff[L]
    no = sizes[L]
    for j in range(NT):
        V[j] = 0.0
        I[j] = 0.0
        counts[j] = 0
    for k in range(no):
        integral[k] = 0.0
        vmax[k] = -np.inf
        tmax[k] = 0
        fs_time[k] = np.inf
        fs_step[k] = -1
    ntape = 0
    graze = 0
    n_prev = 0
    if want_trace and spiking[L] == 0:
        for k in range(no):
            trace[b, 0, k] = 0.0
    for n in range(n_steps + 1):
        # ---- arrivals at t_n: input spikes of bin n, then spikes detected at t_n
        _arrivals(b, n, n_steps, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, uni, tau_m, tau_s,
                  w_a, w_b, edecay, V, I, prev_ids, prev_delta, n_prev, integral)
        # ---- sampled readouts of a leaky-integrator output at t_n (after the arrivals: the
        #      voltage is continuous, the arrivals' sub-step effect is part of V(t_n))
        if n >= 1 and spiking[L] == 0:
            for k in range(no):
                v = V[oo + k]
                if v > vmax[k]:
                    vmax[k] = v
                    tmax[k] = n
                if want_trace:
                    trace[b, n, k] = v
        if n == n_steps:
            break
        # ---- weighted-integral readout of a leaky-integrator output over [t_n, t_{n+1}], exact
        #      for the free evolution from (V, I) at t_n^+ (coefficients: engine.readout_coefs)
        if spiking[L] == 0:
            wa = w_a[b, n]
            wb = w_b[b, n]
            for k in range(no):
                v = V[oo + k]
                c = I[oo + k]
                integral[k] += wa * (rcoef[0, k] * v + rcoef[2, k] * c) + wb * (rcoef[1, k] * v + rcoef[3, k] * c)
        # ---- exact integration over [t_n, t_{n+1}] (two simple loops: they vectorise)
        for j in range(NT):
            V[j] = alpha[j] * V[j] + cfw[j] * I[j]
        for j in range(NT):
            I[j] = beta[j] * I[j]
        # ---- threshold crossings, detected at t_{n+1}
        n_cur = 0
        for l in range(n_layers):
            if spiking[l] == 0:
                continue
            th = thr[l]
            j_end = noff[l] + sizes[l]
            for blk in range(noff[l], j_end, 32):
                blk_end = min(blk + 32, j_end)
                if _count_near(V[blk:blk_end], I[blk:blk_end], th, qm[blk:blk_end], qs[blk:blk_end]) == 0:
                    continue  # vectorised test: most blocks are far from threshold
                for j in range(blk, blk_end):
                    if V[j] >= th:
                        # values at t_n, recovered from the step's exact update
                        i_old = I[j] / beta[j]
                        v_old = (V[j] - cfw[j] * i_old) / alpha[j]
                        u = _crossing(v_old, i_old, V[j], th, tau_m[j], tau_s[j], dt)
                    else:
                        # below threshold at both ends of the step: a crossing needs an interior
                        # maximum above threshold (rising at t_n, falling at t_{n+1})
                        margin = 2.0 * qm[j] * (abs(V[j] - I[j]) + qs[j] * abs(I[j]) + qm[j] * abs(V[j]))
                        if V[j] + margin < th or not I[j] < V[j]:
                            continue
                        i_old = I[j] / beta[j]
                        v_old = (V[j] - cfw[j] * i_old) / alpha[j]
                        if not i_old > v_old:
                            continue
                        us = _peak(v_old, i_old, tau_m[j], tau_s[j], dt)
                        vs = v_old * np.exp(-us / tau_m[j]) + i_old * _kap(us, tau_m[j], tau_s[j])
                        if vs < th:
                            continue
                        u = _crossing(v_old, i_old, vs, th, tau_m[j], tau_s[j], us)
                    frac = u / dt
                    delta = dt - u  # t_{n+1} - t_c
                    ic = i_old * np.exp(-u / tau_s[j])  # I(t_c)
                    d = ic - th
                    if not d >= grazing_eps:
                        d = grazing_eps
                        graze += 1
                    if ntape < cap:
                        tape_step[b, ntape] = n + 1
                        tape_id[b, ntape] = j
                        tape_d[b, ntape] = d
                        tape_delta[b, ntape] = delta
                    ntape += 1
                    cur_ids[n_cur] = j
                    cur_delta[n_cur] = delta
                    n_cur += 1
                    # reset to 0 at t_c, then free evolution of V with the current until t_{n+1}
                    V[j] = ic * _kap(delta, tau_m[j], tau_s[j])
                    counts[j] += 1
                    if l == L and fs_step[j - oo] < 0:
                        fs_step[j - oo] = n + 1
                        fs_time[j - oo] = (n + frac) * dt
        for e in range(n_cur):
            prev_ids[e] = cur_ids[e]
            prev_delta[e] = cur_delta[e]
        n_prev = n_cur
    return ntape, graze


@njit(cache=True, parallel=True)
def forward_batch(
    in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni,
    alpha, beta, cfw, tau_s, tau_m, n_steps, dt, grazing_eps, w_a, w_b, edecay, rcoef, want_trace,
    tape_step, tape_id, tape_d, tape_delta, ntape, graze,
    integral, vmax, tmax, trace, fs_time, fs_step, counts, n_chunks,
):
    B = in_ptr.shape[0]
    NT = alpha.shape[0]
    cap = tape_step.shape[1]
    for c in prange(n_chunks):
        _forward_chunk(
            c, n_chunks, B, NT, cap,
            in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni,
            alpha, beta, cfw, tau_s, tau_m, n_steps, dt, grazing_eps, w_a, w_b, edecay, rcoef, want_trace,
            tape_step, tape_id, tape_d, tape_delta, ntape, graze,
            integral, vmax, tmax, trace, fs_time, fs_step, counts,
        )


@njit(cache=True)
def _forward_chunk(
    c, n_chunks, B, NT, cap,
    in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni,
    alpha, beta, cfw, tau_s, tau_m, n_steps, dt, grazing_eps, w_a, w_b, edecay, rcoef, want_trace,
    tape_step, tape_id, tape_d, tape_delta, ntape, graze,
    integral, vmax, tmax, trace, fs_time, fs_step, counts,
):
    V = np.empty(NT, dtype=W.dtype)
    I = np.empty(NT, dtype=W.dtype)
    prev_ids = np.empty(NT, dtype=np.int32)
    cur_ids = np.empty(NT, dtype=np.int32)
    prev_delta = np.empty(NT, dtype=np.float64)
    cur_delta = np.empty(NT, dtype=np.float64)
    qm = np.empty(NT, dtype=W.dtype)  # dt / tau_m and dt / tau_s, for the near-threshold test
    qs = np.empty(NT, dtype=W.dtype)
    for j in range(NT):
        qm[j] = dt / tau_m[j]
        qs[j] = dt / tau_s[j]
    b0 = (c * B) // n_chunks
    b1 = ((c + 1) * B) // n_chunks
    for b in range(b0, b1):
        nt, gz = _forward_sample(
            b, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni,
            alpha, beta, cfw, tau_s, tau_m, n_steps, dt, grazing_eps, w_a, w_b, edecay, rcoef, want_trace,
            V, I, qm, qs, prev_ids, cur_ids, prev_delta, cur_delta, tape_step, tape_id, tape_d, tape_delta, cap,
            integral[b], vmax[b], tmax[b], trace, fs_time[b], fs_step[b], counts[b],
        )
        ntape[b] = nt
        graze[b] = gz


@njit(cache=True)
def _spike_targets(W, base, po, S, uniform, tau_m, tau_s, delta, lamV, lamI, dW):
    """One spike emitted at t_c = t_m - delta into neurons po..po+S-1, from their adjoints at t_m^+
    propagated back to t_c^+ (free backward evolution over delta):
    dL/dw -= tau_s lambda_I(t_c^+) (Table 1 (v)); returns sum_j w_j (lambda_V - lambda_I)(t_c^+)."""
    fb = 0.0
    if delta == 0.0:
        for j in range(S):
            w = W[base + j]
            fb += w * (lamV[po + j] - lamI[po + j])
            dW[base + j] -= tau_s[po + j] * lamI[po + j]
        return fb
    if uniform:
        tm = tau_m[po]
        ts = tau_s[po]
        a = np.exp(-delta / tm)
        bb = np.exp(-delta / ts)
        cb = _kap(delta, tm, ts) * tm / ts
        sv = _dot(W[base : base + S], lamV[po : po + S])
        si = _dot(W[base : base + S], lamI[po : po + S])
        g1 = ts * bb
        g2 = ts * cb
        for j in range(S):
            dW[base + j] -= g1 * lamI[po + j] + g2 * lamV[po + j]
        return (a - cb) * sv - bb * si
    for j in range(S):
        tm = tau_m[po + j]
        ts = tau_s[po + j]
        a = np.exp(-delta / tm)
        bb = np.exp(-delta / ts)
        cb = _kap(delta, tm, ts) * tm / ts
        lv = a * lamV[po + j]
        li = bb * lamI[po + j] + cb * lamV[po + j]
        fb += W[base + j] * (lv - li)
        dW[base + j] -= ts * li
    return fb


@njit(cache=True)
def _backward_sample(
    b, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni,
    alpha, beta, cbw, tau_s, tau_m, n_steps, inv_T,
    tape_step, tape_id, tape_d, tape_delta, ntape,
    w_a, w_b, edecay, rcoef, tcoef, g_int, g_max, tmax, g_trace, use_trace, g_spk, fs_step, reg,
    lamV, lamI, jump, jumpI, gtmp, dW, rec_b, rec_lamV, rec_lamI,
):
    n_layers = sizes.shape[0]
    L = n_layers - 1
    NT = lamV.shape[0]
    oo = noff[L]
    no = sizes[L]
    S0 = sizes[0]
    for j in range(NT):
        lamV[j] = 0.0
        lamI[j] = 0.0
    e_top = ntape - 1
    for m in range(n_steps, -1, -1):
        # ---- max readout: V_k sampled at t_m (after that time's arrivals): kick -dL/dmax / tau_m
        if m >= 1 and spiking[L] == 0:
            for k in range(no):
                if tmax[b, k] == m:
                    lamV[oo + k] -= g_max[b, k] / tau_m[oo + k]
        # ---- spikes detected at t_m, emitted at t_c = t_m - delta: gradients, feedback and jumps
        #      from the adjoints at t_c^+, all computed from the values at t_m, applied together
        e_lo = e_top
        while e_lo >= 0 and tape_step[b, e_lo] == m:
            e_lo -= 1
        w_end = 0.0
        if m >= 1 and spiking[L] == 0:
            w_end = (w_a[b, m - 1] + w_b[b, m - 1]) * edecay
        for e in range(e_lo + 1, e_top + 1):
            nid = tape_id[b, e]
            delta = tape_delta[b, e]
            l = _layer_of(nid, noff, n_layers)
            i = nid - noff[l]
            fb = 0.0
            if l < L:
                S = sizes[l + 1]
                base = ff_off[l + 1] + i * S
                if l + 1 == L and spiking[L] == 0:
                    # into the leaky-integrator output: its adjoint at t_c^+ also carries the
                    # readout sources over [t_c, t_m] (weight and loss density taken at t_m)
                    for k in range(no):
                        tm = tau_m[oo + k]
                        ts = tau_s[oo + k]
                        a = np.exp(-delta / tm)
                        bb = np.exp(-delta / ts)
                        kap = _kap(delta, tm, ts)
                        src = g_int[b, k] * inv_T * w_end
                        if use_trace:
                            src += g_trace[b, m, k]
                        lv = a * lamV[oo + k] - src * (1.0 - a)
                        li = bb * lamI[oo + k] + kap * tm / ts * lamV[oo + k] - src * _kap_area(delta, tm, ts) / ts
                        fb += W[base + k] * (lv - li)
                        dW[base + k] -= ts * li
                else:
                    fb += _spike_targets(W, base, noff[l + 1], S, uni[l + 1], tau_m, tau_s, delta, lamV, lamI, dW)
            if rec_off[l] >= 0:
                S = sizes[l]
                base = rec_off[l] + i * S
                fb += _spike_targets(W, base, noff[l], S, uni[l], tau_m, tau_s, delta, lamV, lamI, dW)
            extra = 0.0
            if l == L and fs_step[i] == m:
                extra = g_spk[b, i]
            a_i = np.exp(-delta / tau_m[nid])
            jv = (thr[l] * a_i * lamV[nid] + fb + extra) / tape_d[b, e]
            if l < L:
                jv -= reg[b, nid] / (thr[l] * tau_m[nid])
            # the jump happens at t_c; expressed at t_m it is the state that free backward
            # evolution over delta takes to (jv, 0)
            b_i = np.exp(-delta / tau_s[nid])
            jump[e - e_lo - 1] = jv / a_i
            jumpI[e - e_lo - 1] = -_kap(delta, tau_m[nid], tau_s[nid]) * tau_m[nid] / tau_s[nid] * jv / (a_i * b_i)
        # ---- input spikes arriving at t_m (after t_c: they see the adjoints before the jumps)
        if m < n_steps and in_ptr[b, m + 1] > in_ptr[b, m]:
            g0 = gtmp[0:S0]
            for j in range(S0):
                g0[j] = tau_s[j] * lamI[j]
            for q in range(in_ptr[b, m], in_ptr[b, m + 1]):
                base = ff_off[0] + in_units[q] * S0
                _sub_row(dW[base : base + S0], g0)
        for e in range(e_lo + 1, e_top + 1):
            nid = tape_id[b, e]
            v = lamV[nid] + jump[e - e_lo - 1]
            # hard bound: chains of near-grazing spikes can compound the jump factor (1 + theta/d);
            # never reached in normal training, it keeps every gradient finite in float32
            if v > LAMBDA_MAX:
                v = LAMBDA_MAX
            elif v < -LAMBDA_MAX:
                v = -LAMBDA_MAX
            lamV[nid] = v
            v = lamI[nid] + jumpI[e - e_lo - 1]
            if v > LAMBDA_MAX:
                v = LAMBDA_MAX
            elif v < -LAMBDA_MAX:
                v = -LAMBDA_MAX
            lamI[nid] = v
        e_top = e_lo
        # ---- phantom spikes: a spiking output neuron without a spike but with dL/dt != 0
        if m == n_steps and spiking[L] == 1:
            for k in range(no):
                if fs_step[k] < 0 and g_spk[b, k] != 0.0:
                    lamV[oo + k] += g_spk[b, k] / thr[L]
        if b == rec_b:
            for j in range(NT):
                rec_lamV[m, j] = lamV[j]
                rec_lamI[m, j] = lamI[j]
        # ---- exact backward integration from t_m to t_{m-1}, with the continuous sources of the
        #      integral readout and of a per-time loss over that step integrated exactly (they
        #      are the discrete adjoint of the forward readout: same coefficients)
        if m >= 1:
            for j in range(NT):
                lamI[j] = beta[j] * lamI[j] + cbw[j] * lamV[j]
            for j in range(NT):
                lamV[j] = alpha[j] * lamV[j]
            if spiking[L] == 0:
                wa = w_a[b, m - 1]
                wb = w_b[b, m - 1]
                for k in range(no):
                    gi = g_int[b, k] * inv_T
                    sV = gi * (wa * rcoef[0, k] + wb * rcoef[1, k])
                    sI = gi * (wa * rcoef[2, k] + wb * rcoef[3, k])
                    if use_trace:
                        G0 = g_trace[b, m - 1, k]
                        dG = g_trace[b, m, k] - G0
                        sV += G0 * tcoef[0, k] + dG * tcoef[1, k]
                        sI += G0 * tcoef[2, k] + dG * tcoef[3, k]
                    lamV[oo + k] -= sV / tau_m[oo + k]
                    lamI[oo + k] -= sI / tau_s[oo + k]


@njit(cache=True)
def _backward_chunk(
    c, n_chunks, B, NT,
    in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni,
    alpha, beta, cbw, tau_s, tau_m, n_steps, inv_T,
    tape_step, tape_id, tape_d, tape_delta, ntape,
    w_a, w_b, edecay, rcoef, tcoef, g_int, g_max, tmax, g_trace, use_trace, g_spk, fs_step, reg,
    dWc, rec_b, rec_lamV, rec_lamI,
):
    lamV = np.empty(NT, dtype=W.dtype)
    lamI = np.empty(NT, dtype=W.dtype)
    jump = np.empty(NT, dtype=W.dtype)
    jumpI = np.empty(NT, dtype=W.dtype)
    gtmp = np.empty(NT, dtype=W.dtype)
    dW = dWc[c]
    for j in range(dW.shape[0]):
        dW[j] = 0.0
    b0 = (c * B) // n_chunks
    b1 = ((c + 1) * B) // n_chunks
    for b in range(b0, b1):
        _backward_sample(
            b, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni,
            alpha, beta, cbw, tau_s, tau_m, n_steps, inv_T,
            tape_step, tape_id, tape_d, tape_delta, ntape[b],
            w_a, w_b, edecay, rcoef, tcoef, g_int, g_max, tmax, g_trace, use_trace, g_spk, fs_step[b], reg,
            lamV, lamI, jump, jumpI, gtmp, dW, rec_b, rec_lamV, rec_lamI,
        )


@njit(cache=True, parallel=True)
def backward_batch(
    in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni,
    alpha, beta, cbw, tau_s, tau_m, n_steps, inv_T,
    tape_step, tape_id, tape_d, tape_delta, ntape,
    w_a, w_b, edecay, rcoef, tcoef, g_int, g_max, tmax, g_trace, use_trace, g_spk, fs_step, reg,
    dWc, dW, rec_b, rec_lamV, rec_lamI,
):
    B = in_ptr.shape[0]
    NT = alpha.shape[0]
    n_chunks = dWc.shape[0]
    for c in prange(n_chunks):
        _backward_chunk(
            c, n_chunks, B, NT,
            in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni,
            alpha, beta, cbw, tau_s, tau_m, n_steps, inv_T,
            tape_step, tape_id, tape_d, tape_delta, ntape,
            w_a, w_b, edecay, rcoef, tcoef, g_int, g_max, tmax, g_trace, use_trace, g_spk, fs_step, reg,
            dWc, rec_b, rec_lamV, rec_lamI,
        )
    # deterministic reduction: every element summed over chunks in chunk order
    nW = dW.shape[0]
    n_blocks = 64
    for blk in prange(n_blocks):
        j0 = (blk * nW) // n_blocks
        j1 = ((blk + 1) * nW) // n_blocks
        for j in range(j0, j1):
            s = dWc[0, j]
            for c in range(1, n_chunks):
                s += dWc[c, j]
            dW[j] = s

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

LAMBDA_MAX = 1e15  # bound on |lambda_V| after a jump (see _backward_sample)


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


@njit(cache=True, inline="always")
def _count_above(v, th):
    c = 0
    for j in range(v.shape[0]):
        c += v[j] >= th
    return c


@njit(cache=True)
def _layer_of(nid, noff, n_layers):
    l = 0
    while l + 1 < n_layers and nid >= noff[l + 1]:
        l += 1
    return l


@njit(cache=True)
def _forward_sample(
    b, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr,
    alpha, beta, cfw, tau_s, n_steps, dt, grazing_eps, w_a, w_b, rcoef, want_trace,
    V, I, prev_ids, cur_ids,
    tape_step, tape_id, tape_d, cap,
    integral, vmax, tmax, imax, trace, fs_time, fs_step, counts,
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
        imax[k] = 0.0
        fs_time[k] = np.inf
        fs_step[k] = -1
    ntape = 0
    graze = 0
    n_prev = 0
    S0 = sizes[0]
    if want_trace and spiking[L] == 0:
        for k in range(no):
            trace[b, 0, k] = 0.0
    for n in range(n_steps):
        # ---- arrivals at t_n: input spikes of bin n, then spikes detected at t_n
        I0 = I[0:S0]
        for q in range(in_ptr[b, n], in_ptr[b, n + 1]):
            base = ff_off[0] + in_units[q] * S0
            _add_row(I0, W[base : base + S0])
        for e in range(n_prev):
            nid = prev_ids[e]
            l = _layer_of(nid, noff, n_layers)
            i = nid - noff[l]
            if l < L:
                S = sizes[l + 1]
                base = ff_off[l + 1] + i * S
                po = noff[l + 1]
                _add_row(I[po : po + S], W[base : base + S])
            if rec_off[l] >= 0:
                S = sizes[l]
                base = rec_off[l] + i * S
                po = noff[l]
                _add_row(I[po : po + S], W[base : base + S])
        # ---- weighted-integral readout of a leaky-integrator output over [t_n, t_{n+1}], exact
        #      for the free evolution from (V, I) at t_n^+ (coefficients: engine._readout_coefs)
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
                if _count_above(V[blk:blk_end], th) == 0:  # vectorised test, most blocks are silent
                    continue
                for j in range(blk, blk_end):
                        if V[j] >= th:
                            # values at t_n, recovered from the step's exact update
                            i_old = I[j] / beta[j]
                            v_old = (V[j] - cfw[j] * i_old) / alpha[j]
                            frac = (th - v_old) / (V[j] - v_old)
                            if not frac >= 0.0:  # also catches NaN from 0/0
                                frac = 0.0
                            elif frac > 1.0:
                                frac = 1.0
                            d = i_old * np.exp(-frac * dt / tau_s[j]) - th
                            if not d >= grazing_eps:
                                d = grazing_eps
                                graze += 1
                            if ntape < cap:
                                tape_step[b, ntape] = n + 1
                                tape_id[b, ntape] = j
                                tape_d[b, ntape] = d
                            ntape += 1
                            cur_ids[n_cur] = j
                            n_cur += 1
                            V[j] = 0.0
                            counts[j] += 1
                            if l == L and fs_step[j - oo] < 0:
                                fs_step[j - oo] = n + 1
                                fs_time[j - oo] = (n + frac) * dt
        # ---- sampled readouts of a leaky-integrator output at t_{n+1}
        if spiking[L] == 0:
            for k in range(no):
                v = V[oo + k]
                if v > vmax[k]:
                    vmax[k] = v
                    tmax[k] = n + 1
                    imax[k] = I[oo + k]  # current at t_{n+1} before that time's arrivals
                if want_trace:
                    trace[b, n + 1, k] = v
        for e in range(n_cur):
            prev_ids[e] = cur_ids[e]
        n_prev = n_cur
    return ntape, graze


@njit(cache=True, parallel=True)
def forward_batch(
    in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr,
    alpha, beta, cfw, tau_s, n_steps, dt, grazing_eps, w_a, w_b, rcoef, want_trace,
    tape_step, tape_id, tape_d, ntape, graze,
    integral, vmax, tmax, imax, trace, fs_time, fs_step, counts, n_chunks,
):
    B = in_ptr.shape[0]
    NT = alpha.shape[0]
    cap = tape_step.shape[1]
    for c in prange(n_chunks):
        _forward_chunk(
            c, n_chunks, B, NT, cap,
            in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr,
            alpha, beta, cfw, tau_s, n_steps, dt, grazing_eps, w_a, w_b, rcoef, want_trace,
            tape_step, tape_id, tape_d, ntape, graze,
            integral, vmax, tmax, imax, trace, fs_time, fs_step, counts,
        )


@njit(cache=True)
def _forward_chunk(
    c, n_chunks, B, NT, cap,
    in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr,
    alpha, beta, cfw, tau_s, n_steps, dt, grazing_eps, w_a, w_b, rcoef, want_trace,
    tape_step, tape_id, tape_d, ntape, graze,
    integral, vmax, tmax, imax, trace, fs_time, fs_step, counts,
):
    V = np.empty(NT, dtype=W.dtype)
    I = np.empty(NT, dtype=W.dtype)
    prev_ids = np.empty(NT, dtype=np.int32)
    cur_ids = np.empty(NT, dtype=np.int32)
    b0 = (c * B) // n_chunks
    b1 = ((c + 1) * B) // n_chunks
    for b in range(b0, b1):
        nt, gz = _forward_sample(
            b, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr,
            alpha, beta, cfw, tau_s, n_steps, dt, grazing_eps, w_a, w_b, rcoef, want_trace,
            V, I, prev_ids, cur_ids, tape_step, tape_id, tape_d, cap,
            integral[b], vmax[b], tmax[b], imax[b], trace, fs_time[b], fs_step[b], counts[b],
        )
        ntape[b] = nt
        graze[b] = gz


@njit(cache=True)
def _backward_sample(
    b, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr,
    alpha, beta, cbw, tau_s, tau_m, n_steps, inv_T,
    tape_step, tape_id, tape_d, ntape,
    w_a, w_b, rcoef, tcoef, g_int, g_max, tmax, imax, vmax, g_trace, use_trace, g_spk, fs_step, reg,
    lamV, lamI, jump, gtmp, diff, pin_rate, dW, rec_b, rec_lamV, rec_lamI,
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
        # ---- spikes detected at t_m: arrivals (gradient, feedback) and jumps, all from the
        #      adjoint values at t_m^+ ("top"), then applied together
        e_lo = e_top
        while e_lo >= 0 and tape_step[b, e_lo] == m:
            e_lo -= 1
        # ---- max readout pinned at spike arrivals: if output k's maximum is at t_m, V_k was
        #      rising before the arrivals of t_m and falls after them, then V_max moves with
        #      those spikes' times: dV_max/dt_i = dV_k/dt(t_m^-), shared among the arriving
        #      inhibitory spikes in proportion to their weights (exact when one spike pins it)
        n_pin = 0
        if spiking[L] == 0 and e_top > e_lo:
            for k in range(no):
                pin_rate[k] = 0.0
                if tmax[b, k] != m or g_max[b, k] == 0.0 or L < 1:
                    continue
                s_all = 0.0
                s_neg = 0.0
                for e in range(e_lo + 1, e_top + 1):
                    nid = tape_id[b, e]
                    if L >= 1 and noff[L - 1] <= nid < noff[L]:
                        wk = W[ff_off[L] + (nid - noff[L - 1]) * no + k]
                        s_all += wk
                        if wk < 0.0:
                            s_neg += wk
                vdot_m = imax[b, k] - vmax[b, k]  # tau_m dV/dt just before the arrivals
                if vdot_m > 0.0 and vdot_m + s_all <= 0.0 and s_neg < 0.0:
                    pin_rate[k] = g_max[b, k] * vdot_m / tau_m[oo + k] / s_neg
                    n_pin += 1
        if e_top > e_lo:
            # per-neuron factors shared by every spike of this time: lamV - lamI (feedback)
            # and tau_s lamI (gradient), from the values at t_m^+
            for j in range(NT):
                diff[j] = lamV[j] - lamI[j]
            for j in range(NT):
                gtmp[j] = tau_s[j] * lamI[j]
        for e in range(e_lo + 1, e_top + 1):
            nid = tape_id[b, e]
            l = _layer_of(nid, noff, n_layers)
            i = nid - noff[l]
            fb = lamV[0] - lamV[0]
            if l < L:
                S = sizes[l + 1]
                base = ff_off[l + 1] + i * S
                po = noff[l + 1]
                fb += _dot(W[base : base + S], diff[po : po + S])
                _sub_row(dW[base : base + S], gtmp[po : po + S])
            if rec_off[l] >= 0:
                S = sizes[l]
                base = rec_off[l] + i * S
                po = noff[l]
                fb += _dot(W[base : base + S], diff[po : po + S])
                _sub_row(dW[base : base + S], gtmp[po : po + S])
            extra = 0.0
            if l == L and fs_step[i] == m:
                extra = g_spk[b, i]
            if n_pin > 0 and l == L - 1:
                base = ff_off[L] + i * no
                for k in range(no):
                    if pin_rate[k] != 0.0 and W[base + k] < 0.0:
                        extra += pin_rate[k] * W[base + k]
            jv = (thr[l] * lamV[nid] + fb + extra) / tape_d[b, e]
            if l < L:
                jv -= reg[b, nid] / (thr[l] * tau_m[nid])
            jump[e - e_lo - 1] = jv
        for e in range(e_lo + 1, e_top + 1):
            v = lamV[tape_id[b, e]] + jump[e - e_lo - 1]
            # hard bound: chains of near-grazing spikes can compound the jump factor (1 + theta/d);
            # never reached in normal training, it keeps every gradient finite in float32
            if v > LAMBDA_MAX:
                v = LAMBDA_MAX
            elif v < -LAMBDA_MAX:
                v = -LAMBDA_MAX
            lamV[tape_id[b, e]] = v
        e_top = e_lo
        # ---- phantom spikes: a spiking output neuron without a spike but with dL/dt != 0
        if m == n_steps and spiking[L] == 1:
            for k in range(no):
                if fs_step[k] < 0 and g_spk[b, k] != 0.0:
                    lamV[oo + k] += g_spk[b, k] / thr[L]
        # ---- input spikes arriving at t_m
        if m < n_steps and in_ptr[b, m + 1] > in_ptr[b, m]:
            g0 = gtmp[0:S0]
            for j in range(S0):
                g0[j] = tau_s[j] * lamI[j]
            for q in range(in_ptr[b, m], in_ptr[b, m + 1]):
                base = ff_off[0] + in_units[q] * S0
                _sub_row(dW[base : base + S0], g0)
        # ---- max readout: a sample of V_k at t_m, so a kick -dL/dmax / tau_m at t_m
        if m >= 1 and spiking[L] == 0:
            for k in range(no):
                if tmax[b, k] == m:
                    lamV[oo + k] -= g_max[b, k] / tau_m[oo + k]
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
    in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr,
    alpha, beta, cbw, tau_s, tau_m, n_steps, inv_T,
    tape_step, tape_id, tape_d, ntape,
    w_a, w_b, rcoef, tcoef, g_int, g_max, tmax, imax, vmax, g_trace, use_trace, g_spk, fs_step, reg,
    dWc, rec_b, rec_lamV, rec_lamI,
):
    lamV = np.empty(NT, dtype=W.dtype)
    lamI = np.empty(NT, dtype=W.dtype)
    jump = np.empty(NT, dtype=W.dtype)
    gtmp = np.empty(NT, dtype=W.dtype)
    diff = np.empty(NT, dtype=W.dtype)
    pin_rate = np.zeros(sizes[sizes.shape[0] - 1], dtype=np.float64)
    dW = dWc[c]
    for j in range(dW.shape[0]):
        dW[j] = 0.0
    b0 = (c * B) // n_chunks
    b1 = ((c + 1) * B) // n_chunks
    for b in range(b0, b1):
        _backward_sample(
            b, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr,
            alpha, beta, cbw, tau_s, tau_m, n_steps, inv_T,
            tape_step, tape_id, tape_d, ntape[b],
            w_a, w_b, rcoef, tcoef, g_int, g_max, tmax, imax, vmax, g_trace, use_trace, g_spk, fs_step[b], reg,
            lamV, lamI, jump, gtmp, diff, pin_rate, dW, rec_b, rec_lamV, rec_lamI,
        )


@njit(cache=True, parallel=True)
def backward_batch(
    in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr,
    alpha, beta, cbw, tau_s, tau_m, n_steps, inv_T,
    tape_step, tape_id, tape_d, ntape,
    w_a, w_b, rcoef, tcoef, g_int, g_max, tmax, imax, vmax, g_trace, use_trace, g_spk, fs_step, reg,
    dWc, dW, rec_b, rec_lamV, rec_lamI,
):
    B = in_ptr.shape[0]
    NT = alpha.shape[0]
    n_chunks = dWc.shape[0]
    for c in prange(n_chunks):
        _backward_chunk(
            c, n_chunks, B, NT,
            in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr,
            alpha, beta, cbw, tau_s, tau_m, n_steps, inv_T,
            tape_step, tape_id, tape_d, ntape,
            w_a, w_b, rcoef, tcoef, g_int, g_max, tmax, imax, vmax, g_trace, use_trace, g_spk, fs_step, reg,
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

"""CUDA backend (numba-cuda; the ``cuda`` extra): the CPU kernels' algorithm on an NVIDIA GPU.

Same contract as :class:`eventprop.backend.CPUBackend`: host NumPy bundles in, host NumPy arrays
out (everything is copied to the device inside each call). The maths, step by step, is that of
``_kernels.py`` (see engine.py's docstring); this module only changes who computes what.

Layout of the work
------------------
One thread block per sample (grid = batch), ``threads`` threads per block (a multiple of 32,
at most ``MAX_THREADS``; 4 under the simulator; ``EVENTPROP_CUDA_THREADS`` overrides). Every neuron j (global index over all layers)
is *owned* by thread ``j % threads`` for the whole launch: every per-neuron quantity (V, I,
lambda_V, lambda_I, the readouts of output neuron k = j - noff[L], and column j of every weight
matrix in the per-block gradient buffer) is only ever written by its owner, or by thread 0
inside a serial phase fenced by ``cuda.syncthreads()``. So no atomics are needed, and each
neuron sees the same operations in the same order as on the CPU.

Parallel over neurons (each thread its own neurons):
  forward: the state update (V <- alpha V + cfw I, I <- beta I); the input spikes of the step
  (each thread adds the rows' entries of its own targets, looping over the step's input spikes
  in CSR order); delivering the spikes detected at a grid time to their targets (each thread
  loops over the spike list in order and updates its targets: feed-forward, recurrent, the
  output's kink-maximum check and the integral's sub-step part); the readout samples, trace and
  integral of the output neurons; candidate detection (the threshold tests and the crossing time
  of the free trajectory, ``_first_crossing``, the expensive part).
  backward: the adjoint propagation over a step and its readout sources; dW of the input spikes;
  per tape spike, the targets' adjoints at t_c, their dW entries and their share of the
  feedback sum (partial sums per thread in shared memory).
Serial (thread 0, between barriers):
  forward: taking a step's crossing candidates in time order and updating the others (the same
  loop as the CPU), writing the tape, resetting the spiking neuron, spike counts and first-spike
  times; after arrivals, the neurons they pushed over threshold (sub-step "sliver" crossings).
  backward: ordering a grid time's tape spikes by delta, the feedback sum over the threads'
  partials (fixed order), the jump and its application, kink kicks of the max readout.

Same spikes as the CPU: candidates are collected in global neuron-index order (thread 0 scans the
per-neuron detection results in index order after the parallel detection) and the next spike is
the smallest crossing time, ties to the earliest in that list, exactly as on the CPU; the sliver
crossings are likewise scanned in index order. Float64 is used wherever the CPU kernels use it
(crossing times, candidate states, deltas), float32 (or float64) states like the parameters.
On a real GPU the compiler may fuse a*b + c into one FMA, which rounds differently from the CPU:
states can differ in the last bit, so a spike can differ where V grazes the threshold to within
rounding (the contract test networks do not do that; the simulator computes like NumPy).

Tape: in global memory, (B, cap); the forward counts every spike (also past the capacity); when a
sample has more than cap spikes the pass is rerun once with the exact size (never dropped), and
the capacity grows for later calls. Gradients: one dW buffer per block (sample), summed over
blocks in block order by a second kernel (deterministic, independent of scheduling).
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import config as _nb_config
from numba import cuda

from .errors import UserError
from .backend import ForwardOutputs, Tape, allocate_forward, sized_tape_run

NEWTON_STEPS = 6
LAMBDA_MAX = 1e15
MAX_THREADS = 256  # threads per block (size of the shared partial-sum buffer)

# ---------------------------------------------------------------------------------------------
# serial device helpers: mirrors of the CPU helpers in _kernels.py (float64 where they are; the
# explicit float() casts keep the simulator, which computes with NumPy scalars, in float64 where
# numba's typing promotes to float64)


@cuda.jit(device=True)
def _layer_of(nid, noff, n_layers):
    l = 0
    while l + 1 < n_layers and nid >= noff[l + 1]:
        l += 1
    return l


@cuda.jit(device=True)
def _kap(delta, tm, ts):
    d = float(delta)
    tm = float(tm)
    ts = float(ts)
    x = (1.0 / ts - 1.0 / tm) * d
    if abs(x) < 1e-8:
        h = 1.0 - 0.5 * x
    else:
        h = -math.expm1(-x) / x
    return math.exp(-d / tm) * (d / tm) * h


@cuda.jit(device=True)
def _kap_e(delta, tm, ts, em, es):
    x = (1.0 / float(ts) - 1.0 / float(tm)) * float(delta)
    if abs(x) > 1e-3:
        c = ts / (tm - ts)  # in the arguments' dtype, as on the CPU
        return float(c) * (float(em) - float(es))
    return _kap(delta, tm, ts)


@cuda.jit(device=True)
def _kap_area(delta, tm, ts):
    return -float(ts) * math.expm1(-float(delta) / float(ts)) - float(tm) * _kap(delta, tm, ts)


@cuda.jit(device=True)
def _peak(v0, i0, tm, ts, ub):
    if abs(tm - ts) > 1e-6 * tm:
        c = ts / (tm - ts)
        x = (v0 + c * i0) * ts / (c * i0 * tm)
        if x > 0.0:
            u = math.log(x) / (1.0 / float(ts) - 1.0 / float(tm))
            if 0.0 <= u <= ub:
                return u
    lo = 0.0
    hi = float(ub)
    v0 = float(v0)
    i0 = float(i0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if i0 * math.exp(-mid / float(ts)) - (v0 * math.exp(-mid / float(tm)) + i0 * _kap(mid, tm, ts)) > 0.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@cuda.jit(device=True)
def _crossing(v0, i0, v1, th, tm, ts, dt, m1):
    v0 = float(v0)
    i0 = float(i0)
    th = float(th)
    tm = float(tm)
    ts = float(ts)
    dt = float(dt)
    v1 = float(v1)
    frac = (th - v0) / (v1 - v0) if v1 != v0 else math.nan
    if not frac >= 0.0:
        return 0.0
    if frac > 1.0:
        frac = 1.0
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
        em = math.exp(-u / tm)
        es = math.exp(-u / ts)
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


@cuda.jit(device=True)
def _first_crossing(v, i, v1, i1, th, tm, ts, span):
    if v >= th:
        return 0.0
    if v1 >= th:
        return _crossing(v, i, v1, th, tm, ts, span, (i1 - v1) / tm)
    if not i > v or not i1 < v1:
        return -1.0
    us = _peak(v, i, tm, ts, span)
    em = math.exp(-float(us) / float(tm))
    es = math.exp(-float(us) / float(ts))
    vs = float(v) * em + float(i) * _kap_e(us, tm, ts, em, es)
    if vs < th:
        return -1.0
    return _crossing(v, i, vs, th, tm, ts, us, 0.0)


@cuda.jit(device=True)
def _sliver_crossing(v, i, th, tm, ts, smax):
    v = float(v)
    i = float(i)
    tm_ = float(tm)
    if v < th:
        return 0.0
    if math.exp(smax / tm_) * v + i * _kap(-smax, tm, ts) >= th:
        return smax
    lo = 0.0
    hi = smax
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if math.exp(mid / tm_) * v + i * _kap(-mid, tm, ts) >= th:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@cuda.jit(device=True)
def _deliver_one(I, V, b, j, w, uniform, po, tau_m, tau_s, delta):
    """One spike's row entry w into neuron j (the CPU's _deliver, for one target)."""
    if delta == 0.0:
        I[b, j] += w
    elif uniform:
        bI = math.exp(-delta / float(tau_s[po]))
        bV = _kap_e(delta, tau_m[po], tau_s[po], math.exp(-delta / float(tau_m[po])), bI)
        I[b, j] = float(I[b, j]) + float(w) * bI
        V[b, j] = float(V[b, j]) + float(w) * bV
    else:
        I[b, j] = float(I[b, j]) + float(w) * math.exp(-delta / float(tau_s[j]))
        V[b, j] = float(V[b, j]) + float(w) * _kap(delta, tau_m[j], tau_s[j])


# ---------------------------------------------------------------------------------------------
# forward


@cuda.jit
def _forward_kernel(W, sizes, noff, ff_off, rec_off, spiking, thr, uni, alpha, beta, cfw, tau_s, tau_m, qm,
                    in_ptr, in_units, w_a, w_b, edecay, rcoef,
                    tape_step, tape_id, tape_d, tape_delta, tape_n,
                    integral, vmax, tmax, mx_ref, mx_delta, mx_slope, trace, fs_time, fs_step, counts, graze_out,
                    n_steps, dt, grazing_eps, want_trace, want_max,
                    V, I, mark, ids, dls, tix, cand, c_j, c_u, c_v, c_i, c_ul, c_corr, c_alive):
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nthr = cuda.blockDim.x
    sh = cuda.shared.array(4, np.int64)  # 0: list length, 1: spikes detected at the next grid time
    n_layers = sizes.shape[0]
    L = n_layers - 1
    NT = V.shape[1]
    oo = noff[L]
    no = sizes[L]
    S0 = sizes[0]
    cap = tape_step.shape[1]
    li_out = spiking[L] == 0
    for j in range(tid, NT, nthr):
        V[b, j] = 0.0
        I[b, j] = 0.0
        counts[b, j] = 0
        mark[b, j] = -1
        if j >= oo:
            k = j - oo
            integral[b, k] = 0.0
            vmax[b, k] = -math.inf
            tmax[b, k] = 0
            mx_ref[b, k] = -1
            mx_delta[b, k] = 0.0
            mx_slope[b, k] = 0.0
            fs_time[b, k] = math.inf
            fs_step[b, k] = -1
            if want_trace and li_out:
                trace[b, 0, k] = 0.0
    ntape = 0  # (thread 0's)
    graze = 0
    if tid == 0:
        sh[1] = 0
    p = 0  # ids[b, p]: spikes detected at the current grid time; ids[b, 1 - p]: the next one's
    cuda.syncthreads()
    for n in range(n_steps + 1):
        n_list = sh[1]
        # ---- arrivals at t_n (the CPU's _arrivals): deliveries in parallel over targets, then the
        #      neurons they pushed over threshold (thread 0, index order), until none is left
        if n_list > 0:
            w_end = 0.0
            if n >= 1:
                w_end = float(w_a[b, n - 1] + w_b[b, n - 1]) * edecay
            e0 = 0
            smax = 0.0
            while True:
                above = 0
                for j in range(tid, NT, nthr):
                    lt = _layer_of(j, noff, n_layers)
                    for e in range(e0, n_list):
                        nid = ids[b, p, e]
                        delta = dls[b, p, e]
                        l = _layer_of(nid, noff, n_layers)
                        i = nid - noff[l]
                        if lt == l + 1:
                            S = sizes[lt]
                            base = ff_off[lt] + i * S
                            if want_max and lt == L and li_out:
                                k = j - oo
                                kk = j if uni[L] == 0 else oo
                                tmk = tau_m[kk]
                                tsk = tau_s[kk]
                                ea = math.exp(delta / float(tmk))
                                eb = math.exp(delta / float(tsk))
                                kb = _kap(-delta, tmk, tsk)
                                vc = ea * float(V[b, j]) + float(I[b, j]) * kb
                                if vc > vmax[b, k]:
                                    vmax[b, k] = vc
                                    tmax[b, k] = n
                                    mx_ref[b, k] = tix[b, p, e]
                                    mx_delta[b, k] = delta
                                    mx_slope[b, k] = float(I[b, j]) * eb - vc
                            w = W[base + j - noff[lt]]
                            _deliver_one(I, V, b, j, w, uni[lt], noff[lt], tau_m, tau_s, delta)
                            if lt == L and li_out and delta > 0.0:
                                kk = j if uni[L] == 0 else oo
                                area = _kap_area(delta, tau_m[kk], tau_s[kk])
                                integral[b, j - oo] = float(integral[b, j - oo]) + float(w) * w_end * area
                        if lt == l and rec_off[l] >= 0:
                            S = sizes[l]
                            base = rec_off[l] + i * S
                            _deliver_one(I, V, b, j, W[base + j - noff[l]], uni[l], noff[l], tau_m, tau_s, delta)
                    if spiking[lt] != 0 and V[b, j] >= thr[lt] and mark[b, j] != n:
                        above = 1
                n_above = cuda.syncthreads_count(above)
                if n_above == 0:
                    break
                if tid == 0:
                    for e in range(e0, n_list):
                        if dls[b, p, e] > smax:
                            smax = dls[b, p, e]
                    m_list = n_list
                    for j in range(NT):
                        l = _layer_of(j, noff, n_layers)
                        if spiking[l] == 0:
                            continue
                        th = thr[l]
                        if not (V[b, j] >= th and mark[b, j] != n and m_list < NT):
                            continue
                        sj = _sliver_crossing(V[b, j], I[b, j], th, tau_m[j], tau_s[j], smax)
                        ic = float(I[b, j]) * math.exp(sj / float(tau_s[j]))
                        d = ic - th
                        if not d >= grazing_eps:
                            d = grazing_eps
                            graze += 1
                        if ntape < cap:
                            tape_step[b, ntape] = n
                            tape_id[b, ntape] = j
                            tape_d[b, ntape] = d
                            tape_delta[b, ntape] = sj
                        ntape += 1
                        mark[b, j] = n
                        ids[b, p, m_list] = j
                        dls[b, p, m_list] = sj
                        tix[b, p, m_list] = ntape - 1
                        m_list += 1
                        V[b, j] = ic * _kap(sj, tau_m[j], tau_s[j])
                        counts[b, j] += 1
                        if l == L and fs_step[b, j - oo] < 0:
                            fs_step[b, j - oo] = n
                            fs_time[b, j - oo] = float(n) * float(dt) - sj
                    sh[0] = m_list
                cuda.syncthreads()
                m_list = sh[0]
                cuda.syncthreads()  # (sh[0] is rewritten in the next round)
                if m_list == n_list:
                    break
                e0 = n_list
                n_list = m_list
        # ---- input spikes of bin n (each thread its own targets of layer 0)
        if n < n_steps:
            q0 = in_ptr[b, n]
            q1 = in_ptr[b, n + 1]
            if q1 > q0:
                for j in range(tid, S0, nthr):
                    acc = I[b, j]
                    for q in range(q0, q1):
                        acc += W[ff_off[0] + in_units[q] * S0 + j]
                    I[b, j] = acc
        # ---- output readouts: samples at t_n, then the integral over step n
        if li_out:
            for j in range(tid, NT, nthr):
                if j < oo:
                    continue
                k = j - oo
                if n >= 1:
                    v = V[b, j]
                    if v > vmax[b, k]:
                        vmax[b, k] = v
                        tmax[b, k] = n
                        mx_ref[b, k] = -1
                        mx_delta[b, k] = 0.0
                    if want_trace:
                        trace[b, n, k] = v
                if n < n_steps:
                    wa = w_a[b, n]
                    wb = w_b[b, n]
                    v = V[b, j]
                    cur = I[b, j]
                    integral[b, k] += wa * (rcoef[0, k] * v + rcoef[2, k] * cur) + wb * (rcoef[1, k] * v
                                                                                         + rcoef[3, k] * cur)
        if n == n_steps:
            break
        # ---- exact integration over the step, then the crossing candidates (parallel)
        found = 0
        for j in range(tid, NT, nthr):
            V[b, j] = alpha[j] * V[b, j] + cfw[j] * I[b, j]
            I[b, j] = beta[j] * I[b, j]
            cand[b, j] = 0
            l = _layer_of(j, noff, n_layers)
            if spiking[l] == 0:
                continue
            th = thr[l]
            v = V[b, j]
            ii = I[b, j]
            if v < th:
                if not ii < v or v + qm[j] * (v - ii) < th:
                    continue
            i_old = ii / beta[j]
            v_old = (v - cfw[j] * i_old) / alpha[j]
            u = _first_crossing(v_old, i_old, v, ii, th, tau_m[j], tau_s[j], dt)
            if u < 0.0:
                continue
            cand[b, j] = 1
            c_u[b, j] = u
            c_v[b, j] = v_old
            c_i[b, j] = i_old
            found = 1
        n_found = cuda.syncthreads_count(found)
        q = 1 - p
        # ---- the candidates in time order (thread 0: the CPU's loop, candidates in index order)
        if tid == 0:
            n_cur = 0
            if n_found > 0:
                K = 0
                for j in range(NT):  # compact in index order; slot K <= j, so in place is safe
                    if cand[b, j] != 0:
                        c_j[b, K] = j
                        c_u[b, K] = c_u[b, j]
                        c_v[b, K] = c_v[b, j]
                        c_i[b, K] = c_i[b, j]
                        c_ul[b, K] = 0.0
                        c_corr[b, K] = 0.0
                        c_alive[b, K] = 1
                        K += 1
                while True:
                    best = -1
                    bu = math.inf
                    for c in range(K):
                        if c_alive[b, c] != 0 and c_u[b, c] < bu:
                            best = c
                            bu = c_u[b, c]
                    if best < 0:
                        break
                    if c_alive[b, best] == 2:
                        jb = c_j[b, best]
                        lb_ = _layer_of(jb, noff, n_layers)
                        thb = thr[lb_]
                        tmb = tau_m[jb]
                        tsb = tau_s[jb]
                        spb = float(dt) - c_ul[b, best]
                        em = math.exp(-spb / float(tmb))
                        es = math.exp(-spb / float(tsb))
                        v1 = c_v[b, best] * em + c_i[b, best] * _kap_e(spb, tmb, tsb, em, es)
                        uu = _first_crossing(c_v[b, best], c_i[b, best], v1, c_i[b, best] * es, thb, tmb, tsb, spb)
                        if uu < 0.0:
                            c_alive[b, best] = 0
                        else:
                            c_u[b, best] = c_ul[b, best] + uu
                            c_alive[b, best] = 1
                        continue
                    c_alive[b, best] = 0
                    j = c_j[b, best]
                    u = bu
                    l = _layer_of(j, noff, n_layers)
                    th = thr[l]
                    frac = u / float(dt)
                    delta = float(dt) - u
                    ic = c_i[b, best] * math.exp(-(u - c_ul[b, best]) / float(tau_s[j]))
                    kap_d = _kap_e(delta, tau_m[j], tau_s[j], math.exp(-delta / float(tau_m[j])),
                                   math.exp(-delta / float(tau_s[j])))
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
                    mark[b, j] = n + 1
                    ids[b, q, n_cur] = j
                    dls[b, q, n_cur] = delta
                    tix[b, q, n_cur] = ntape - 1
                    n_cur += 1
                    V[b, j] = ic * kap_d - c_corr[b, best]
                    counts[b, j] += 1
                    if l == L and fs_step[b, j - oo] < 0:
                        fs_step[b, j - oo] = n + 1
                        fs_time[b, j - oo] = (float(n) + frac) * float(dt)
                    i_pre = j - noff[l]
                    span = float(dt) - u
                    f_key_l = -1
                    f_s2 = -1.0
                    f_em = 1.0
                    f_es = 1.0
                    f_ke = 0.0
                    f_kd = 0.0
                    f_sm = 1.0
                    f_ss = 1.0
                    f_ks = 0.0
                    n_scan = K if (rec_off[l] >= 0 or (l < L and spiking[l + 1] == 1)) else 0
                    for c in range(n_scan):
                        if c_alive[b, c] == 0:
                            continue
                        jc = c_j[b, c]
                        lc = _layer_of(jc, noff, n_layers)
                        w = 0.0
                        if lc == l + 1:
                            w += float(W[ff_off[lc] + i_pre * sizes[lc] + (jc - noff[lc])])
                        if lc == l and rec_off[l] >= 0:
                            w += float(W[rec_off[l] + i_pre * sizes[l] + (jc - noff[l])])
                        if w == 0.0:
                            continue
                        s2 = u - c_ul[b, c]
                        tmc = tau_m[jc]
                        tsc = tau_s[jc]
                        if uni[lc] == 0 or lc != f_key_l or s2 != f_s2:
                            f_em = math.exp(-s2 / float(tmc))
                            f_es = math.exp(-s2 / float(tsc))
                            f_ke = _kap_e(s2, tmc, tsc, f_em, f_es)
                            if uni[lc] == 0 or lc != f_key_l:
                                f_kd = _kap(delta, tmc, tsc)
                                f_sm = math.exp(-span / float(tmc))
                                f_ss = math.exp(-span / float(tsc))
                                f_ks = _kap_e(span, tmc, tsc, f_sm, f_ss)
                            f_key_l = lc
                            f_s2 = s2
                        c_v[b, c] = c_v[b, c] * f_em + c_i[b, c] * f_ke
                        c_i[b, c] = c_i[b, c] * f_es + w
                        c_ul[b, c] = u
                        c_corr[b, c] += w * f_kd
                        vc = c_v[b, c]
                        thc = thr[lc]
                        if vc >= thc:
                            c_u[b, c] = u
                            c_alive[b, c] = 1
                            continue
                        v1 = vc * f_sm + c_i[b, c] * f_ks
                        if v1 >= thc:
                            ip = max(c_i[b, c], 0.0)
                            lbd = float(tmc) * (float(thc) - vc) / (ip - vc) if ip > vc else span
                            c_u[b, c] = u + min(lbd, span)
                            c_alive[b, c] = 2
                            continue
                        if not (c_i[b, c] > vc and c_i[b, c] * f_ss < v1):
                            c_alive[b, c] = 0
                            continue
                        uu = _first_crossing(vc, c_i[b, c], v1, c_i[b, c] * f_ss, thc, tmc, tsc, span)
                        if uu < 0.0:
                            c_alive[b, c] = 0
                        else:
                            c_u[b, c] = u + uu
                            c_alive[b, c] = 1
            sh[1] = n_cur
        p = q
        cuda.syncthreads()
    if tid == 0:
        tape_n[b] = ntape
        graze_out[b] = graze


# ---------------------------------------------------------------------------------------------
# backward


@cuda.jit(device=True)
def _target_adjoint(W, base, po, j, uniform, tau_m, tau_s, delta, lamV, lamI, dW, b):
    """Target j of one spike (the CPU's _spike_targets, one entry): dW, and its feedback term."""
    w = W[base + j - po]
    if delta == 0.0:
        dW[b, base + j - po] -= tau_s[j] * lamI[b, j]
        return float(w * (lamV[b, j] - lamI[b, j]))
    k = po if uniform else j
    tm = tau_m[k]
    ts = tau_s[k]
    a = math.exp(-delta / float(tm))
    bb = math.exp(-delta / float(ts))
    cb = _kap_e(delta, tm, ts, a, bb) * float(tm) / float(ts)
    lv = a * float(lamV[b, j])
    li = bb * float(lamI[b, j]) + cb * float(lamV[b, j])
    dW[b, base + j - po] = float(dW[b, base + j - po]) - float(ts) * li
    return float(w) * (lv - li)


@cuda.jit
def _backward_kernel(W, sizes, noff, ff_off, rec_off, spiking, thr, uni, alpha, beta, cbw, tau_s, tau_m,
                     in_ptr, in_units, w_a, w_b, edecay, rcoef, tcoef,
                     tape_step, tape_id, tape_d, tape_delta, tape_n,
                     tmax, mx_ref, mx_slope, fs_step,
                     g_int, g_max, g_trace, g_spk, reg,
                     n_steps, inv_T, use_trace, lamV, lamI, order, dW, hits_out, rec_b, rec_V, rec_I):
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nthr = cuda.blockDim.x
    sh = cuda.shared.array(4, np.int64)
    part = cuda.shared.array(MAX_THREADS, np.float64)
    n_layers = sizes.shape[0]
    L = n_layers - 1
    NT = lamV.shape[1]
    oo = noff[L]
    no = sizes[L]
    S0 = sizes[0]
    nW = W.shape[0]
    li_out = spiking[L] == 0
    for j in range(tid, NT, nthr):
        lamV[b, j] = 0.0
        lamI[b, j] = 0.0
    for x in range(tid, nW, nthr):
        dW[b, x] = 0.0
    hits = 0
    e_top = tape_n[b] - 1
    cuda.syncthreads()
    for m in range(n_steps, -1, -1):
        # ---- max readout at the grid sample t_m
        n_kink = 0
        if m >= 1 and li_out:
            for k in range(no):
                if tmax[b, k] == m and g_max[b, k] != 0.0:
                    if mx_ref[b, k] < 0:
                        if (oo + k) % nthr == tid:
                            lamV[b, oo + k] -= g_max[b, k] / tau_m[oo + k]
                    else:
                        n_kink += 1
        # ---- input spikes arriving at t_m
        if m < n_steps:
            q0 = in_ptr[b, m]
            q1 = in_ptr[b, m + 1]
            if q1 > q0:
                for j in range(tid, S0, nthr):
                    g0 = tau_s[j] * lamI[b, j]
                    for q in range(q0, q1):
                        x = ff_off[0] + in_units[q] * S0 + j
                        dW[b, x] -= g0
        # ---- spikes detected at t_m, ordered by delta (thread 0)
        if tid == 0:
            e_lo = e_top
            while e_lo >= 0 and tape_step[b, e_lo] == m:
                e_lo -= 1
            n_here = e_top - e_lo
            for qq in range(n_here):
                e = e_lo + 1 + qq
                r = qq
                while r > 0 and tape_delta[b, order[b, r - 1]] > tape_delta[b, e]:
                    order[b, r] = order[b, r - 1]
                    r -= 1
                order[b, r] = e
            e_top = e_lo
            sh[0] = n_here
        cuda.syncthreads()
        n_here = sh[0]
        w_end = 0.0
        if m >= 1 and li_out:
            w_end = float(w_a[b, m - 1] + w_b[b, m - 1]) * edecay
        for qq in range(n_here):
            e = order[b, qq]
            nid = tape_id[b, e]
            delta = float(tape_delta[b, e])
            l = _layer_of(nid, noff, n_layers)
            i = nid - noff[l]
            fb = 0.0
            for j in range(tid, NT, nthr):
                lt = _layer_of(j, noff, n_layers)
                if lt == l + 1:
                    S = sizes[lt]
                    base = ff_off[lt] + i * S
                    if lt == L and li_out:
                        k = j - oo
                        kk = j if uni[L] == 0 else oo
                        tm = tau_m[kk]
                        ts = tau_s[kk]
                        a = math.exp(-delta / float(tm))
                        bb = math.exp(-delta / float(ts))
                        kp = _kap_e(delta, tm, ts, a, bb)
                        cb = kp * float(tm) / float(ts)
                        area = (-float(ts) * math.expm1(-delta / float(ts)) - float(tm) * kp) / float(ts)
                        src = float(g_int[b, k] * inv_T) * w_end
                        if use_trace:
                            src += float(g_trace[b, m, k])
                        lv = a * float(lamV[b, j]) - src * (1.0 - a)
                        li = bb * float(lamI[b, j]) + cb * float(lamV[b, j]) - src * area
                        fb += float(W[base + k]) * (lv - li)
                        dW[b, base + k] = float(dW[b, base + k]) - float(ts) * li
                    else:
                        fb += _target_adjoint(W, base, noff[lt], j, uni[lt], tau_m, tau_s, delta, lamV, lamI, dW, b)
                if lt == l and rec_off[l] >= 0:
                    fb += _target_adjoint(W, rec_off[l] + i * sizes[l], noff[l], j, uni[l], tau_m, tau_s, delta,
                                          lamV, lamI, dW, b)
            part[tid] = fb
            cuda.syncthreads()
            if tid == 0:
                fb = 0.0
                for t in range(nthr):
                    fb += part[t]
                extra = 0.0
                if l == L and fs_step[b, i] == m:
                    extra = float(g_spk[b, i])
                if n_kink > 0:
                    for k in range(no):
                        if tmax[b, k] == m and mx_ref[b, k] == e and g_max[b, k] != 0.0:
                            extra += float(g_max[b, k] * mx_slope[b, k] / tau_m[oo + k])
                a_i = math.exp(-delta / float(tau_m[nid]))
                b_i = math.exp(-delta / float(tau_s[nid]))
                jv = (float(thr[l]) * a_i * float(lamV[b, nid]) + fb + extra) / float(tape_d[b, e])
                if l < L:
                    jv -= float(reg[b, nid] / (thr[l] * tau_m[nid]))
                ji = -_kap_e(delta, tau_m[nid], tau_s[nid], a_i, b_i) * float(tau_m[nid]) / float(tau_s[nid]) * jv \
                    / (a_i * b_i)
                v = float(lamV[b, nid]) + jv / a_i
                ii = float(lamI[b, nid]) + ji
                if not abs(v) <= LAMBDA_MAX or not abs(ii) <= LAMBDA_MAX:
                    hits += 1
                    v = min(max(v, -LAMBDA_MAX), LAMBDA_MAX)
                    ii = min(max(ii, -LAMBDA_MAX), LAMBDA_MAX)
                lamV[b, nid] = v
                lamI[b, nid] = ii
                if n_kink > 0:
                    for k in range(no):
                        if tmax[b, k] == m and mx_ref[b, k] == e and g_max[b, k] != 0.0:
                            tmk = tau_m[oo + k]
                            tsk = tau_s[oo + k]
                            ak = math.exp(-delta / float(tmk))
                            bk = math.exp(-delta / float(tsk))
                            kick = float(-g_max[b, k] / tmk)
                            lamV[b, oo + k] = float(lamV[b, oo + k]) + kick / ak
                            lamI[b, oo + k] = float(lamI[b, oo + k]) - _kap(delta, tmk, tsk) * float(tmk) / float(tsk) \
                                * kick / (ak * bk)
            cuda.syncthreads()
        # ---- phantom spikes, recording, then backward integration to t_{m-1} (own neurons)
        for j in range(tid, NT, nthr):
            if j >= oo and m == n_steps and not li_out:
                k = j - oo
                if fs_step[b, k] < 0 and g_spk[b, k] != 0.0:
                    lamV[b, j] += g_spk[b, k] / thr[L]
            if b == rec_b:
                rec_V[m, j] = lamV[b, j]
                rec_I[m, j] = lamI[b, j]
            if m >= 1:
                lamI[b, j] = beta[j] * lamI[b, j] + cbw[j] * lamV[b, j]
                lamV[b, j] = alpha[j] * lamV[b, j]
                if j >= oo and li_out:
                    k = j - oo
                    wa = w_a[b, m - 1]
                    wb = w_b[b, m - 1]
                    gi = g_int[b, k] * inv_T
                    sV = gi * (wa * rcoef[0, k] + wb * rcoef[1, k])
                    sI = gi * (wa * rcoef[2, k] + wb * rcoef[3, k])
                    if use_trace:
                        G0 = g_trace[b, m - 1, k]
                        dG = g_trace[b, m, k] - G0
                        sV += G0 * tcoef[0, k] + dG * tcoef[1, k]
                        sI += G0 * tcoef[2, k] + dG * tcoef[3, k]
                    lamV[b, j] -= sV / tau_m[j]
                    lamI[b, j] -= sI / tau_s[j]
        cuda.syncthreads()
    if tid == 0:
        hits_out[b] = hits


@cuda.jit
def _reduce_kernel(dWb, dW):
    """dW[x] = sum over blocks of dWb[b, x], in block order (deterministic)."""
    x = cuda.grid(1)
    if x < dW.shape[0]:
        s = dWb[0, x]
        for b in range(1, dWb.shape[0]):
            s += dWb[b, x]
        dW[x] = s


# ---------------------------------------------------------------------------------------------
# host side


def simulator() -> bool:
    return bool(_nb_config.ENABLE_CUDASIM)


def threads_per_block(NT: int) -> int:
    env = os.environ.get("EVENTPROP_CUDA_THREADS")
    if env:
        return max(1, min(MAX_THREADS, int(env)))
    if simulator():
        return 4  # every simulated thread is a Python thread: few, but more than one (ownership by stride)
    return int(min(MAX_THREADS, max(32, -(-NT // 32) * 32)))


def _net_to_device(net):
    return tuple(cuda.to_device(np.ascontiguousarray(a)) for a in
                 (net.W, net.sizes, net.noff, net.ff_off, net.rec_off, net.spiking, net.thr, net.uni, net.alpha,
                  net.beta))


class CUDABackend:
    """One thread block per sample on an NVIDIA GPU (see the module docstring)."""

    name = "cuda"
    _cap = [64]

    def forward(self, net, inp, ro, n_steps, dt, grazing_eps, want_trace, want_max):
        if net.ada.any() or net.has_dly:
            raise UserError("adaptive (alif) neurons and hidden-neuron delays run on the cpu backend only for now; "
                            "use model.backend=cpu")
        B = inp.ptr.shape[0]
        C = int(net.sizes[-1])
        NT = int(net.sizes.sum())
        dtype = net.W.dtype.type
        if B == 0:
            return allocate_forward(B, C, NT, n_steps, self._cap[0], dtype, want_trace)
        td = cuda.to_device
        dnet = _net_to_device(net) + (td(net.cfw), td(net.tau_s), td(net.tau_m))
        qm = (2.0 * np.float64(dtype(dt)) / net.tau_m.astype(np.float64)).astype(dtype)
        units = inp.units if len(inp.units) else np.zeros(1, np.int32)
        dinp = (td(qm), td(inp.ptr), td(units), td(np.ascontiguousarray(ro.w_a)), td(np.ascontiguousarray(ro.w_b)),
                float(ro.edecay), td(np.ascontiguousarray(ro.rcoef)))
        f64 = np.float64
        scratch = (cuda.device_array((B, NT), dtype), cuda.device_array((B, NT), dtype),
                   cuda.device_array((B, NT), np.int64), cuda.device_array((B, 2, NT), np.int32),
                   cuda.device_array((B, 2, NT), f64), cuda.device_array((B, 2, NT), np.int64),
                   cuda.device_array((B, NT), np.int8), cuda.device_array((B, NT), np.int64),
                   cuda.device_array((B, NT), f64), cuda.device_array((B, NT), f64),
                   cuda.device_array((B, NT), f64), cuda.device_array((B, NT), f64),
                   cuda.device_array((B, NT), f64), cuda.device_array((B, NT), np.int8))
        nthr = threads_per_block(NT)

        def run(tape, fo):
            dtape = [td(a) for a in tape[:5]]  # (no aux: no alif here)
            dfo = [td(a) for a in fo[:-1]]  # (the counters are the CPU kernels' only)
            _forward_kernel[B, nthr](*dnet, *dinp, *dtape, *dfo, n_steps, dtype(dt), dtype(grazing_eps),
                                     bool(want_trace), bool(want_max), *scratch)
            return Tape(*[a.copy_to_host() for a in dtape], *tape[5:]), ForwardOutputs(*[a.copy_to_host() for a in dfo], fo.counters)

        return sized_tape_run(self, B, C, NT, n_steps, dtype, want_trace, run)

    def backward(self, net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, record, tau=None, delays=0):
        if tau is not None or delays:
            raise UserError("learned time constants and input delays run on the cpu backend only for now; "
                            "use model.backend=cpu")
        B = inp.ptr.shape[0]
        NT = int(net.sizes.sum())
        dt_ = net.W.dtype
        nW = net.W.shape[0]
        if record is not None:
            rec_V = np.zeros((n_steps + 1, NT), dtype=dt_)
            rec_I = np.zeros((n_steps + 1, NT), dtype=dt_)
        else:
            rec_V = rec_I = np.zeros((1, 1), dtype=dt_)
        if B == 0:
            return np.zeros(nW, dt_), 0, (rec_V if record is not None else None), \
                (rec_I if record is not None else None), None, None, None
        td = cuda.to_device
        c = np.ascontiguousarray
        dnet = _net_to_device(net) + (td(net.cbw), td(net.tau_s), td(net.tau_m))
        units = inp.units if len(inp.units) else np.zeros(1, np.int32)
        dinp = (td(inp.ptr), td(units), td(c(ro.w_a)), td(c(ro.w_b)), float(ro.edecay), td(c(ro.rcoef)),
                td(c(ro.tcoef)))
        dtape = [td(c(a)) for a in tape[:5]]
        dfo = [td(c(a)) for a in (fo.tmax, fo.mx_ref, fo.mx_slope, fo.fs_step)]
        dgr = [td(c(a)) for a in gr]
        lamV = cuda.device_array((B, NT), dt_)
        lamI = cuda.device_array((B, NT), dt_)
        order = cuda.device_array((B, max(NT, 1)), np.int64)
        dWb = cuda.device_array((B, nW), dt_)
        dhits = cuda.device_array(B, np.int64)
        drec_V = td(rec_V)
        drec_I = td(rec_I)
        nthr = threads_per_block(NT)
        _backward_kernel[B, nthr](*dnet, *dinp, *dtape, *dfo, *dgr, n_steps, dt_.type(inv_T), bool(use_trace),
                                  lamV, lamI, order, dWb, dhits, -1 if record is None else int(record),
                                  drec_V, drec_I)
        ddW = cuda.device_array(nW, dt_)
        _reduce_kernel[(nW + 127) // 128, 128](dWb, ddW)
        dW = ddW.copy_to_host()
        hits = int(dhits.copy_to_host().sum())
        if record is None:
            return dW, hits, None, None, None, None, None
        return dW, hits, drec_V.copy_to_host(), drec_I.copy_to_host(), None, None, None

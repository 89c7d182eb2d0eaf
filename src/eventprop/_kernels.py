"""Numba kernels of the EventProp engine (private; see engine.py for the contract and maths).

Everything is flat: neurons of all layers (hidden layers, then output) live in one state vector
with per-layer offsets ``noff``; all weight matrices live in one flat buffer ``W`` with per-layer
offsets ``ff_off`` (connection into layer l, rows = presynaptic neurons) and ``rec_off`` (-1 when
layer l is not recurrent). One sample is simulated serially; samples are spread over a fixed
number of chunks (``prange``), each with private gradient buffers, so results do not depend on
the number of threads. The neuron models' own pieces (propagators, crossing solvers, spike
slope, adjoint jump) live in eventprop.neurons; these kernels choose them per layer.
"""

from collections import namedtuple

import numpy as np
from numba import njit, prange

from .neurons.lif import (_count_near, _decay_rows, _dprop, _dprop_r, _first_crossing, _kap,  # noqa: F401
                          _kap_area, _kap_e, _rates, _sliver_crossing)
from .neurons import alif as _alif
from .neurons import lif as _lif

# per-chunk work arrays of the forward pass
_FwdScratch = namedtuple("_FwdScratch", "V I qm mark prev_ids cur_ids prev_delta cur_delta prev_tidx cur_tidx "
                                        "c_j c_u c_v c_i c_ul c_corr c_alive ea eb ek rt A c_a "
                                        "p_src p_u p_tidx sch_g sch_u sch_src sch_tidx")

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


@njit(cache=True)
def _tau_targets(W, base, po, S, tau_m, tau_s, delta, lamV, lamI, nuVm, nuIm, nuVs, nuIs, dtau, ea, eb, ek, rt):
    """dL/dtau of the targets po..po+S-1 of a spike emitted at t_c = t_m - delta: its current jump
    w at t_c is an event of each target, worth w nu_I(t_c) with nu(t_c) = Phi(delta)^T nu(t_m) +
    dPhi(delta)/dtau^T p(t_m) (p = (-tau_m lambda_V, -tau_s lambda_I), the costate).
    ea, eb: e^{-delta/tau_m}, e^{-delta/tau_s} of the targets (_decay_rows)."""
    h = delta
    for j in range(S):
        n = po + j
        tm = tau_m[n]
        ts = tau_s[n]
        em = ea[n]
        es = eb[n]
        kp = ek[n]
        _, dkm, dks, des = _dprop_r(h, rt[0, n], rt[1, n], em, es, kp)
        w = W[base + j]
        pV = -tm * lamV[n]
        pI = -ts * lamI[n]
        dtau[n, 0] += w * (kp * nuVm[n] + es * nuIm[n] + dkm * pV)
        dtau[n, 1] += w * (kp * nuVs[n] + es * nuIs[n] + dks * pV + des * pI)


@njit(cache=True, inline="always")
def _count_above(v, th):
    c = 0
    for j in range(v.shape[0]):
        c += v[j] >= th
    return c


@njit(cache=True)
def _deliver(I, V, W, base, po, S, uniform, tau_m, tau_s, delta, ea, eb, ek, rt):
    """A spike emitted at t - delta reaches neurons po..po+S+1 at grid time t: their state at t becomes
    what it would be had the current jump (row W[base:base+S]) happened at t - delta."""
    if delta == 0.0:
        _add_row(I[po : po + S], W[base : base + S])
        return
    if uniform:
        bI = np.exp(-delta / tau_s[po])
        bV = _kap_e(delta, tau_m[po], tau_s[po], np.exp(-delta / tau_m[po]), bI)
        for j in range(S):
            w = W[base + j]
            I[po + j] += w * bI
            V[po + j] += w * bV
    else:
        _decay_rows(ea, eb, ek, po, S, tau_m, tau_s, rt, delta)
        for j in range(S):
            n = po + j
            w = W[base + j]
            I[n] += w * eb[n]
            V[n] += w * ek[n]


@njit(cache=True)
def _arrivals(
    b, n, n_steps, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni, tau_m, tau_s,
    grazing_eps, w_a, w_b, edecay, V, I, ids, deltas, tidx, n_prev, mark, integral,
    tape_step, tape_id, tape_d, tape_delta, cap, ntape, graze, counts, fs_step, fs_time, dt,
    want_max, vmax, tmax, mx_ref, mx_delta, mx_slope, ea, eb, ek, rt, ada, A, tau_a, binc, tape_aux,
    has_dly, dly, sch_g, sch_u, sch_src, sch_tidx, sch_n, tape, na,
):
    """The spikes detected at grid time t_n (emitted at t_n - delta) reach their targets, each with
    its exact sub-step effect.

    For a leaky-integrator output, the readout integral over [t_n - delta, t_n] that the step's
    free evolution did not see is added (weight taken at t_n). A neuron that these arrivals push
    over threshold crossed it inside the step: it spikes at the crossing time of its trajectory
    (found backward from t_n), is recorded with step n, and its spike is delivered in turn.
    (The input spikes of bin n arrive after these, in the caller.)
    With ``want_max``, the output voltage just before each arrival of a hidden spike (a kink of
    the trajectory, where a maximum sits when an inhibitory spike turns V down) is a candidate
    for the maximum readout.

    With axonal delays (``has_dly``) the list holds the arrivals delivered at t_n (source neuron,
    t_n - arrival time, the source spike's tape index), each is also written to the arrival tape,
    and a spike found here arrives at once (back-dated by s_j - d) if its delay d is at most its
    s_j, else it is scheduled. Returns (list length, tape length, grazing count, scheduled
    arrivals, arrival-tape length)."""
    n_layers = sizes.shape[0]
    L = n_layers - 1
    oo = noff[L]
    no = sizes[L]
    w_end = 0.0
    if n >= 1:
        w_end = (w_a[b, n - 1] + w_b[b, n - 1]) * edecay
    n_list = n_prev
    smax = 0.0
    e = 0
    while e < n_list:
        while e < n_list:
            nid = ids[e]
            delta = deltas[e]
            if delta > smax:
                smax = delta
            if has_dly:
                if na < tape.a_step.shape[1]:
                    tape.a_step[b, na] = n
                    tape.a_src[b, na] = tidx[e]
                    tape.a_delta[b, na] = delta
                na += 1
            l = _layer_of(nid, noff, n_layers)
            i = nid - noff[l]
            if l < L:
                S = sizes[l + 1]
                base = ff_off[l + 1] + i * S
                if want_max and l + 1 == L and spiking[L] == 0:
                    for k in range(no):
                        if k == 0 or uni[L] == 0:
                            tmk = tau_m[oo + k]
                            tsk = tau_s[oo + k]
                            xa = np.exp(delta / tmk)
                            xb = np.exp(delta / tsk)
                            kb = _kap(-delta, tmk, tsk)
                        vc = xa * V[oo + k] + I[oo + k] * kb  # V(t_c^-)
                        if vc > vmax[k]:
                            vmax[k] = vc
                            tmax[k] = n
                            mx_ref[k] = tidx[e]
                            mx_delta[k] = delta
                            mx_slope[k] = I[oo + k] * xb - vc  # tau_m dV/dt(t_c^-)
                _deliver(I, V, W, base, noff[l + 1], S, uni[l + 1], tau_m, tau_s, delta, ea, eb, ek, rt)
                if l + 1 == L and spiking[L] == 0 and delta > 0.0:
                    for k in range(no):
                        if k == 0 or uni[L] == 0:
                            area = _kap_area(delta, tau_m[oo + k], tau_s[oo + k])
                        integral[k] += W[base + k] * w_end * area
            if rec_off[l] >= 0:
                S = sizes[l]
                base = rec_off[l] + i * S
                _deliver(I, V, W, base, noff[l], S, uni[l], tau_m, tau_s, delta, ea, eb, ek, rt)
            e += 1
        # crossings inside the step caused by these arrivals (at most one per neuron and step)
        for l in range(n_layers):
            if spiking[l] == 0:
                continue
            th = thr[l]
            ad = ada[l]
            j_end = noff[l] + sizes[l]
            for blk in range(noff[l], j_end, 32):
                blk_end = min(blk + 32, j_end)
                if ad == 0 and _count_above(V[blk:blk_end], th) == 0:
                    continue
                for j in range(blk, blk_end):
                    if not ((V[j] - A[j] if ad else V[j]) >= th and mark[j] != n and n_list < ids.shape[0]):
                        continue
                    ac = 0.0
                    if ad:  # adaptive threshold theta + A (eventprop.neurons.alif)
                        sj = _alif.sliver_crossing(V[j], I[j], A[j], th, tau_m[j], tau_s[j], tau_a[j], smax)
                        ic = I[j] * np.exp(sj / tau_s[j])
                        ac = A[j] * np.exp(sj / tau_a[j])
                        d = _alif.slope_at_spike(ic, ac, th, tau_m[j], tau_a[j])
                        A[j] += binc[j] * np.exp(-sj / tau_a[j])
                    else:
                        sj = _sliver_crossing(V[j], I[j], th, tau_m[j], tau_s[j], smax)
                        ic = I[j] * np.exp(sj / tau_s[j])
                        d = _lif.slope_at_spike(ic, th)
                    if not d >= grazing_eps:
                        d = grazing_eps
                        graze += 1
                    if ntape < cap:
                        tape_step[b, ntape] = n
                        tape_id[b, ntape] = j
                        tape_d[b, ntape] = d
                        tape_delta[b, ntape] = sj
                        if ad:
                            tape_aux[b, ntape] = ac
                    ntape += 1
                    mark[j] = n
                    if not has_dly:
                        ids[n_list] = j
                        deltas[n_list] = sj
                        tidx[n_list] = ntape - 1
                        n_list += 1
                    elif l < L:  # its arrival t_n - sj + d: now, back-dated, or later
                        if dly[j] <= sj:
                            ids[n_list] = j
                            deltas[n_list] = sj - dly[j]
                            tidx[n_list] = ntape - 1
                            n_list += 1
                        else:
                            sch_n = _schedule(j, ntape - 1, n, dly[j] - sj, dt, n_steps, sch_g, sch_u, sch_src,
                                              sch_tidx, sch_n)
                    V[j] = ic * _kap(sj, tau_m[j], tau_s[j])
                    counts[j] += 1
                    if l == L and fs_step[j - oo] < 0:
                        fs_step[j - oo] = n
                        fs_time[j - oo] = n * dt - sj
    return n_list, ntape, graze, sch_n, na


@njit(cache=True, inline="always")
def _pend_insert(j, tidx, ua, p_src, p_u, p_tidx, n_pend, p_next):
    """Insert an arrival at ua into the step's pending arrivals, in time order (then tape order)
    among those not yet processed (from p_next on). Returns the new count."""
    q = n_pend
    while q > p_next and (p_u[q - 1] > ua or (p_u[q - 1] == ua and p_tidx[q - 1] > tidx)):
        p_src[q] = p_src[q - 1]
        p_u[q] = p_u[q - 1]
        p_tidx[q] = p_tidx[q - 1]
        q -= 1
    p_src[q] = j
    p_u[q] = ua
    p_tidx[q] = tidx
    return n_pend + 1


@njit(cache=True)
def _schedule(j, tidx, n, tr, dt, n_steps, sch_g, sch_u, sch_src, sch_tidx, sch_n):
    """The arrival of neuron j's spike (tape index tidx) at t_n + tr, tr > 0, scheduled for the step
    that ends at the first grid time t_g >= its time (as the event at tr - (g - n - 1) dt inside
    it); dropped after the trial. Returns the new schedule length."""
    k = max(int(np.ceil(tr / dt)), 1)
    if n + k > n_steps:
        return sch_n
    sch_g[sch_n] = n + k
    sch_u[sch_n] = tr - (k - 1) * dt
    sch_src[sch_n] = j
    sch_tidx[sch_n] = tidx
    return sch_n + 1


@njit(cache=True)
def _move_candidates(j, u, dt, K, c_j, c_u, c_v, c_i, c_ul, c_corr, c_alive, c_a, W, sizes, noff, ff_off, rec_off,
                     spiking, uni, thr, tau_m, tau_s, ada, tau_a):
    """The current jump of neuron j's spike arriving at u inside the step, on the same-step crossing
    candidates that have not spiked yet: their state is moved to u, the weight added to their
    current (and w kappa(dt - u) to their correction, for the delivery at the step's end), and
    whether and when they cross is decided again."""
    n_layers = sizes.shape[0]
    L = n_layers - 1
    l = _layer_of(j, noff, n_layers)
    i_pre = j - noff[l]
    span = dt - u
    # propagation factors are shared by the candidates of a uniform layer: computed once
    # per (layer, elapsed time) and reused (same inputs, so bitwise the same values)
    f_key_l = -1
    f_s2 = -1.0
    f_em = 1.0
    f_es = 1.0
    f_ke = 0.0
    f_kd = 0.0
    f_sm = 1.0
    f_ss = 1.0
    f_ks = 0.0
    # a spike can only move same-step crossings of its recurrent layer or of a spiking next layer
    n_scan = K if (rec_off[l] >= 0 or (l < L and spiking[l + 1] == 1)) else 0
    for c in range(n_scan):
        if c_alive[c] == 0:
            continue
        jc = c_j[c]
        lc = _layer_of(jc, noff, n_layers)
        w = 0.0
        if lc == l + 1:
            w += W[ff_off[lc] + i_pre * sizes[lc] + (jc - noff[lc])]
        if lc == l and rec_off[l] >= 0:
            w += W[rec_off[l] + i_pre * sizes[l] + (jc - noff[l])]
        if w == 0.0:
            continue
        s2 = u - c_ul[c]
        tmc = tau_m[jc]
        tsc = tau_s[jc]
        if uni[lc] == 0 or lc != f_key_l or s2 != f_s2:
            f_em = np.exp(-s2 / tmc)
            f_es = np.exp(-s2 / tsc)
            f_ke = _kap_e(s2, tmc, tsc, f_em, f_es)
            if uni[lc] == 0 or lc != f_key_l:
                f_sm = np.exp(-span / tmc)
                f_ss = np.exp(-span / tsc)
                f_ks = _kap_e(span, tmc, tsc, f_sm, f_ss)
                f_kd = f_ks  # (delta = span: the same kappa)
            f_key_l = lc
            f_s2 = s2
        c_v[c] = c_v[c] * f_em + c_i[c] * f_ke
        c_i[c] = c_i[c] * f_es + w
        c_ul[c] = u
        c_corr[c] += w * f_kd
        if ada[lc]:  # solved exactly again, from A at u (only its own spikes move A)
            uu = _alif.first_crossing(c_v[c], c_i[c], c_a[c] * np.exp(-u / tau_a[jc]), thr[lc], tmc, tsc,
                                      tau_a[jc], span)
            if uu < 0.0:
                c_alive[c] = 0
            else:
                c_u[c] = u + uu
                c_alive[c] = 1
            continue
        # whether it still crosses in this step is decided now, as before (a candidate
        # that cannot cross any more is dropped for good); when it does cross before the
        # step ends, its time is not solved for: a lower bound stands in for it until it
        # could be the next spike. While V >= v (v = c_v < theta) it rises at most at
        # (max(I, 0) - v)/tau_m, since I only decays towards 0.
        vc = c_v[c]
        thc = thr[lc]
        if vc >= thc:
            c_u[c] = u  # (a current jump does not move V: only if it was already there)
            c_alive[c] = 1
            continue
        v1 = vc * f_sm + c_i[c] * f_ks
        if v1 >= thc:
            ip = max(c_i[c], 0.0)
            lbd = tmc * (thc - vc) / (ip - vc) if ip > vc else span
            c_u[c] = u + min(lbd, span)
            c_alive[c] = 2
            continue
        if not (c_i[c] > vc and c_i[c] * f_ss < v1):
            c_alive[c] = 0  # not rising now, or not falling at the end: no maximum inside
            continue
        uu = _first_crossing(vc, c_i[c], v1, c_i[c] * f_ss, thc, tmc, tsc, span)  # (rare)
        if uu < 0.0:
            c_alive[c] = 0
        else:
            c_u[c] = u + uu
            c_alive[c] = 1


@njit(cache=True)
def _forward_sample(b, net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max, scr):
    """Forward pass of sample b. Returns (number of spikes, grazing count).

    Spikes beyond the tape's capacity are counted but not written, and the simulation goes on
    (the spikes of the previous step are delivered from ``prev_ids``, not from the tape), so the
    returned count is exact and the caller can allocate the right tape in one go.
    """
    W, sizes, noff, ff_off, rec_off = net.W, net.sizes, net.noff, net.ff_off, net.rec_off
    spiking, thr, uni, alpha, beta, cfw = net.spiking, net.thr, net.uni, net.alpha, net.beta, net.cfw
    tau_s, tau_m = net.tau_s, net.tau_m
    in_ptr, in_units = inp.ptr, inp.units
    w_a, w_b, edecay, rcoef = ro.w_a, ro.w_b, ro.edecay, ro.rcoef
    tape_step, tape_id, tape_d, tape_delta = tape.step, tape.nid, tape.d, tape.delta
    cap = tape_step.shape[1]
    integral, vmax, tmax, mx_ref = out.integral[b], out.vmax[b], out.tmax[b], out.mx_ref[b]
    mx_delta, mx_slope, trace = out.mx_delta[b], out.mx_slope[b], out.trace
    fs_time, fs_step, counts = out.fs_time[b], out.fs_step[b], out.counts[b]
    V, I, qm, mark = scr.V, scr.I, scr.qm, scr.mark
    prev_ids, cur_ids, prev_delta, cur_delta = scr.prev_ids, scr.cur_ids, scr.prev_delta, scr.cur_delta
    prev_tidx, cur_tidx = scr.prev_tidx, scr.cur_tidx
    c_j, c_u, c_v, c_i, c_ul, c_corr, c_alive = scr.c_j, scr.c_u, scr.c_v, scr.c_i, scr.c_ul, scr.c_corr, scr.c_alive
    ea, eb, ek, rt = scr.ea, scr.eb, scr.ek, scr.rt
    ada, tau_a, aa, binc, A, c_a, tape_aux = net.ada, net.tau_a, net.aa, net.binc, scr.A, scr.c_a, tape.aux
    any_ada = ada.sum() > 0
    dly, has_dly = net.dly, net.has_dly  # axonal delays of hidden neurons (ms), and whether any layer has them
    p_src, p_u, p_tidx = scr.p_src, scr.p_u, scr.p_tidx
    sch_g, sch_u, sch_src, sch_tidx = scr.sch_g, scr.sch_u, scr.sch_src, scr.sch_tidx
    sch_n = 0
    na = 0  # arrivals on the arrival tape
    n_layers = sizes.shape[0]
    L = n_layers - 1
    NT = V.shape[0]
    oo = noff[L]
    no = sizes[L]
    for j in range(NT):
        V[j] = 0.0
        I[j] = 0.0
        A[j] = 0.0
        counts[j] = 0
        mark[j] = -1
    for k in range(no):
        integral[k] = 0.0
        vmax[k] = -np.inf
        tmax[k] = 0
        mx_ref[k] = -1
        mx_delta[k] = 0.0
        mx_slope[k] = 0.0
        fs_time[k] = np.inf
        fs_step[k] = -1
    ntape = 0
    graze = 0
    n_prev = 0
    S0 = sizes[0]
    if want_trace and spiking[L] == 0:
        for k in range(no):
            trace[b, 0, k] = 0.0
    for n in range(n_steps + 1):
        # ---- arrivals at t_n: spikes detected at t_n (sub-step timing), then input spikes of bin n
        if n_prev > 0:
            n_prev, ntape, graze, sch_n, na = _arrivals(
                b, n, n_steps, in_ptr, in_units, W, sizes, noff, ff_off, rec_off, spiking, thr, uni, tau_m, tau_s,
                grazing_eps, w_a, w_b, edecay, V, I, prev_ids, prev_delta, prev_tidx, n_prev, mark, integral,
                tape_step, tape_id, tape_d, tape_delta, cap, ntape, graze, counts, fs_step, fs_time, dt,
                want_max, vmax, tmax, mx_ref, mx_delta, mx_slope, ea, eb, ek, rt, ada, A, tau_a, binc, tape_aux,
                has_dly, dly, sch_g, sch_u, sch_src, sch_tidx, sch_n, tape, na)
        if n < n_steps:
            I0 = I[0:S0]
            for q in range(in_ptr[b, n], in_ptr[b, n + 1]):
                base = ff_off[0] + in_units[q] * S0
                _add_row(I0, W[base : base + S0])
        # ---- sampled readouts of a leaky-integrator output at t_n (after the arrivals: the
        #      voltage is continuous, the arrivals' sub-step effect is part of V(t_n))
        if n >= 1 and spiking[L] == 0:
            for k in range(no):
                v = V[oo + k]
                if v > vmax[k]:
                    vmax[k] = v
                    tmax[k] = n
                    mx_ref[k] = -1
                    mx_delta[k] = 0.0
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
        if any_ada:
            for j in range(NT):
                A[j] = aa[j] * A[j]
        # ---- threshold crossings during the step, detected at t_{n+1}: first every neuron whose
        #      free trajectory crosses (candidates), then in time order, so that a spike's current
        #      jump can move, or cancel, the crossings of its targets later in the same step
        K = 0
        for l in range(n_layers):
            if spiking[l] == 0:
                continue
            th = thr[l]
            j_end = noff[l] + sizes[l]
            ad = ada[l]  # adaptive threshold theta + A (eventprop.neurons.alif): the same tests on V - A
            for blk in range(noff[l], j_end, 32):
                blk_end = min(blk + 32, j_end)
                if ad:
                    if _alif.count_near(V[blk:blk_end], I[blk:blk_end], A[blk:blk_end], th, qm[blk:blk_end]) == 0:
                        continue
                elif _count_near(V[blk:blk_end], I[blk:blk_end], th, qm[blk:blk_end]) == 0:
                    continue  # vectorised test: most blocks are far from threshold
                for j in range(blk, blk_end):
                    a1 = A[j] if ad else 0.0
                    thj = th + a1
                    if V[j] < thj:
                        # below threshold at both ends: a crossing needs an interior maximum
                        falling = (I[j] - V[j]) / tau_m[j] + a1 / tau_a[j] < 0.0 if ad else I[j] < V[j]
                        if not falling or V[j] + qm[j] * (V[j] - I[j]) < thj:
                            continue
                    # values at t_n, recovered from the step's exact update
                    i_old = I[j] / beta[j]
                    v_old = (V[j] - cfw[j] * i_old) / alpha[j]
                    a_old = 0.0
                    if ad:
                        a_old = a1 / aa[j]
                        u = _alif.first_crossing(v_old, i_old, a_old, th, tau_m[j], tau_s[j], tau_a[j], dt)
                    else:
                        u = _first_crossing(v_old, i_old, V[j], I[j], th, tau_m[j], tau_s[j], dt)
                    if u < 0.0:
                        continue
                    c_j[K] = j
                    c_u[K] = u
                    c_v[K] = v_old
                    c_i[K] = i_old
                    c_a[K] = a_old
                    c_ul[K] = 0.0
                    c_corr[K] = 0.0
                    c_alive[K] = 1
                    K += 1
        # c_alive: 0 gone (spiked or cannot cross), 1 c_u is its exact crossing time, 2 "dirty": a
        # same-step spike moved it and c_u is only a lower bound. The next spike is the smallest
        # c_u; a dirty one there is solved exactly first, so that only candidates that could be
        # next are ever solved (the order, and hence the result, is that of solving all of them)
        n_cur = 0
        n_pend = 0  # delayed arrivals inside this step, in time order (p_next: the first not yet processed)
        p_next = 0
        if has_dly:
            q = 0
            while q < sch_n:
                if sch_g[q] == n + 1:
                    n_pend = _pend_insert(sch_src[q], sch_tidx[q], sch_u[q], p_src, p_u, p_tidx, n_pend, 0)
                    sch_n -= 1
                    sch_g[q] = sch_g[sch_n]
                    sch_u[q] = sch_u[sch_n]
                    sch_src[q] = sch_src[sch_n]
                    sch_tidx[q] = sch_tidx[sch_n]
                else:
                    q += 1
        while True:
            best = -1
            bu = np.inf
            for c in range(K):
                if c_alive[c] != 0 and c_u[c] < bu:
                    best = c
                    bu = c_u[c]
            if p_next < n_pend and (best < 0 or p_u[p_next] <= bu):
                # a delayed spike arrives: it moves the crossings after it, and is delivered at t_{n+1}
                src = p_src[p_next]
                ua = p_u[p_next]
                _move_candidates(src, ua, dt, K, c_j, c_u, c_v, c_i, c_ul, c_corr, c_alive, c_a, W, sizes, noff,
                                 ff_off, rec_off, spiking, uni, thr, tau_m, tau_s, ada, tau_a)
                cur_ids[n_cur] = src
                cur_delta[n_cur] = dt - ua
                cur_tidx[n_cur] = p_tidx[p_next]
                n_cur += 1
                p_next += 1
                continue
            if best < 0:
                break
            if c_alive[best] == 2:
                jb = c_j[best]
                lb_ = _layer_of(jb, noff, n_layers)
                thb = thr[lb_]
                tmb = tau_m[jb]
                tsb = tau_s[jb]
                spb = dt - c_ul[best]
                em = np.exp(-spb / tmb)
                es = np.exp(-spb / tsb)
                v1 = c_v[best] * em + c_i[best] * _kap_e(spb, tmb, tsb, em, es)
                uu = _first_crossing(c_v[best], c_i[best], v1, c_i[best] * es, thb, tmb, tsb, spb)
                if uu < 0.0:
                    c_alive[best] = 0
                else:
                    c_u[best] = c_ul[best] + uu
                    c_alive[best] = 1
                continue
            c_alive[best] = 0
            j = c_j[best]
            u = bu
            l = _layer_of(j, noff, n_layers)
            th = thr[l]
            frac = u / dt
            delta = dt - u  # t_{n+1} - t_c
            ic = c_i[best] * np.exp(-(u - c_ul[best]) / tau_s[j])  # I(t_c)
            kap_d = _kap_e(delta, tau_m[j], tau_s[j], np.exp(-delta / tau_m[j]), np.exp(-delta / tau_s[j]))
            ac = 0.0
            if ada[l]:
                ac = c_a[best] * np.exp(-u / tau_a[j])  # A(t_c^-)
                d = _alif.slope_at_spike(ic, ac, th, tau_m[j], tau_a[j])
                A[j] += binc[j] * np.exp(-delta / tau_a[j])  # A jumps by beta at t_c
            else:
                d = _lif.slope_at_spike(ic, th)
            if not d >= grazing_eps:
                d = grazing_eps
                graze += 1
            if ntape < cap:
                tape_step[b, ntape] = n + 1
                tape_id[b, ntape] = j
                tape_d[b, ntape] = d
                tape_delta[b, ntape] = delta
                if ada[l]:
                    tape_aux[b, ntape] = ac
            ntape += 1
            mark[j] = n + 1
            # reset to 0 at t_c, then free evolution with the current until t_{n+1}; the delivery
            # at t_{n+1} of same-step spikes that reached j before t_c must not add their voltage
            V[j] = ic * kap_d - c_corr[best]
            counts[j] += 1
            if l == L and fs_step[j - oo] < 0:
                fs_step[j - oo] = n + 1
                fs_time[j - oo] = (n + frac) * dt
            if has_dly:  # its arrival t_c + d_j: later in this step (pending, in time order) or scheduled
                if l < L:
                    tr = u + dly[j]
                    if tr <= dt:
                        n_pend = _pend_insert(j, ntape - 1, tr, p_src, p_u, p_tidx, n_pend, p_next)
                    else:
                        sch_n = _schedule(j, ntape - 1, n, tr, dt, n_steps, sch_g, sch_u, sch_src, sch_tidx, sch_n)
            else:
                cur_ids[n_cur] = j
                cur_delta[n_cur] = delta
                cur_tidx[n_cur] = ntape - 1
                n_cur += 1
                # this spike's current jump at t_c on the candidates that have not spiked yet
                _move_candidates(j, u, dt, K, c_j, c_u, c_v, c_i, c_ul, c_corr, c_alive, c_a, W, sizes, noff, ff_off,
                                 rec_off, spiking, uni, thr, tau_m, tau_s, ada, tau_a)
        for e in range(n_cur):
            prev_ids[e] = cur_ids[e]
            prev_delta[e] = cur_delta[e]
            prev_tidx[e] = cur_tidx[e]
        n_prev = n_cur
    if has_dly:
        tape.a_n[b] = na
    return ntape, graze


@njit(cache=True, parallel=True)
def forward_batch(net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max, n_chunks):
    """Forward pass of a batch (bundles: see eventprop.backend). Fills ``tape`` (tape.n: spikes
    per sample, also past the tape's capacity) and ``out``."""
    for c in prange(n_chunks):
        _forward_chunk(c, n_chunks, net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max)


@njit(cache=True)
def _forward_chunk(c, n_chunks, net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max):
    B = inp.ptr.shape[0]
    NT = net.alpha.shape[0]
    W = net.W
    tau_m = net.tau_m
    V = np.empty(NT, dtype=W.dtype)
    I = np.empty(NT, dtype=W.dtype)
    # spikes detected at one grid time (at most one per neuron), or, with delays, the arrivals
    # delivered at one grid time (up to two per neuron from one step, and those of sliver spikes)
    NL = 4 * NT if net.has_dly else NT
    prev_ids = np.empty(NL, dtype=np.int32)
    cur_ids = np.empty(NL, dtype=np.int32)
    prev_delta = np.empty(NL, dtype=np.float64)
    cur_delta = np.empty(NL, dtype=np.float64)
    prev_tidx = np.empty(NL, dtype=np.int64)  # their (source spikes') tape positions
    cur_tidx = np.empty(NL, dtype=np.int64)
    mark = np.empty(NT, dtype=np.int64)  # grid time of each neuron's latest spike
    c_j = np.empty(NT, dtype=np.int64)  # crossing candidates of a step: neuron, time, state at c_ul
    c_u = np.empty(NT, dtype=np.float64)
    c_v = np.empty(NT, dtype=np.float64)
    c_i = np.empty(NT, dtype=np.float64)
    c_ul = np.empty(NT, dtype=np.float64)
    c_corr = np.empty(NT, dtype=np.float64)
    c_alive = np.empty(NT, dtype=np.int8)
    qm = np.empty(NT, dtype=W.dtype)  # 2 dt / tau_m, for the near-threshold test
    for j in range(NT):
        qm[j] = 2.0 * dt / tau_m[j]
    ea = np.empty(NT, dtype=np.float64)  # per-neuron decays over one delta (non-uniform layers)
    eb = np.empty(NT, dtype=np.float64)
    ek = np.empty(NT, dtype=np.float64)
    rt = _rates(tau_m, net.tau_s)
    A = np.empty(NT, dtype=W.dtype)  # adaptation of alif neurons (0 elsewhere)
    c_a = np.empty(NT, dtype=np.float64)  # a candidate's A at the step start
    # delayed arrivals: pending inside the current step, and scheduled for later steps (at most
    # one spike per neuron and step is in flight per step of its delay)
    n_sch = 1
    if net.has_dly:
        n_sch = NT * (int(np.ceil(net.dly.max() / dt)) + 2)
    p_src = np.empty(NL, dtype=np.int32)
    p_u = np.empty(NL, dtype=np.float64)
    p_tidx = np.empty(NL, dtype=np.int64)
    sch_g = np.empty(n_sch, dtype=np.int64)
    sch_u = np.empty(n_sch, dtype=np.float64)
    sch_src = np.empty(n_sch, dtype=np.int32)
    sch_tidx = np.empty(n_sch, dtype=np.int64)
    scr = _FwdScratch(V, I, qm, mark, prev_ids, cur_ids, prev_delta, cur_delta, prev_tidx, cur_tidx,
                      c_j, c_u, c_v, c_i, c_ul, c_corr, c_alive, ea, eb, ek, rt, A, c_a,
                      p_src, p_u, p_tidx, sch_g, sch_u, sch_src, sch_tidx)
    b0 = (c * B) // n_chunks
    b1 = ((c + 1) * B) // n_chunks
    for b in range(b0, b1):
        nt, gz = _forward_sample(b, net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max, scr)
        tape.n[b] = nt
        out.graze[b] = gz


@njit(cache=True)
def _spike_targets(W, base, po, S, uniform, tau_m, tau_s, delta, lamV, lamI, dW, ea, eb, ek, rt):
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
        cb = _kap_e(delta, tm, ts, a, bb) * tm / ts
        sv = _dot(W[base : base + S], lamV[po : po + S])
        si = _dot(W[base : base + S], lamI[po : po + S])
        g1 = ts * bb
        g2 = ts * cb
        for j in range(S):
            dW[base + j] -= g1 * lamI[po + j] + g2 * lamV[po + j]
        return (a - cb) * sv - bb * si
    for j in range(S):  # ea, eb: the targets' decays over delta (_decay_rows, by the caller)
        n = po + j
        ts = tau_s[n]
        a = ea[n]
        bb = eb[n]
        cb = ek[n] * rt[4, n]
        lv = a * lamV[po + j]
        li = bb * lamI[po + j] + cb * lamV[po + j]
        fb += W[base + j] * (lv - li)
        dW[base + j] -= ts * li
    return fb


@njit(cache=True, inline="always")
def _apply_jump(lamV, lamI, nid, jv, ji):
    """Add a jump; hard bound: chains of near-grazing spikes can compound the jump factor
    (1 + theta/d), the bound keeps every gradient finite in float32. Returns 1 if it bound."""
    v = lamV[nid] + jv
    i = lamI[nid] + ji
    hit = 0
    if not abs(v) <= LAMBDA_MAX:
        v = min(max(v, -LAMBDA_MAX), LAMBDA_MAX)
        hit = 1
    if not abs(i) <= LAMBDA_MAX:
        i = min(max(i, -LAMBDA_MAX), LAMBDA_MAX)
        hit = 1
    lamV[nid] = v
    lamI[nid] = i
    return hit


@njit(cache=True)
def _backward_sample(b, net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, lamV, lamI, order, gtmp, dW,
                     rec_b, rec_lamV, rec_lamI, tg, nu, dtau, ea, eb, ek, rt, want_delay, dd, gd, lamA, okey, fbv, ddh):
    """Backward pass of sample b (accumulated into dW). Returns how often |lambda| was bounded.

    With ``tg.want`` it also accumulates dL/dtau_m, dL/dtau_s of every hidden neuron into dtau
    (columns 0, 1): dL/dtau = int p^T (dA/dtau) x dt (the flow's derivative; p the costate) is
    evaluated without the forward state x as sum over the neuron's events (jumps e of its state:
    input and spike arrivals, its own resets by -theta) of e^T nu, where nu, one 2-vector per
    parameter, is carried backward like p with the source dPhi/dtau^T p (docs/method.md)."""
    W, sizes, noff, ff_off, rec_off = net.W, net.sizes, net.noff, net.ff_off, net.rec_off
    spiking, thr, uni, alpha, beta, cbw, cfw = net.spiking, net.thr, net.uni, net.alpha, net.beta, net.cbw, net.cfw
    tau_s, tau_m = net.tau_s, net.tau_m
    in_ptr, in_units = inp.ptr, inp.units
    w_a, w_b, edecay, rcoef, tcoef = ro.w_a, ro.w_b, ro.edecay, ro.rcoef, ro.tcoef
    tape_step, tape_id, tape_d, tape_delta, ntape = tape.step, tape.nid, tape.d, tape.delta, tape.n[b]
    tmax, mx_ref, mx_slope, fs_step = fo.tmax, fo.mx_ref, fo.mx_slope, fo.fs_step[b]
    g_int, g_max, g_trace, g_spk, reg = gr.integral, gr.vmax, gr.trace, gr.first_spike, gr.spike_counts
    hits = 0
    n_layers = sizes.shape[0]
    L = n_layers - 1
    NT = lamV.shape[0]
    oo = noff[L]
    no = sizes[L]
    S0 = sizes[0]
    ada, tau_a, aa, binc, tape_aux = net.ada, net.tau_a, net.aa, net.binc, tape.aux
    any_ada = ada.sum() > 0
    for j in range(NT):
        lamV[j] = 0.0
        lamI[j] = 0.0
        lamA[j] = 0.0  # adjoint of an alif neuron's adaptation (eventprop.neurons.alif)
    want_tau = tg.want
    nuVm, nuIm, nuVs, nuIs = nu[0], nu[1], nu[2], nu[3]
    n_hid = noff[L]  # hidden neurons carry nu (and the output neurons when their tau are learned)
    out_tau = want_tau and tg.out
    n_nu = NT if out_tau else n_hid
    if want_tau:
        for j in range(NT):
            nuVm[j] = 0.0
            nuIm[j] = 0.0
            nuVs[j] = 0.0
            nuIs[j] = 0.0
    e_top = ntape - 1
    dly, has_dly = net.dly, net.has_dly
    a_top = tape.a_n[b] - 1 if has_dly else -1  # the arrival tape (delays), walked backward like the spike tape
    if has_dly:
        for e in range(min(ntape, fbv.shape[0])):
            fbv[e] = 0.0  # a spike whose arrival is after the trial has no feedback
    for m in range(n_steps, -1, -1):
        # ---- max readout at the grid sample t_m (after that time's arrivals): kick -dL/dmax / tau_m;
        #      a maximum at a kink (just before a spike's arrival) is handled with that spike below
        n_kink = 0
        if m >= 1 and spiking[L] == 0:
            for k in range(no):
                if tmax[b, k] == m and g_max[b, k] != 0.0:
                    if mx_ref[b, k] < 0:
                        lamV[oo + k] -= g_max[b, k] / tau_m[oo + k]
                    else:
                        n_kink += 1
        # ---- input spikes arriving at t_m (after every spike emitted before t_m)
        if m < n_steps and in_ptr[b, m + 1] > in_ptr[b, m]:
            g0 = gtmp[0:S0]
            for j in range(S0):
                g0[j] = tau_s[j] * lamI[j]
            for q in range(in_ptr[b, m], in_ptr[b, m + 1]):
                base = ff_off[0] + in_units[q] * S0
                _sub_row(dW[base : base + S0], g0)
            if want_delay:  # a later arrival: dL/dt_a = sum_j w_j (lambda_V - lambda_I)_j(t_a^+)
                g1 = gd[0:S0]
                for j in range(S0):
                    g1[j] = lamV[j] - lamI[j]
                for q in range(in_ptr[b, m], in_ptr[b, m + 1]):
                    base = ff_off[0] + in_units[q] * S0
                    dd[in_units[q]] += _dot(W[base : base + S0], g1)
            if want_tau and L > 0:  # the input current jumps are events of the first hidden layer
                for j in range(S0):
                    g0[j] = 0.0
                for q in range(in_ptr[b, m], in_ptr[b, m + 1]):
                    base = ff_off[0] + in_units[q] * S0
                    _add_row(g0, W[base : base + S0])
                for j in range(S0):
                    dtau[j, 0] += g0[j] * nuIm[j]
                    dtau[j, 1] += g0[j] * nuIs[j]
        # ---- spikes detected at t_m, emitted at t_c = t_m - delta, latest first: gradients,
        #      feedback and jump from the adjoints at t_c^+ (propagated back from t_m); each jump
        #      is applied at once, so that earlier spikes of the same step see it (in the forward
        #      pass an earlier spike moves the later crossings of its targets in the step)
        e_lo = e_top
        while e_lo >= 0 and tape_step[b, e_lo] == m:
            e_lo -= 1
        a_lo = a_top
        while a_lo >= 0 and tape.a_step[b, a_lo] == m:
            a_lo -= 1
        # the grid time's events, latest first (increasing delta; insertion sort, groups are small):
        # emissions (code e >= 0) and, with delays, arrivals (code -(a + 1)), an arrival before an
        # emission at the same time
        n_ev = 0
        for q in range(e_top - e_lo + a_top - a_lo):
            if q < e_top - e_lo:
                code = e_lo + 1 + q
                key = tape_delta[b, code]
            else:
                a = a_lo + 1 + q - (e_top - e_lo)
                code = -(a + 1)
                key = tape.a_delta[b, a]
            r = n_ev
            while r > 0 and (okey[r - 1] > key or (okey[r - 1] == key and order[r - 1] >= 0 and code < 0)):
                order[r] = order[r - 1]
                okey[r] = okey[r - 1]
                r -= 1
            order[r] = code
            okey[r] = key
            n_ev += 1
        w_end = 0.0
        if m >= 1 and spiking[L] == 0:
            w_end = (w_a[b, m - 1] + w_b[b, m - 1]) * edecay
        for q in range(n_ev):
            code = order[q]
            if code >= 0:  # an emission (without delays also its arrival, at the same time)
                e = code
                delta = tape_delta[b, e]
                is_arr = not has_dly
                is_emit = True
            else:  # a delayed arrival of the spike e
                e = tape.a_src[b, -code - 1]
                delta = tape.a_delta[b, -code - 1]
                is_arr = True
                is_emit = False
            nid = tape_id[b, e]
            l = _layer_of(nid, noff, n_layers)
            i = nid - noff[l]
            fb = 0.0
            if is_arr and l < L:
                S = sizes[l + 1]
                base = ff_off[l + 1] + i * S
                if l + 1 == L and spiking[L] == 0:
                    # into the leaky-integrator output: its adjoint at t_c^+ also carries the
                    # readout sources over [t_c, t_m] (weight and loss density taken at t_m)
                    for k in range(no):
                        if k == 0 or uni[L] == 0:  # propagation factors over delta (per layer if uniform)
                            tm = tau_m[oo + k]
                            ts = tau_s[oo + k]
                            a = np.exp(-delta / tm)
                            bb = np.exp(-delta / ts)
                            kp = _kap_e(delta, tm, ts, a, bb)
                            cb = kp * tm / ts
                            area = (-ts * np.expm1(-delta / ts) - tm * kp) / ts
                        src = g_int[b, k] * inv_T * w_end
                        if use_trace:
                            src += g_trace[b, m, k]
                        lv = a * lamV[oo + k] - src * (1.0 - a)
                        li = bb * lamI[oo + k] + cb * lamV[oo + k] - src * area
                        fb += W[base + k] * (lv - li)
                        dW[base + k] -= ts * li
                        if out_tau:
                            # the arrival adds Phi(delta) (0, w) to the state at t_m and w w_end
                            # int_0^delta kappa to the integral readout: e^T nu(t_m) and the
                            # derivatives of both in tau (p at t_m: the current adjoint)
                            n_o = oo + k
                            w = W[base + k]
                            dem, dkm, dks, des = _dprop_r(delta, 1.0 / tm, 1.0 / ts, a, bb, kp)
                            pV = -tm * lamV[n_o]
                            pI = -ts * lamI[n_o]
                            gw = src * w  # the readout density over [t_c, t_m] (integral and trace)
                            dtau[n_o, 0] += w * (kp * nuVm[n_o] + bb * nuIm[n_o] + dkm * pV) - gw * (kp + tm * dkm)
                            dtau[n_o, 1] += (w * (kp * nuVs[n_o] + bb * nuIs[n_o] + dks * pV + des * pI)
                                             + gw * (1.0 - bb - delta / ts * bb - tm * dks))
                else:
                    if (delta != 0.0 and uni[l + 1] == 0) or want_tau:
                        _decay_rows(ea, eb, ek, noff[l + 1], S, tau_m, tau_s, rt, delta)
                    if want_tau and (l + 1 < L or out_tau):  # (before this spike's gradient touches the adjoints)
                        _tau_targets(W, base, noff[l + 1], S, tau_m, tau_s, delta, lamV, lamI, nuVm, nuIm, nuVs, nuIs,
                                     dtau, ea, eb, ek, rt)
                    fb += _spike_targets(W, base, noff[l + 1], S, uni[l + 1], tau_m, tau_s, delta, lamV, lamI, dW,
                                         ea, eb, ek, rt)
            if is_arr and rec_off[l] >= 0:
                S = sizes[l]
                base = rec_off[l] + i * S
                if (delta != 0.0 and uni[l] == 0) or want_tau:
                    _decay_rows(ea, eb, ek, noff[l], S, tau_m, tau_s, rt, delta)
                if want_tau:
                    _tau_targets(W, base, noff[l], S, tau_m, tau_s, delta, lamV, lamI, nuVm, nuIm, nuVs, nuIs, dtau,
                                 ea, eb, ek, rt)
                fb += _spike_targets(W, base, noff[l], S, uni[l], tau_m, tau_s, delta, lamV, lamI, dW, ea, eb, ek, rt)
            if is_arr and n_kink > 0:  # output maxima at this spike's arrival move with its time: their
                for k in range(no):     # term, then the kick of the maximum at the arrival's t^-, at t_m
                    if tmax[b, k] == m and mx_ref[b, k] == e and g_max[b, k] != 0.0:
                        fb += g_max[b, k] * mx_slope[b, k] / tau_m[oo + k]
                        tmk = tau_m[oo + k]
                        tsk = tau_s[oo + k]
                        ak = np.exp(-delta / tmk)
                        bk = np.exp(-delta / tsk)
                        kick = -g_max[b, k] / tmk
                        lamV[oo + k] += kick / ak
                        lamI[oo + k] -= _kap(delta, tmk, tsk) * tmk / tsk * kick / (ak * bk)
            if has_dly and is_arr:  # dL/d(arrival time): the spike's feedback, and its delay's gradient
                fbv[e] = fb
                ddh[nid] += fb
            if not is_emit:
                continue
            if has_dly:
                fb = fbv[e]
            extra = 0.0
            if l == L and fs_step[i] == m:
                extra = g_spk[b, i]
            a_i = np.exp(-delta / tau_m[nid])
            b_i = np.exp(-delta / tau_s[nid])
            if ada[l]:  # adaptive threshold: lambda_A takes part in the jump and jumps too
                g_i = np.exp(-delta / tau_a[nid])
                jv, ja = _alif.adjoint_jump(a_i * lamV[nid], g_i * lamA[nid], tape_aux[b, e], tape_d[b, e],
                                            fb + extra, thr[l], tau_m[nid], tau_a[nid], binc[nid])
                lamA[nid] = min(max(lamA[nid] + ja / g_i, -LAMBDA_MAX), LAMBDA_MAX)  # expressed at t_m
            else:
                jv = _lif.adjoint_jump(a_i * lamV[nid], tape_d[b, e], fb + extra, thr[l])
            if l < L:
                jv -= reg[b, nid] / (thr[l] * tau_m[nid])
            k_i = _kap_e(delta, tau_m[nid], tau_s[nid], a_i, b_i)
            if want_tau and (l < L or out_tau):
                # its reset at t_c is an event of its own: e = (-theta, 0), worth -theta nu_V(t_c)
                # (alif: V falls from theta + A; A's own dynamics do not depend on tau_m, tau_s)
                dem, dkm, dks, des = _dprop(delta, tau_m[nid], tau_s[nid])
                pV = -tau_m[nid] * lamV[nid]
                vr = thr[l] + tape_aux[b, e] if ada[l] else thr[l]
                dtau[nid, 0] -= vr * (a_i * nuVm[nid] + dem * pV)
                dtau[nid, 1] -= vr * (a_i * nuVs[nid])
            # the jump happens at t_c; expressed at t_m it is the state that free backward
            # evolution over delta takes to (jv, 0)
            hits += _apply_jump(lamV, lamI, nid, jv / a_i, -k_i * tau_m[nid] / tau_s[nid] * jv / (a_i * b_i))
            if want_tau and (l < L or out_tau):
                # p jumps at t_c, not over all of [t_m - dt, t_m]: nu at t_m takes the correction
                # -Phi(delta)^{-T} dPhi(delta)^T D, D the jump expressed at t_m (p units)
                DV = -tau_m[nid] * jv / a_i
                DI = tau_m[nid] * k_i * jv / (a_i * b_i)
                zV = dem * DV
                zI = dkm * DV
                cV = zV / a_i
                nuVm[nid] -= cV
                nuIm[nid] -= (zI - k_i * cV) / b_i
                zI = dks * DV + des * DI
                nuIs[nid] -= zI / b_i
        e_top = e_lo
        a_top = a_lo
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
            if want_tau:  # nu(t_{m-1}) = Phi^T nu(t_m) + dPhi/dtau^T p(t_m), before lambda moves
                for j in range(n_nu):
                    pV = -tau_m[j] * lamV[j]
                    pI = -tau_s[j] * lamI[j]
                    nuIm[j] = cfw[j] * nuVm[j] + beta[j] * nuIm[j] + tg.dkm[j] * pV
                    nuVm[j] = alpha[j] * nuVm[j] + tg.dem[j] * pV
                    nuIs[j] = cfw[j] * nuVs[j] + beta[j] * nuIs[j] + tg.dks[j] * pV + tg.des[j] * pI
                    nuVs[j] = alpha[j] * nuVs[j]
            for j in range(NT):
                lamI[j] = beta[j] * lamI[j] + cbw[j] * lamV[j]
            for j in range(NT):
                lamV[j] = alpha[j] * lamV[j]
            if any_ada:
                for j in range(NT):
                    lamA[j] = aa[j] * lamA[j]
            if spiking[L] == 0:
                wa = w_a[b, m - 1]
                wb = w_b[b, m - 1]
                for k in range(no):
                    gi = g_int[b, k] * inv_T
                    G0 = 0.0
                    dG = 0.0
                    sV = gi * (wa * rcoef[0, k] + wb * rcoef[1, k])
                    sI = gi * (wa * rcoef[2, k] + wb * rcoef[3, k])
                    if use_trace:
                        G0 = g_trace[b, m - 1, k]
                        dG = g_trace[b, m, k] - G0
                        sV += G0 * tcoef[0, k] + dG * tcoef[1, k]
                        sI += G0 * tcoef[2, k] + dG * tcoef[3, k]
                    lamV[oo + k] -= sV / tau_m[oo + k]
                    lamI[oo + k] -= sI / tau_s[oo + k]
                    if out_tau:  # the readout coefficients' own dependence on tau (a term c^T x(t_{m-1}))
                        n_o = oo + k
                        for q in range(2):
                            dV = gi * (wa * tg.dco[q, 0, k] + wb * tg.dco[q, 1, k])
                            dI = gi * (wa * tg.dco[q, 2, k] + wb * tg.dco[q, 3, k])
                            if use_trace:
                                dV += G0 * tg.dtco[q, 0, k] + dG * tg.dtco[q, 1, k]
                                dI += G0 * tg.dtco[q, 2, k] + dG * tg.dtco[q, 3, k]
                            if q == 0:
                                nuVm[n_o] += dV
                                nuIm[n_o] += dI
                            else:
                                nuVs[n_o] += dV
                                nuIs[n_o] += dI
    return hits


@njit(cache=True)
def _backward_chunk(c, n_chunks, net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, dWc, rec_b, rec_lamV,
                    rec_lamI, hits, tg, dg):
    B = inp.ptr.shape[0]
    NT = net.alpha.shape[0]
    W = net.W
    nu = np.zeros((4, NT if tg.want else 1), dtype=np.float64)
    ea = np.empty(NT, dtype=np.float64)  # per-neuron decays over one delta (non-uniform layers)
    eb = np.empty(NT, dtype=np.float64)
    ek = np.empty(NT, dtype=np.float64)
    rt = _rates(net.tau_m, net.tau_s)
    want_delay = dg.want
    dd = dg.dd[c]
    for j in range(dd.shape[0]):
        dd[j] = 0.0
    gd = np.empty(NT, dtype=W.dtype)
    dtau = tg.dtau[c]
    for j in range(dtau.shape[0]):
        dtau[j, 0] = 0.0
        dtau[j, 1] = 0.0
    lamV = np.empty(NT, dtype=W.dtype)
    lamI = np.empty(NT, dtype=W.dtype)
    lamA = np.empty(NT, dtype=W.dtype)
    order = np.empty(4 * NT + 1, dtype=np.int64)  # a grid time's events (spikes, and arrivals with delays)
    okey = np.empty(4 * NT + 1, dtype=np.float64)
    fbv = np.zeros(tape.step.shape[1] if net.has_dly else 1, dtype=np.float64)  # per spike: dL/d(arrival time)
    ddh = dg.dh[c]
    for j in range(ddh.shape[0]):
        ddh[j] = 0.0
    gtmp = np.empty(NT, dtype=W.dtype)
    dW = dWc[c]
    for j in range(dW.shape[0]):
        dW[j] = 0.0
    hits[c] = 0
    b0 = (c * B) // n_chunks
    b1 = ((c + 1) * B) // n_chunks
    for b in range(b0, b1):
        hits[c] += _backward_sample(b, net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, lamV, lamI, order,
                                    gtmp, dW, rec_b, rec_lamV, rec_lamI, tg, nu, dtau, ea, eb, ek, rt, want_delay,
                                    dd, gd, lamA, okey, fbv, ddh)


@njit(cache=True, parallel=True)
def backward_batch(net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, dWc, dW, rec_b, rec_lamV, rec_lamI, hits,
                   tg, dg):
    """Backward pass of a batch: dW (flat, like net.W) from the tape, the forward outputs ``fo``
    and the readout gradients ``gr``; per-chunk buffers dWc reduced in a fixed order. ``tg``
    (TauGrad): with tg.want, dL/dtau of the hidden neurons per chunk in tg.dtau (n_chunks, NT, 2);
    ``dg`` (DelayGrad): with dg.want, dL/d(input delay) per input unit and chunk in dg.dd."""
    n_chunks = dWc.shape[0]
    for c in prange(n_chunks):
        _backward_chunk(c, n_chunks, net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, dWc, rec_b, rec_lamV,
                        rec_lamI, hits, tg, dg)
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

"""Numba kernels of the EventProp engine (private; the maths: eventprop.engine, the contract: engine.contract).

Everything is flat: neurons of all layers (hidden layers, then output) live in one state vector
with per-layer offsets ``noff``; all weight matrices live in one flat buffer ``W`` with per-layer
offsets ``ff_off`` (connection into layer l, rows = presynaptic neurons) and ``rec_off`` (-1 when
layer l is not recurrent). One sample is simulated serially; samples are spread over a fixed
number of chunks (``prange``), each with private gradient buffers, so results do not depend on
the number of threads. The neuron models' own pieces (propagators, crossing solvers, spike
slope, adjoint jump) live in eventprop.neurons; these kernels ask for them through the model
interface eventprop.neurons.hooks, with the layer's model code (``net.model``), and keep the
adaptation state A only where the layer's model has one (``net.ada``).
"""

from collections import namedtuple

import math

import numpy as np

from numba import njit, prange

from ..neurons.lif import _decay_rows, _dprop, _dprop_r, _kap, _kap_area, _kap_e, _rates  # noqa: F401
from ..neurons import hooks as _model
from ..neurons import lif as _lif

# per-chunk work arrays of the forward pass
_FwdScratch = namedtuple("_FwdScratch", "V I qm thn Ve Ie cu cst bmin ea eb ek rt A p_src p_u p_tidx sch_g sch_u sch_src sch_tidx")

LAMBDA_MAX = 1e15  # bound on |lambda_V|, |lambda_I| after a jump (see _backward_sample)


@njit(cache=True)
def _add_row(dst, src):
    for j in range(dst.shape[0]):
        dst[j] += src[j]


@njit(cache=True)
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


@njit(cache=True, fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
def _tau_row(W, base, po, S, tau_m, tau_s, delta, lamV, lamI, dW, nuVm, nuIm, nuVs, nuIs, dtau, ea, eb, ek, rt):
    """One spike emitted at t_c = t_m - delta into neurons po..po+S-1 of a layer whose time
    constants are learned: in one pass over the row (which vectorises), the spike's weight gradient
    and feedback (as _spike_targets, non-uniform case) and dL/dtau of each target. Its current jump
    w at t_c is an event of the target worth w nu_I(t_c), nu(t_c) = Phi(delta)^T nu(t_m) +
    dPhi(delta)/dtau^T p(t_m) (p = (-tau_m lambda_V, -tau_s lambda_I) the costate, before this
    spike's own jump); the derivatives of Phi as lif._dprop_r, written out branch-free.
    ea, eb, ek: e^{-delta/tau_m}, e^{-delta/tau_s}, kappa(delta) of the targets (_decay_rows);
    dtau: (2, neurons), rows dL/dtau_m, dL/dtau_s. Returns sum_j w_j (lambda_V - lambda_I)(t_c^+)."""
    h = delta
    fb = 0.0
    for j in range(S):
        n = _ix(po + j)
        rm = rt[0, n]
        rs = rt[1, n]
        em = ea[n]
        es = eb[n]
        kp = ek[n]
        x = (rs - rm) * h
        ser = -0.5 + x * (1.0 / 3.0 + x * (-0.125 + x * (1.0 / 30.0 + x * (-1.0 / 144.0 + x / 840.0))))
        clo = ((es / em) * (1.0 + x) - 1.0) / (x * x)
        dh = ser if abs(x) < 0.05 else clo  # h'(x), h(x) = (1 - e^{-x})/x (lif._dh_e)
        hrm = h * rm * rm
        g = em * (h * rm) * dh
        dkm = kp * (hrm - rm) + g * hrm
        dks = -g * h * rs * rs
        des = h * rs * rs * es
        w = W[_ix(base + j)]
        lv0 = lamV[n]
        li0 = lamI[n]
        ts = tau_s[n]
        pV = -tau_m[n] * lv0
        pI = -ts * li0
        dtau[0, n] += w * (kp * nuVm[n] + es * nuIm[n] + dkm * pV)
        dtau[1, n] += w * (kp * nuVs[n] + es * nuIs[n] + dks * pV + des * pI)
        li = es * li0 + kp * rt[4, n] * lv0
        fb += w * (em * lv0 - li)
        dW[_ix(base + j)] -= ts * li
    return fb


@njit(cache=True)
def _deliver(I, V, W, base, po, S, uniform, tau_m, tau_s, delta, ea, eb, ek, rt):
    """A spike emitted at t - delta reaches neurons po..po+S+1 at grid time t: their state at t becomes
    what it would be had the current jump (row W[base:base+S]) happened at t - delta."""
    if delta == 0.0:
        _add_row(I[po : po + S], W[base : base + S])
        return
    if uniform:
        bI = math.exp(-delta / tau_s[po])
        bV = _kap_e(delta, tau_m[po], tau_s[po], math.exp(-delta / tau_m[po]), bI)
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


@njit(cache=True, inline="always")
def _ix(i):
    """An array index as unsigned: numba then adds no negative-index wrap-around, so loops over
    offset ranges (V[po + j]) vectorise like loops over slices, without the reference counting
    that each slice of a hot loop costs."""
    return np.uint64(i)


@njit(cache=True)
def _any(a):
    """whether some entry of a is nonzero (a loop: also compiles for the CUDA target)."""
    for x in a:
        if x != 0:
            return True
    return False


@njit(cache=True, inline="always")
def _bound(vu, iu, ve, ie, th, q, u, tm, dt):
    """A lower bound on the first time after u at which a trajectory at (vu, iu) at u, ending the
    step at (ve, ie), reaches th; inf when it provably does not (lif.may_cross, or u itself when
    vu >= th: an alif neuron's V can start above th = theta + min(A) while V - A is still below
    theta). While V >= vu it rises at most at (max(I, 0) - vu)/tau_m, since I only decays towards
    0 between jumps.
    (Branch-free, so that the loops over a weight row that call it vectorise.)"""
    den = max(iu, 0.0) - vu
    cross = (vu >= th) | (ve >= th) | ((iu > vu) & (ie < ve) & ((ve - q * ie >= (1.0 - q) * th) | (q >= 1.0)))
    pos = den > 0.0
    lb = u + tm * (th - vu) / (den if pos else 1.0)
    lb = min(max(lb if pos else u, u), dt)
    return lb if cross else np.inf


@njit(cache=True, fastmath={"reassoc", "nsz", "nnan"})
def _refresh(cu, bmin, lo, hi, NS):
    """The block minima (blocks of 32) of cu over the blocks that hold lo..hi-1."""
    for k in range(lo >> 5, ((hi - 1) >> 5) + 1):
        m = np.inf
        for j in range(k << 5, min((k << 5) + 32, NS)):
            m = min(m, cu[_ix(j)])
        bmin[k] = m


@njit(cache=True, inline="always")
def _mc(ve, ie, th, q):
    """lif.may_cross without branches (for loops that vectorise)."""
    return (ve >= th) | ((ie < ve) & ((ve - q * ie >= (1.0 - q) * th) | (q >= 1.0)))


@njit(cache=True)
def _solve(lb, P, Q, a0, th, code, dt, al, be, cf, tm, ts, ta, rm, rs, cnt):
    """The exact first crossing after lb (a lower bound: none before it) in this step of a neuron
    with coefficients P, Q (and adaptation a0 at lb), or -1 when it provably has none (the
    model's ``crossing``, eventprop.neurons.hooks). Scalars only (see the re-tests in
    _forward_sample)."""
    v0 = math.exp(-lb * rm) * (P + Q * _lif.gfun(lb, rm, rs))
    i0 = Q * math.exp(-lb * rs)
    uu = _model.crossing(code, v0, i0, a0, al * P + cf * Q, be * Q, th, float(tm), float(ts), float(ta), dt - lb, cnt)
    return lb + uu if uu >= 0.0 else -1.0


@njit(cache=True)
def _schedule(j, tidx, n, tr, dt, n_steps, sch_g, sch_u, sch_src, sch_tidx, sch_n):
    """The arrival of neuron j's spike (tape index tidx) at t_n + tr, tr > 0, scheduled for the step
    that ends at the first grid time t_g >= its time (as the event at tr - (g - n - 1) dt inside
    it); dropped after the trial. Returns the new schedule length (the caller ensures room)."""
    k = max(int(math.ceil(tr / dt)), 1)
    if n + k > n_steps:
        return sch_n
    sch_g[sch_n] = n + k
    sch_u[sch_n] = tr - (k - 1) * dt
    sch_src[sch_n] = j
    sch_tidx[sch_n] = tidx
    return sch_n + 1


# counters of the forward pass (ForwardOutputs.counters, per sample)
C_SOLVES, C_ITERS, C_NOROOT, C_FAIL, C_RETESTS, C_SPIKES, C_ARRIVALS, C_MAXSTEP, C_BOUNDS = range(9)
N_COUNTERS = 9


@njit(cache=True, error_model="numpy")
def _forward_sample(b, net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max, scr):
    """Forward pass of sample b. Returns (number of spikes, grazing count, overflow).

    One source for both targets: the CPU chunks below call it, and eventprop.engine.cuda compiles the
    same function for the GPU (one sample per thread), so it allocates nothing: ``scr`` holds the
    sample's scratch. ``overflow`` is 1 when the delayed-arrival buffers in ``scr`` were too small
    (the result is then wrong and the caller reruns the sample with larger ones).

    Inside each step, events are taken in time order (eventprop.engine's docstring, forward step 4);
    spikes beyond the tape's capacity are counted but not written, and the simulation goes on,
    so the returned count is exact and the caller can allocate the right tape in one go.
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
    cnt = out.counters[b]
    V, I, qm, thn, Ve, Ie, cu, cst, bmin = scr.V, scr.I, scr.qm, scr.thn, scr.Ve, scr.Ie, scr.cu, scr.cst, scr.bmin
    ea, eb, ek, rt = scr.ea, scr.eb, scr.ek, scr.rt
    model, ada, tau_a, aa, binc, A, tape_aux = net.model, net.ada, net.tau_a, net.aa, net.binc, scr.A, tape.aux
    any_ada = _any(ada)
    dly, has_dly = net.dly, net.has_dly  # axonal delays of hidden neurons (ms), and whether any layer has them
    p_src, p_u, p_tidx = scr.p_src, scr.p_u, scr.p_tidx
    sch_g, sch_u, sch_src, sch_tidx = scr.sch_g, scr.sch_u, scr.sch_src, scr.sch_tidx
    sch_n = 0
    overflow = 0  # 1: the pending or scheduled arrival buffers were too small (the caller reruns)
    na = 0  # arrivals on the arrival tape
    n_layers = sizes.shape[0]
    L = n_layers - 1
    NT = V.shape[0]
    oo = noff[L]
    no = sizes[L]
    NS = NT if spiking[L] == 1 else oo  # neurons 0..NS-1 spike; a leaky-integrator output does not
    for j in range(NT):
        V[j] = 0.0
        I[j] = 0.0
        A[j] = 0.0
        counts[j] = 0
        cu[j] = np.inf
    for q in range(cnt.shape[0]):
        cnt[q] = 0
    n_blk = bmin.shape[0]
    for q in range(n_blk):
        bmin[q] = np.inf
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
    S0 = sizes[0]
    if want_trace and spiking[L] == 0:
        for k in range(no):
            trace[b, 0, k] = 0.0
    for n in range(n_steps + 1):
        # ---- input spikes of bin n arrive at t_n
        if n < n_steps:
            for q in range(in_ptr[b, n], in_ptr[b, n + 1]):
                base = ff_off[0] + in_units[q] * S0
                for j in range(S0):
                    I[j] += W[_ix(base + j)]
        # ---- sampled readouts of a leaky-integrator output at t_n (its state already holds the
        #      exact effect of every spike that reached it in the step before)
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
        #      for the free evolution from (V, I) at t_n^+ (coefficients: engine.readout_coefs); the
        #      output then moves to t_{n+1} at once, and the step's hidden spikes reach it there
        #      with their exact sub-step effect (and the sliver of the integral they add)
        w_end = 0.0
        if spiking[L] == 0:
            wa = w_a[b, n]
            wb = w_b[b, n]
            w_end = (wa + wb) * edecay
            for k in range(no):
                v = V[oo + k]
                c = I[oo + k]
                integral[k] += wa * (rcoef[0, k] * v + rcoef[2, k] * c) + wb * (rcoef[1, k] * v + rcoef[3, k] * c)
            for j in range(oo, NT):
                V[j] = alpha[j] * V[j] + cfw[j] * I[j]
            for j in range(oo, NT):
                I[j] = beta[j] * I[j]
        # ---- the spiking layers: their state at the step's end if nothing happened (two loops
        #      that vectorise); a block test rules out most neurons, the rest get a lower bound
        #      on their first crossing (cu, cst = 2) or inf
        n_cand = 0
        for l in range(n_layers):
            if spiking[l] == 0:
                continue
            po = noff[l]
            S = sizes[l]
            if uni[l] and not ada[l]:  # (the common case: scalars, five streams)
                al = float(alpha[po])
                be = float(beta[po])
                cf = float(cfw[po])
                q = qm[po]
                th = float(thr[l])
                k = 0
                for j in range(S):
                    nn = _ix(po + j)
                    ve = al * V[nn] + cf * I[nn]
                    ie = be * I[nn]
                    Ve[nn] = ve
                    Ie[nn] = ie
                    f = _mc(ve, ie, th, q)
                    cst[nn] = 2 * f
                    k += f
            else:
                k = 0
                for j in range(S):
                    nn = _ix(po + j)
                    ve = alpha[nn] * V[nn] + cfw[nn] * I[nn]
                    ie = beta[nn] * I[nn]
                    Ve[nn] = ve
                    Ie[nn] = ie
                    an = A[nn]
                    thm = thn[nn] + min(an, an * aa[nn])  # (alif: V must reach theta + min(A) first,
                    f = _mc(ve, ie, thm, qm[nn]) | (V[nn] >= thm)  # and may already be above it)
                    cst[nn] = 2 * f
                    k += f
            if k == 0:
                continue
            n_cand += k
            cnt[C_BOUNDS] += k
            for j in range(S):
                nn = po + j
                if cst[nn] == 0:
                    continue
                an = float(A[nn])
                cu[nn] = _bound(float(V[nn]), float(I[nn]), float(Ve[nn]), float(Ie[nn]), thn[nn] + min(an, an * aa[nn]),
                               qm[nn], 0.0, float(tau_m[nn]), dt)
            _refresh(cu, bmin, po, po + S, NS)
        n_pend = 0  # delayed arrivals inside this step, in time order (p_next: the first not yet processed)
        p_next = 0
        if has_dly:
            q = 0
            while q < sch_n:
                if sch_g[q] == n + 1:
                    if n_pend < p_src.shape[0]:
                        n_pend = _pend_insert(sch_src[q], sch_tidx[q], sch_u[q], p_src, p_u, p_tidx, n_pend, 0)
                    else:
                        overflow = 1
                    sch_n -= 1
                    sch_g[q] = sch_g[sch_n]
                    sch_u[q] = sch_u[sch_n]
                    sch_src[q] = sch_src[sch_n]
                    sch_tidx[q] = sch_tidx[sch_n]
                else:
                    q += 1
        # ---- the step's events in time order: the next one is the smallest cu (a bound is first
        #      solved exactly, then the search is repeated, so only neurons that could be next are
        #      ever solved) or the next pending delayed arrival (first on a tie)
        n_step_spk = 0
        if n_cand > 0 or n_pend > 0:
            while True:
                # the smallest cu (lowest index on a tie): the block of the smallest block minimum
                bu = np.inf
                kbest = -1
                for k in range(n_blk):
                    if bmin[k] < bu:
                        bu = bmin[k]
                        kbest = k
                best = -1
                if kbest >= 0:
                    for j in range(kbest << 5, min((kbest << 5) + 32, NS)):
                        if cu[j] == bu:
                            best = j
                            break
                src = -1
                ua = 0.0
                tidx_a = -1
                do_self = False
                j = -1
                l = 0
                u = 0.0
                if p_next < n_pend and (best < 0 or p_u[p_next] <= bu):
                    src = p_src[p_next]
                    ua = p_u[p_next]
                    tidx_a = p_tidx[p_next]
                    p_next += 1
                elif best < 0:
                    break
                else:
                    j = best
                    l = _layer_of(j, noff, n_layers)
                    th = thr[l]
                    if cst[j] == 2:  # a bound: solve exactly (from the bound on), then look again
                        an = float(A[j]) * math.exp(-bu / tau_a[j]) if ada[l] else 0.0
                        uu = _solve(bu, float(V[j]), float(I[j]), an, th, model[l], dt, alpha[j], beta[j], cfw[j],
                                    tau_m[j], tau_s[j], tau_a[j], rt[0, j], rt[1, j], cnt)
                        if uu < 0.0:
                            cu[j] = np.inf
                        else:
                            cu[j] = uu
                            cst[j] = 1
                        _refresh(cu, bmin, j, j + 1, NS)
                        continue
                    # ---- a spike of j at u
                    u = bu
                    delta = dt - u
                    ic = float(I[j]) * math.exp(-u * rt[1, j])  # I(t_c)
                    ac = 0.0
                    if ada[l]:  # the model's adaptation: A(t_c^-), then A jumps by beta at t_c
                        ac = float(A[j]) * math.exp(-u / tau_a[j])
                        A[j] += binc[j] * math.exp(u / tau_a[j])
                    d = _model.slope_at_spike(model[l], ic, ac, th, tau_m[j], tau_a[j])
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
                    n_step_spk += 1
                    counts[j] += 1
                    if l == L and fs_step[j - oo] < 0:
                        fs_step[j - oo] = n + 1
                        fs_time[j - oo] = n * dt + u
                    # reset at u: V(u) = 0, i.e. P = -Q g(u); then its own next crossing, if any
                    V[j] = -float(I[j]) * _lif.gfun(u, rt[0, j], rt[1, j])
                    # from V = 0 it rises at most at max(I, 0)/tau_m: a second crossing in the step
                    # needs ic (dt - u)/tau_m >= theta (and is then searched for as any other)
                    do_self = ic * delta * rt[0, j] >= th
                    if not do_self:
                        cu[j] = np.inf
                        _refresh(cu, bmin, j, j + 1, NS)
                    if has_dly and l < L:  # its arrival t_c + d_j: later in this step (pending) or scheduled
                        tr = u + dly[j]
                        if tr <= dt:
                            if n_pend < p_src.shape[0]:
                                n_pend = _pend_insert(j, ntape - 1, tr, p_src, p_u, p_tidx, n_pend, p_next)
                            else:
                                overflow = 1
                        elif sch_n < sch_g.shape[0]:
                            sch_n = _schedule(j, ntape - 1, n, tr, dt, n_steps, sch_g, sch_u, sch_src, sch_tidx, sch_n)
                        else:
                            overflow = 1
                    else:
                        src = j
                        ua = u
                        tidx_a = ntape - 1
                # ---- the arrival of src's spike (tape index tidx_a) at ua, if any: its current jump
                #      on every target at that time
                ls = 0
                i = 0
                if src >= 0:
                    cnt[C_ARRIVALS] += 1
                    if has_dly:
                        if na < tape.a_step.shape[1]:
                            tape.a_step[b, na] = n + 1
                            tape.a_src[b, na] = tidx_a
                            tape.a_delta[b, na] = dt - ua
                        na += 1
                    ls = _layer_of(src, noff, n_layers)
                    i = src - noff[ls]
                    if ls == L - 1 and spiking[L] == 0:  # the leaky-integrator output, already at t_{n+1}
                        delta = dt - ua
                        base = ff_off[L] + i * no
                        if want_max:  # its voltage just before the arrival: a candidate maximum (a kink)
                            for k in range(no):
                                if k == 0 or uni[L] == 0:
                                    tmk = tau_m[oo + k]
                                    tsk = tau_s[oo + k]
                                    xa = math.exp(delta / tmk)
                                    xb = math.exp(delta / tsk)
                                    kb = _kap(-delta, tmk, tsk)
                                vc = xa * V[oo + k] + I[oo + k] * kb  # V(t_c^-)
                                if vc > vmax[k]:
                                    vmax[k] = vc
                                    tmax[k] = n + 1
                                    mx_ref[k] = tidx_a
                                    mx_delta[k] = delta
                                    mx_slope[k] = I[oo + k] * xb - vc  # tau_m dV/dt(t_c^-)
                        if uni[L] and delta > 0.0:  # its state at t_{n+1} as had the jump been at ua
                            bI = math.exp(-delta / tau_s[oo])
                            bV = _kap_e(delta, tau_m[oo], tau_s[oo], math.exp(-delta / tau_m[oo]), bI)
                            area = _kap_area(delta, tau_m[oo], tau_s[oo])
                            for k in range(no):
                                w = W[_ix(base + k)]
                                I[_ix(oo + k)] += w * bI
                                V[_ix(oo + k)] += w * bV
                                integral[k] += w * w_end * area
                        else:
                            _deliver(I, V, W, base, oo, no, uni[L], tau_m, tau_s, delta, ea, eb, ek, rt)
                            if delta > 0.0:
                                for k in range(no):
                                    if k == 0 or uni[L] == 0:
                                        area = _kap_area(delta, tau_m[oo + k], tau_s[oo + k])
                                    integral[k] += W[base + k] * w_end * area
                # ---- the re-tests: j's own trajectory after its reset (job 0), and the targets of the
                #      arrival in the next layer (1) and through recurrent weights (2). A current jump
                #      w at time uh of the step into neurons po..po+S-1 of a spiking layer (weights
                #      wsc * W[base:base+S]; wsc = 0 only re-tests), in coefficient form (V(u) =
                #      e^{-u/tau_m} (P + Q g(u)), I = Q e^{-u/tau_s}, P, Q held in V, I during the
                #      step), is Q += w e^{uh/tau_s}, P += w e^{uh/tau_m} g(-uh). Each target's new
                #      trajectory is re-tested in the same pass over the row: the necessary test on
                #      its state at the step's end (lif.may_cross) rules most out (cu = inf); the
                #      rest (cst = 2) get a lower bound on their next crossing (_bound), and the row's
                #      block minima are rebuilt from them. An alif neuron's V must first reach theta
                #      + min(A). (Written out here once rather than called: a numba function with
                #      array arguments costs an atomic reference count per array and call.)
                for job in range(3):
                    if job == 0:
                        if not do_self:
                            continue
                        base = 0
                        po = j
                        S = 1
                        lt = l
                        wsc = 0.0
                        uh = u
                        un = 0
                    else:  # an arrival's weight row: into the next layer (job 1) or recurrent (job 2)
                        if src < 0:
                            continue
                        if job == 1:
                            if ls >= L or spiking[ls + 1] == 0:
                                continue
                            lt = ls + 1
                            base = ff_off[lt]
                        else:
                            if rec_off[ls] < 0:
                                continue
                            lt = ls
                            base = rec_off[lt]
                        S = sizes[lt]
                        base += i * S
                        po = noff[lt]
                        wsc = 1.0
                        uh = ua
                        un = uni[lt]
                    cnt[C_RETESTS] += S
                    th = thr[lt]
                    adl = ada[lt]
                    # the row's blocks start from their neurons outside the row (its own added below)
                    k0 = po >> 5
                    k1 = (po + S - 1) >> 5
                    for kq in range(k0, k1 + 1):
                        bmin[kq] = np.inf
                    m = np.inf
                    for jj in range(k0 << 5, po):
                        m = min(m, cu[_ix(jj)])
                    bmin[k0] = m
                    m = bmin[k1]
                    for jj in range(po + S, min((k1 << 5) + 32, NS)):
                        m = min(m, cu[_ix(jj)])
                    bmin[k1] = m
                    nb = 0
                    if un:
                        tm = float(tau_m[po])
                        rm = rt[0, po]
                        rs = rt[1, po]
                        xm = math.exp(-uh * rm)
                        ys = math.exp(-uh * rs)
                        gu = _lif.gfun(uh, rm, rs)
                        fp = _lif.gfun(-uh, rm, rs) / xm
                        fq = 1.0 / ys
                        al = float(alpha[po])
                        be = float(beta[po])
                        cf = float(cfw[po])
                        qh = (dt - uh) * rm
                        za = math.exp(-uh / tau_a[po]) if adl else 1.0
                        zb = float(aa[po])
                        for jj in range(S):  # (the branch on adl is loop-invariant: hoisted)
                            nn = _ix(po + jj)
                            w = wsc * W[_ix(base + jj)]
                            P = V[nn] + w * fp
                            Q = I[nn] + w * fq
                            V[nn] = P
                            I[nn] = Q
                            thj = th
                            if adl:
                                an = A[nn]
                                thj = th + min(an * za, an * zb)
                            f = _mc(al * P + cf * Q, be * Q, thj, qh)
                            cst[nn] = 2 * f
                            nb += f
                            cu[nn] = np.inf
                        if adl:  # V already above theta + min(A) at uh (V - A still below theta)
                            for jj in range(S):
                                nn = _ix(po + jj)
                                an = A[nn]
                                if cst[nn] == 0 and xm * (V[nn] + I[nn] * gu) >= th + min(an * za, an * zb):
                                    cst[nn] = 2
                                    nb += 1
                        if nb > 0:
                            for jj in range(S):
                                nn = _ix(po + jj)
                                if cst[nn] == 0:
                                    continue
                                P = float(V[nn])
                                Q = float(I[nn])
                                an = float(A[nn])
                                c = _bound(xm * (P + Q * gu), Q * ys, al * P + cf * Q, be * Q,
                                           th + min(an * za, an * zb), qh, uh, tm, dt)
                                cu[nn] = c
                                kq = (po + jj) >> 5
                                bmin[kq] = min(bmin[kq], c)
                    else:  # per-neuron time constants: the same two passes with each neuron's factors
                        _lif._vexp(ea, po, S, uh, rt[0])  # e^{+uh/tau_m}, e^{+uh/tau_s} (no division below)
                        _lif._vexp(eb, po, S, uh, rt[1])
                        if adl:  # the adapted thresholds (in ek, free during this pass)
                            for jj in range(S):
                                nn = _ix(po + jj)
                                ek[nn] = th + min(A[nn] * math.exp(-uh / tau_a[nn]), A[nn] * aa[nn])
                        for jj in range(S):  # (no call, no division, no branch: vectorises)
                            nn = _ix(po + jj)
                            iem = ea[nn]
                            z = uh * rt[3, nn]
                            rm = rt[0, nn]
                            fpc = rt[2, nn] * (iem - eb[nn])
                            # tau_m ~ tau_s: -(u/tau_m) h(-z) e^{u/tau_m} by its series
                            fps = -uh * rm * (1.0 + z * (0.5 + z * (1.0 / 6.0 + z * (1.0 / 24.0 + z / 120.0)))) * iem
                            w = wsc * W[_ix(base + jj)]
                            P = V[nn] + w * (fpc if abs(z) > 1e-3 else fps)
                            Q = I[nn] + w * eb[nn]
                            V[nn] = P
                            I[nn] = Q
                            cu[nn] = np.inf
                            f = _mc(alpha[nn] * P + cfw[nn] * Q, beta[nn] * Q, ek[nn] if adl else th, (dt - uh) * rm)
                            cst[nn] = 2 * f
                            nb += f
                        if adl:  # V already above theta + min(A) at uh (V - A still below theta)
                            for jj in range(S):
                                nn = _ix(po + jj)
                                if cst[nn] == 0:
                                    em = 1.0 / ea[nn]
                                    z = uh * rt[3, nn]
                                    if abs(z) > 1e-3:
                                        gu = rt[2, nn] * (1.0 - ea[nn] / eb[nn])
                                    else:
                                        gu = uh * rt[0, nn] * (1.0 - z * (0.5 - z * (1.0 / 6.0 - z * (1.0 / 24.0 - z / 120.0))))
                                    if em * (V[nn] + I[nn] * gu) >= ek[nn]:
                                        cst[nn] = 2
                                        nb += 1
                        if nb > 0:
                            for jj in range(S):
                                nn = _ix(po + jj)
                                if cst[nn] == 0:
                                    continue
                                em = 1.0 / ea[nn]
                                es = 1.0 / eb[nn]
                                z = uh * rt[3, nn]
                                rm = rt[0, nn]
                                if abs(z) > 1e-3:
                                    gu = rt[2, nn] * (1.0 - es / em)
                                else:  # (u/tau_m) h(z) by its series
                                    gu = uh * rm * (1.0 - z * (0.5 - z * (1.0 / 6.0 - z * (1.0 / 24.0 - z / 120.0))))
                                P = float(V[nn])
                                Q = float(I[nn])
                                the = ek[nn] if adl else th
                                c = _bound(em * (P + Q * gu), Q * es, alpha[nn] * P + cfw[nn] * Q, beta[nn] * Q, the,
                                           (dt - uh) * rm, uh, float(tau_m[nn]), dt)
                                cu[nn] = c
                                kq = (po + jj) >> 5
                                bmin[kq] = min(bmin[kq], c)
                    cnt[C_BOUNDS] += nb
            for j in range(NS):
                cu[j] = np.inf
            for k in range(bmin.shape[0]):
                bmin[k] = np.inf
        cnt[C_SPIKES] += n_step_spk
        if n_step_spk > cnt[C_MAXSTEP]:
            cnt[C_MAXSTEP] = n_step_spk
        # ---- the spiking layers at t_{n+1}: from their coefficients (two loops that vectorise),
        #      or, when no event touched them, the end state computed above (bitwise the same)
        if n_cand > 0 or n_pend > 0:
            for j in range(NS):
                V[j] = alpha[j] * V[j] + cfw[j] * I[j]
            for j in range(NS):
                I[j] = beta[j] * I[j]
        else:
            for j in range(NS):
                V[j] = Ve[j]
            for j in range(NS):
                I[j] = Ie[j]
        if any_ada:
            for j in range(NT):
                A[j] = aa[j] * A[j]
    if has_dly:
        tape.a_n[b] = na
    return ntape, graze, overflow


@njit(cache=True, parallel=True)
def forward_batch(net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max, n_chunks, NL, n_sch):
    """Forward pass of a batch (bundles: see eventprop.engine.contract). Fills ``tape`` (tape.n: spikes
    per sample, also past the tape's capacity) and ``out``."""
    for c in prange(n_chunks):
        _forward_chunk(c, n_chunks, net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max, NL, n_sch)


@njit(cache=True)
def _fwd_scratch(net, dt, rt, NL, n_sch):
    """One sample's forward scratch (_FwdScratch) on the CPU, with NL pending and n_sch scheduled
    delayed arrivals."""
    NT = net.alpha.shape[0]
    W = net.W
    tau_m = net.tau_m
    V = np.empty(NT, dtype=W.dtype)  # during a step: the coefficients P, Q of the spiking layers
    I = np.empty(NT, dtype=W.dtype)
    Ve = np.empty(NT, dtype=W.dtype)  # the state at the step's end without events (block test)
    Ie = np.empty(NT, dtype=W.dtype)
    cu = np.empty(NT, dtype=np.float64)  # next crossing time in the step (exact or a lower bound), inf if none
    cst = np.zeros(NT, dtype=np.int8)  # 1 exact, 2 lower bound
    bmin = np.full((NT + 31) // 32, np.inf)  # minima of cu over blocks of 32 neurons
    qm = np.empty(NT, dtype=np.float64)  # dt / tau_m, for the crossing test
    thn = np.empty(NT, dtype=np.float64)  # per neuron: its layer's threshold
    for j in range(NT):
        qm[j] = dt / tau_m[j]
        thn[j] = net.thr[_layer_of(j, net.noff, net.sizes.shape[0])]
    ea = np.empty(NT, dtype=np.float64)  # per-neuron decays (non-uniform layers)
    eb = np.empty(NT, dtype=np.float64)
    ek = np.empty(NT, dtype=np.float64)
    A = np.empty(NT, dtype=W.dtype)  # adaptation of alif neurons (0 elsewhere; during a step: A at its start)
    # delayed arrivals: pending inside the current step, and scheduled for later steps
    p_src = np.empty(NL, dtype=np.int32)
    p_u = np.empty(NL, dtype=np.float64)
    p_tidx = np.empty(NL, dtype=np.int64)
    sch_g = np.empty(n_sch, dtype=np.int64)
    sch_u = np.empty(n_sch, dtype=np.float64)
    sch_src = np.empty(n_sch, dtype=np.int32)
    sch_tidx = np.empty(n_sch, dtype=np.int64)
    return _FwdScratch(V, I, qm, thn, Ve, Ie, cu, cst, bmin, ea, eb, ek, rt, A, p_src, p_u, p_tidx, sch_g, sch_u,
                       sch_src, sch_tidx)


def arrival_buffers(net, dt):
    """Initial sizes of the pending and scheduled delayed-arrival buffers of one sample (doubled
    by the callers when a sample overflows them)."""
    NT = int(net.alpha.shape[0])
    n_sch = NT * (int(math.ceil(float(net.dly.max()) / dt)) + 2) if net.has_dly else 1
    return 4 * NT + 16, n_sch


@njit(cache=True)
def _forward_chunk(c, n_chunks, net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max, NL, n_sch):
    B = inp.ptr.shape[0]
    rt = _rates(net.tau_m, net.tau_s)
    scr = _fwd_scratch(net, dt, rt, NL, n_sch)
    b0 = (c * B) // n_chunks
    b1 = ((c + 1) * B) // n_chunks
    for b in range(b0, b1):
        while True:
            nt, gz, of = _forward_sample(b, net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max,
                                         scr)
            if of == 0:
                break
            NL *= 2
            n_sch *= 2
            scr = _fwd_scratch(net, dt, rt, NL, n_sch)
        tape.n[b] = nt
        out.graze[b] = gz


@njit(cache=True, fastmath={"reassoc", "contract", "nsz"})
def _row_adjoint(W, lamV, lamI, dW, base, po, S, g1, g2, cv, ci):
    """One pass over a spike's weight row (uniform layer): dW -= g1 lambda_I + g2 lambda_V and the
    feedback cv sum_j w_j lambda_V,j - ci sum_j w_j lambda_I,j (both dot products and the weight
    gradient in one pass; reassociated so that it vectorises)."""
    sv = lamV[0] - lamV[0]
    si = sv
    for j in range(S):
        w = W[_ix(base + j)]
        lv = lamV[_ix(po + j)]
        li = lamI[_ix(po + j)]
        sv += w * lv
        si += w * li
        dW[_ix(base + j)] -= g1 * li + g2 * lv
    return cv * sv - ci * si


@njit(cache=True, fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
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
        a = math.exp(-delta / tm)
        bb = math.exp(-delta / ts)
        cb = _kap_e(delta, tm, ts, a, bb) * tm / ts
        g1 = ts * bb
        g2 = ts * cb
        return _row_adjoint(W, lamV, lamI, dW, base, po, S, g1, g2, a - cb, bb)
    for j in range(S):  # ea, eb: the targets' decays over delta (_decay_rows, by the caller)
        n = _ix(po + j)
        lv0 = lamV[n]
        li = eb[n] * lamI[n] + ek[n] * rt[4, n] * lv0
        fb += W[_ix(base + j)] * (ea[n] * lv0 - li)
        dW[_ix(base + j)] -= tau_s[n] * li
    return fb


@njit(cache=True)
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
                     rec_b, rec_lamV, rec_lamI, tg, nu, dtau, ea, eb, ek, rt, want_delay, dd, gd, lamA, fbv, ddh):
    """Backward pass of sample b (accumulated into dW). Returns how often |lambda| was bounded.

    With ``tg.want`` it also accumulates dL/dtau_m, dL/dtau_s of every hidden neuron into dtau
    (rows 0, 1): dL/dtau = int p^T (dA/dtau) x dt (the flow's derivative; p the costate) is
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
    model, ada, tau_a, aa, binc, tape_aux = net.model, net.ada, net.tau_a, net.aa, net.binc, tape.aux
    any_ada = _any(ada)
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
                    dtau[0, j] += g0[j] * nuIm[j]
                    dtau[1, j] += g0[j] * nuIs[j]
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
        # the grid time's events, latest first: the forward pass wrote a step's emissions (and,
        # with delays, its arrivals) in time order, so each list read backward has increasing
        # delta; the two are merged (an arrival before an emission at the same time)
        n_ev = 0
        qe = e_top
        qa = a_top
        while qe > e_lo or qa > a_lo:
            if qa > a_lo and (qe <= e_lo or tape.a_delta[b, qa] <= tape_delta[b, qe]):
                order[n_ev] = -(qa + 1)
                qa -= 1
            else:
                order[n_ev] = qe
                qe -= 1
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
                            a = math.exp(-delta / tm)
                            bb = math.exp(-delta / ts)
                            kp = _kap_e(delta, tm, ts, a, bb)
                            cb = kp * tm / ts
                            area = (-ts * math.expm1(-delta / ts) - tm * kp) / ts
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
                            dtau[0, n_o] += w * (kp * nuVm[n_o] + bb * nuIm[n_o] + dkm * pV) - gw * (kp + tm * dkm)
                            dtau[1, n_o] += (w * (kp * nuVs[n_o] + bb * nuIs[n_o] + dks * pV + des * pI)
                                             + gw * (1.0 - bb - delta / ts * bb - tm * dks))
                else:
                    if (delta != 0.0 and uni[l + 1] == 0) or want_tau:
                        _decay_rows(ea, eb, ek, noff[l + 1], S, tau_m, tau_s, rt, delta)
                    if want_tau and (l + 1 < L or out_tau):
                        fb += _tau_row(W, base, noff[l + 1], S, tau_m, tau_s, delta, lamV, lamI, dW, nuVm, nuIm, nuVs, nuIs,
                                       dtau, ea, eb, ek, rt)
                    else:
                        fb += _spike_targets(W, base, noff[l + 1], S, uni[l + 1], tau_m, tau_s, delta, lamV, lamI,
                                             dW, ea, eb, ek, rt)
            if is_arr and rec_off[l] >= 0:
                S = sizes[l]
                base = rec_off[l] + i * S
                if (delta != 0.0 and uni[l] == 0) or want_tau:
                    _decay_rows(ea, eb, ek, noff[l], S, tau_m, tau_s, rt, delta)
                if want_tau:
                    fb += _tau_row(W, base, noff[l], S, tau_m, tau_s, delta, lamV, lamI, dW, nuVm, nuIm, nuVs, nuIs, dtau,
                                   ea, eb, ek, rt)
                else:
                    fb += _spike_targets(W, base, noff[l], S, uni[l], tau_m, tau_s, delta, lamV, lamI, dW, ea, eb, ek,
                                         rt)
            if is_arr and n_kink > 0:  # output maxima at this spike's arrival move with its time: their
                for k in range(no):     # term, then the kick of the maximum at the arrival's t^-, at t_m
                    if tmax[b, k] == m and mx_ref[b, k] == e and g_max[b, k] != 0.0:
                        fb += g_max[b, k] * mx_slope[b, k] / tau_m[oo + k]
                        tmk = tau_m[oo + k]
                        tsk = tau_s[oo + k]
                        ak = math.exp(-delta / tmk)
                        bk = math.exp(-delta / tsk)
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
            if l == L and fs_step[i] == m:  # the first spike: no earlier one of i in this step
                first = True
                for e2 in range(e_lo + 1, e):
                    if tape_id[b, e2] == nid:
                        first = False
                        break
                if first:
                    extra = g_spk[b, i]
            a_i = math.exp(-delta / tau_m[nid])
            b_i = math.exp(-delta / tau_s[nid])
            ac = 0.0
            lap = 0.0
            g_i = 1.0
            if ada[l]:  # the model's adaptation: lambda_A takes part in the jump and jumps too
                g_i = math.exp(-delta / tau_a[nid])
                ac = tape_aux[b, e]
                lap = g_i * lamA[nid]
            jv, ja = _model.adjoint_jump(model[l], a_i * lamV[nid], lap, ac, tape_d[b, e], fb + extra, thr[l],
                                         tau_m[nid], tau_a[nid], binc[nid])
            if ada[l]:
                lamA[nid] = min(max(lamA[nid] + ja / g_i, -LAMBDA_MAX), LAMBDA_MAX)  # expressed at t_m
            if l < L:
                jv -= reg[b, nid] / (thr[l] * tau_m[nid])
            k_i = _kap_e(delta, tau_m[nid], tau_s[nid], a_i, b_i)
            if want_tau and (l < L or out_tau):
                # its reset at t_c is an event of its own: e = (-theta, 0), worth -theta nu_V(t_c)
                # (alif: V falls from theta + A; A's own dynamics do not depend on tau_m, tau_s)
                dem, dkm, dks, des = _dprop(delta, tau_m[nid], tau_s[nid])
                pV = -tau_m[nid] * lamV[nid]
                vr = _model.level_at_spike(model[l], thr[l], ac)
                dtau[0, nid] -= vr * (a_i * nuVm[nid] + dem * pV)
                dtau[1, nid] -= vr * (a_i * nuVs[nid])
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
    for j in range(dtau.shape[1]):
        dtau[0, j] = 0.0
        dtau[1, j] = 0.0
    lamV = np.empty(NT, dtype=W.dtype)
    lamI = np.empty(NT, dtype=W.dtype)
    lamA = np.empty(NT, dtype=W.dtype)
    # a grid time's events (spikes, and arrivals with delays): at most the whole tape
    order = np.empty(tape.step.shape[1] + (tape.a_step.shape[1] if net.has_dly else 0) + 1, dtype=np.int64)
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
                                    dd, gd, lamA, fbv, ddh)


@njit(cache=True, parallel=True)
def backward_batch(net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, dWc, dW, rec_b, rec_lamV, rec_lamI, hits,
                   tg, dg):
    """Backward pass of a batch: dW (flat, like net.W) from the tape, the forward outputs ``fo``
    and the readout gradients ``gr``; per-chunk buffers dWc reduced in a fixed order. ``tg``
    (TauGrad): with tg.want, dL/dtau of the hidden neurons per chunk in tg.dtau (n_chunks, 2, NT);
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

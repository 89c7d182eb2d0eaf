"""CUDA backend (numba-cuda; the ``cuda`` extra): the CPU kernels' own source compiled for the GPU.

Same contract as :class:`eventprop.engine.cpu.CPUBackend`: host NumPy bundles in, host NumPy arrays
out (copied to the device inside each call). There is no second copy of the maths here: the
per-sample forward and backward passes of ``_kernels.py`` (``_forward_sample``,
``_backward_sample``) and everything they call (the neuron models' propagators, crossing
solvers, resets and adjoint jumps in eventprop.neurons) are plain numba functions that allocate
nothing, and numba-cuda compiles them as device functions when the two kernels below call them.
So the CUDA backend has the CPU engine's exact in-step semantics, every neuron model, hidden
delays and time-constant gradients, and a fix is made once.

Layout of the work: one sample per GPU thread (``THREADS`` per block, blocks = ceil(B / THREADS)),
each sample simulated serially, event by event, exactly as one CPU chunk does it, in its own
slice of per-sample scratch arrays in global memory. Gradients: one dW buffer per sample, summed
over samples in sample order by a second kernel (deterministic, independent of scheduling);
dL/dtau and delay gradients per sample, summed on the host in sample order.

Tape: in global memory, (B, cap); the forward counts every spike (also past the capacity); when a
sample has more than cap spikes the pass is rerun once with the exact size (never dropped), and
the capacity grows for later calls. Delayed arrivals: fixed buffers per sample; a sample that
overflows them is flagged and the batch is rerun with buffers twice as large.

On a real GPU the compiler may fuse a*b + c into one FMA, which rounds differently from the CPU:
states can differ in the last bit, so a spike can differ where V grazes the threshold to within
rounding. Under numba's CUDA simulator (the tests) the kernels run the CPU-compiled functions.
Speed: the parallelism is the batch (one thread per sample), so a GPU is used well only by large
batches (evaluation, the epoch's samples in flight); see docs/benchmarks.md.
"""

from __future__ import annotations

import os
from collections import namedtuple

import numpy as np
from numba import config as _nb_config
from numba import cuda

from . import _kernels
from .contract import BackwardResult, GradRequest, TauGrad, allocate_forward, sized_tape_run

# per-sample forward scratch: the fields of _kernels._FwdScratch with a leading batch axis
# (rt, qm, thn are shared by every sample) and the overflow flags
_FwdBatch = namedtuple("_FwdBatch", _kernels._FwdScratch._fields + ("flags",))
_BwdBatch = namedtuple("_BwdBatch", "lamV lamI lamA order gtmp dW nu dtau ea eb ek rt dd gd fbv ddh hits")
_SHARED = ("qm", "thn", "rt")


@cuda.jit
def _forward_kernel(net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max, sc):
    b = cuda.grid(1)
    if b >= inp.ptr.shape[0]:
        return
    scr = _kernels._FwdScratch(sc.V[b], sc.I[b], sc.qm, sc.thn, sc.Ve[b], sc.Ie[b], sc.cu[b], sc.cst[b], sc.bmin[b],
                               sc.ea[b], sc.eb[b], sc.ek[b], sc.rt, sc.A[b], sc.p_src[b], sc.p_u[b], sc.p_tidx[b],
                               sc.sch_g[b], sc.sch_u[b], sc.sch_src[b], sc.sch_tidx[b])
    nt, gz, of = _kernels._forward_sample(b, net, inp, ro, tape, out, n_steps, dt, grazing_eps, want_trace, want_max,
                                          scr)
    tape.n[b] = nt
    out.graze[b] = gz
    sc.flags[b] = of


@cuda.jit
def _backward_kernel(net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, rec_b, rec, tg, want_delay, sc):
    b = cuda.grid(1)
    if b >= inp.ptr.shape[0]:
        return
    dW = sc.dW[b]
    for j in range(dW.shape[0]):
        dW[j] = 0.0
    dtau = sc.dtau[b]
    for j in range(dtau.shape[1]):
        dtau[0, j] = 0.0
        dtau[1, j] = 0.0
    dd = sc.dd[b]
    for j in range(dd.shape[0]):
        dd[j] = 0.0
    ddh = sc.ddh[b]
    for j in range(ddh.shape[0]):
        ddh[j] = 0.0
    sc.hits[b] = _kernels._backward_sample(b, net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, sc.lamV[b],
                                           sc.lamI[b], sc.order[b], sc.gtmp[b], dW, rec_b, rec[0], rec[1], tg,
                                           sc.nu[b], dtau, sc.ea[b], sc.eb[b], sc.ek[b], sc.rt, want_delay, dd,
                                           sc.gd[b], sc.lamA[b], sc.fbv[b], ddh)


@cuda.jit
def _reduce_kernel(dWb, dW):
    """dW[j] = sum over samples of dWb[b, j], in sample order."""
    j = cuda.grid(1)
    if j < dW.shape[0]:
        s = dWb[0, j]
        for b in range(1, dWb.shape[0]):
            s += dWb[b, j]
        dW[j] = s


def simulator() -> bool:
    return bool(_nb_config.ENABLE_CUDASIM)


def threads_per_block() -> int:
    env = os.environ.get("EVENTPROP_CUDA_THREADS")
    if env:
        return max(1, min(1024, int(env)))
    return 2 if simulator() else 32


def _launch(B: int):
    t = threads_per_block()
    return (max(B, 1) + t - 1) // t, t


def _dev(bundle):
    """A bundle with its arrays on the device (under the simulator: the host arrays themselves)."""
    if simulator():
        return bundle
    return type(bundle)(*[cuda.to_device(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
                          for a in bundle])


def _host(bundle):
    if simulator():
        return bundle
    return type(bundle)(*[a.copy_to_host() if hasattr(a, "copy_to_host") else a for a in bundle])


def _empty(shape, dtype):
    return np.zeros(shape, dtype) if simulator() else cuda.device_array(shape, dtype)


class CUDABackend:
    """One sample per thread on an NVIDIA GPU, running the CPU kernels' source (module docstring)."""

    name = "cuda"

    def __init__(self) -> None:
        self.cap = 64  # tape capacity per sample (grows as on the CPU)

    def forward(self, net, inp, ro, n_steps, dt, grazing_eps, want_trace, want_max):
        B = inp.ptr.shape[0]
        NT = int(net.sizes.sum())
        dtype = net.W.dtype.type
        aux, arr = bool(net.ada.any()), bool(net.has_dly)
        if B == 0:
            return allocate_forward(B, int(net.sizes[-1]), NT, n_steps, self.cap, dtype, want_trace, aux, arr)
        if len(inp.units) == 0:
            inp = type(inp)(inp.ptr, np.zeros(1, np.int32))
        dnet, dinp, dro = _dev(net), _dev(inp), _dev(ro)
        one = _kernels._fwd_scratch(net, dtype(dt), _kernels._rates(net.tau_m, net.tau_s), 1, 1)
        NL, n_sch = _kernels.arrival_buffers(net, dt)
        grid = _launch(B)

        def run(tape, fo):
            nonlocal NL, n_sch
            while True:
                fields = {}
                for f, a in zip(one._fields, one):
                    if f in _SHARED:
                        fields[f] = a if simulator() else cuda.to_device(a)
                    else:
                        n = NL if f.startswith("p_") else n_sch if f.startswith("sch_") else a.shape[0]
                        fields[f] = _empty((B, n), a.dtype)
                fields["flags"] = _empty(B, np.int64)
                sc = _FwdBatch(**fields)
                dtape, dfo = _dev(tape), _dev(fo)
                _forward_kernel[grid](dnet, dinp, dro, dtape, dfo, n_steps, dtype(dt), dtype(grazing_eps),
                                      bool(want_trace), bool(want_max), sc)
                flags = sc.flags if simulator() else sc.flags.copy_to_host()
                if not flags.any():
                    return _host(dtape), _host(dfo)
                NL, n_sch = 2 * NL, 2 * n_sch

        return sized_tape_run(self, B, int(net.sizes[-1]), NT, n_steps, dtype, want_trace, run, aux, arr)

    def backward(self, net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, record, want=GradRequest()):
        tau, delays = want.tau, int(want.n_delay_inputs)
        B = inp.ptr.shape[0]
        NT = int(net.sizes.sum())
        dt_ = net.W.dtype
        nW = net.W.shape[0]
        if record is not None:
            rec_V = np.zeros((n_steps + 1, NT), dtype=dt_)
            rec_I = np.zeros((n_steps + 1, NT), dtype=dt_)
        else:
            rec_V = rec_I = np.zeros((1, 1), dtype=dt_)
        z2 = np.zeros((2, 4, 1), np.float64)
        if tau is not None:
            tg = TauGrad(True, tau.dem, tau.dkm, tau.dks, tau.des, np.zeros((1, 2, 1)), bool(tau.out), np.ascontiguousarray(tau.dco, np.float64),
                         np.ascontiguousarray(tau.dtco, np.float64))
        else:
            z = np.zeros(1, dt_)
            tg = TauGrad(False, z, z, z, z, np.zeros((1, 2, 1)), False, z2, z2)
        n_dtau = NT if tau is not None else 0
        n_dh = NT if net.has_dly else 0
        if B == 0:
            return BackwardResult(np.zeros(nW, dt_), 0, (rec_V if record is not None else None),
                    (rec_I if record is not None else None), np.zeros((NT, 2)) if tau is not None else None,
                    np.zeros(int(delays)) if delays else None, np.zeros(NT) if net.has_dly else None)
        if len(inp.units) == 0:
            inp = type(inp)(inp.ptr, np.zeros(1, np.int32))
        cap = tape.step.shape[1] + (tape.a_step.shape[1] if net.has_dly else 0) + 1
        sc = _BwdBatch(
            _empty((B, NT), dt_), _empty((B, NT), dt_), _empty((B, NT), dt_), _empty((B, cap), np.int64),
            _empty((B, NT), dt_), _empty((B, nW), dt_), _empty((B, 4, NT if tau is not None else 1), np.float64),
            _empty((B, 2, n_dtau), np.float64), _empty((B, NT), np.float64), _empty((B, NT), np.float64),
            _empty((B, NT), np.float64), None, _empty((B, int(delays)), np.float64), _empty((B, NT), dt_),
            _empty((B, tape.step.shape[1] if net.has_dly else 1), np.float64), _empty((B, n_dh), np.float64),
            _empty(B, np.int64))
        rt = _kernels._rates(net.tau_m, net.tau_s)
        sc = sc._replace(rt=rt if simulator() else cuda.to_device(rt))
        drec_V, drec_I = (rec_V, rec_I) if simulator() else (cuda.to_device(rec_V), cuda.to_device(rec_I))
        _backward_kernel[_launch(B)](_dev(net), _dev(inp), _dev(ro), _dev(tape), _dev(fo), _dev(gr), n_steps,
                                     dt_.type(inv_T), bool(use_trace), -1 if record is None else int(record),
                                     (drec_V, drec_I), _dev(tg), bool(delays), sc)
        ddW = _empty(nW, dt_)
        _reduce_kernel[(nW + 127) // 128, 128](sc.dW, ddW)
        h = _host(sc)
        dW = ddW if simulator() else ddW.copy_to_host()
        dtau = h.dtau.sum(axis=0).T if tau is not None else None  # samples in a fixed order
        dd = h.dd.sum(axis=0) if delays else None
        ddh = h.ddh.sum(axis=0) if net.has_dly else None
        if record is not None and not simulator():
            rec_V, rec_I = drec_V.copy_to_host(), drec_I.copy_to_host()
        return BackwardResult(dW, int(h.hits.sum()), (rec_V if record is not None else None),
                (rec_I if record is not None else None), dtau, dd, ddh)

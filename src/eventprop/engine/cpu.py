"""The CPU backend: the numba kernels of ``_kernels.py`` (the contract: eventprop.engine.contract).

Samples are spread over a fixed number of chunks (``N_CHUNKS``, one thread each as far as there are
threads), each simulated serially and event by event, with private gradient buffers summed in chunk
order: results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np

from . import _kernels
from .contract import BackwardResult, DelayGrad, GradRequest, TauGrad, sized_tape_run

N_CHUNKS = 8  # fixed number of sample chunks on the CPU: results do not depend on the thread count


class CPUBackend:
    """The numba kernels (``_kernels.py``): samples spread over a fixed number of chunks
    (threads), each simulated serially and event by event."""

    name = "cpu"

    def __init__(self) -> None:
        self.cap = 64  # tape capacity per sample: grows to the largest tape seen, so later calls need no rerun

    def forward(self, net, inp, ro, n_steps, dt, grazing_eps, want_trace, want_max):
        B = inp.ptr.shape[0]
        dtype = net.W.dtype.type

        NL, n_sch = _kernels.arrival_buffers(net, dt)

        def run(tape, fo):
            _kernels.forward_batch(net, inp, ro, tape, fo, n_steps, dtype(dt), dtype(grazing_eps), bool(want_trace),
                                   bool(want_max), min(N_CHUNKS, max(B, 1)), NL, n_sch)
            return tape, fo

        return sized_tape_run(self, B, int(net.sizes[-1]), int(net.sizes.sum()), n_steps, dtype, want_trace, run,
                              bool(net.ada.any()), bool(net.has_dly))

    def backward(self, net, inp, ro, tape, fo, gr, n_steps, inv_T, use_trace, record, want=GradRequest()):
        tau, delays = want.tau, int(want.n_delay_inputs)

        B = inp.ptr.shape[0]
        NT = int(net.sizes.sum())
        n_chunks = min(N_CHUNKS, max(B, 1))
        dt_ = net.W.dtype
        dWc = np.empty((n_chunks, net.W.shape[0]), dtype=dt_)
        hits = np.zeros(n_chunks, dtype=np.int64)
        dW = np.empty(net.W.shape[0], dtype=dt_)
        if record is not None:
            rec_V = np.zeros((n_steps + 1, NT), dtype=dt_)
            rec_I = np.zeros((n_steps + 1, NT), dtype=dt_)
        else:
            rec_V = rec_I = np.zeros((1, 1), dtype=dt_)
        if tau is not None:
            tg = TauGrad(True, tau.dem, tau.dkm, tau.dks, tau.des, np.zeros((n_chunks, 2, NT), np.float64), bool(tau.out),
                         np.ascontiguousarray(tau.dco, np.float64), np.ascontiguousarray(tau.dtco, np.float64))
        else:
            z = np.zeros(1, dt_)
            zc = np.zeros((2, 4, 1), np.float64)
            tg = TauGrad(False, z, z, z, z, np.zeros((n_chunks, 2, 0), np.float64), False, zc, zc)
        dg = DelayGrad(bool(delays), np.zeros((n_chunks, int(delays)), np.float64),
                       np.zeros((n_chunks, NT if net.has_dly else 0), np.float64))
        _kernels.backward_batch(net, inp, ro, tape, fo, gr, n_steps, dt_.type(inv_T), bool(use_trace), dWc, dW,
                                -1 if record is None else int(record), rec_V, rec_I, hits, tg, dg)
        dtau = tg.dtau.sum(axis=0).T if tau is not None else None  # chunks in a fixed order
        dd = dg.dd.sum(axis=0) if delays else None
        ddh = dg.dh.sum(axis=0) if net.has_dly else None  # chunks in a fixed order
        return BackwardResult(dW, int(hits.sum()), (rec_V if record is not None else None), (rec_I if record is not None else None),
                dtau, dd, ddh)



"""What the engine's kernels ask a neuron model: the model interface, dispatched on the layer's
model code (``NeuronModel.code``, carried per layer in the kernels' network arrays).

Every model module (``lif``, ``alif``) defines the same pieces with the same arguments, and the
kernels call only the functions here, never a model module directly:

``crossing(v, i, a, v1, i1, th, tm, ts, ta, span, cnt)``
    the first u in [0, span] at which the free trajectory from (V, I, A) = (v, i, a) (state
    (v1, i1) at span) meets the model's threshold, or -1 when it provably has none; float64.
``slope_at_spike(ic, ac, th, tm, ta)``
    d: tau_m times the event function's slope just before a spike (current ic, adaptation ac);
    the tape stores it.
``level_at_spike(th, ac)``
    V just before the reset (the reset's jump, for the time-constant gradients).
``adjoint_jump(lvp, lap, ac, d, y, th, tm, ta, beta)``
    the jumps (of lambda_V, of lambda_A) at a spike from the adjoints just after it and the
    feedback y.
``ADAPTS``
    whether the model has the threshold-adaptation state A (theta + A, A decaying with tau_a,
    jumping by beta at a spike): the kernels then keep A, its adjoint and A at each spike.

Each function is plain numba on scalars (no allocation), so the CPU kernels and the CUDA
backend (which compiles the same source) call the same code. Adding a model: its module with
these pieces, one branch per function below and its entry in ``eventprop.neurons.MODELS``
(docs/method.md, "Adding a neuron model").
"""

from numba import njit

from . import alif, lif

LIF, ALIF = 0, 1  # model codes (NeuronModel.code)

ADAPTS = (lif.ADAPTS, alif.ADAPTS)  # by code


@njit(cache=True)
def crossing(code, v, i, a, v1, i1, th, tm, ts, ta, span, cnt):
    if code == ALIF:
        return alif.crossing(v, i, a, v1, i1, th, tm, ts, ta, span, cnt)
    return lif.crossing(v, i, a, v1, i1, th, tm, ts, ta, span, cnt)


@njit(cache=True, inline="always")
def slope_at_spike(code, ic, ac, th, tm, ta):
    if code == ALIF:
        return alif.slope_at_spike(ic, ac, th, tm, ta)
    return lif.slope_at_spike(ic, ac, th, tm, ta)


@njit(cache=True, inline="always")
def level_at_spike(code, th, ac):
    if code == ALIF:
        return alif.level_at_spike(th, ac)
    return lif.level_at_spike(th, ac)


@njit(cache=True, inline="always")
def adjoint_jump(code, lvp, lap, ac, d, y, th, tm, ta, beta):
    if code == ALIF:
        return alif.adjoint_jump(lvp, lap, ac, d, y, th, tm, ta, beta)
    return lif.adjoint_jump(lvp, lap, ac, d, y, th, tm, ta, beta)

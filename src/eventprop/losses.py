"""The paper's loss family as small pure functions of readouts (optax style).

A loss maps the engine's readouts and the labels to a :class:`LossResult`: the batch-mean loss,
dL/dreadout (a :class:`~eventprop.engine.ReadoutGrads`), the predicted class and the per-sample
losses. The engine never sees the loss; it is driven by dL/dreadout (extended EventProp,
paper Appendix A). All losses are means over the batch, so the gradient of a batch is the exact
gradient of the batch-mean loss.

Readouts (see eventprop.engine): with T = N dt the fixed trial length (shorter samples are padded with
silence, longer ones cropped) and t_n = n dt,

* ``integral``:    R_k = (1/T) int_0^T w(t) V_k(t) dt, a time average, integrated exactly over every
  step (engine.ReadoutWeight says how w is represented between grid points);
* ``vmax``:        max_{n=1..N} V_k(t_n);
* ``trace``:       V_k(t_n), n = 0..N, for losses L = int_0^T l(V(t), t) dt: the loss returns the
  density dl/dV_k at the grid times and the engine integrates it (linearly interpolated) exactly;
* ``first_spike``: t_k, the (interpolated) first spike time of spiking output k; neurons that
  do not spike count as spiking at t = T (the trial end).

Losses (``loss.name`` in configs; equation numbers from the paper):

* ``xentropy`` (eq. 1/3): (1/T) int_0^T CE(softmax(V(t)), label) dt (trapezoid rule on the grid).
* ``sum`` (eq. 4): CE(softmax(R), label) with w = 1.
* ``sum_exp`` (eq. 12): w(t) = exp(-t/T).  ``sum_linear``: w = 1 - t/T.
  ``sum_sigmoid``: w = 1/(1 + exp((t/T - 0.5)/0.2)).  ``sum_input``: w = input-rate trace.
* ``max`` (eq. 10): CE(softmax(vmax), label).
* ``first_spike`` (eq. 11): CE(softmax(-t/tau0), label) + alpha (exp(t_label/tau1) - 1).
* ``first_spike_inv``: CE(softmax(-t/tau0), label) + alpha / (1.01 T - t_label) (the authors' 1/x form).

For first-spike losses, when the correct neuron does not spike, dL/dt_label evaluated at t = T is
passed to the engine, which applies it as a *phantom spike* at T (paper Methods 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .engine import Forward, ReadoutGrads, ReadoutWeight
from .errors import ConfigError, UserError


@dataclass
class LossResult:
    value: float  # batch-mean loss
    grads: ReadoutGrads  # dL/dreadout
    pred: np.ndarray  # (B,) predicted class; -1 = no decision (no output spike)
    per_sample: np.ndarray  # (B,) loss of each sample


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def _check_labels(labels: np.ndarray, n_classes: int, B: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (B,):
        raise UserError(f"labels: shape {labels.shape}, expected ({B},)")
    if B and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise UserError(f"labels: {int(bad)} out of range; expected 0 <= label < {n_classes}")
    return labels.astype(np.int64)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row CE and its gradient dCE/dlogits = softmax - onehot (float64, log-sum-exp)."""
    ls = log_softmax(logits)
    B = len(labels)
    ce = -ls[np.arange(B), labels]
    g = np.exp(ls)
    g[np.arange(B), labels] -= 1.0
    return ce, g


class Loss:
    """Base class. Subclasses set ``readout`` and ``output_kind`` and implement ``__call__``."""

    name = "loss"
    readout = "integral"  # which readout it uses: integral, vmax, trace, first_spike
    output_kind = "li"

    def weight(self, n_steps: int, dt: float, batch=None) -> ReadoutWeight | None:
        """w(t) of the integral readout (values at t_0..t_N, see engine.ReadoutWeight); None: w = 1."""
        return None

    def __call__(self, fw: Forward, labels: np.ndarray) -> LossResult:  # pragma: no cover
        raise NotImplementedError


class SumLoss(Loss):
    """Cross-entropy of the weighted time average of the output voltages (eq. 4 / 12).

    ``weight_fn(t, T)`` gives w at the times t (ms, array) for trial length T; default w = 1.
    Between grid points the engine integrates w linearly interpolated, times e^{-rate u} when
    ``rate_fn(T)`` gives a decay rate: exact for w = 1, linear w, and w = e^{-t/tau} with
    rate_fn = 1/tau; O(dt^2) per unit time otherwise.
    """

    readout = "integral"

    def __init__(self, weight_fn: Callable[[np.ndarray, float], np.ndarray] | None = None, name: str = "sum",
                 rate_fn: Callable[[float], float] | None = None):
        self.weight_fn = weight_fn
        self.rate_fn = rate_fn
        self.name = name

    def weight(self, n_steps, dt, batch=None):
        if self.weight_fn is None:
            return None
        T = n_steps * dt
        t = np.arange(n_steps + 1) * dt
        w = np.asarray(self.weight_fn(t, T), dtype=np.float64)
        if w.shape != (n_steps + 1,) or not np.all(np.isfinite(w)):
            raise UserError(f"loss {self.name}: weight function must return {n_steps + 1} finite values")
        return ReadoutWeight(w, float(self.rate_fn(T)) if self.rate_fn is not None else 0.0)

    def __call__(self, fw, labels):
        B, C = fw.integral.shape
        labels = _check_labels(labels, C, B)
        ce, g = cross_entropy(fw.integral, labels)
        return LossResult(float(ce.mean()) if B else 0.0, ReadoutGrads(integral=g / max(B, 1)),
                          np.argmax(fw.integral, axis=1), ce)


def w_exp(t, T):
    return np.exp(-t / T)


def w_linear(t, T):
    return 1.0 - t / T


def w_sigmoid(t, T):
    return 1.0 / (1.0 + np.exp((t / T - 0.5) / 0.2))


class InputRateSumLoss(SumLoss):
    """``sum_input``: w(t) proportional to the input spike rate, per sample.

    As the authors' accumulator neuron: r(t_n) = r(t_{n-1}) + dt/tau_acc (gain c(t_{n-1}) - r(t_{n-1})),
    where c is the number of input spikes in a step; r(t_0) = 0, gain 0.01.
    """

    def __init__(self, tau_acc: float = 20.0, gain: float = 0.01):
        super().__init__(None, name="sum_input")
        self.tau_acc = tau_acc
        self.gain = gain

    def weight(self, n_steps, dt, batch=None):
        if batch is None:
            raise UserError("loss sum_input needs the input batch to compute its weight")
        counts = np.diff(batch.ptr, axis=1).astype(np.float64)  # (B, N)
        B = counts.shape[0]
        r = np.zeros((B, n_steps + 1))  # r(t_0..t_N), linear in between
        prev = np.zeros(B)
        a = dt / self.tau_acc
        for n in range(n_steps):
            prev = prev + a * (self.gain * counts[:, n] - prev)
            r[:, n + 1] = prev
        return ReadoutWeight(r)


class MaxLoss(Loss):
    """Cross-entropy of the maximum over time of each output voltage (eq. 10); the gradient enters
    as a kick on lambda_V at the time of the maximum (Appendix B, eq. 37)."""

    name = "max"
    readout = "vmax"

    def __call__(self, fw, labels):
        B, C = fw.vmax.shape
        labels = _check_labels(labels, C, B)
        ce, g = cross_entropy(fw.vmax, labels)
        return LossResult(float(ce.mean()) if B else 0.0, ReadoutGrads(vmax=g / max(B, 1)), np.argmax(fw.vmax, axis=1), ce)


class XentropyLoss(Loss):
    """Time average of the cross-entropy of the output voltages (eq. 1/3),
    (1/T) int_0^T CE(softmax(V(t)), label) dt.

    The value is the trapezoid rule on the grid t_0..t_N; the gradient is the density
    dl/dV(t_n) = (softmax(V(t_n)) - onehot) / T, which the engine interpolates linearly in time
    and integrates exactly against the adjoint (both O(dt^2) approximations of the integral).
    Prediction: argmax of the plain time average of the voltages (as the authors' code).
    """

    name = "xentropy"
    readout = "trace"

    def __call__(self, fw, labels):
        tr = fw.trace  # (B, N+1, C)
        if tr is None:
            raise UserError("loss xentropy needs the output voltage trace: run forward(..., trace=True)")
        B, N1, C = tr.shape
        N = N1 - 1
        labels = _check_labels(labels, C, B)
        ls = log_softmax(tr)  # (B, N+1, C)
        ce_t = -ls[np.arange(B), :, labels]  # (B, N+1)
        per = (ce_t[:, 1:-1].sum(axis=1) + 0.5 * (ce_t[:, 0] + ce_t[:, -1])) / max(N, 1)  # trapezoid / T
        g = np.exp(ls)
        g[np.arange(B), :, labels] -= 1.0
        g *= 1.0 / (N * fw.spec.dt * max(B, 1))  # density dl/dV(t_n) of (1/T) int CE dt / B
        return LossResult(float(per.mean()) if B else 0.0, ReadoutGrads(trace=g), np.argmax(fw.integral, axis=1), per)


class FirstSpikeLoss(Loss):
    """Time-to-first-spike loss (eq. 11) on spiking outputs, with phantom spikes.

    variant "exp": CE(softmax(-t/tau0)) + alpha (exp(t_l/tau1) - 1)
    variant "inv": CE(softmax(-t/tau0)) + alpha / (1.01 T - t_l)
    """

    readout = "first_spike"
    output_kind = "lif"

    def __init__(self, tau0: float = 1.0, tau1: float = 100.0, alpha: float = 5e-5, variant: str = "exp"):
        if variant not in ("exp", "inv"):
            raise ConfigError(f"loss: first-spike variant must be 'exp' or 'inv', got {variant!r}")
        if not (tau0 > 0 and tau1 > 0 and alpha >= 0):
            raise ConfigError("loss: tau0 and tau1 must be > 0 and alpha >= 0")
        self.tau0, self.tau1, self.alpha, self.variant = tau0, tau1, alpha, variant
        self.name = "first_spike" if variant == "exp" else "first_spike_inv"

    def __call__(self, fw, labels):
        t_raw = fw.first_spike
        B, C = t_raw.shape
        labels = _check_labels(labels, C, B)
        T = fw.batch.n_steps * fw.spec.dt
        spiked = np.isfinite(t_raw)
        t = np.where(spiked, t_raw, T)
        ce, g_logit = cross_entropy(-t / self.tau0, labels)
        g = -g_logit / self.tau0  # dCE/dt
        tl = t[np.arange(B), labels]
        if self.variant == "exp":
            x = np.minimum(tl / self.tau1, 80.0)
            extra = self.alpha * (np.exp(x) - 1.0)
            dextra = self.alpha / self.tau1 * np.exp(x)
        else:
            den = np.maximum(1.01 * T - tl, 1e-3 * T)
            extra = self.alpha / den
            dextra = self.alpha / den**2
        g[np.arange(B), labels] += dextra
        per = ce + extra
        # no gradient through a neuron that did not spike, except the label's phantom spike
        mask = spiked.copy()
        mask[np.arange(B), labels] = True
        g = np.where(mask, g, 0.0) / max(B, 1)
        pred = np.where(spiked.any(axis=1), np.argmin(np.where(spiked, t_raw, np.inf), axis=1), -1)
        return LossResult(float(per.mean()) if B else 0.0, ReadoutGrads(first_spike=g), pred, per)


@dataclass
class SpikeCountRegulariser:
    """Hidden-layer spike-count regulariser (paper eq. 13, Methods 4.2).

    L_reg = sum_layers sum_i (k_i / 2) (nbar_i - nu)^2 with nbar_i the batch-mean spike count of
    hidden neuron i and k_i = k_upper if nbar_i > nu else k_lower. The exact gradient of a spike
    count is zero; like the paper we use dL_reg/dn_{b,i} = k_i (nbar_i - nu) / B as a source at
    each recorded spike of neuron i (engine: lambda_V -= dL_reg/dn / (theta tau_m)), from writing
    n = (1/theta) integral V sum_k delta(t - t_k) dt (eq. 14) and applying the adjoint rule.

    Conversion from the paper's / authors' k_reg (their output adjoint carries an extra 1/tau_m
    and their jump no 1/tau_m): k_ours = tau_mem_output * tau_mem_hidden * k_paper.
    """

    k_upper: float = 0.0
    k_lower: float = 0.0
    nu: float = 14.0

    def __call__(self, counts: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        total = 0.0
        grads = []
        for c in counts:
            B = c.shape[0]
            nbar = c.mean(axis=0) if B else np.zeros(c.shape[1])
            k = np.where(nbar > self.nu, self.k_upper, self.k_lower)
            total += float(0.5 * (k * (nbar - self.nu) ** 2).sum())
            grads.append(np.broadcast_to(k * (nbar - self.nu) / max(B, 1), c.shape).copy())
        return total, grads

    @property
    def active(self) -> bool:
        return self.k_upper != 0.0 or self.k_lower != 0.0


def convert_k_reg(loss_name: str, k_paper: float, tau_mem_hidden: float, tau_mem_out: float, trial_ms: float) -> float:
    """The paper's / authors' regulariser strength k_reg in eventprop's units (docs/losses.md).

    The authors' jump k_paper (n - nu)/(B theta) lacks our 1/tau_m,hidden, and their loss adjoint
    differs from the exact one by 1/tau_m,out for integral and x-entropy losses, by 1/T for the
    max loss, and not at all for first-spike losses. Only the balance of loss and regulariser
    matters under Adam, so k_ours = k_paper * tau_m,hidden * (tau_m,out | T | 1).
    """
    if not k_paper >= 0:
        raise ConfigError(f"k_reg must be >= 0, got {k_paper}")
    readout = get_loss(loss_name).readout
    scale = {"integral": tau_mem_out, "trace": tau_mem_out, "vmax": trial_ms, "first_spike": 1.0}[readout]
    return float(k_paper) * float(tau_mem_hidden) * float(scale)


LOSS_NAMES = ("xentropy", "sum", "sum_exp", "sum_linear", "sum_sigmoid", "sum_input", "max", "first_spike",
              "first_spike_inv")


def get_loss(name: str, **kw) -> Loss:
    """A loss by its config name. Keyword arguments: tau0, tau1, alpha (first-spike losses),
    tau_acc (sum_input)."""
    first = {k: kw[k] for k in ("tau0", "tau1", "alpha") if k in kw and kw[k] is not None}
    if name == "xentropy":
        return XentropyLoss()
    if name == "sum":
        return SumLoss(None, "sum")
    if name == "sum_exp":
        return SumLoss(w_exp, "sum_exp", rate_fn=lambda T: 1.0 / T)
    if name == "sum_linear":
        return SumLoss(w_linear, "sum_linear")
    if name == "sum_sigmoid":
        return SumLoss(w_sigmoid, "sum_sigmoid")
    if name == "sum_input":
        return InputRateSumLoss(tau_acc=kw.get("tau_acc") or 20.0)
    if name == "max":
        return MaxLoss()
    if name == "first_spike":
        return FirstSpikeLoss(variant="exp", **first)
    if name == "first_spike_inv":
        return FirstSpikeLoss(variant="inv", **first)
    raise ConfigError(f"loss.name: unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}")


def value_and_grad(spec, params, batch, loss: Loss, regulariser: SpikeCountRegulariser | None = None,
                   labels=None, record: int | None = None, timings: dict | None = None):
    """Forward, loss and EventProp backward in one call.

    Returns (total loss, grads dict, LossResult, Forward) -- plus (lamV, lamI) when ``record``.
    ``timings``, if given, accumulates the seconds spent in "forward", "loss" (loss and
    regulariser) and "backward".
    """
    import time

    from .engine import backward, forward
    from .errors import ConfigError as _CE

    if loss.output_kind != spec.output.kind:
        raise _CE(f"loss {loss.name} needs a {loss.output_kind!r} output layer, the model has {spec.output.kind!r}")
    t0 = time.perf_counter()
    w = loss.weight(batch.n_steps, spec.dt, batch)
    fw = forward(spec, params, batch, weight=w, trace=(loss.readout == "trace"), max_kinks=(loss.readout == "vmax"))
    t1 = time.perf_counter()
    res = loss(fw, batch.labels if labels is None else labels)
    g = res.grads
    total = res.value
    if regulariser is not None and regulariser.active:
        reg_value, reg_grads = regulariser(fw.spike_counts[:-1])
        total += reg_value
        g = ReadoutGrads(g.integral, g.vmax, g.trace, g.first_spike, reg_grads)
    t2 = time.perf_counter()
    taus = [k for k in params if k.startswith("tau_")]
    L = len(spec.hidden)
    out = backward(fw, g, record=record, taus=bool(taus), out_taus=f"tau_mem{L}" in params or f"tau_syn{L}" in params,
                   delays="delay_in" in params)
    if timings is not None:
        t3 = time.perf_counter()
        for k, v in (("forward", t1 - t0), ("loss", t2 - t1), ("backward", t3 - t2)):
            timings[k] = timings.get(k, 0.0) + v
    grads = out[0] if record is not None else out
    for k in [k for k in grads if k.startswith("tau_") and k not in params]:
        del grads[k]  # only the time constants that are parameters
    if record is not None:
        return total, grads, res, fw, (out[1], out[2])
    return total, grads, res, fw

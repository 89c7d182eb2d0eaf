"""Is the engine's gradient right *in this regime*? Directional checks against the exact simulator.

The engine's EventProp gradient is that of a discrete-time algorithm (dt grid). The question a
user needs answered is whether it is a good gradient of the continuous-time loss for their trial
length, dt, time constants and loss. This module answers it on a reduced problem of the same
kind: for each weight array (ff0, rec0, ..., output) take the engine's gradient g at the user's
dt, the unit direction u = -g/|g|, and compare

* the engine's predicted slope of the loss along u, g . u = -|g| (and g' . u at finer dt), with
* the exact slope: a central finite difference of the exact continuous-time simulation
  (:mod:`eventprop.exact`, no time grid) along u, with a step small enough that no spike appears
  or disappears (checked, and the step halved until it holds), confirmed at half that step.

A useful gradient has an exact slope that is negative (a step along -g lowers the real loss) and
close to the prediction. The regulariser is a pseudo-gradient and is not part of the check.

:func:`reduce_problem` builds the reduced problem from a config and its data: a subset of the
input channels and hidden neurons (weights scaled so that every neuron receives the same mean
drive as in the full network), a few real samples, the same T, dt, time constants and loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import exact
from .events import batch_from_arrays
from .losses import Loss, value_and_grad
from .network import LayerSpec, NetworkSpec, OutputSpec

RTOL = 0.30  # engine slope within 30 % of the exact slope at the user's dt
NEGLIGIBLE = 0.01  # a weight array whose exact slope is < 1 % of the largest one is "negligible"


@dataclass
class Problem:
    spec: NetworkSpec
    params: dict
    samples: list  # (times ms, units, label), input times on the dt grid
    T: float
    loss: Loss
    note: str = ""


@dataclass
class GroupCheck:
    name: str
    engine: dict  # dt -> predicted slope along u
    exact: float  # exact slope along u (central FD)
    exact_check: float  # the same at half the step (agreement = the FD is converged)
    step: float
    verdict: str = ""

    def rel_err(self, dt) -> float:
        return abs(self.engine[dt] - self.exact) / max(abs(self.exact), 1e-300)


@dataclass
class CheckResult:
    problem: Problem
    dt: float
    groups: list[GroupCheck] = field(default_factory=list)
    exact_spikes: float = 0.0  # hidden spikes per neuron and sample, exact simulation
    engine_spikes: float = 0.0

    @property
    def ok(self) -> bool:
        return all(g.verdict.startswith("ok") for g in self.groups)

    def table(self) -> str:
        dts = sorted(self.groups[0].engine, reverse=True) if self.groups else []
        head = "weights   " + "".join(f" engine dt={d:<6g}" for d in dts) + "     exact  rel.err(dt)  verdict"
        lines = [head]
        for g in self.groups:
            row = f"{g.name:<9} " + "".join(f" {g.engine[d]:>+15.4e}" for d in dts)
            row += f" {g.exact:>+10.3e}  {g.rel_err(self.dt):>10.1%}  {g.verdict}"
            lines.append(row)
        return "\n".join(lines)


def _batch(samples, dt, n_steps):
    lists = []
    for times, units, _ in samples:
        st = np.floor(np.asarray(times) / dt + 1e-9).astype(np.int64)
        keep = st < n_steps
        lists.append((st[keep], np.asarray(units)[keep]))
    return batch_from_arrays(lists, [s[2] for s in samples], n_steps, dt)


def engine_gradient(problem: Problem, dt: float):
    """(loss value, grads, forward) of the engine in float64 at time step dt."""
    spec = NetworkSpec(problem.spec.n_in, problem.spec.hidden, problem.spec.output, dt=dt,
                       grazing_eps=problem.spec.grazing_eps)
    n_steps = int(round(problem.T / dt))
    batch = _batch(problem.samples, dt, n_steps)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in problem.params.items()}
    value, grads, _, fw = value_and_grad(spec, params, batch, problem.loss)
    return value, grads, fw


def _exact(problem: Problem, params):
    vals, res = exact.loss_values(problem.spec, params, problem.samples, problem.T, [problem.loss])
    return vals[problem.loss.name], res


def _same_pattern(res_a, res_b, max_readout: bool) -> bool:
    if exact._signature(res_a) != exact._signature(res_b):
        return False
    if max_readout:  # the maximum must stay on the same local maximum
        ta = np.array([r.tmax for r in res_a])
        tb = np.array([r.tmax for r in res_b])
        return bool(np.max(np.abs(ta - tb)) < 1e-3)
    return True


def exact_slope(problem: Problem, direction: dict, step: float, max_halvings: int = 12):
    """Central-difference slope of the exact loss along ``direction`` (a dict of arrays, unit norm).

    Returns (slope, slope at half the step, step used); the step is halved until neither +step
    nor -step (nor the half steps) changes the spike pattern.
    """
    base = {k: np.asarray(v, dtype=np.float64) for k, v in problem.params.items()}
    _, res0 = _exact(problem, base)
    is_max = problem.loss.readout == "vmax"

    def at(eps):
        p = {k: v + eps * direction[k] if k in direction else v for k, v in base.items()}
        return _exact(problem, p)

    h = step
    for _ in range(max_halvings):
        vals = {}
        ok = True
        for eps in (h, -h, h / 2, -h / 2):
            v, res = at(eps)
            if not _same_pattern(res0, res, is_max):
                ok = False
                break
            vals[eps] = v
        if ok:
            s1 = (vals[h] - vals[-h]) / (2 * h)
            s2 = (vals[h / 2] - vals[-h / 2]) / h
            return s1, s2, h
        h /= 2
    raise RuntimeError("gradcheck: no finite-difference step keeps the spike pattern; try another --seed")


def check(problem: Problem, dt: float, extra_dts=(), step: float = 1e-4, groups=None) -> CheckResult:
    """Directional gradient check of every weight array (or of ``groups``) at ``dt``."""
    dts = [dt] + [d for d in extra_dts if d != dt]
    eng = {d: engine_gradient(problem, d) for d in dts}
    g_user = eng[dt][1]
    names = list(g_user) if groups is None else list(groups)
    out = CheckResult(problem, dt)
    _, res0 = _exact(problem, {k: np.asarray(v, np.float64) for k, v in problem.params.items()})
    L = len(problem.spec.hidden)
    H = sum(h.size for h in problem.spec.hidden)
    out.exact_spikes = float(np.mean([sum(c.sum() for c in r.counts[:L]) for r in res0])) / H
    out.engine_spikes = float(np.mean([sum(c.sum(axis=1).mean() for c in eng[dt][2].spike_counts[:L])])) / H
    for name in names:
        g = g_user[name]
        norm = float(np.linalg.norm(g))
        if norm == 0.0:
            out.groups.append(GroupCheck(name, {d: 0.0 for d in dts}, 0.0, 0.0, 0.0, "engine gradient is zero"))
            continue
        u = {name: -g / norm}
        slopes = {d: float((eng[d][1][name] * u[name]).sum()) for d in dts}
        s1, s2, h = exact_slope(problem, u, step)
        out.groups.append(GroupCheck(name, slopes, s1, s2, h))
    _verdicts(out)
    return out


def _verdicts(out: CheckResult) -> None:
    big = max((abs(g.exact) for g in out.groups), default=0.0)
    big_eng = max((abs(g.engine[out.dt]) for g in out.groups), default=0.0)
    for g in out.groups:
        if g.verdict:
            continue
        e = g.engine[out.dt]
        fd_noise = abs(g.exact - g.exact_check)
        if abs(g.exact) < NEGLIGIBLE * big:
            # the exact gradient of this array nearly vanishes: the engine's must be small too
            g.verdict = ("ok (negligible, as exact)" if abs(e) < 10 * NEGLIGIBLE * big_eng
                         else "WRONG: exact gradient ~0, engine's is not")
        elif g.exact >= 0:
            g.verdict = "WRONG SIGN: a step along -gradient raises the exact loss"
        elif fd_noise > 0.1 * abs(g.exact):
            g.verdict = "unclear: finite differences not converged"
        elif g.rel_err(out.dt) <= RTOL:
            g.verdict = "ok"
        else:
            g.verdict = f"off by more than {RTOL:.0%}"


# ---------------------------------------------------------------------- reduced problems
def reduce_problem(spec: NetworkSpec, params: dict, samples: list, T: float, loss: Loss, n_in: int = 50,
                   n_hidden: int = 30, seed: int = 0) -> Problem:
    """The same kind of network with ``n_in`` of its inputs and ``n_hidden`` neurons per hidden layer.

    Kept inputs and neurons are chosen at random (``seed``); incoming weights are scaled by the
    ratio of kept to original presynaptic neurons, so mean drives are those of the full network.
    ``samples``: (times, units, label) of the full network's inputs; spikes of dropped channels
    are removed and the rest renumbered. Input times are put on the dt grid.
    """
    rng = np.random.default_rng(seed)
    keep_in = np.sort(rng.choice(spec.n_in, size=min(n_in, spec.n_in), replace=False))
    keep_h = [np.sort(rng.choice(h.size, size=min(n_hidden, h.size), replace=False)) for h in spec.hidden]
    L = len(spec.hidden)

    def per(x, idx):
        a = np.asarray(x)
        return a if a.ndim == 0 else a[idx]

    hidden = [LayerSpec(len(k), tau_mem=per(h.tau_mem, k), tau_syn=per(h.tau_syn, k), threshold=h.threshold,
                        recurrent=h.recurrent) for h, k in zip(spec.hidden, keep_h)]
    o = spec.output
    output = OutputSpec(o.size, kind=o.kind, tau_mem=o.tau_mem, tau_syn=o.tau_syn, threshold=o.threshold)
    new = NetworkSpec(len(keep_in), hidden, output, dt=spec.dt, grazing_eps=spec.grazing_eps)
    p = {}
    pre = [keep_in] + keep_h
    n_pre = [spec.n_in] + [h.size for h in spec.hidden]
    for l in range(L + 1):
        post = keep_h[l] if l < L else np.arange(o.size)
        p[f"ff{l}"] = np.asarray(params[f"ff{l}"], np.float64)[np.ix_(pre[l], post)] * (n_pre[l] / len(pre[l]))
        if l < L and f"rec{l}" in params:
            k = keep_h[l]
            p[f"rec{l}"] = np.asarray(params[f"rec{l}"], np.float64)[np.ix_(k, k)] * (spec.hidden[l].size / len(k))
    remap = -np.ones(spec.n_in, dtype=np.int64)
    remap[keep_in] = np.arange(len(keep_in))
    red = []
    for times, units, lab in samples:
        units = np.asarray(units, dtype=np.int64)
        m = remap[units] >= 0
        t = np.floor(np.asarray(times, dtype=np.float64)[m] / spec.dt + 1e-9) * spec.dt
        u = remap[units[m]]
        # at most one spike per (channel, step), as the engine's input
        key = np.unique(np.round(t / spec.dt).astype(np.int64) * len(keep_in) + u)
        red.append(((key // len(keep_in)) * spec.dt, key % len(keep_in), int(lab)))
    note = (f"reduced from {spec.n_in}-{'-'.join(str(h.size) for h in spec.hidden)}-{o.size} to "
            f"{new.n_in}-{'-'.join(str(h.size) for h in hidden)}-{o.size}")
    return Problem(new, p, red, T, loss, note)

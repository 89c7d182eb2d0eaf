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
input channels and hidden neurons (weights rescaled so that every neuron receives the same mean
drive as in the full network), a few real samples, the same T, dt, time constants and loss.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field

import numpy as np

from . import exact
from .engine import ReadoutWeight
from .events import batch_from_arrays
from .losses import InputRateSumLoss, Loss, SumLoss, value_and_grad
from .network import LayerSpec, NetworkSpec, OutputSpec
from .config import COVERED, regime_warnings  # noqa: F401 (their home is config; re-exported)

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

    def __post_init__(self):
        if isinstance(self.loss, InputRateSumLoss):
            self.loss = _PerSampleWeightLoss(self.loss, self)


class _PerSampleWeightLoss(SumLoss):
    """``sum_input`` for the check: its weight (the input-rate trace of the accumulator, computed at
    the problem's dt) becomes a fixed function of time per sample, linear between grid points, so
    that the engine at any dt and the exact simulator integrate the same w(t)."""

    def __init__(self, base: InputRateSumLoss, problem: "Problem"):
        super().__init__(None, name=base.name)
        dt = problem.spec.dt
        n = int(round(problem.T / dt))
        w = base.weight(n, dt, _batch(problem.samples, dt, n)).values  # (B, n + 1)
        self.grid = np.arange(n + 1) * dt
        self.values = np.asarray(w, dtype=np.float64)

    def weight(self, n_steps, dt, batch=None):
        t = np.arange(n_steps + 1) * dt
        return ReadoutWeight(np.stack([np.interp(t, self.grid, v) for v in self.values]))

    def sample_weight_fn(self, b):
        return lambda t, T: np.interp(t, self.grid, self.values[b])


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
    phantoms: int = 0  # samples whose label neuron never spikes (first-spike losses: not an exact gradient)

    @property
    def ok(self) -> bool:
        return all(g.verdict.startswith("ok") for g in self.groups)

    def table(self) -> str:
        dts = sorted(self.groups[0].engine, reverse=True) if self.groups else []
        head = ("weights  " + "".join(f"  engine dt={d:<6g}" for d in dts) + "        exact   rel.err  verdict")
        lines = [head]
        for g in self.groups:
            row = f"{g.name:<8} " + "".join(f"  {g.engine[d]:>+15.4e}" for d in dts)
            err = f"{g.rel_err(self.dt):>7.1%}" if g.exact != 0.0 and g.rel_err(self.dt) < 100 else "    n/a"
            row += f"  {g.exact:>+11.4e}  {err}  {g.verdict}"
            lines.append(row)
        return "\n".join(lines)


def _batch(samples, dt, n_steps):
    lists = []
    for times, units, _ in samples:
        st = np.floor(np.asarray(times) / dt + 1e-9).astype(np.int64)
        keep = st < n_steps
        lists.append((st[keep], np.asarray(units)[keep]))
    return batch_from_arrays(lists, [s[2] for s in samples], n_steps, dt)


def _delayed(samples, params):
    """Input spike times moved by learned input delays (params['delay_in'], ms per input), if any."""
    d = params.get("delay_in")
    if d is None:
        return samples
    d = np.asarray(d, dtype=np.float64)
    return [(np.asarray(t, np.float64) + d[np.asarray(u)], u, lab) for t, u, lab in samples]


def engine_gradient(problem: Problem, dt: float):
    """(loss value, grads, forward) of the engine in float64 at time step dt."""
    spec = NetworkSpec(problem.spec.n_in, problem.spec.hidden, problem.spec.output, dt=dt, backend=problem.spec.backend,
                       grazing_eps=problem.spec.grazing_eps)
    n_steps = int(round(problem.T / dt))
    batch = _batch(_delayed(problem.samples, problem.params), dt, n_steps)
    if "delay_in" in problem.params:  # arrivals binned from the delayed times
        batch.input_delays = np.asarray(problem.params["delay_in"], np.float64)
    params = {k: np.asarray(v, dtype=np.float64) for k, v in problem.params.items()}
    value, grads, _, fw = value_and_grad(spec, params, batch, problem.loss)
    return value, grads, fw


def _exact(problem: Problem, params):
    loss = problem.loss
    from .network import with_param_taus

    spec = with_param_taus(problem.spec, params)  # time constants may be among the checked parameters
    samples = _delayed(problem.samples, params)  # and input delays
    params = {k: v for k, v in params.items() if not k.startswith("tau_") and k != "delay_in"}
    if isinstance(loss, _PerSampleWeightLoss):
        net = exact.ExactNetwork(spec, params)
        res = [net.simulate(t, u, problem.T, weight_fns={loss.name: loss.sample_weight_fn(b)}, want_max=False)
               for b, (t, u, _) in enumerate(samples)]
        labels = [s[2] for s in samples]
        return exact.loss_from_results(loss, res, labels, problem.T), res
    vals, res = exact.loss_values(spec, params, samples, problem.T, [loss])
    return vals[loss.name], res


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
    nor -step (nor the half steps) changes the spike pattern. (Steps much above 1e-5 can see
    the exact loss's nonlinearity near grazing events; the half-step value shows it.)
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


def check(problem: Problem, dt: float, extra_dts=(), step: float = 1e-5, groups=None) -> CheckResult:
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
    if problem.loss.readout == "first_spike":
        out.phantoms = int(sum(not np.isfinite(r.first_spike[s[2]]) for r, s in zip(res0, problem.samples)))
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
                   n_hidden: int = 30, seed: int = 0, keep_fluctuations: bool = True) -> Problem:
    """The same kind of network with ``n_in`` of its inputs and ``n_hidden`` neurons per hidden layer.

    Kept inputs and neurons are chosen at random (``seed``). Incoming weights are rescaled so that
    each kept neuron's drive has the mean and the fluctuations it has in the full network: with
    N presynaptic neurons of which n are kept and mu the mean of the neuron's full column of
    weights, w' = mu N/n + (w - mu) sqrt(N/n) (the mean part sums coherently, the deviations like
    independent terms). Scaling everything by N/n would inflate the fluctuations of a zero-mean
    initialisation sqrt(N/n)-fold (80 instead of 10 spikes per neuron for configs/shd.yaml);
    ``keep_fluctuations=False`` does just that (w' = w N/n, the fixtures of the long-trial tests).
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

    hidden = [dataclasses.replace(h, size=len(k), tau_mem=per(h.tau_mem, k), tau_syn=per(h.tau_syn, k))
              for h, k in zip(spec.hidden, keep_h)]
    o = spec.output
    output = OutputSpec(o.size, kind=o.kind, tau_mem=o.tau_mem, tau_syn=o.tau_syn, threshold=o.threshold)
    new = NetworkSpec(len(keep_in), hidden, output, dt=spec.dt, grazing_eps=spec.grazing_eps, backend=spec.backend)
    p = {}
    pre = [keep_in] + keep_h
    def rescale(w_full, rows, cols):
        w_full = np.asarray(w_full, np.float64)
        mu = w_full[:, cols].mean(axis=0)
        r = w_full.shape[0] / len(rows)
        if not keep_fluctuations:
            return w_full[np.ix_(rows, cols)] * r
        return mu * r + (w_full[np.ix_(rows, cols)] - mu) * np.sqrt(r)

    for l in range(L + 1):
        post = keep_h[l] if l < L else np.arange(o.size)
        p[f"ff{l}"] = rescale(params[f"ff{l}"], pre[l], post)
        if l < L and f"rec{l}" in params:
            p[f"rec{l}"] = rescale(params[f"rec{l}"], keep_h[l], keep_h[l])
        for k in (f"tau_mem{l}", f"tau_syn{l}") + ((f"delay{l}",) if l < L else ()):  # per-neuron parameters
            if k in params:                                                         # of the kept neurons
                p[k] = np.asarray(params[k], np.float64)[post].copy()
    if "delay_in" in params:  # learned input delays of the kept inputs
        p["delay_in"] = np.asarray(params["delay_in"], np.float64)[keep_in].copy()
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


def problem_from_config(cfg, params: dict | None = None, n_in: int = 50, n_hidden: int = 30, n_samples: int = 2,
                        seed: int = 0) -> Problem:
    """The reduced problem of a run config: its data (training split), network, T, dt and loss.

    ``params``: trained weights (e.g. from a checkpoint); default: the config's initialisation.
    Delay-line inputs (``data.delay_copies``) are expanded as the trainer does.
    """
    from .errors import ConfigError
    from .network import InitSpec, check_params, init_params
    from .train import build_loss, build_spec, load_data

    if n_in < 1 or n_hidden < 1 or n_samples < 1:
        raise ConfigError("gradcheck: --channels, --hidden and --samples must be >= 1")
    data = load_data(cfg)
    ds = data["train"]
    copies, delay = cfg.data.delay_copies, cfg.data.delay_ms
    spec = build_spec(cfg, ds.n_units * copies, ds.n_classes)
    if params is None:
        params = init_params(spec, InitSpec(**cfg.model.init.model_dump()), seed=cfg.train.seed, dtype=np.float64)
        layers = list(spec.hidden) + [spec.output]
        for l, learn in enumerate(cfg.model.learn_tau_list() + [cfg.model.learn_out_tau]):  # as the trainer
            if learn:
                for k, v in ((f"tau_mem{l}", layers[l].tau_mem), (f"tau_syn{l}", layers[l].tau_syn)):
                    params[k] = np.broadcast_to(np.asarray(v, np.float64), (layers[l].size,)).copy()
        if cfg.model.learn_hidden_delays:  # as the trainer (exact sub-step arrivals: any value)
            for l, h in enumerate(spec.hidden):
                params[f"delay{l}"] = np.random.default_rng([cfg.train.seed, 78, l]).uniform(
                    0.0, cfg.model.max_hidden_delay_ms, h.size)
        if cfg.model.learn_delays:  # on the grid, so the engine sees the exact simulator's arrivals
            params["delay_in"] = np.round(np.random.default_rng([cfg.train.seed, 77]).uniform(
                0.0, cfg.model.max_delay_ms, spec.n_in) / cfg.model.dt_ms) * cfg.model.dt_ms
    check_params(spec, params)
    T = cfg.data.trial_ms
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds), size=min(n_samples, len(ds)), replace=False)
    samples = []
    for i in idx:
        t, u = ds.sample(int(i))
        tt = np.concatenate([t + c * delay for c in range(copies)])
        uu = np.concatenate([u + c * ds.n_units for c in range(copies)])
        keep = tt < T
        samples.append((tt[keep], uu[keep], int(ds.labels[i])))
    return reduce_problem(spec, params, samples, T, build_loss(cfg), n_in=n_in, n_hidden=n_hidden, seed=seed)


def verdict(r: CheckResult) -> str:
    """One paragraph a user can act on."""
    bad = [g for g in r.groups if not g.verdict.startswith("ok")]
    lines = []
    if not bad:
        lines.append(f"verdict: OK. At dt = {r.dt:g} ms the engine's gradient agrees with the exact continuous-time "
                     f"gradient (every weight array within {RTOL:.0%}, right sign) on this reduced problem.")
    else:
        names = ", ".join(g.name for g in bad)
        lines.append(f"verdict: NOT OK for {names}: the engine's gradient at dt = {r.dt:g} ms is not a faithful "
                     "gradient of the continuous-time loss here. Try a smaller model.dt_ms (compare the engine "
                     "columns at finer dt above), another loss, or another --seed to see whether it is this sample.")
    if r.phantoms:
        lines.append(f"note: in {r.phantoms} sample(s) the label neuron never spikes; the engine then uses a phantom "
                     "spike (paper Methods 4.1), which is by design not the exact gradient.")
    if r.exact_spikes > 0 and abs(r.engine_spikes - r.exact_spikes) > 0.05 * r.exact_spikes:
        lines.append(f"note: the engine fires {r.engine_spikes:.1f} hidden spikes per neuron and sample, the exact "
                     f"simulation {r.exact_spikes:.1f}: at this dt some neurons cross threshold twice within one step "
                     "(the engine takes one crossing per neuron and step); a smaller model.dt_ms fixes that.")
    if r.exact_spikes < 1.0:
        lines.append(f"note: the hidden neurons fire {r.exact_spikes:.2f} spikes per sample in the exact simulation: "
                     "too few for the hidden gradients to mean much.")
    return "\n".join(lines)


# ---------------------------------------------------------------------- covered regime

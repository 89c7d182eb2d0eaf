"""The paper's failure analysis, as figures and numbers a user can make from any run
(``eventprop analyse RUN_DIR``).

* ``lambda_<class>.png`` (the paper's Fig. 2): the hidden raster of one sample of a class, with the
  ``top`` hidden neurons most active for that class (over all its samples in the split) in red;
  lambda_V and lambda_I of the correct output neuron along the trial (computed right to left);
  lambda_V - lambda_I of that output over time and the values it takes at each spike of the top
  neurons, with their sum per neuron. What a hidden spike of neuron i transports back is
  w_ik (lambda_V - lambda_I)_k at the spike (Table 1), so for a neuron with a positive weight to
  the correct output k a negative sum means the gradient step lowers its drive.
* ``weights_rates_<class>.png`` (the paper's Fig. 3): the hidden-to-output weights onto the
  class's output neuron, sorted; a raster of one sample of the class with the neurons in that
  order; the neurons' mean spike counts over the class's samples in that order; and Pearson's r
  between weight and spike count. A negative r is the paper's failure signature: the neurons that
  respond to a class are the ones with low weights onto its output.
* ``training.png``: accuracies, hidden spike counts, fraction of silent hidden neurons and the
  per-array gradient norm over the epochs (from metrics.csv).
* ``analysis.json``: the numbers behind the figures (r for every class, its mean, the sums per top
  neuron, silent fractions), so that runs can be compared without looking at pictures.

The lambdas are recorded at the grid times t_m (the engine's backward(record=...)); the value
assigned to a hidden spike is that of the grid time at which the spike arrives (at most one step
after it was emitted). The hidden layer analysed is the last one (the one that drives the outputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError
from .plots import _acc_limits, _auto_log, _int_ticks, _mpl, _read_metrics, _savefig, _scale_of


def _load(run: Path, split: str):
    from .train import load_run

    cfg, spec, params, data, loss, n_steps = load_run(run)
    ds = data.get(split)
    if ds is None or len(ds) == 0:
        raise UserError(f"dataset {cfg.data.name} has no {split} split in this run's config")
    if loss.output_kind != "li":
        raise UserError(f"analyse: the lambda analysis needs a leaky-integrator output; loss {loss.name} "
                        "uses spiking outputs")
    return cfg, spec, params, ds, loss, n_steps


def _batch(cfg, spec, ds, idx, n_steps, params=None):
    from .events import make_batch

    return make_batch(ds, np.asarray(idx), spec.dt, n_steps, delay_copies=cfg.data.delay_copies,
                      delay_ms=cfg.data.delay_ms, input_delays=None if params is None else params.get("delay_in"))


def class_counts(cfg, spec, params, ds, loss, n_steps, batch_size: int = 128) -> np.ndarray:
    """Spike counts (samples, H) of the last hidden layer for every sample of ``ds`` (no augmentation)."""
    from .engine import forward

    out = []
    for s in range(0, len(ds), batch_size):
        batch = _batch(cfg, spec, ds, np.arange(s, min(s + batch_size, len(ds))), n_steps, params)
        fw = forward(spec, params, batch, weight=loss.weight(n_steps, spec.dt, batch),
                     trace=(loss.readout == "trace"), max_kinks=(loss.readout == "vmax"))
        out.append(fw.spike_counts[-2].astype(np.float64))
    return np.concatenate(out) if out else np.zeros((0, spec.hidden[-1].size))


def pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def analyse(run: str | Path, out: str | Path | None = None, cls: int | None = None, sample: int | None = None,
            split: str = "test", top: int = 10) -> dict:
    """Write the figures and analysis.json for one run; returns the analysis dict."""
    from .losses import value_and_grad

    run = Path(run)
    out = Path(out) if out is not None else run / "analysis"
    cfg, spec, params, ds, loss, n_steps = _load(run, split)
    L = len(spec.hidden) - 1  # the last hidden layer
    H = spec.hidden[L].size
    if top < 1:
        raise UserError(f"--top {top}: expected at least 1 neuron")
    top = min(top, H)
    if sample is not None:
        if not 0 <= sample < len(ds):
            raise UserError(f"--sample {sample}: the {split} split has {len(ds)} samples")
        if cls is not None and int(ds.labels[sample]) != cls:
            raise UserError(f"--sample {sample} is of class {int(ds.labels[sample])}, not --class {cls}")
        cls = int(ds.labels[sample])
    if cls is None:
        cls = int(ds.labels[0])
    if not 0 <= cls < ds.n_classes:
        raise UserError(f"--class {cls}: expected a class in 0..{ds.n_classes - 1}")
    members = np.flatnonzero(ds.labels == cls)
    if len(members) == 0:
        raise UserError(f"--class {cls}: the {split} split has no sample of this class")
    if sample is None:
        sample = int(members[0])
    out.mkdir(parents=True, exist_ok=True)
    plt = _mpl()

    counts = class_counts(cfg, spec, params, ds, loss, n_steps)
    W_out = np.asarray(params[f"ff{L + 1}"], dtype=np.float64)  # (H, classes)
    # ---- Fig. 2: one sample, the adjoint of its correct output, what the top neurons receive
    batch = _batch(cfg, spec, ds, [sample], n_steps, params)
    _, _, res, fw, (lamV, lamI) = value_and_grad(spec, params, batch, loss, record=0)
    oo = int(fw.layout.noff[-1])
    lv, li = lamV[:, oo + cls].astype(np.float64), lamI[:, oo + cls].astype(np.float64)
    diff = lv - li
    t_grid = np.arange(n_steps + 1) * spec.dt
    mean_cls = counts[members].mean(axis=0)
    top_ids = np.argsort(-mean_cls, kind="stable")[:top]
    t_sp, n_sp = fw.hidden_spikes(0, L)
    st, nid, _ = fw.tape(0)  # the grid step at which each spike arrives, as the tape records it
    lo = int(fw.layout.noff[L])
    m_sp = st[(nid >= lo) & (nid < lo + H)]
    sums, wsums, per_neuron = [], [], []
    for i in top_ids:
        sel = n_sp == i
        vals = diff[m_sp[sel]]
        per_neuron.append((t_sp[sel], vals))
        sums.append(float(vals.sum()))
        wsums.append(float(W_out[i, cls]) * float(vals.sum()))
    fig = plt.figure(figsize=(10, 3.2 + 0.55 * top))
    gs = fig.add_gridspec(3 + top, 2, width_ratios=[5, 1], height_ratios=[3, 2, 1.5] + [0.7] * top,
                          hspace=0.15, wspace=0.05)
    ax0 = fig.add_subplot(gs[0, 0])
    is_top = np.isin(n_sp, top_ids)
    ax0.plot(t_sp[~is_top], n_sp[~is_top], "|", ms=2, color="0.55")
    ax0.plot(t_sp[is_top], n_sp[is_top], "|", ms=3, color="C3")
    ax0.set_ylabel("hidden neuron")
    _int_ticks(ax0, "y", nbins=4)
    ax0.set_title(f"{cfg.data.name}, loss {cfg.loss.name}: {split} sample {sample}, class {cls} (predicted {int(res.pred[0])}); red: the {top} hidden "
                  f"neurons most active for class {cls}", fontsize=9)
    ax1 = fig.add_subplot(gs[1, 0], sharex=ax0)
    sc1, sfx1 = _scale_of(np.concatenate([lv, li]))
    ax1.plot(t_grid, lv / sc1, label=r"$\lambda_V$")
    ax1.plot(t_grid, li / sc1, label=r"$\lambda_I$")
    ax1.set_ylabel(f"adjoints of\noutput {cls}{sfx1}", fontsize=8)
    ax1.legend(fontsize=7, loc="upper right")
    ax2 = fig.add_subplot(gs[2, 0], sharex=ax0)
    sc2, sfx2 = _scale_of(diff)
    ax2.plot(t_grid, diff / sc2, color="C2")
    ax2.axhline(0, color="0.7", lw=0.5)
    ax2.set_ylabel(r"$\lambda_V-\lambda_I$" + sfx2, fontsize=8)
    # the bars share one scale: the largest value at a top neuron's spike (the trace's own peak
    # can sit where no hidden neuron spikes, e.g. at the end of the trial)
    lim = max([float(np.abs(v).max()) for _, v in per_neuron if len(v)] + [1e-30])
    for r, (i, (ts_i, v_i)) in enumerate(zip(top_ids, per_neuron)):
        ax = fig.add_subplot(gs[3 + r, 0], sharex=ax0)
        if len(ts_i):
            ax.bar(ts_i, v_i, width=max(2 * spec.dt, n_steps * spec.dt / 300), color=np.where(v_i >= 0, "C0", "C3"))
        ax.axhline(0, color="0.7", lw=0.5)
        ax.set_ylim(-lim, lim)
        ax.set_yticks([])
        ax.set_ylabel(f"{i}", rotation=0, fontsize=7, labelpad=12)
        if r < top - 1:
            plt.setp(ax.get_xticklabels(), visible=False)
        axs = fig.add_subplot(gs[3 + r, 1])
        axs.barh([0], [sums[r]], color="C0" if sums[r] >= 0 else "C3")
        axs.axvline(0, color="0.5", lw=0.5)
        m = max(abs(s) for s in sums) or 1.0
        axs.set_xlim(-1.05 * m, 1.05 * m)
        axs.set_yticks([])
        axs.set_xticks([])
        if r == 0:
            axs.set_title("sum", fontsize=8)
    for a in (ax0, ax1, ax2):
        plt.setp(a.get_xticklabels(), visible=False)
    fig.axes[-2].set_xlabel("time (ms); the backward pass runs right to left")
    p_lambda = _savefig(fig, out / f"lambda_class{cls}.png")
    plt.close(fig)

    # ---- Fig. 3: weights onto each output against the neurons' spike counts for its class
    r_by_class = {}
    for k in range(ds.n_classes):
        mk = np.flatnonzero(ds.labels == k)
        if len(mk):
            r_by_class[k] = pearson(W_out[:, k], counts[mk].mean(axis=0))
    order = np.argsort(-W_out[:, cls], kind="stable")
    rank = np.empty(H, dtype=np.int64)
    rank[order] = np.arange(H)
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [1, 1.6, 1]})
    axes[0].bar(np.arange(H), W_out[order, cls], width=1.0, color="C0")
    axes[0].set_ylabel(f"weight to output {cls}")
    axes[0].set_title(f"class {cls}: hidden neurons sorted by their weight onto output {cls}; Pearson r "
                      f"(weight, spike count) = {r_by_class[cls]:+.3f}", fontsize=9)
    axes[1].plot(rank[n_sp], t_sp, "_", ms=3, color="0.3")
    axes[1].set_ylabel(f"time (ms)\n{split} sample {sample}")
    axes[2].bar(np.arange(H), mean_cls[order], width=1.0, color="C1")
    axes[2].set_ylabel(f"mean spikes, class {cls}")
    axes[2].set_xlabel("hidden neuron rank (sorted by weight, largest first)")
    _int_ticks(axes[2])
    fig.suptitle(f"{cfg.data.name}, loss {cfg.loss.name}", fontsize=9)
    p_wr = _savefig(fig, out / f"weights_rates_class{cls}.png")
    plt.close(fig)

    # ---- training curves
    p_train = None
    if (run / "metrics.csv").is_file():
        m = _read_metrics(run)
        if len(m.get("epoch", [])):
            fig, axes = plt.subplots(1, 4, figsize=(16, 3.4), gridspec_kw={"wspace": 0.35})
            ep = m["epoch"]
            shown = [100.0 / ds.n_classes]
            mk = "o" if len(ep) < 10 else None
            for key, lab in (("train_accuracy", "train"), ("test_accuracy", "test"), ("val_accuracy", "val")):
                if key in m and not np.all(np.isnan(m[key])):
                    axes[0].plot(ep, 100 * m[key], label=lab, marker=mk, ms=3)
                    shown += list(100 * m[key])
            axes[0].axhline(100.0 / ds.n_classes, color="0.6", ls=":", label="chance")
            axes[0].set_ylim(*_acc_limits(shown))
            axes[0].set_title(f"accuracy ({cfg.data.name})")
            axes[0].set_ylabel("accuracy (%)")
            axes[0].legend(fontsize=7)
            for i in range(len(spec.hidden)):
                if f"hidden{i}_rate" in m:
                    axes[1].plot(ep, m[f"hidden{i}_rate"], label=f"hidden {i}", marker=mk, ms=3)
                if f"hidden{i}_silent" in m:
                    axes[2].plot(ep, 100 * m[f"hidden{i}_silent"], label=f"hidden {i}", marker=mk, ms=3)
            axes[1].set_title("spikes per hidden neuron per trial")
            axes[1].set_ylabel("spikes per neuron per trial")
            axes[2].set_title("hidden neurons silent in the epoch")
            axes[2].set_ylabel("silent neurons (%)")
            axes[2].set_ylim(-2, 102)
            for k in params:
                if f"grad_norm_{k}" in m:
                    axes[3].plot(ep, m[f"grad_norm_{k}"], label=k, marker=mk, ms=3)
            axes[3].set_title("gradient norm (rms over batches)")
            axes[3].set_ylabel("gradient norm")
            _auto_log(axes[1], [ln.get_ydata() for ln in axes[1].lines])
            pos = [y for ln in axes[3].lines for y in ln.get_ydata()]
            _auto_log(axes[3], pos)
            for a in axes:
                a.set_xlabel("epoch")
                _int_ticks(a)
                a.grid(alpha=0.3)
            if axes[3].lines:
                axes[3].legend(fontsize=7)
            p_train = _savefig(fig, out / "training.png")
            plt.close(fig)

    silent = float((counts.sum(axis=0) == 0).mean())
    rs = np.array([v for v in r_by_class.values() if np.isfinite(v)])
    result = {
        "run": str(run), "split": split, "class": cls, "sample": sample, "loss": cfg.loss.name,
        "predicted": int(res.pred[0]),
        "top_neurons": [int(i) for i in top_ids],
        "top_mean_spikes": [round(float(mean_cls[i]), 3) for i in top_ids],
        "lambda_diff_sum": [float(f"{s:.6g}") for s in sums],
        "weighted_lambda_diff_sum": [float(f"{s:.6g}") for s in wsums],
        "n_top_negative": int(sum(s < 0 for s in sums)),
        "pearson_weight_rate": {str(k): round(v, 4) for k, v in r_by_class.items()},
        "pearson_weight_rate_mean": round(float(rs.mean()), 4) if len(rs) else None,
        "pearson_weight_rate_sd": round(float(rs.std(ddof=1)), 4) if len(rs) > 1 else None,
        "hidden_mean_spikes": round(float(counts.mean()), 4),
        "hidden_silent_fraction": round(silent, 4),
        "files": [str(p) for p in (p_lambda, p_wr, p_train) if p is not None],
    }
    from . import io as fio

    fio.write_json(out / "analysis.json", result)
    return result

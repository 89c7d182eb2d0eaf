"""Figures from result folders (``eventprop plot``): learning curves, summary bars, a spike raster
and the backward-pass adjoint traces of one sample (like the paper's Fig. S1, Fig. 4 and Fig. 2).

Runs are grouped by (dataset, loss); curves and bars show the mean and standard deviation over
the runs of a group (e.g. seeds).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .errors import UserError


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _int_ticks(ax, axis: str = "x", nbins="auto") -> None:
    """Whole-number ticks (epochs, neurons): no 1.5 epochs on a short run."""
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True, nbins=nbins))


def _acc_limits(values) -> tuple[float, float]:
    """y-limits (%) for accuracy curves that show every point (and its ± sd band): from the data,
    rounded out to 5 %, within [0, 100] (a little room above 100 for the line)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return 0.0, 100.5
    lo = max(0.0, 5.0 * np.floor((v.min() - 1.0) / 5.0))
    hi = min(100.5, 5.0 * np.ceil((v.max() + 1.0) / 5.0))
    return lo, max(hi, lo + 5.0)


def _auto_log(ax, values) -> None:
    """Log y-axis with labelled ticks when the positive values span more than a decade; linear
    otherwise (a log axis inside one decade has no labelled tick)."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator

    parts = [np.ravel(np.asarray(x, dtype=float)) for x in values] if len(values) else [np.zeros(0)]
    v = np.concatenate(parts) if parts else np.zeros(0)
    v = v[np.isfinite(v)]
    if len(v) and v.min() > 0 and v.max() / v.min() > 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=8))
        ax.yaxis.set_major_formatter(LogFormatterSciNotation())
    else:
        top = float(v.max()) if len(v) else 0.0
        ax.set_ylim(0, 1.1 * top if top > 0 else 1.0)  # from 0, the largest point inside


def _scale_of(v) -> tuple[float, str]:
    """A power of ten to divide values by and its label suffix, so that stacked axes need no
    offset text (which collides with the axis above)."""
    v = np.asarray(v, dtype=np.float64)
    m = float(np.nanmax(np.abs(v))) if v.size else 0.0
    if not np.isfinite(m) or m == 0:
        return 1.0, ""
    e = int(np.floor(np.log10(m)))
    if -2 <= e <= 3:
        return 1.0, ""
    return 10.0 ** e, f" (×1e{e})"


def _bar_labels(ax, x, means, sds, fmt="{:.1f}") -> None:
    """Value labels above the error caps (never on them)."""
    top = ax.get_ylim()[1]
    for xi, m, sd in zip(x, means, sds):
        if np.isfinite(m):
            ax.annotate(fmt.format(m), (xi, m + (sd if np.isfinite(sd) else 0.0)), xytext=(0, 4),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7, clip_on=False)
    ax.set_ylim(0, top)


def _read_metrics(run: Path) -> dict[str, np.ndarray]:
    p = run / "metrics.csv"
    if not p.is_file():
        raise UserError(f"{str(run)!r} is not a results folder (no metrics.csv)")
    with open(p) as f:
        rows = list(csv.DictReader(f))
    out = {}
    for k in rows[0] if rows else []:
        out[k] = np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows])
    return out


def _group_key(run: Path) -> str:
    """Runs that differ only in the seed share a group: data, loss, architecture, trial length."""
    s = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    key = f"{s.get('data', '?')} {s.get('loss', run.name)}"
    if (run / "config.yaml").is_file():
        import yaml

        c = yaml.safe_load((run / "config.yaml").read_text()) or {}
        m, d = c.get("model", {}), c.get("data", {})
        rec = m.get("recurrent", False)
        key += " recurrent" if (any(rec) if isinstance(rec, list) else rec) else " ffwd"
        key += f" {float(d.get('trial_ms', 0)):g}ms"
    return key


def _savefig(fig, path: Path) -> Path:
    from . import io as fio

    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    fio._atomic(path, lambda f: f.write(buf.getvalue()))
    return path


def _groups(runs: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for r in runs:
        if not (r / "summary.json").is_file():
            raise UserError(f"{str(r)!r} is not a results folder (no summary.json)")
        groups.setdefault(_group_key(r), []).append(r)
    return groups


def _mean_sd(v) -> str:
    v = np.array([x for x in v if x is not None], dtype=float)
    if not len(v):
        return "n/a"
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{100 * v.mean():.2f} ± {100 * sd:.2f}"


def summary_table(runs: list[Path]) -> str:
    """Markdown table per group: accuracies (mean ± sd over runs, %), time per epoch and in total."""
    lines = ["| data, loss | runs | test acc. at selected epoch (%) | train acc. at selected epoch (%) | "
             "test acc. at last epoch (%) | s/epoch (train) | total min |",
             "|---|---|---|---|---|---|---|"]
    for g, rs in sorted(_groups(runs).items()):
        ss = [json.loads((r / "summary.json").read_text()) for r in rs]
        lines.append(
            f"| {g} | {len(rs)} | {_mean_sd(s['test_accuracy'] for s in ss)} | {_mean_sd(s['train_accuracy'] for s in ss)} "
            f"| {_mean_sd(s['final_test_accuracy'] for s in ss)} | {np.mean([s['seconds_per_epoch'] for s in ss]):.1f} "
            f"| {np.mean([s['total_seconds'] for s in ss]) / 60:.1f} |")
    sel = {json.loads((r / "summary.json").read_text())["selection"] for r in runs}
    lines.append("")
    lines.append(f"Selected epoch: {', '.join(sorted(sel))}. Mean ± sd over runs (seeds).")
    return "\n".join(lines) + "\n"


def plot_runs(runs: list[Path], out: Path, sample: int = 0) -> list[Path]:
    plt = _mpl()
    out.mkdir(parents=True, exist_ok=True)
    groups = _groups(runs)
    written = []
    from . import io as fio

    fio.write_text(out / "summary.md", summary_table(runs))
    written.append(out / "summary.md")
    # learning curves
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    shown = []
    for gi, (g, rs) in enumerate(sorted(groups.items())):
        ms = [_read_metrics(r) for r in rs]
        n = min(len(m["epoch"]) for m in ms)
        for ax, key in zip(axes, ("train_accuracy", "test_accuracy")):
            ys = np.array([m[key][:n] for m in ms if key in m])
            if ys.size == 0 or np.all(np.isnan(ys)):
                continue
            mu, sd = np.nanmean(ys, 0), np.nanstd(ys, 0)
            x = np.arange(1, n + 1)
            ax.plot(x, 100 * mu, label=f"{g} (n={len(rs)})", color=f"C{gi % 10}", ls="-" if gi < 10 else "--")
            ax.fill_between(x, 100 * (mu - sd), 100 * (mu + sd), color=f"C{gi % 10}", alpha=0.25)
            shown += list(100 * (mu - sd)) + list(100 * (mu + sd))
    data_names = sorted({g.split(" ", 1)[0] for g in groups})
    for ax, t in zip(axes, ("training accuracy", "test accuracy")):
        ax.set_title(f"{t} ({', '.join(data_names)})")
        ax.set_xlabel("epoch")
        _int_ticks(ax)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=8, loc="lower right")
    axes[0].set_ylim(*_acc_limits(shown))  # every point and band shown
    written.append(_savefig(fig, out / "learning_curves.png"))
    plt.close(fig)
    # summary bars
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 2, 4))
    names = sorted(groups)
    for j, key in enumerate(("train_accuracy", "test_accuracy")):
        vals = []
        for g in names:
            v = [json.loads((r / "summary.json").read_text()).get(key) for r in groups[g]]
            v = np.array([x for x in v if x is not None], dtype=float)
            vals.append((100 * v.mean(), 100 * v.std(ddof=1) if len(v) > 1 else 0.0) if len(v) else (np.nan, 0))
        x = np.arange(len(names)) + (j - 0.5) * 0.38
        ax.set_ylim(0, 118)  # bars from 0; room for the labels above the caps
        ax.bar(x, [m for m, _ in vals], 0.36, yerr=[s for _, s in vals], capsize=3,
               label=key.replace("_", " "), color=f"C{j}")
        _bar_labels(ax, x, [m for m, _ in vals], [s for _, s in vals])
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(np.arange(0, 101, 20))
    ax.set_ylabel("accuracy at the selected epoch (%)")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    ax.grid(axis="y", alpha=0.3)
    written.append(_savefig(fig, out / "summary_bars.png"))
    plt.close(fig)
    # hidden activity over training: spikes per neuron, the fraction of silent neurons, and the
    # norm of the input-weight gradient
    ms_all = {g: [_read_metrics(r) for r in rs] for g, rs in groups.items()}
    if any("hidden0_rate" in m for ms in ms_all.values() for m in ms):
        fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
        for gi, (g, ms) in enumerate(sorted(ms_all.items())):
            for ax, key in zip(axes, ("hidden0_rate", "hidden0_silent", "grad_norm_ff0")):
                ys = [m[key] for m in ms if key in m]
                if not ys:
                    continue
                n = min(len(y) for y in ys)
                y = np.mean([y[:n] for y in ys], 0)
                ax.plot(np.arange(1, n + 1), 100 * y if key == "hidden0_silent" else y, color=f"C{gi % 10}",
                        ls="-" if gi < 10 else "--", marker="o" if n < 10 else None, ms=3, label=g)
        axes[0].set_title("hidden layer 0: mean spikes per neuron per trial", fontsize=10)
        axes[0].set_ylabel("spikes per neuron per trial")
        axes[1].set_title("hidden layer 0: neurons silent in the whole epoch", fontsize=10)
        axes[1].set_ylabel("silent neurons (%)")
        axes[1].set_ylim(-2, 102)
        axes[2].set_title("input weights (ff0): gradient norm, rms over batches", fontsize=10)
        axes[2].set_ylabel("gradient norm")
        for ax in axes:
            ax.set_xlabel("epoch")
            _int_ticks(ax)
            ax.grid(alpha=0.3)
        _auto_log(axes[0], [ln.get_ydata() for ln in axes[0].lines])
        _auto_log(axes[2], [ln.get_ydata() for ln in axes[2].lines])
        axes[1].legend(fontsize=7)
        written.append(_savefig(fig, out / "hidden_activity.png"))
        plt.close(fig)
    # raster and adjoint traces for the first run of each group
    for g, rs in sorted(groups.items()):
        tag = g.replace(" ", "_")
        written += plot_sample(rs[0], out, sample, tag)
    return written


def plot_sample(run: Path, out: Path, sample: int, tag: str) -> list[Path]:
    """Spike raster (hidden and output) and lambda_V / lambda_I of the correct output neuron."""
    from .events import make_batch
    from .losses import value_and_grad
    from .train import load_run

    plt = _mpl()
    cfg, spec, params, data, loss, n_steps = load_run(run)
    split = "test" if data["test"] is not None else "val" if data["val"] is not None else "train"
    ds = data[split]
    if not 0 <= sample < len(ds):
        raise UserError(f"--sample {sample}: the evaluation set has {len(ds)} samples")
    batch = make_batch(ds, np.array([sample]), spec.dt, n_steps, delay_copies=cfg.data.delay_copies,
                       delay_ms=cfg.data.delay_ms, input_delays=params.get("delay_in"))
    _, _, res, fw, (lamV, lamI) = value_and_grad(spec, params, batch, loss, record=0)
    label = int(batch.labels[0])
    t_grid = np.arange(n_steps + 1) * spec.dt
    from .engine import forward

    fwt = forward(spec, params, batch, weight=loss.weight(n_steps, spec.dt, batch), trace=spec.output.kind == "li")
    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True, gridspec_kw={"height_ratios": [1, 2, 1.2, 1.2]})
    steps = np.repeat(np.arange(n_steps), np.diff(batch.ptr[0]))
    axes[0].plot(steps * spec.dt, batch.units, "|", ms=2, color="0.4")
    axes[0].set_ylabel("input channel")
    for li in range(len(spec.hidden)):
        t, n = fw.hidden_spikes(0, li)
        off = sum(h.size for h in spec.hidden[:li])
        axes[1].plot(t, n + off, "|", ms=2, color=f"C{li}")
    axes[1].set_ylabel("hidden neuron")
    oo = fw.layout.noff[-1]
    if fwt.trace is not None:
        for k in range(spec.output.size):
            axes[2].plot(t_grid, fwt.trace[0, :, k], lw=2.0 if k == label else 0.7,
                         color="C3" if k == label else "0.6")
        axes[2].set_ylabel("output V\n(label in red)")
    else:
        st, nid, _ = fwt.tape(0)
        m = nid >= oo
        axes[2].plot(st[m] * spec.dt, nid[m] - oo, "|", ms=6, color="C3")
        axes[2].set_ylabel("output neuron\n(spikes)")
        _int_ticks(axes[2], "y")
    lv, li = np.asarray(lamV[:, oo + label], np.float64), np.asarray(lamI[:, oo + label], np.float64)
    scale, sfx = _scale_of(np.concatenate([lv, li]))
    axes[3].plot(t_grid, lv / scale, label=r"$\lambda_V$")
    axes[3].plot(t_grid, li / scale, label=r"$\lambda_I$")
    axes[3].set_ylabel(f"adjoints of\noutput {label}{sfx}")
    axes[1].set_ylabel("hidden neuron")
    _int_ticks(axes[1], "y")
    axes[3].set_xlabel("time (ms); the backward pass runs right to left")
    axes[3].legend(fontsize=8)
    axes[0].set_title(f"{tag}: {split} sample {sample}, label {label}, predicted {int(res.pred[0])}", fontsize=9)
    p1 = _savefig(fig, out / f"sample_{tag}.png")
    plt.close(fig)
    return [p1]


def plot_sweep(sweep_dir: Path, out: Path) -> list[Path]:
    """Fig. 5-style bars from a sweep folder's sweep.csv: per configuration, the mean ± sd over its
    finished trials (seeds, folds) of the training, validation and test accuracy at the epoch of
    best training accuracy, each trial a dot; the best configuration (sweep.md's rule) marked."""
    from .sweep import best_config, group_rows

    p = sweep_dir / "sweep.csv"
    if not p.is_file():
        raise UserError(f"{str(sweep_dir)!r} is not a sweep folder (no sweep.csv)")
    with open(p) as f:
        reader = csv.DictReader(f)
        raw = list(reader)
        fields = reader.fieldnames or []
    keys = fields[: fields.index("seed")] if "seed" in fields else []
    rows = []
    for r in raw:
        d = dict(r)
        for k in ("train_accuracy", "val_accuracy", "test_accuracy"):
            d[k] = float(r[k]) if r.get(k) not in (None, "") else None
        d["fold"] = r.get("fold", "")
        rows.append(d)
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise UserError(f"{str(p)!r}: no finished trial to plot")
    groups = group_rows(ok, keys)
    best, _ = best_config(rows, keys)
    names = list(groups)
    metrics = [k for k in ("train_accuracy", "val_accuracy", "test_accuracy")
               if any(r[k] is not None for r in ok)]
    plt = _mpl()
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(1.2 * len(names) * len(metrics) / 2 + 2, 5), 4.2))
    w = 0.8 / len(metrics)
    allv = []
    for j, key in enumerate(metrics):
        x = np.arange(len(names)) + (j - (len(metrics) - 1) / 2) * w
        mus, sds = [], []
        for xi, g in zip(x, names):
            v = 100 * np.array([r[key] for r in groups[g] if r[key] is not None], dtype=float)
            allv += list(v)
            mus.append(v.mean() if len(v) else np.nan)
            sds.append(v.std(ddof=1) if len(v) > 1 else 0.0)
            ax.plot(np.full(len(v), xi), v, "o", ms=3, color="k", alpha=0.6, zorder=3)
        ax.set_ylim(0, 118)
        ax.bar(x, mus, w * 0.95, yerr=sds, capsize=3, color=f"C{j}", label=key.replace("_", " "))
        _bar_labels(ax, x, mus, [max(sd, (max(v) - m) if len(v) else 0) for sd, m, v in
                                 zip(sds, mus, [100 * np.array([r[key] for r in groups[g] if r[key] is not None])
                                                for g in names])])
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([f"{n}\n(best)" if n == best else n for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy at the epoch of best training accuracy (%)", fontsize=9)
    ax.set_yticks(np.arange(0, 101, 20))
    ax.set_title(f"{sweep_dir.name}: mean ± sd over seeds" + (" and folds" if any(r["fold"] for r in ok) else ""),
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncol=len(metrics))
    path = _savefig(fig, out / "sweep_bars.png")
    plt.close(fig)
    return [path]

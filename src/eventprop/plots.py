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
    for ax, t in zip(axes, ("training accuracy", "test accuracy")):
        ax.set_title(t)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("% correct")
    axes[1].legend(fontsize=8, loc="lower right")
    vals = [100 * v for r in runs for v in _read_metrics(r).get("test_accuracy", np.array([]))[1:]]
    vals = [v for v in vals if np.isfinite(v)]
    lo = min(vals + [90.0])
    axes[0].set_ylim(max(lo - 2, 0), 100.5)
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
        ax.bar(x, [m for m, _ in vals], 0.36, yerr=[s for _, s in vals], capsize=3,
               label=key.replace("_", " "), color=f"C{j}")
        for xi, (m, s) in zip(x, vals):
            ax.text(xi, m + s + 0.1, f"{m:.1f}", ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([n.split(" ", 1)[-1] for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("% correct (at selected epoch)")
    allv = [json.loads((r / "summary.json").read_text()).get(k) for r in runs for k in ("test_accuracy", "train_accuracy")]
    allv = [v for v in allv if v is not None]
    ax.set_ylim(max(100 * min(allv + [0.9]) - 3, 0), 100)
    ax.legend(fontsize=8)
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
                ax.plot(np.arange(1, n + 1), np.mean([y[:n] for y in ys], 0), color=f"C{gi % 10}",
                        ls="-" if gi < 10 else "--", label=g)
        axes[0].set_title("spikes per hidden neuron per trial (layer 0)")
        axes[1].set_title("fraction of hidden neurons silent in the epoch")
        axes[2].set_title("gradient norm of the input weights (rms over batches)")
        axes[2].set_yscale("log")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[0].set_yscale("symlog", linthresh=1.0)
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
    axes[0].set_ylabel("input")
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
        axes[2].set_ylabel("output spikes")
    axes[3].plot(t_grid, lamV[:, oo + label], label=r"$\lambda_V$")
    axes[3].plot(t_grid, lamI[:, oo + label], label=r"$\lambda_I$")
    axes[3].set_ylabel(f"adjoints of\noutput {label}")
    axes[3].set_xlabel("time (ms); the backward pass runs right to left")
    axes[3].legend(fontsize=8)
    axes[0].set_title(f"{tag}: {split} sample {sample}, label {label}, predicted {int(res.pred[0])}")
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
        ax.bar(x, mus, w * 0.95, yerr=sds, capsize=3, color=f"C{j}", label=key.replace("_", " "))
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([f"{n}\n(best)" if n == best else n for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("% correct at the epoch of best training accuracy")
    ax.set_ylim(max(min(allv) - 5, 0), min(max(allv) + 3, 100.5))
    ax.set_title(f"{sweep_dir.name}: mean ± sd over seeds" + (" and folds" if any(r["fold"] for r in ok) else ""),
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    path = _savefig(fig, out / "sweep_bars.png")
    plt.close(fig)
    return [path]

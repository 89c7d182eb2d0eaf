"""Leave-one-speaker-out cross-validation (the paper's protocol), repeated over seeds.

For every seed in ``xval.seeds`` and every speaker of the training set (or the speaker ids in
``xval.folds``), a fresh network is trained on all other speakers and validated after every
epoch on *all* samples of the left-out speaker. The fold's score is the validation accuracy at
the epoch chosen by ``train.select`` (the paper: best *training* accuracy). Each fold is an
ordinary run folder (``seed<S>/speaker<K>/``), so folds can be farmed out to a cluster and
collected. With the ``ray`` extra the folds x seeds run as parallel trials on Ray Tune (the
machinery of ``eventprop sweep``), otherwise one after another; either way a rerun skips
finished folds and resumes interrupted ones.

Writes ``xval.csv`` (one row per fold) and ``xval.md`` (mean +- sd per seed and overall).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from . import io as fio
from .config import RunConfig
from .errors import UserError
from .config import load_file, validate
from .train import _folds, fold_data, load_data, result_settings, run  # noqa: F401 (fold_data re-exported)


def xval_config(cfg: RunConfig, log=print) -> RunConfig:
    """The config every fold runs with: no split-off validation set (the left-out speaker is the
    validation set), best epoch and plateau schedule by the training accuracy."""
    cfg = cfg.model_copy(deep=True)
    cfg.data.n_val = 0  # the left-out speaker is the validation set
    # the left-out speaker is the score: choosing the epoch or the learning-rate plateau on it
    # would leak, so both follow the training accuracy (the paper's protocol)
    if cfg.train.select != "train" or (cfg.train.plateau.enabled and cfg.train.plateau.which != "train"):
        log("xval: best epoch and plateau schedule follow the training accuracy (the left-out speaker is the score)")
    cfg.train.select = "train"
    cfg.train.plateau.which = "train"
    return cfg


def run_xval(cfg: RunConfig, out_dir: str | Path, quiet: bool = False, log=print, use_ray: bool = False,
             address: str | None = None, cpus_per_trial: int = 1, max_failures: int = 3) -> str:
    out = Path(out_dir)
    cfg = xval_config(cfg, log)
    full, folds = _folds(cfg)
    if cfg.xval.folds is not None:
        known = {f[0] for f in folds}
        bad = [k for k in cfg.xval.folds if k not in known]
        if bad:
            raise UserError(f"xval.folds: speaker {bad[0]} not in the training set; speakers are {sorted(known)}")
        folds = [f for f in folds if f[0] in cfg.xval.folds]
    plan = []
    for seed in cfg.xval.seeds:
        for spk, tr_idx, va_idx in folds:
            fcfg = cfg.model_copy(deep=True)
            fcfg.train.seed = seed
            fdir = out / f"seed{seed}" / f"speaker{spk}"
            if (fdir / "config.yaml").is_file() and \
                    result_settings(validate(load_file(fdir / "config.yaml"))) != result_settings(fcfg):
                raise UserError(f"xval: {str(fdir)!r} holds a fold of a different config; use another --out")
            plan.append((seed, spk, tr_idx, va_idx, fcfg, fdir))
    failed = []
    if use_ray:
        from .sweep import Trial, _absolute_paths, run_trials

        trials = [Trial(f"seed{seed}/speaker{spk}", json.loads(_absolute_paths(fcfg).model_dump_json()), {}, seed, spk)
                  for seed, spk, _, _, fcfg, _ in plan]
        try:
            fails = run_trials(out, trials, address=address, cpus_per_trial=cpus_per_trial, max_failures=max_failures,
                               quiet=quiet, log=log)
        except KeyboardInterrupt:
            raise UserError("xval interrupted: rerun the same command to resume (finished folds are skipped)") from None
        for t in trials:
            err = out / t.name / "error.txt"
            if err.is_file():
                failed.append(f"{t.name}: error: {err.read_text().strip()}")
            elif t.name in fails:
                failed.append(f"{t.name}: failed: {fails[t.name]}")
    rows = []
    for seed, spk, tr_idx, va_idx, fcfg, fdir in plan:
        summ_path = fdir / "summary.json"
        done = summ_path.is_file() and json.loads(summ_path.read_text())
        if done and done.get("finished") and done.get("epochs") == fcfg.train.epochs:
            summary = done
        elif use_ray:
            continue  # failed or unfinished (listed below)
        else:
            log(f"xval: seed {seed}, leaving out speaker {spk} ({len(va_idx)} samples)")
            fold = {"train": full.subset(tr_idx, name=f"{full.name}-train"),
                    "val": full.subset(va_idx, name=f"{full.name}-speaker{spk}"), "test": None}
            summary = run(fcfg, fdir, resume=(fdir / "checkpoint.npz").is_file(), data=fold, quiet=quiet, log=log)
        rows.append({"seed": seed, "speaker": spk, "best_epoch": summary["best_epoch"],
                     "train_accuracy": summary["train_accuracy"], "val_accuracy": summary["val_accuracy"],
                     "n_val": int(len(va_idx))})
    if rows:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        fio.write_text(out / "xval.csv", buf.getvalue())
        table = xval_table(rows, cfg)
        fio.write_text(out / "xval.md", table)
    if len(rows) < len(plan):
        for f in failed:
            log(f"xval: {f}")
        raise UserError(f"xval: {len(plan) - len(rows)} of {len(plan)} folds did not finish"
                        f"{' (' + failed[0] + ')' if failed else ''}; rerun the same command to resume")
    return table


def _ms(x) -> str:
    x = np.asarray([v for v in x if v is not None], dtype=float)
    if len(x) == 0:
        return "n/a"
    sd = x.std(ddof=1) if len(x) > 1 else 0.0
    return f"{100 * x.mean():.1f} ± {100 * sd:.1f} %"


def xval_table(rows: list[dict], cfg: RunConfig) -> str:
    lines = [f"# Leave-one-speaker-out cross-validation: {cfg.data.name}, loss {cfg.loss.name}",
             "", f"Score: validation accuracy on the left-out speaker at the epoch of best {cfg.train.select} accuracy.",
             "", "| seed | folds | train accuracy | validation accuracy |", "|---|---|---|---|"]
    for seed in sorted({r["seed"] for r in rows}):
        rs = [r for r in rows if r["seed"] == seed]
        lines.append(f"| {seed} | {len(rs)} | {_ms(r['train_accuracy'] for r in rs)} | {_ms(r['val_accuracy'] for r in rs)} |")
    lines.append(f"| all | {len(rows)} | {_ms(r['train_accuracy'] for r in rows)} | {_ms(r['val_accuracy'] for r in rows)} |")
    return "\n".join(lines) + "\n"

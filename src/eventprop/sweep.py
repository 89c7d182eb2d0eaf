"""Sweeps (grid x seeds) and cross-validation folds as trials on Ray Tune (the ``ray`` extra).

A trial is one ordinary run (``train.run``) in its own results folder, named after its grid
values, seed and fold, e.g. ``DIR/trials/lr=0.001,batch_size=32/seed0/``. Because a run is a pure
function of its config and resumes exactly from its checkpoint, the machinery is simple:

* a trial whose worker dies is retried by Ray (``FailureConfig(max_failures=...)``) and continues
  from its own ``checkpoint.npz`` (the run's ``--resume``), so its numbers equal an
  uninterrupted run's;
* rerunning the same command skips finished trials and resumes unfinished ones;
* a trial that fails on a user error (:class:`UserError`) writes ``error.txt`` in its folder and
  returns; it is reported once with its one-line message and not retried.

Each trial folder also holds ``log.txt`` (the run's epoch lines, one "start" line per attempt)
and ``worker.pid`` (the process running it). Ray's own output is silenced; the driver prints one
progress line (trials done / running / failed).

Results: ``DIR/sweep.csv`` (one row per trial) and ``DIR/sweep.md`` (mean ± sd per configuration,
best configuration by the paper's rule: validation accuracy at the epoch of best training
accuracy, averaged over seeds and folds).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import io as fio
from .config import RunConfig, load_file, resolve, validate
from .errors import ConfigError, UserError

RAY_HINT = "pip install 'eventprop[ray]'"


@dataclass
class Trial:
    """One run of a sweep: its folder (relative to the sweep folder) and full config."""

    name: str
    config: dict
    values: dict = field(default_factory=dict)  # grid key -> value
    seed: int = 0
    fold: int | None = None  # left-out speaker (cross-validation)


def have_ray() -> bool:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- planning

def split_values(text: str) -> list[str]:
    """``1e-3,2e-3`` -> ['1e-3', '2e-3']; commas inside brackets stay (``[20],[20,20]``)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    grid = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. train.lr=1e-3,2e-3")
        key, _, vals = item.partition("=")
        key = key.strip()
        values = split_values(vals)
        if not key or any(v == "" for v in values):
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,... with no empty key or value")
        if key == "train.seed":
            raise ConfigError("--grid train.seed: use --seeds 0,1,... for seeds")
        if any(k == key for k, _ in grid):
            raise ConfigError(f"--grid {key}: given twice; list all its values in one --grid")
        if len(set(values)) != len(values):
            raise ConfigError(f"--grid {item!r}: a value is listed twice")
        grid.append((key, values))
    return grid


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in split_values(text)]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: a seed is listed twice")
    return seeds


def _short_names(keys: list[str]) -> dict[str, str]:
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "=.,-_+[]" else "_" for c in text.replace(" ", ""))


def _absolute_paths(cfg: RunConfig) -> RunConfig:
    """Trials run in other processes (other machines): a relative data path is made absolute."""
    p = cfg.data.path
    if p and not p.startswith("~") and not os.path.isabs(p):
        cfg = cfg.model_copy(deep=True)
        cfg.data.path = str(Path(p).resolve())
    return cfg


def plan_sweep(config: str | None, sets: list[str], grid_items: list[str], seeds_text: str | None) -> tuple[RunConfig, list[Trial], list[str]]:
    """Every combination of the grid values x seed, each validated, before anything starts.
    Returns (base config, trials, grid keys); one-line ConfigError on a bad key or value."""
    grid = parse_grid(grid_items)
    seeds = parse_seeds(seeds_text)
    base = resolve(config, sets)
    for key, values in grid:  # one value at a time: the error names the value
        for v in values:
            try:
                resolve(config, sets + [f"{key}={v}"])
            except ConfigError as e:
                raise ConfigError(f"--grid {key}={v}: {e}") from None
    seeds = seeds if seeds is not None else [base.train.seed]
    keys = [k for k, _ in grid]
    short = _short_names(keys)
    trials = []
    for combo in itertools.product(*[vals for _, vals in grid]):
        assign = [f"{k}={v}" for k, v in zip(keys, combo)]
        try:
            cfg = resolve(config, sets + assign)
        except ConfigError as e:
            raise ConfigError(f"--grid combination {', '.join(assign)}: {e}") from None
        cname = ",".join(_safe(f"{short[k]}={v}") for k, v in zip(keys, combo)) or "base"
        values = {k: getattr_dotted(cfg, k) for k in keys}
        for s in seeds:
            c = cfg.model_copy(deep=True)
            c.train.seed = s
            c = _absolute_paths(validate(json.loads(c.model_dump_json())))
            trials.append(Trial(f"trials/{cname}/seed{s}", json.loads(c.model_dump_json()), values, s, None))
    return base, trials, keys


def getattr_dotted(cfg: RunConfig, key: str):
    node = cfg
    for p in key.split("."):
        node = getattr(node, p)
    return node.model_dump() if hasattr(node, "model_dump") else node


# ----------------------------------------------------------------------------- trial state

def _summary(folder: Path) -> dict | None:
    p = folder / "summary.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def is_finished(folder: Path, cfg: dict) -> bool:
    s = _summary(folder)
    return bool(s and s.get("finished") and s.get("epochs") == cfg["train"]["epochs"])


def check_folders(out: Path, trials: list[Trial]) -> None:
    """A trial folder that holds a run of a different config is refused (use another --out)."""
    from .train import result_settings

    for t in trials:
        f = out / t.name / "config.yaml"
        if f.is_file() and result_settings(validate(load_file(f))) != result_settings(validate(t.config)):
            raise UserError(f"{str(f.parent)!r} holds a run of a different config; use another --out")


# ----------------------------------------------------------------------------- the trial (on a worker)

def run_trial(folder: str | Path, config: dict, fold: int | None = None, threads: int | None = None,
              report=None) -> str:
    """Run (or resume) one trial in ``folder``; returns "ok" or "error: <message>" (user errors
    are not raised: retrying cannot fix them). ``report(row)`` is called after every epoch."""
    from .engine import set_threads
    from .train import run

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fio.write_text(folder / "worker.pid", f"{os.getpid()}\n")
    (folder / "error.txt").unlink(missing_ok=True)
    (folder / "stopped.txt").unlink(missing_ok=True)  # a trial ASHA stopped, rerun without ASHA
    with open(folder / "log.txt", "a") as logf:
        def log(msg):
            print(msg, file=logf, flush=True)

        resume = (folder / "checkpoint.npz").is_file()
        log(f"trial start: pid {os.getpid()} on {socket.gethostname()}, "
            f"{'resuming from checkpoint.npz' if resume else 'fresh'}, {time.strftime('%Y-%m-%d %H:%M:%S')}")
        try:
            cfg = validate(config)
            if not cfg.train.threads and threads:
                set_threads(threads)
            data = None
            if fold is not None:
                from .train import fold_data

                data = fold_data(cfg, fold)
            run(cfg, folder, resume=resume, data=data, quiet=True, log=log, on_epoch=report)
        except UserError as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            fio.write_text(folder / "error.txt", msg + "\n")
            log(f"error: {msg}")
            return f"error: {msg}"
    return "ok"


def _tune_trial(config: dict) -> None:
    """The Ray Tune function trainable: one trial, per-epoch metrics reported to Tune."""
    from ray import tune

    t = config["trial"]

    def report(row):
        m = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        tune.report(m)

    run_trial(t["folder"], t["config"], t.get("fold"), t.get("threads"), report)


# ----------------------------------------------------------------------------- running trials

def _progress_printer(total: int, skipped: int, quiet: bool):
    tty = sys.stderr.isatty()
    state = {"done": skipped, "running": 0, "failed": 0, "last": None, "ended": set()}

    def show(final=False):
        line = f"sweep: {state['done']}/{total} done, {state['running']} running, {state['failed']} failed"
        if quiet or line == state["last"]:
            return
        state["last"] = line
        if tty:
            print("\r" + line + ("\n" if final else ""), end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    return state, show


def _make_callback(state, show, out: Path):
    from ray import tune

    class Progress(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            state["running"] += 1
            show()

        def on_trial_recover(self, iteration, trials, trial, **info):
            state["running"] = max(state["running"] - 1, 0)
            show()

        def on_trial_complete(self, iteration, trials, trial, **info):
            state["running"] = max(state["running"] - 1, 0)
            folder = Path(trial.config["trial"]["folder"])
            state["ended"].add(str(folder))
            state["failed" if (folder / "error.txt").is_file() else "done"] += 1
            show()

        def on_trial_error(self, iteration, trials, trial, **info):
            state["ended"].add(trial.config["trial"]["folder"])
            state["running"] = max(state["running"] - 1, 0)
            state["failed"] += 1
            show()

    return Progress()


def _init_ray(address: str | None, cpus_per_trial: int):
    import logging

    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no per-trial result files of Tune's
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in ("EVENTPROP_DATA", "EVENTPROP_THREADS") if k in os.environ}
    env["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
              runtime_env={"env_vars": env})
    if address:
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"--address {address}: cannot join the Ray cluster ({first})") from None
    else:
        n = os.cpu_count() or 1
        if cpus_per_trial > n:
            raise UserError(f"--cpus-per-trial {cpus_per_trial}: this machine has {n} cores")
        if "PYTHONPATH" in os.environ:  # local workers import this very eventprop
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        # address="local": always a fresh in-process Ray, never a cluster left running on this machine
        ray.init(address="local", num_cpus=n, object_store_memory=100 * 1024**2, **kw)
    return True


def run_trials(out: Path, trials: list[Trial], *, address: str | None = None, cpus_per_trial: int = 1,
               scheduler: str | None = None, max_failures: int = 3, quiet: bool = False, log=print) -> dict[str, str]:
    """Run the unfinished trials on Ray Tune. Returns {trial name: failure message} for trials
    that failed for good (after Ray's retries). Raises KeyboardInterrupt when interrupted."""
    out = Path(out).resolve()
    pending = [t for t in trials if not is_finished(out / t.name, t.config)
               and not (scheduler == "asha" and (out / t.name / "stopped.txt").is_file())]
    skipped = len(trials) - len(pending)
    if skipped:
        log(f"sweep: {skipped} of {len(trials)} trials already finished in {out}"
            f"{' (or stopped by ASHA)' if scheduler == 'asha' else ''}; skipping them")
    if not pending:
        return {}
    started = _init_ray(address, cpus_per_trial)
    import ray
    from ray import tune

    state, show = _progress_printer(len(trials), skipped, quiet)
    try:
        specs = [{"folder": str(out / t.name), "config": t.config, "fold": t.fold, "threads": cpus_per_trial,
                  "name": t.name} for t in pending]
        epochs = max(t.config["train"]["epochs"] for t in pending)
        has_val = all(t.config["data"]["n_val"] != 0 or t.config["data"]["name"] == "ssc" for t in pending)
        metric = "val_accuracy" if has_val and all(t.fold is None for t in pending) else "train_accuracy"
        sched = None
        if scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            sched = ASHAScheduler(time_attr="epoch", max_t=max(epochs, 1), grace_period=1, reduction_factor=3)
        elif scheduler is not None:
            raise UserError(f"--scheduler {scheduler!r}: expected asha")
        storage = out / ".ray"
        shutil.rmtree(storage / "tune", ignore_errors=True)  # Tune's own bookkeeping; the runs hold the state
        names = {s["folder"]: s["name"] for s in specs}
        tuner = tune.Tuner(
            tune.with_resources(_tune_trial, {"cpu": cpus_per_trial}),
            param_space={"trial": tune.grid_search(specs)},
            tune_config=tune.TuneConfig(
                scheduler=sched, metric=metric if sched else None, mode="max" if sched else None,
                trial_name_creator=lambda tr: tr.config["trial"]["name"].replace("/", "-"),
                trial_dirname_creator=lambda tr: f"trial_{tr.trial_id}", reuse_actors=True),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(storage), verbose=0,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                callbacks=[_make_callback(state, show, out)]),
        )
        show()
        grid = tuner.fit()
        show(final=True)
        failures = {}
        for r in grid:
            name = names.get(r.config["trial"]["folder"]) if r.config else None
            if r.error is not None and name:
                e = r.error
                first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                failures[name] = f"{type(e).__name__}: {first[:200]}"
            elif name and sched is not None and r.config["trial"]["folder"] in state["ended"]:
                f = out / name
                t = next(t for t in pending if t.name == name)
                if not is_finished(f, t.config) and not (f / "error.txt").is_file():
                    s = _summary(f) or {}
                    fio.write_text(f / "stopped.txt", f"stopped early by ASHA after {s.get('epochs', 0)} epochs\n")
        if any(s["folder"] not in state["ended"] for s in specs):  # stopped by Ctrl-C (SIGINT)
            raise KeyboardInterrupt
        return failures
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------- results

def _read_metrics(folder: Path) -> list[dict]:
    p = folder / "metrics.csv"
    if not p.is_file():
        return []
    with open(p) as f:
        return list(csv.DictReader(f))


def _num(x):
    return None if x in (None, "") else float(x)


def trial_row(out: Path, t: Trial, keys: list[str], failure: str | None = None) -> dict:
    """A trial's row: its grid values, seed, fold, status, the epoch of best training accuracy
    (first such epoch) and the train / val / test accuracy there, seconds (training + evaluation)."""
    folder = out / t.name
    rows = _read_metrics(folder)
    row = {k: json.dumps(t.values[k]) if isinstance(t.values[k], (list, dict)) else t.values[k] for k in keys}
    row.update({"seed": t.seed, "fold": "" if t.fold is None else t.fold})
    epochs = t.config["train"]["epochs"]
    if (folder / "error.txt").is_file():
        status = "error: " + (folder / "error.txt").read_text().strip()
    elif is_finished(folder, t.config):
        status = "ok"
    elif failure:
        status = f"failed: {failure}"
    elif (folder / "stopped.txt").is_file():
        status = f"stopped early (asha) after {len(rows)} of {epochs} epochs"
    elif rows:
        status = f"unfinished ({len(rows)} of {epochs} epochs)"
    else:
        status = "not started"
    row["status"] = status
    best = None
    if rows:
        tr = [_num(r.get("train_accuracy")) for r in rows]
        best = int(np.argmax([-np.inf if v is None else v for v in tr]))
    b = rows[best] if best is not None else {}
    row.update({"best_epoch": "" if best is None else best + 1,
                "train_accuracy": _num(b.get("train_accuracy")), "val_accuracy": _num(b.get("val_accuracy")),
                "test_accuracy": _num(b.get("test_accuracy")), "epochs": len(rows),
                "seconds": round(sum((_num(r.get("seconds")) or 0) + (_num(r.get("eval_seconds")) or 0) for r in rows), 3),
                "folder": t.name})
    return row


SWEEP_FIELDS = ["seed", "fold", "status", "best_epoch", "train_accuracy", "val_accuracy", "test_accuracy", "epochs",
                "seconds", "folder"]


def write_results(out: Path, trials: list[Trial], keys: list[str], failures: dict[str, str] | None = None,
                  title: str = "") -> tuple[list[dict], str]:
    failures = failures or {}
    rows = [trial_row(out, t, keys, failures.get(t.name)) for t in trials]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys + SWEEP_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in keys + SWEEP_FIELDS})
    fio.write_text(out / "sweep.csv", buf.getvalue())
    table = sweep_table(rows, keys, title)
    fio.write_text(out / "sweep.md", table)
    return rows, table


def _ms(v) -> str:
    v = np.array([x for x in v if x is not None and x != ""], dtype=float)
    if not len(v):
        return "n/a"
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{100 * v.mean():.2f} ± {100 * sd:.2f}"


def config_label(row: dict, keys: list[str]) -> str:
    short = _short_names(keys)
    return ", ".join(f"{short[k]}={row[k]}" for k in keys) or "base"


def group_rows(rows: list[dict], keys: list[str]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(config_label(r, keys), []).append(r)
    return groups


def best_config(rows: list[dict], keys: list[str]) -> tuple[str | None, str]:
    """The paper's rule: per trial the validation accuracy at the epoch of best training accuracy,
    mean over seeds (and folds); the best configuration has the highest mean. Without a
    validation set, the training accuracy."""
    ok = [r for r in rows if r["status"] == "ok"]
    score = "val_accuracy" if ok and all(r["val_accuracy"] is not None for r in ok) else "train_accuracy"
    best, best_v = None, -np.inf
    for g, rs in group_rows(ok, keys).items():
        v = float(np.mean([r[score] for r in rs]))
        if v > best_v:
            best, best_v = g, v
    return best, score


def sweep_table(rows: list[dict], keys: list[str], title: str = "") -> str:
    best, score = best_config(rows, keys)
    lines = [f"# Sweep{': ' + title if title else ''}", "",
             "Per trial: accuracies at the epoch of best training accuracy (the paper's rule). Mean ± sd (%) "
             "over the finished trials of each configuration (seeds" + (", folds" if any(r["fold"] != "" for r in rows)
                                                                        else "") + ").", "",
             "| configuration | trials ok | best epoch | train accuracy | validation accuracy | test accuracy | s/trial |",
             "|---|---|---|---|---|---|---|"]
    for g, rs in group_rows(rows, keys).items():
        ok = [r for r in rs if r["status"] == "ok"]
        be = np.mean([r["best_epoch"] for r in ok]) if ok else float("nan")
        secs = np.mean([r["seconds"] for r in ok]) if ok else float("nan")
        name = f"**{g}**" if g == best else g
        lines.append(f"| {name} | {len(ok)}/{len(rs)} | {be:.1f} | {_ms(r['train_accuracy'] for r in ok)} | "
                     f"{_ms(r['val_accuracy'] for r in ok)} | {_ms(r['test_accuracy'] for r in ok)} | {secs:.1f} |")
    lines.append("")
    if best is None:
        lines.append("Best configuration: none (no trial finished).")
    else:
        rule = ("highest mean validation accuracy at the epoch of best training accuracy" if score == "val_accuracy"
                else "highest mean training accuracy (no validation set)")
        lines.append(f"Best configuration ({rule}): **{best}**.")
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["", "Trials not finished:", ""]
        lines += [f"- {r['folder']}: {r['status']}" for r in bad]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the command

def sweep(config: str | None, sets: list[str], grid_items: list[str], seeds_text: str | None, out: str | Path, *,
          address: str | None = None, cpus_per_trial: int = 1, scheduler: str | None = None, max_failures: int = 3,
          quiet: bool = False, log=print) -> tuple[list[dict], str, bool]:
    """``eventprop sweep``: plan (validating everything), run the unfinished trials on Ray Tune,
    write sweep.csv and sweep.md. Returns (rows, table, interrupted)."""
    if cpus_per_trial < 1:
        raise UserError(f"--cpus-per-trial {cpus_per_trial}: expected at least 1")
    if max_failures < 0:
        raise UserError(f"--max-failures {max_failures}: expected 0 or more")
    if scheduler not in (None, "asha"):
        raise UserError(f"--scheduler {scheduler!r}: expected asha")
    base, trials, keys = plan_sweep(config, list(sets), list(grid_items), seeds_text)
    if not have_ray():
        raise UserError(f"eventprop sweep runs on Ray Tune: {RAY_HINT}")
    out = Path(out).resolve()
    check_folders(out, trials)
    out.mkdir(parents=True, exist_ok=True)
    import yaml

    fio.write_text(out / "sweep.yaml", yaml.safe_dump({"config": config, "set": list(sets), "grid": list(grid_items),
                                                       "seeds": sorted({t.seed for t in trials}),
                                                       "trials": len(trials)}, sort_keys=False))
    log(f"sweep: {len(trials)} trials ({len(trials) // max(len({t.seed for t in trials}), 1)} configurations x "
        f"{len({t.seed for t in trials})} seeds), {cpus_per_trial} cpu(s) per trial"
        f"{' on ' + address if address else ' on this machine'} -> {out}")
    interrupted = False
    failures: dict[str, str] = {}
    t0 = time.perf_counter()
    try:
        failures = run_trials(out, trials, address=address, cpus_per_trial=cpus_per_trial, scheduler=scheduler,
                              max_failures=max_failures, quiet=quiet, log=log)
    except KeyboardInterrupt:
        interrupted = True
    title = f"{base.data.name}, loss {base.loss.name}" + (f", {config}" if config else "")
    rows, table = write_results(out, trials, keys, failures, title)
    log(f"sweep: {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} trials finished in "
        f"{time.perf_counter() - t0:.1f} s; {out / 'sweep.csv'}, {out / 'sweep.md'}")
    for r in rows:
        if r["status"].startswith(("error", "failed")):
            log(f"{r['folder']}: {r['status']}")
    if interrupted:
        log("sweep interrupted: rerun the same command to resume (finished trials are skipped)")
    return rows, table, interrupted

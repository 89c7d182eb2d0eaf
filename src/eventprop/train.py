"""Training and evaluation: a run is a pure function of its config, writing one results folder.

Results folder (the contract other tools read):

* ``config.yaml``   the resolved config;
* ``metrics.csv``   one row per epoch: epoch, train_loss, train_accuracy, val_loss, val_accuracy,
  test_accuracy, lr, seconds (wall time of the epoch's training: augmentation, batching, steps),
  eval_seconds, skipped_batches (not applied: non-finite gradient, or an adjoint at its 1e15 bound),
  grazing, bound_hits (adjoint values bounded), the mean spike count per neuron of each hidden layer
  (hidden0_rate, ...), the fraction of its neurons that did not spike in the whole epoch
  (hidden0_silent, ...), and the root-mean-square over the epoch's batches of each weight array's
  gradient norm (grad_norm_ff0, grad_norm_rec0, ...; regulariser included);
* ``summary.json``  test_accuracy (at the selected epoch), best_epoch, train_accuracy,
  val_accuracy, epochs, seconds_per_epoch, selection rule, library version, ...;
* ``checkpoint.npz`` (latest, every epoch) and ``best.npz`` (selected epoch): parameters,
  optimiser and schedule state; plain .npz, no pickle.

Every file is written atomically. ``resume=True`` continues from checkpoint.npz and gives exactly
the numbers an uninterrupted run would have given (all randomness is derived from
(seed, epoch)).
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from . import io as fio
from .config import RunConfig, to_yaml
from .engine import get_backend
from .engine import forward, set_threads
from .errors import ConfigError, DataError, UserError
from .events import EventDataset, make_batch
from .losses import SpikeCountRegulariser, get_loss, value_and_grad
from .network import InitSpec, LayerSpec, NetworkSpec, OutputSpec, init_params
from .optim import Adam, Schedule

METRIC_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_accuracy", "lr",
                 "seconds", "eval_seconds", "skipped_batches", "grazing", "bound_hits"]


#: apply a shift-only augmentation while batching (no shifted copy of the training set each
#: epoch); the numbers are those of the copy (tests/test_train.py)
SHIFT_WHILE_BATCHING = True


def result_settings(cfg: RunConfig) -> dict:
    """The settings that determine a run's numbers (what --resume must keep the same)."""
    d = cfg.model_dump()
    d.pop("description")
    d.pop("xval")
    for k in ("epochs", "threads", "eval_batch_size", "checkpoint_every", "tensorboard"):
        d["train"].pop(k)
    d["model"].pop("backend")  # same numbers to the dtype's precision: a run may resume on another
    for k in ("path", "download"):
        d["data"].pop(k)
    return d


def build_spec(cfg: RunConfig, n_in: int, n_classes: int, loss=None) -> NetworkSpec:
    """The network of a run (``loss``: the run's loss object, when already built; it sets the output kind)."""
    m = cfg.model
    loss = loss if loss is not None else get_loss(cfg.loss.name)
    rec = m.recurrent_list()
    hidden = [LayerSpec(h, *het_taus(m.tau_mem, m.tau_syn, h, cfg.train.seed, l) if m.het_tau else (m.tau_mem, m.tau_syn),
                        m.threshold, r, m.neuron, m.tau_adapt, m.adapt) for l, (h, r) in enumerate(zip(m.hidden, rec))]
    out = OutputSpec(n_classes, loss.output_kind, m.out_tau_mem, m.out_tau_syn, m.threshold)
    return NetworkSpec(n_in=n_in, hidden=hidden, output=out, dt=m.dt_ms, grazing_eps=m.grazing_eps, backend=m.backend)


MIN_TAU_MEM, MIN_TAU_SYN = 3.0, 1.0  # ms, the floors of the authors' heterogeneous initialisation


def het_taus(tau_mem: float, tau_syn: float, n: int, seed: int, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """hetLIF time constants of one hidden layer (Nowotny et al. 2025): tau ~ Gamma(shape 3,
    scale tau/3) per neuron (mean tau), clipped to [3 ms, 3 tau_mem] and [1 ms, 3 tau_syn]. Drawn
    from (seed, layer), so a run's network is a function of its config (the authors' code drew
    them from the unseeded global generator)."""
    rng = np.random.default_rng([int(seed), int(layer), 4242])
    tm = np.clip(rng.gamma(3.0, tau_mem / 3.0, n), MIN_TAU_MEM, 3.0 * tau_mem)
    ts = np.clip(rng.gamma(3.0, tau_syn / 3.0, n), MIN_TAU_SYN, 3.0 * tau_syn)
    return tm, ts


def clamp_taus(params: dict) -> None:
    """Keep learned time constants at or above the floors (3 ms membrane, 1 ms synapse), as the
    authors' optimiser does; in place."""
    for k, v in params.items():
        if k.startswith("tau_mem"):
            np.maximum(v, MIN_TAU_MEM, out=v)
        elif k.startswith("tau_syn"):
            np.maximum(v, MIN_TAU_SYN, out=v)


def build_loss(cfg: RunConfig):
    lc = cfg.loss
    return get_loss(lc.name, tau0=lc.tau0, tau1=lc.tau1, alpha=lc.alpha, tau_acc=lc.tau_acc)


def n_steps_of(cfg: RunConfig) -> int:
    n = int(round(cfg.data.trial_ms / cfg.model.dt_ms))
    if n < 1:
        raise ConfigError("data.trial_ms must be at least one time step (model.dt_ms)")
    return n


def load_data(cfg: RunConfig) -> dict[str, EventDataset | None]:
    from .data import load_dataset

    d = cfg.data
    n_val = d.n_val if d.n_val is not None else (1000 if d.name == "yinyang" else 0)
    grid = (float(cfg.model.dt_ms), n_steps_of(cfg)) if d.on_grid else None
    extra = {"grid": grid} if grid and d.name in ("shd", "ssc") else {}  # binned while reading
    splits = load_dataset(d.name, d.path, trial_ms=d.trial_ms, dt_ms=cfg.model.dt_ms, n_val=n_val,
                          seed=cfg.train.seed, download=d.download, **extra)
    out = {}
    for k in ("train", "val", "test"):
        ds = splits.get(k)
        if ds is not None:
            lim = d.limit_train if k == "train" else d.limit_test if k == "test" else None
            if lim is not None and lim < len(ds):
                ds = ds.subset(np.arange(lim))
            if grid and "_grid_n_steps" not in ds.__dict__:
                ds = ds.on_grid(*grid)
        out[k] = ds
    if out.get("train") is None or len(out["train"]) == 0:
        raise DataError(f"data {d.name}: no training samples")
    return out


def _folds(cfg: RunConfig, data=None):
    from .data import speaker_folds

    data = data or load_data(cfg)
    full = data["train"]
    if full.speakers is None:
        raise UserError(f"xval: dataset {cfg.data.name} has no speaker ids; leave-one-speaker-out needs them")
    return full, speaker_folds(full)


def fold_data(cfg: RunConfig, speaker: int) -> dict:
    """The data of one fold: train on all other speakers, validate on ``speaker``, no test set."""
    full, folds = _folds(cfg)
    for spk, tr_idx, va_idx in folds:
        if spk == speaker:
            return {"train": full.subset(tr_idx, name=f"{full.name}-train"),
                    "val": full.subset(va_idx, name=f"{full.name}-speaker{spk}"), "test": None}
    raise UserError(f"xval: speaker {speaker} not in the training set")


def augment(cfg: RunConfig, ds: EventDataset, rng: np.random.Generator) -> EventDataset:
    a = cfg.data.augment
    if not (a.shift or a.jitter or a.dilate or a.blend):
        return ds
    from .data import augment as aug

    if a.shift:
        ds = aug.random_shift(ds, a.shift, rng)
    if a.jitter:
        ds = aug.id_jitter(ds, a.jitter, rng)
    if a.dilate:
        ds = aug.random_dilate(ds, a.dilate[0], a.dilate[1], rng)
    if a.blend:
        ds = aug.blend(ds, a.blend, a.blend_probs, rng)
    return ds


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    pred: np.ndarray
    labels: np.ndarray


def evaluate(spec: NetworkSpec, params, ds: EventDataset, loss, n_steps: int, batch_size: int = 256,
             delay_copies: int = 1, delay_ms: float = 0.0, progress: str | None = None) -> EvalResult:
    """Accuracy and mean loss on a dataset (no dropout, no augmentation). ``progress``: the label
    of a progress bar on stderr (shown only on a terminal; None = no bar)."""
    preds, losses = [], []
    n_batches = (len(ds) + batch_size - 1) // batch_size
    bar = _progress(n_batches, progress, quiet=False) if progress else None
    for bi, s in enumerate(range(0, len(ds), batch_size)):
        idx = np.arange(s, min(s + batch_size, len(ds)))
        batch = make_batch(ds, idx, spec.dt, n_steps, delay_copies=delay_copies, delay_ms=delay_ms,
                           input_delays=params.get("delay_in"))
        w = loss.weight(n_steps, spec.dt, batch)
        with compile_notice(bi == 0):
            fw = forward(spec, params, batch, weight=w, trace=(loss.readout == "trace"),
                         max_kinks=(loss.readout == "vmax"))
        res = loss(fw, batch.labels)
        preds.append(res.pred)
        losses.append(res.per_sample)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    per = np.concatenate(losses) if losses else np.zeros(0)
    acc = float((pred == ds.labels).mean()) if len(ds) else float("nan")
    return EvalResult(acc, float(per.mean()) if len(per) else float("nan"), pred, ds.labels)


def _metrics_csv(rows: list[dict], fields: list[str]) -> str:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in fields})
    return buf.getvalue()


def _progress(total: int, desc: str, quiet: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, leave=False, disable=quiet or not sys.stderr.isatty(), unit="batch")


def _note(msg: str) -> None:
    """One line on stderr, above a progress bar if one is showing."""
    try:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(msg, file=sys.stderr)
    sys.stderr.flush()


#: seconds the first engine call may take before the compile notice is printed; a warm call of a
#: training or evaluation batch takes well under a second, compiling the kernels about a minute
COMPILE_NOTICE_AFTER_S = 3.0
COMPILE_NOTICE = "compiling numba kernels (first run only, about a minute; cached afterwards) ..."
_compile_noticed = False


@contextlib.contextmanager
def compile_notice(first: bool = True, after_s: float | None = None):
    """Around the first engine call of a process: when it takes longer than ``after_s`` seconds (a
    cold numba cache: the kernels are compiled on first use), print COMPILE_NOTICE once, while
    it runs, and how long it took when it is done. Costs nothing on a warm cache."""
    global _compile_noticed
    if not first or _compile_noticed:
        yield
        return
    import threading

    printed = threading.Event()
    t0 = time.perf_counter()

    def _fire():
        printed.set()
        _note(COMPILE_NOTICE)

    timer = threading.Timer(COMPILE_NOTICE_AFTER_S if after_s is None else after_s, _fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        _compile_noticed = True
        if printed.is_set():
            _note(f"kernels ready after {time.perf_counter() - t0:.0f} s")


def run(cfg: RunConfig, out_dir: str | Path, resume: bool = False, data=None, quiet: bool = False,
        log=print, timings: list | None = None, on_epoch=None) -> dict:
    """Train according to ``cfg`` and write the results folder ``out_dir``. Returns the summary.

    ``timings``, if given, gets one dict per epoch with the seconds spent in each part of the
    epoch's training (augment, batching, forward, loss, backward, optimiser, total) and in its
    evaluation (eval). ``on_epoch(row)``, if given, is called after every epoch once its files
    are written (the metrics row of the epoch; a sweep reports it to Ray Tune).
    """
    out = Path(out_dir)
    if cfg.train.threads:
        set_threads(cfg.train.threads)
    get_backend(cfg.model.backend)  # a one-line error now if cuda is asked for and unusable
    loss = build_loss(cfg)  # once per run
    if cfg.model.learn_out_tau and loss.readout == "vmax":
        raise ConfigError("model.learn_out_tau: the output time constants cannot be learned with the max loss "
                          "(its maximum at a spike arrival depends on them explicitly); use another loss")
    ckpt_path = out / "checkpoint.npz"
    if resume and not ckpt_path.is_file():
        raise UserError(f"--resume: no checkpoint.npz in {str(out)!r}")
    if not resume and ckpt_path.exists():
        raise UserError(f"output folder {str(out)!r} already holds a run; use --resume or another --out")
    tb_writer = None
    if cfg.train.tensorboard:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise UserError("train.tensorboard needs tensorboardX: pip install 'eventprop[tensorboard]'") from None
    data = data or load_data(cfg)  # before creating anything: a data error leaves no run folder behind
    from .config import regime_warnings

    for w in regime_warnings(cfg):
        print(f"warning: {w}; check the gradient in this regime with `eventprop gradcheck CONFIG`", file=sys.stderr)
    train_ds, val_ds, test_ds = data["train"], data.get("val"), data.get("test")
    n_steps = n_steps_of(cfg)
    spec = build_spec(cfg, train_ds.n_units * cfg.data.delay_copies, train_ds.n_classes, loss)
    ic = cfg.model.init
    dtype = np.float64 if cfg.model.dtype == "float64" else np.float32
    params = init_params(spec, InitSpec(**ic.model_dump()), seed=cfg.train.seed, dtype=dtype)
    if cfg.train.init_from and not resume:  # before creating anything: a mismatch leaves no run folder behind
        params = params_from(cfg.train.init_from, spec, dtype)
    if resume and (out / "config.yaml").is_file():
        from .config import load_file, validate

        if result_settings(validate(load_file(out / "config.yaml"))) != result_settings(cfg):
            raise UserError(f"--resume: the config differs from {str(out / 'config.yaml')!r}; resume with the same config")
    out.mkdir(parents=True, exist_ok=True)
    fio.write_text(out / "config.yaml", to_yaml(cfg))
    if cfg.model.learn_delays and "delay_in" not in params:  # learned input delays, spread over [0, max]
        params["delay_in"] = np.random.default_rng([cfg.train.seed, 77]).uniform(
            0.0, cfg.model.max_delay_ms, spec.n_in).astype(dtype)
    if cfg.model.learn_hidden_delays:  # axonal delays of hidden neurons, spread over [0, max]
        for l, h in enumerate(spec.hidden):
            if f"delay{l}" not in params:
                params[f"delay{l}"] = np.random.default_rng([cfg.train.seed, 78, l]).uniform(
                    0.0, cfg.model.max_hidden_delay_ms, h.size).astype(dtype)
    layers = list(spec.hidden) + [spec.output]
    for l, learn in enumerate(cfg.model.learn_tau_list() + [cfg.model.learn_out_tau]):  # learned taus: parameters
        if learn and f"tau_mem{l}" not in params:
            h = layers[l]
            params[f"tau_mem{l}"] = np.broadcast_to(np.asarray(h.tau_mem, np.float64), (h.size,)).astype(dtype)
            params[f"tau_syn{l}"] = np.broadcast_to(np.asarray(h.tau_syn, np.float64), (h.size,)).astype(dtype)
    t = cfg.train
    opt = Adam(t.lr, t.beta1, t.beta2, t.eps)
    sched = Schedule(t.lr, t.ease_in, t.ease_in_factor, t.lr_decay, t.plateau.enabled, t.plateau.fast,
                     t.plateau.slow, t.plateau.factor, t.plateau.min_epochs)
    reg = SpikeCountRegulariser(cfg.reg.k_upper, cfg.reg.k_lower, cfg.reg.nu)
    fields = (METRIC_FIELDS + [f"hidden{i}_rate" for i in range(len(spec.hidden))]
              + [f"hidden{i}_silent" for i in range(len(spec.hidden))] + [f"grad_norm_{k}" for k in params])
    rows: list[dict] = []
    start_epoch = 0
    best = {"epoch": None, "score": -np.inf}
    if resume:
        ck = fio.load_npz(ckpt_path)
        params = {k[len("param/"):]: v.astype(dtype) for k, v in ck.items() if k.startswith("param/")}
        opt.load_state(ck)
        sched.load_state(ck)
        start_epoch = int(ck["epoch"])
        rows = json.loads(str(ck["metrics_json"]))
        best = json.loads(str(ck["best_json"]))
        best["score"] = -np.inf if best["score"] is None else best["score"]
        fio.write_text(out / "metrics.csv", _metrics_csv(rows, fields))
        log(f"resuming {out} after epoch {start_epoch}")
    dl = (cfg.data.delay_copies, cfg.data.delay_ms)
    select = t.select
    if select == "val" and val_ds is None:
        select = "train"
    n_train = len(train_ds)
    n_batches = (n_train + t.batch_size - 1) // t.batch_size  # before augmentation (blend adds samples)
    log(f"eventprop {__version__}: {cfg.data.name} ({n_train} train, {len(val_ds) if val_ds else 0} val, "
        f"{len(test_ds) if test_ds else 0} test), network {spec.n_in}-{'-'.join(str(h.size) for h in spec.hidden)}"
        f"-{spec.output.size} ({'recurrent' if any(h.recurrent for h in spec.hidden) else 'feed-forward'}, "
        f"{spec.output.kind} output), loss {loss.name}, dt {spec.dt} ms, T {n_steps * spec.dt:g} ms, "
        f"{t.epochs} epochs of {n_batches} batches -> {out}")

    a = cfg.data.augment
    # the common case, shift alone, needs no augmented copy of the training set each epoch
    shift_only = SHIFT_WHILE_BATCHING and bool(a.shift) and not (a.jitter or a.dilate or a.blend)
    if t.tensorboard:
        tb_writer = SummaryWriter(logdir=str(out / "tensorboard"))
    dead_warned = False
    for epoch in range(start_epoch, t.epochs):
        t0 = time.perf_counter()  # the epoch's time includes augmentation and batching
        rng = np.random.default_rng([t.seed, epoch, 7])
        tm = {"augment": 0.0, "batching": 0.0, "forward": 0.0, "loss": 0.0, "backward": 0.0, "optimiser": 0.0}
        shifts = None
        if shift_only:  # drawn as data.augment.random_shift draws them, applied while batching
            ep_train = train_ds
            shifts = rng.integers(-a.shift, a.shift + 1, size=len(train_ds))
        else:
            ep_train = augment(cfg, train_ds, rng)
        order = rng.permutation(len(ep_train))
        tm["augment"] = time.perf_counter() - t0
        ep_batches = (len(order) + t.batch_size - 1) // t.batch_size
        loss_sum, correct, seen, skipped, grazing, bound_hits = 0.0, 0, 0, 0, 0, 0
        rates = [np.zeros(h.size) for h in spec.hidden]
        gsq = {k: 0.0 for k in params}
        batch_losses: list[float] = []
        bar = _progress(ep_batches, f"epoch {epoch + 1}/{t.epochs}", quiet)
        for bi in range(0, len(order), t.batch_size):
            idx = order[bi : bi + t.batch_size]
            tb0 = time.perf_counter()
            batch = make_batch(ep_train, idx, spec.dt, n_steps, dropout=t.input_dropout, rng=rng,
                               delay_copies=cfg.data.delay_copies, delay_ms=cfg.data.delay_ms,
                               unit_shift=None if shifts is None else shifts[idx],
                               input_delays=params.get("delay_in"))
            tm["batching"] += time.perf_counter() - tb0
            with compile_notice(first=(bi == 0)):
                total, grads, res, fw = value_and_grad(spec, params, batch, loss, reg, timings=tm)
            batch_losses.append(float(res.value))
            to0 = time.perf_counter()
            finite = np.isfinite(total) and all(np.all(np.isfinite(g)) for g in grads.values())
            bound_hits += fw.bound_hits
            if finite and fw.bound_hits == 0:  # a bounded adjoint gives a huge, meaningless step
                for k, g in grads.items():
                    gsq[k] += float(np.square(g, dtype=np.float64).sum())
                opt.update(params, grads, sched.lr())
                clamp_taus(params)
                if "delay_in" in params:
                    np.clip(params["delay_in"], 0.0, cfg.model.max_delay_ms, out=params["delay_in"])
                for l in range(len(spec.hidden)):
                    if f"delay{l}" in params:
                        np.clip(params[f"delay{l}"], 0.0, cfg.model.max_hidden_delay_ms, out=params[f"delay{l}"])
            else:
                skipped += 1
            tm["optimiser"] += time.perf_counter() - to0
            sched.after_batch()
            B = len(idx)
            loss_sum += res.value * B
            correct += int((res.pred == batch.labels).sum())
            seen += B
            grazing += fw.grazing
            for i, c in enumerate(fw.spike_counts[:-1]):
                rates[i] += c.sum(axis=0)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        row = {"epoch": epoch + 1, "train_loss": round(loss_sum / seen, 6), "train_accuracy": round(correct / seen, 6),
               "lr": sched.lr(), "seconds": round(seconds, 3), "skipped_batches": skipped, "grazing": grazing,
               "bound_hits": bound_hits}
        for i, r in enumerate(rates):
            row[f"hidden{i}_rate"] = round(float(r.mean() / seen), 4)
            row[f"hidden{i}_silent"] = round(float((r == 0).mean()), 4)
            if t.lift_silent > 0:  # silent neurons get no gradient at all: lift their input weights
                params[f"ff{i}"][:, r == 0] += params[f"ff{i}"].dtype.type(t.lift_silent)
        applied = max(ep_batches - skipped, 1)
        for k, v in gsq.items():
            row[f"grad_norm_{k}"] = float(f"{np.sqrt(v / applied):.6g}")
        if not dead_warned:
            why = dead_network(rates, row, gsq, batch_losses, applied=ep_batches - skipped)
            if why:
                dead_warned = True
                _note(f"warning: after epoch {epoch + 1} {why}: the network cannot learn like this; "
                      + dead_network_advice(cfg, rates))
        if val_ds is not None:
            ev = evaluate(spec, params, val_ds, loss, n_steps, t.eval_batch_size, *dl,
                          progress=None if quiet else "eval val")
            row["val_accuracy"], row["val_loss"] = round(ev.accuracy, 6), round(ev.loss, 6)
        if test_ds is not None:
            row["test_accuracy"] = round(evaluate(spec, params, test_ds, loss, n_steps, t.eval_batch_size, *dl,
                                                  progress=None if quiet else "eval test").accuracy, 6)
        row["eval_seconds"] = round(time.perf_counter() - t1, 3)
        if timings is not None:
            timings.append({**tm, "total": seconds, "eval": row["eval_seconds"]})
        rows.append(row)
        score = {"train": row["train_accuracy"], "val": row.get("val_accuracy"), "test": row.get("test_accuracy")}[select]
        sched.after_epoch(epoch + 1, row.get("val_accuracy") if t.plateau.which == "val" and val_ds is not None
                          else row["train_accuracy"])
        state = {f"param/{k}": v for k, v in params.items()}
        state.update(opt.state())
        state.update(sched.state())
        if score is not None and score > best["score"]:
            best = {"epoch": epoch + 1, "score": score}
            fio.save_npz(out / "best.npz", {**state, "epoch": np.array(epoch + 1)})
        state.update({"epoch": np.array(epoch + 1), "metrics_json": np.array(json.dumps(rows)),
                      "best_json": np.array(json.dumps(best))})
        fio.write_text(out / "metrics.csv", _metrics_csv(rows, fields))
        if tb_writer is not None:
            for k, v in row.items():
                if k != "epoch" and v is not None:
                    tb_writer.add_scalar(k, float(v), epoch + 1)
            tb_writer.flush()
        if (epoch + 1) % t.checkpoint_every == 0 or epoch + 1 == t.epochs:
            fio.save_npz(ckpt_path, state)
        msg = (f"epoch {epoch + 1:3d}/{t.epochs}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}")
        if "val_accuracy" in row:
            msg += f" | val acc {row['val_accuracy']:.4f}"
        if "test_accuracy" in row:
            msg += f" | test acc {row['test_accuracy']:.4f}"
        msg += f" | {seconds:.1f} s"
        if skipped:
            msg += f" | {skipped} batches skipped (non-finite gradient or adjoint at its bound)"
        log(msg)
        fio.write_json(out / "summary.json", summarise(cfg, rows, best, select, finished=(epoch + 1 == t.epochs)))
        if on_epoch is not None:
            on_epoch(dict(row))
    if tb_writer is not None:
        tb_writer.close()
    summary = summarise(cfg, rows, best, select, finished=True)
    fio.write_json(out / "summary.json", summary)
    return summary


def silent_layers(rates: list[np.ndarray]) -> list[int]:
    """The hidden layers (indices) none of whose neurons spiked in the epoch."""
    return [i for i, r in enumerate(rates) if len(r) and not np.any(r)]


def dead_network(rates: list[np.ndarray], row: dict, gsq: dict, batch_losses: list[float], applied: int) -> str:
    """Why an epoch's numbers show a network that cannot learn ('' if they do not): a hidden
    layer silent for the whole epoch (it passes nothing on and gets no gradient), every gradient
    exactly zero, or a loss that did not move over the epoch's batches (an output that never
    changes)."""
    why = []
    silent = silent_layers(rates)
    if silent:
        why.append(f"hidden layer{'s' if len(silent) > 1 else ''} {', '.join(map(str, silent))} did not spike "
                   "in the whole epoch")
    if applied > 0 and gsq and all(v == 0.0 for v in gsq.values()):
        why.append("every gradient is exactly 0")
    if len(batch_losses) > 1 and np.isfinite(batch_losses[0]) and max(batch_losses) == min(batch_losses):
        why.append(f"the loss was exactly {batch_losses[0]:.4g} in every batch (the output never changes)")
    return ", ".join(why)


def dead_network_advice(cfg: RunConfig, rates: list[np.ndarray]) -> str:
    """What to do about a dead network: the init keys of the silent layers, and train.lift_silent."""
    keys = sorted({"model.init.input_mean" if i == 0 else "model.init.hidden_mean" for i in silent_layers(rates)}) or ["model.init.input_mean", "model.init.hidden_mean", "model.init.out_mean"]
    ic = cfg.model.init
    now = ", ".join(f"{k} = {getattr(ic, k.rsplit('.', 1)[1]):g}" for k in keys)
    lift = (f"raise train.lift_silent (now {cfg.train.lift_silent:g}) so that silent neurons recover faster"
            if cfg.train.lift_silent > 0 else "let silent neurons recover with --set train.lift_silent=0.01")
    return f"raise the initial weights ({now} now) or {lift} (docs/cli.md)"


def summarise(cfg: RunConfig, rows: list[dict], best: dict, select: str, finished: bool) -> dict:
    be = best.get("epoch")
    brow = rows[be - 1] if be else {}
    secs = [r["seconds"] for r in rows]
    last = rows[-1] if rows else {}
    return {
        "test_accuracy": brow.get("test_accuracy"),
        "best_epoch": be,
        "train_accuracy": brow.get("train_accuracy"),
        "val_accuracy": brow.get("val_accuracy"),
        "selection": f"best {select} accuracy",
        "epochs": len(rows),
        "epochs_planned": cfg.train.epochs,
        "finished": finished and len(rows) == cfg.train.epochs,
        "seconds_per_epoch": round(float(np.mean(secs)), 3) if secs else None,
        "total_seconds": round(float(sum(r["seconds"] + r.get("eval_seconds", 0) for r in rows)), 3),
        "final_test_accuracy": last.get("test_accuracy"),
        "final_train_accuracy": last.get("train_accuracy"),
        "data": cfg.data.name,
        "loss": cfg.loss.name,
        "seed": cfg.train.seed,
        "version": __version__,
    }


def load_checkpoint(path) -> dict[str, np.ndarray]:
    ck = fio.load_npz(path)
    params = {k[len("param/"):]: v for k, v in ck.items() if k.startswith("param/")}
    if not params:
        raise DataError(f"checkpoint {str(path)!r} holds no parameters")
    return params


def params_from(path, spec: NetworkSpec, dtype=np.float32) -> dict[str, np.ndarray]:
    """Parameters of a checkpoint .npz or a results folder (best.npz, else checkpoint.npz), checked
    against ``spec`` (one-line ConfigError naming train.init_from on a mismatch)."""
    from .network import check_params

    p = Path(path)
    if p.is_dir():
        p = p / "best.npz" if (p / "best.npz").is_file() else p / "checkpoint.npz"
    if not p.is_file():
        raise ConfigError(f"train.init_from: {str(path)!r} is neither a checkpoint .npz nor a results folder with one")
    params = load_checkpoint(p)
    try:
        check_params(spec, params)
    except ConfigError as e:
        raise ConfigError(f"train.init_from {str(path)!r} does not fit this model: {e}") from None
    return {k: np.array(v, dtype=dtype) for k, v in params.items()}


def load_run(run) -> tuple:
    """A results folder's (config, spec, parameters, data splits, loss, n_steps), parameters from
    best.npz (else checkpoint.npz), checked against the spec; one-line errors for a folder that is
    not a run."""
    from .config import load_file, validate
    from .network import check_params

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{str(run)!r} is not a results folder (no config.yaml)")
    cfg = validate(load_file(run / "config.yaml"))
    ck = run / "best.npz" if (run / "best.npz").is_file() else run / "checkpoint.npz"
    if not ck.is_file():
        raise UserError(f"{str(run)!r} holds no checkpoint (best.npz or checkpoint.npz)")
    params = load_checkpoint(ck)
    data = load_data(cfg)
    loss = build_loss(cfg)
    spec = build_spec(cfg, data["train"].n_units * cfg.data.delay_copies, data["train"].n_classes, loss)
    check_params(spec, params)
    return cfg, spec, params, data, loss, n_steps_of(cfg)

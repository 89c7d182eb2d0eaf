"""Training loop: results folder contract, determinism, exact resume, optimiser."""

import csv
import json

import numpy as np
import pytest

from eventprop.config import resolve
from eventprop.errors import UserError
from eventprop.io import load_npz
from eventprop.optim import Adam, Schedule
from eventprop.train import run

SMALL = ["data.n_val=100", "data.limit_train=300", "data.limit_test=100", "model.dt_ms=0.5", "model.hidden=[30]",
         "train.batch_size=32", "train.lr=5e-3"]


def small_cfg(*extra):
    return resolve(None, SMALL + list(extra))


def read_metrics(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_results_folder_contract(tmp_path):
    out = tmp_path / "run"
    summary = run(small_cfg("train.epochs=2"), out, quiet=True, log=lambda *a: None)
    for f in ("config.yaml", "metrics.csv", "summary.json", "checkpoint.npz", "best.npz"):
        assert (out / f).is_file(), f
    rows = read_metrics(out / "metrics.csv")
    assert len(rows) == 2
    for col in ("epoch", "train_loss", "train_accuracy", "val_accuracy", "test_accuracy", "seconds"):
        assert col in rows[0]
    s = json.loads((out / "summary.json").read_text())
    for k in ("test_accuracy", "best_epoch", "train_accuracy", "epochs", "seconds_per_epoch", "selection", "version"):
        assert k in s
    assert s == summary
    assert s["epochs"] == 2 and s["finished"]
    assert s["selection"] == "best val accuracy"
    best = rows[s["best_epoch"] - 1]
    assert float(best["test_accuracy"]) == s["test_accuracy"]
    assert float(best["val_accuracy"]) == max(float(r["val_accuracy"]) for r in rows)
    # no temporary files left behind
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_same_config_and_seed_give_the_same_numbers(tmp_path):
    a = run(small_cfg("train.epochs=2", "train.input_dropout=0.1"), tmp_path / "a", quiet=True, log=lambda *a: None)
    b = run(small_cfg("train.epochs=2", "train.input_dropout=0.1"), tmp_path / "b", quiet=True, log=lambda *a: None)
    ma, mb = read_metrics(tmp_path / "a/metrics.csv"), read_metrics(tmp_path / "b/metrics.csv")
    for ra, rb in zip(ma, mb):
        assert {k: v for k, v in ra.items() if "seconds" not in k} == {k: v for k, v in rb.items() if "seconds" not in k}
    assert a["test_accuracy"] == b["test_accuracy"]
    c = run(small_cfg("train.epochs=2", "train.input_dropout=0.1", "train.seed=1"), tmp_path / "c", quiet=True,
            log=lambda *a: None)
    assert read_metrics(tmp_path / "c/metrics.csv")[0]["train_loss"] != ma[0]["train_loss"]
    del c


def test_resume_gives_exactly_the_uninterrupted_numbers(tmp_path):
    extra = ["train.input_dropout=0.1", "train.ease_in=true", "data.augment.jitter=0.3"]
    run(small_cfg("train.epochs=3", *extra), tmp_path / "full", quiet=True, log=lambda *a: None)
    run(small_cfg("train.epochs=1", *extra), tmp_path / "part", quiet=True, log=lambda *a: None)
    run(small_cfg("train.epochs=3", *extra), tmp_path / "part", resume=True, quiet=True, log=lambda *a: None)
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert strip(read_metrics(tmp_path / "full/metrics.csv")) == strip(read_metrics(tmp_path / "part/metrics.csv"))
    a, b = load_npz(tmp_path / "full/checkpoint.npz"), load_npz(tmp_path / "part/checkpoint.npz")
    for k in a:
        if k.startswith("param/") or k.startswith("adam_"):
            np.testing.assert_array_equal(a[k], b[k])


def test_resume_refuses_a_different_config(tmp_path):
    run(small_cfg("train.epochs=1"), tmp_path / "r", quiet=True, log=lambda *a: None)
    with pytest.raises(UserError, match="differs"):
        run(small_cfg("train.epochs=2", "train.lr=1e-2"), tmp_path / "r", resume=True, quiet=True, log=lambda *a: None)
    with pytest.raises(UserError, match="already holds a run"):
        run(small_cfg("train.epochs=1"), tmp_path / "r", quiet=True, log=lambda *a: None)


def test_adam_matches_textbook():
    rng = np.random.default_rng(0)
    p = {"a": rng.normal(size=(5, 4))}
    q = p["a"].copy()
    opt = Adam(1e-2)
    m = np.zeros_like(q)
    v = np.zeros_like(q)
    for t in range(1, 6):
        g = rng.normal(size=q.shape)
        opt.update(p, {"a": g})
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        q -= 1e-2 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(p["a"], q, rtol=1e-12)


def test_schedule_ease_in_and_plateau():
    s = Schedule(1e-3, ease_in=True)
    assert np.isclose(s.lr(), 1e-6)
    for _ in range(200):
        s.after_batch()
    assert s.lr() == 1e-3
    p = Schedule(1.0, plateau=True, min_epochs=2)
    for e, acc in enumerate([0.9] * 30 + [0.2] * 5, start=1):
        p.after_epoch(e, acc)
    assert p.lr() < 1.0


def _tb_scalars(folder):
    """(tag, step) -> value from the TensorBoard event files in ``folder`` (TFRecord of Event protos)."""
    import struct

    from tensorboardX.proto import event_pb2

    out = {}
    for path in sorted(folder.iterdir()):
        with open(path, "rb") as f:
            while True:
                head = f.read(8)
                if len(head) < 8:
                    break
                n = struct.unpack("<Q", head)[0]
                f.read(4)
                data = f.read(n)
                f.read(4)
                ev = event_pb2.Event()
                ev.ParseFromString(data)
                for v in ev.summary.value:
                    out[(v.tag, ev.step)] = v.simple_value
    return out


def test_tensorboard_scalars_equal_the_metrics(tmp_path):
    out = tmp_path / "run"
    run(small_cfg("train.epochs=2", "train.tensorboard=true"), out, quiet=True, log=lambda *a: None)
    sc = _tb_scalars(out / "tensorboard")
    rows = read_metrics(out / "metrics.csv")
    for r in rows:
        e = int(r["epoch"])
        for k in ("train_loss", "train_accuracy", "val_accuracy", "test_accuracy", "lr", "hidden0_rate",
                  "grad_norm_ff0"):
            assert sc[(k, e)] == pytest.approx(float(r[k]), rel=1e-6), k
    # off by default: no folder
    run(small_cfg("train.epochs=1"), tmp_path / "plain", quiet=True, log=lambda *a: None)
    assert not (tmp_path / "plain" / "tensorboard").exists()


def test_tensorboard_without_the_extra_is_one_line(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"eventprop\[tensorboard\]"):
        run(small_cfg("train.epochs=1", "train.tensorboard=true"), tmp_path / "run", quiet=True, log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def _metric_rows(out):
    skip = {"seconds", "eval_seconds"}
    return [{k: v for k, v in r.items() if k not in skip} for r in read_metrics(out / "metrics.csv")]


def test_on_grid_data_and_batch_time_shift_give_the_numbers_of_the_plain_path(tmp_path, monkeypatch):
    """SHD-format data held on the grid (4 bytes per spike) trains to exactly the numbers of the
    float-time dataset, and the shift applied while batching to those of shifting a copy of the
    training set every epoch (the path the trainer took before)."""
    from pathlib import Path

    import eventprop.train as tr

    from shared_data import SPOKEN, need

    spoken = need(SPOKEN)
    sets = [f"data.name=shd", f"data.path={spoken}", "data.trial_ms=300", "data.limit_train=48", "data.limit_test=24",
            "data.n_val=0", "data.augment.shift=10", "data.delay_copies=2", "data.delay_ms=20", "model.dt_ms=1.0",
            "model.hidden=[12]", "model.recurrent=true", "model.init.input_mean=0.0", "model.init.input_sd=0.3",
            "model.init.out_mean=0.0", "model.init.out_sd=0.1", "loss.name=sum_exp", "train.epochs=2",
            "train.batch_size=16", "train.lr=5e-3"]
    quiet = dict(quiet=True, log=lambda *a: None)
    run(resolve(None, sets), tmp_path / "plain", **quiet)
    run(resolve(None, sets + ["data.on_grid=true"]), tmp_path / "grid", **quiet)
    ref = _metric_rows(tmp_path / "plain")
    assert _metric_rows(tmp_path / "grid") == ref
    # the trainer as it was: an augmented (shifted) copy of the training set every epoch
    monkeypatch.setattr(tr, "SHIFT_WHILE_BATCHING", False)
    run(resolve(None, sets), tmp_path / "copy", **quiet)
    assert _metric_rows(tmp_path / "copy") == ref


def test_het_tau_draws_seeded_gamma_time_constants_and_trains(tmp_path):
    from eventprop.train import build_spec, het_taus

    tm, ts = het_taus(20.0, 5.0, 20000, seed=3, layer=0)
    assert abs(tm.mean() - 20.0) < 0.5 and abs(ts.mean() - 5.0) < 0.15  # Gamma(3, tau/3): mean tau (clipping aside)
    assert tm.min() >= 3.0 and tm.max() <= 60.0 and ts.min() >= 1.0 and ts.max() <= 15.0
    assert abs(np.std(tm) / 20.0 - 1 / np.sqrt(3)) < 0.05  # shape 3: coefficient of variation 1/sqrt(3)
    cfg = small_cfg("model.het_tau=true", "train.epochs=1", "model.hidden=[12,8]")
    a, b = build_spec(cfg, 4, 3), build_spec(cfg, 4, 3)
    np.testing.assert_array_equal(a.hidden[0].tau_mem, b.hidden[0].tau_mem)  # a function of the config
    assert len(set(np.round(a.hidden[0].tau_mem, 6))) == 12 and not np.array_equal(a.hidden[1].tau_syn[:8], a.hidden[0].tau_syn[:8])
    s = run(cfg, tmp_path / "het", quiet=True, log=lambda *a: None)
    assert np.isfinite(s["train_accuracy"])


def test_a_dead_network_gets_one_warning_line(tmp_path, capsys):
    """The README's deeper recurrent example with the default init: the second hidden layer never
    spikes, every gradient is 0. One line, once, naming the cause and the settings that fix it."""
    from eventprop.config import resolve
    from eventprop.train import run

    sets = ["loss.name=sum", "model.hidden=[128,64]", "model.recurrent=true", "data.limit_train=200", "data.n_val=50",
            "data.limit_test=50", "train.epochs=2"]
    run(resolve(None, sets), tmp_path / "dead", quiet=True, log=lambda *a: None)
    warn = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning")]
    assert len(warn) == 1, warn
    for words in ("hidden layer 1 did not spike", "every gradient is exactly 0", "model.init.hidden_mean",
                  "train.lift_silent"):
        assert words in warn[0], warn[0]
    # the documented fix: no warning
    run(resolve(None, sets + ["model.init.hidden_mean=0.2", "model.init.hidden_sd=0.1", "train.epochs=1"]),
        tmp_path / "alive", quiet=True, log=lambda *a: None)
    assert "warning" not in capsys.readouterr().err


def test_dead_network_reasons():
    import numpy as np

    from eventprop.train import dead_network

    alive = [np.array([1.0, 0.0])]
    assert dead_network(alive, {}, {"ff0": 1.0}, [1.0, 0.9], applied=2) == ""
    assert "hidden layer 0 did not spike" in dead_network([np.zeros(2)], {}, {"ff0": 1.0}, [1.0, 0.9], applied=2)
    assert "every gradient is exactly 0" in dead_network(alive, {}, {"ff0": 0.0, "ff1": 0.0}, [1.0, 0.9], applied=2)
    assert "output never changes" in dead_network(alive, {}, {"ff0": 1.0}, [1.0986, 1.0986], applied=2)


def test_compile_notice_prints_only_when_the_first_call_is_slow(capsys, monkeypatch):
    import time

    import eventprop.train as tr

    monkeypatch.setattr(tr, "_compile_noticed", False)
    with tr.compile_notice(after_s=0.05):
        time.sleep(0.3)  # as a cold numba cache compiling
    err = capsys.readouterr().err
    assert tr.COMPILE_NOTICE in err and "kernels ready after" in err
    with tr.compile_notice(after_s=0.05):  # once per process
        time.sleep(0.2)
    monkeypatch.setattr(tr, "_compile_noticed", False)
    with tr.compile_notice(after_s=5.0):  # a warm call: nothing
        pass
    assert capsys.readouterr().err == ""

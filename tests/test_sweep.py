"""eventprop sweep on Ray Tune (the 'ray' extra): trials equal direct runs, a killed worker's trial
resumes to the uninterrupted numbers, an interrupted sweep reruns only what is unfinished."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("ray.tune")

from eventprop.config import resolve  # noqa: E402
from eventprop.train import run  # noqa: E402

SRC = os.path.join(os.path.dirname(__file__), "..", "src")
TINY = ["data.limit_train=200", "data.n_val=50", "data.limit_test=50", "model.hidden=[20]", "model.dt_ms=0.5",
        "train.epochs=2"]
# epochs of about half a second on one core, so that a trial can be caught mid-run
SLOWER = ["data.limit_train=1500", "data.n_val=100", "data.limit_test=100", "model.hidden=[60]", "model.dt_ms=0.1"]


def _env():
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.path.abspath(SRC) + os.pathsep + env.get("PYTHONPATH", "")  # the workers too
    return env


def sets(items):
    return [a for s in items for a in ("--set", s)]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "eventprop.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=300)


def popen(*args):
    return subprocess.Popen([sys.executable, "-m", "eventprop.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def strip(rows):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


def direct(tmp_path, name, overrides):
    out = tmp_path / "direct" / name
    run(resolve(None, overrides), out, quiet=True, log=lambda *a: None)
    return read_csv(out / "metrics.csv")


def test_grid_trials_equal_direct_runs_and_plot(tmp_path):
    out = tmp_path / "sw"
    r = cli("sweep", *sets(TINY), "--grid", "train.lr=1e-3,5e-3", "--grid", "model.hidden=[10],[20]",
            "--seeds", "0,1", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = read_csv(out / "sweep.csv")
    assert len(rows) == 8
    assert {(r["train.lr"], r["model.hidden"], r["seed"]) for r in rows} == \
        {(lr, h, s) for lr in ("0.001", "0.005") for h in ("[10]", "[20]") for s in ("0", "1")}
    for row in rows:
        assert row["status"] == "ok", row
        folder = out / row["folder"]
        assert folder.parent.parent.name == "trials" and folder.name == f"seed{row['seed']}"
        ov = TINY + [f"train.lr={row['train.lr']}", f"model.hidden={row['model.hidden']}", f"train.seed={row['seed']}"]
        m = read_csv(folder / "metrics.csv")
        assert strip(m) == strip(direct(tmp_path, row["folder"].replace("/", "_"), ov))
        be = int(np.argmax([float(x["train_accuracy"]) for x in m]))
        assert int(row["best_epoch"]) == be + 1
        assert float(row["val_accuracy"]) == float(m[be]["val_accuracy"])
    md = (out / "sweep.md").read_text()
    assert "Best configuration" in md and md.count("| 2/2 |") == 4 and "±" in md
    r = cli("plot", str(out), "--out", str(tmp_path / "figs"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "figs" / "sweep_bars.png").stat().st_size > 1000


def test_killed_worker_trial_resumes_to_the_uninterrupted_numbers(tmp_path):
    out = tmp_path / "sw"
    over = SLOWER + ["train.epochs=4"]
    p = popen("sweep", *sets(over), "--seeds", "0,1", "--out", str(out), "--quiet")
    killed = None
    try:
        deadline = time.time() + 120
        while killed is None and time.time() < deadline and p.poll() is None:
            for s in (0, 1):
                f = out / "trials" / "base" / f"seed{s}"
                try:
                    n = len(read_csv(f / "metrics.csv"))
                    pid = int((f / "worker.pid").read_text())
                except (OSError, ValueError):
                    continue
                # metrics.csv is written just before the epoch's checkpoint: wait for both, so
                # the retry has a checkpoint to resume from (on a loaded machine the gap is real)
                if 1 <= n < 3 and (f / "checkpoint.npz").is_file():
                    os.kill(pid, signal.SIGKILL)
                    killed = s
                    break
            time.sleep(0.01)
        stdout, stderr = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
    assert killed is not None, "no trial caught mid-run"
    assert p.returncode == 0, stdout + stderr
    rows = read_csv(out / "sweep.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    f = out / "trials" / "base" / f"seed{killed}"
    starts = [ln for ln in (f / "log.txt").read_text().splitlines() if ln.startswith("trial start")]
    assert len(starts) == 2 and "resuming" in starts[1], starts  # retried by Ray, from its checkpoint
    assert strip(read_csv(f / "metrics.csv")) == strip(direct(tmp_path, "k", over + [f"train.seed={killed}"]))


def test_interrupted_sweep_reruns_only_unfinished_trials(tmp_path):
    out = tmp_path / "sw"
    args = ["sweep", *sets(SLOWER + ["train.epochs=2"]), "--grid", "train.lr=2e-3,4e-3", "--seeds", "0,1",
            "--out", str(out), "--quiet"]
    p = popen(*args)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            done = [s for s in out.glob("trials/*/*/summary.json") if json.loads(s.read_text()).get("finished")]
            if done:
                p.send_signal(signal.SIGINT)
                break
            time.sleep(0.01)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stdout + stderr
    assert "rerun the same command" in stdout
    first = {r["folder"]: r["status"] for r in read_csv(out / "sweep.csv")}
    finished = [k for k, v in first.items() if v == "ok"]
    assert 1 <= len(finished) < 4, first
    logs = {k: (out / k / "log.txt").read_text() for k in finished}
    r = cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(finished)} of 4 trials already finished" in r.stdout
    assert all(x["status"] == "ok" for x in read_csv(out / "sweep.csv"))
    for k in finished:  # not rerun: no new attempt in their logs
        assert (out / k / "log.txt").read_text() == logs[k]


def test_user_error_in_a_trial_is_reported_once_not_retried(tmp_path):
    from eventprop.data import save_spikes
    from eventprop.events import EventDataset

    rng = np.random.default_rng(0)
    ds = EventDataset.from_lists([rng.uniform(1, 15, 6) for _ in range(20)], [rng.integers(0, 4, 6) for _ in range(20)],
                                 [i % 2 for i in range(20)], 4, 2, name="toy")
    save_spikes(tmp_path / "toy.npz", ds)
    out = tmp_path / "sw"
    r = cli("sweep", *sets(["data.name=spikes", "data.trial_ms=20", "model.dt_ms=1.0", "model.hidden=[5]",
                            "data.n_val=0", "train.epochs=1", "loss.name=sum"]),
            "--grid", f"data.path={tmp_path / 'toy.npz'},{tmp_path / 'missing.npz'}", "--out", str(out), "--quiet")
    assert r.returncode == 1, r.stdout + r.stderr
    rows = {r["data.path"]: r for r in read_csv(out / "sweep.csv")}
    assert rows[str(tmp_path / "toy.npz")]["status"] == "ok"
    bad = rows[str(tmp_path / "missing.npz")]
    assert bad["status"].startswith("error: ") and "missing.npz" in bad["status"] and "\n" not in bad["status"]
    # reported once, as its one line (besides sweep.md's list of unfinished trials)
    assert r.stdout.splitlines().count(f"{bad['folder']}: {bad['status']}") == 1
    log = (out / bad["folder"] / "log.txt").read_text()
    assert log.count("trial start") == 1  # not retried


@pytest.mark.parametrize("grid,words", [
    (["train.lrr=1e-3,2e-3"], ["--grid train.lrr", "unknown config key"]),
    (["train.lr=1e-3,fast"], ["--grid train.lr=fast", "train.lr"]),
    (["model.hidden=[20],[0]"], ["model.hidden=[0]"]),
    (["train.lr"], ["KEY=V1,V2"]),
])
def test_bad_grid_is_refused_in_one_line_before_anything_starts(tmp_path, grid, words):
    out = tmp_path / "sw"
    r = cli("sweep", *[a for g in grid for a in ("--grid", g)], "--out", str(out))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert not out.exists()


def test_sweep_help():
    r = cli("sweep", "--help")
    assert r.returncode == 0 and "--grid" in r.stdout and "--address" in r.stdout

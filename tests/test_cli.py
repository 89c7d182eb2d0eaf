"""The command line, through a subprocess as a user would run it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SMALL = ["--set", "data.limit_train=200", "--set", "data.n_val=50", "--set", "data.limit_test=50",
         "--set", "model.hidden=[20]", "--set", "model.dt_ms=0.5", "--set", "train.epochs=1"]


def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "eventprop.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def assert_user_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_version_and_help():
    r = cli("--version")
    assert r.returncode == 0 and "eventprop" in r.stdout
    for sub in ("train", "eval", "xval", "sweep", "gradcheck", "plot", "analyse", "bench", "config", "export", "import"):
        h = cli(sub, "--help")
        assert h.returncode == 0 and "Usage" in h.stdout


def test_config_show_prints_every_default():
    r = cli("config", "show", "--set", "train.epochs=5")
    assert r.returncode == 0
    for key in ("data:", "name: yinyang", "trial_ms", "dt_ms", "hidden", "recurrent", "loss:", "epochs: 5",
                "batch_size", "lr:", "seed:"):
        assert key in r.stdout


@pytest.mark.parametrize("args,words", [
    (["train", "--set", "train.epoch=3"], ["train.epoch", "allowed here", "epochs"]),
    (["train", "--set", "train.epochs=many"], ["train.epochs", "integer"]),
    (["train", "--set", "train.lr=-1"], ["train.lr", "greater than 0"]),
    (["train", "--set", "loss.name=hinge"], ["loss.name", "xentropy"]),
    (["train", "--set", "data.name=cifar"], ["data.name"]),
    (["train", "--set", "nonsense"], ["KEY=VALUE"]),
    (["train", "missing.yaml"], ["missing.yaml", "not found"]),
    (["train", "--set", "model.hidden=[0]"], ["model.hidden"]),
    (["train", "--set", "data.name=mnist", "--set", "data.path=/nonexistent/mnist", "--set", "data.download=false"],
     ["/nonexistent/mnist"]),
    (["eval", "/nonexistent/run"], ["/nonexistent/run", "does not exist"]),
    (["config", "show", "--set", "model.recurrent=[true, false]"], ["recurrent"]),
])
def test_user_mistakes_give_one_line_and_exit_2(args, words, tmp_path):
    assert_user_error(cli(*args, "--out", str(tmp_path / "o")) if args[0] == "train" else cli(*args), *words)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: [unclosed\n")
    assert_user_error(cli("train", str(p)), "bad.yaml")
    p.write_text("train:\n  epochs: 2\nextra_section: 1\n")
    assert_user_error(cli("train", str(p)), "extra_section")


def test_train_eval_plot_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = cli("train", *SMALL, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "epoch   1/1" in r.stdout and "done:" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["epochs"] == 1
    r = cli("eval", str(out))
    assert r.returncode == 0, r.stderr
    acc = float(r.stdout.split("accuracy ")[1].split()[0])
    # evaluating the best checkpoint reproduces the test accuracy recorded for that epoch
    assert abs(acc - s["test_accuracy"]) < 1e-9
    r = cli("train", *SMALL, "--set", "train.epochs=2", "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    figs = tmp_path / "figs"
    r = cli("plot", str(out), "--out", str(figs))
    assert r.returncode == 0, r.stderr
    assert (figs / "learning_curves.png").stat().st_size > 1000


def _toy_xval_config(tmp_path):
    from eventprop.data import save_spikes
    from eventprop.events import EventDataset

    rng = np.random.default_rng(0)
    times, units, labels, spk = [], [], [], []
    for i in range(60):
        lab = i % 2
        n = 8
        times.append(rng.uniform(1, 15, n))
        units.append(rng.integers(0, 3, n) + 3 * lab)
        labels.append(lab)
        spk.append(i % 3)
    ds = EventDataset.from_lists(times, units, labels, 6, 2, speakers=spk, name="toy")
    save_spikes(tmp_path / "toy.npz", ds)
    cfg = tmp_path / "x.yaml"
    cfg.write_text(
        "data: {name: spikes, path: %s, trial_ms: 20, n_val: 0}\n"
        "model: {dt_ms: 1.0, hidden: [10], init: {input_mean: 0.8, input_sd: 0.3, out_mean: 0.0, out_sd: 0.5}}\n"
        "loss: {name: sum}\ntrain: {epochs: 2, select: train}\nxval: {seeds: [0, 1]}\n" % (tmp_path / "toy.npz"))
    return cfg


def test_xval_on_own_spike_file_with_speakers(tmp_path):
    cfg = _toy_xval_config(tmp_path)
    r = cli("xval", str(cfg), "--out", str(tmp_path / "xv"), "--quiet")  # on Ray when the extra is installed
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "xv" / "xval.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 3  # header + 2 seeds x 3 speakers
    assert "± " in (tmp_path / "xv" / "xval.md").read_text()
    # without the extra: the same folds one after another, with a one-line hint; the same numbers
    from click.testing import CliRunner

    import eventprop.sweep
    from eventprop.cli import main

    orig = eventprop.sweep.have_ray
    eventprop.sweep.have_ray = lambda: False
    try:
        res = CliRunner().invoke(main, ["xval", str(cfg), "--out", str(tmp_path / "seq"), "--quiet"])
    finally:
        eventprop.sweep.have_ray = orig
    assert res.exit_code == 0, res.output
    assert "pip install 'eventprop[ray]' runs them in parallel" in res.output
    assert (tmp_path / "seq" / "xval.csv").read_text() == (tmp_path / "xv" / "xval.csv").read_text()


ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_gradcheck_gives_a_verdict_in_the_users_regime():
    from shared_data import SPOKEN, need

    r = cli("gradcheck", os.path.join(ROOT, "configs", "shd_sum_exp_recurrent.yaml"), "--data", str(need(SPOKEN)),
            "--set", "data.trial_ms=700", "--channels", "30", "--hidden", "12", "--samples", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: OK" in r.stdout
    for name in ("ff0", "rec0", "ff1"):
        assert any(line.startswith(name) for line in r.stdout.splitlines()), r.stdout


def test_gradcheck_bad_input_is_one_line():
    assert_user_error(cli("gradcheck", "--channels", "0"), "--channels")


def test_train_warns_outside_the_checked_regime(tmp_path):
    r = cli("train", *SMALL, "--set", "model.dt_ms=2", "--out", str(tmp_path / "run"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "warning: model.dt_ms = 2 ms" in r.stderr and "eventprop gradcheck" in r.stderr
    r = cli("train", *SMALL, "--out", str(tmp_path / "run2"), "--quiet")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_analyse_errors_are_one_line(tmp_path):
    assert_user_error(cli("analyse", str(tmp_path)), "not a results folder")
    run_dir = tmp_path / "run"
    r = cli("train", *SMALL, "--out", str(run_dir), "--quiet")  # the default job: spiking outputs
    assert r.returncode == 0, r.stderr
    assert_user_error(cli("analyse", str(run_dir)), "leaky-integrator output")


def test_final_line_names_only_the_accuracies_the_run_has(tmp_path):
    from eventprop.cli import done_line

    line = done_line({"best_epoch": 3, "selection": "best train accuracy", "train_accuracy": 0.5, "val_accuracy": None,
                      "test_accuracy": 0.25, "seconds_per_epoch": 1.234}, tmp_path)
    assert "None" not in line and "val acc" not in line
    assert "train acc 0.5000, test acc 0.2500; 1.2 s/epoch" in line


def test_plural():
    from eventprop.cli import _plural

    assert _plural(1, "sample") == "1 sample" and _plural(2, "sample") == "2 samples"


def test_bench_on_real_data_prints_the_table_and_counters(tmp_path):
    """``bench --data``: the shipped recurrent paper config on spoken-dev (shortened here), the
    whole trainer and the compute with hidden activity, cost per spike and the forward counters."""
    from shared_data import SPOKEN, need

    out = tmp_path / "b.json"
    r = cli("bench", "--data", str(need(SPOKEN)), "--no-torch", "--repeats", "1", "--set", "data.limit_train=64",
            "--set", "data.limit_test=32", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "64 training samples, batch 32" in r.stdout
    assert "us per hidden spike" in r.stdout and "forward counters (one batch): solves" in r.stdout
    res = json.loads(out.read_text())
    names = [row["name"] for row in res["rows"]]
    assert names == ["eventprop compute", "eventprop whole trainer"], res
    ep = res["rows"][0]
    assert ep["hidden_spikes_per_neuron"] > 0 and ep["counters"]["spikes"] > 0
    assert res["rows"][1]["seconds_per_epoch"] > 0


def test_bench_on_real_data_uses_the_configs_delay_line(tmp_path):
    """A delay-line config (the published model: 11 copies) is measured with its 7,700 inputs, as
    the trainer runs it (it was measured on the 700 raw channels before 2026-12-08)."""
    from shared_data import SPOKEN, need

    from eventprop.config import resolve
    from eventprop.train import load_data

    config = os.path.join(ROOT, "configs", "shd_published_best.yaml")
    sets = ["data.limit_train=32", "data.limit_test=16", "train.batch_size=16"]
    out = tmp_path / "b.json"
    r = cli("bench", "--data", str(need(SPOKEN)), "--config", config, "--no-torch", "--repeats", "1",
            *[a for kv in sets for a in ("--set", kv)], "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "7700 inputs" in r.stdout
    measured = json.loads(out.read_text())["rows"][0]["input_spikes_per_sample"]
    train = load_data(resolve(config, sets + [f"data.path={need(SPOKEN)}"]))["train"]
    raw = np.diff(train.offsets[:17]).mean()  # the raw channels' spikes of the first batch (the bench's count)
    print(f"input spikes per sample: {measured:.0f} measured, {raw:.0f} raw ({measured / raw:.2f}x)")
    assert 8 * raw < measured <= 11 * raw  # the delay line's 11 copies (some fall past the trial's end)


def test_bench_config_without_data_is_one_line():
    assert_user_error(cli("bench", "--config", os.path.join(ROOT, "configs", "shd_sum_exp_recurrent.yaml")), "--data")

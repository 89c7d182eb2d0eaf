"""`eventprop analyse`: the paper's failure-analysis figures and numbers from a run folder; the
training metrics they read (gradient norms, silent fractions); the silent-neuron lift."""

import csv
import json

import numpy as np
import pytest

from eventprop.analyse import analyse, class_counts, pearson, _load
from eventprop.config import resolve
from eventprop.errors import UserError
from eventprop.io import load_npz, save_npz
from eventprop.network import InitSpec, init_params
from eventprop.train import build_spec, run

SMALL = ["data.n_val=0", "data.limit_train=200", "data.limit_test=90", "model.dt_ms=0.5", "model.hidden=[24]",
         "train.batch_size=32", "train.lr=5e-3", "loss.name=sum", "model.init.out_mean=0.0", "model.init.out_sd=0.3",
         "train.select=train"]


@pytest.fixture(scope="module")
def li_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("an") / "run"
    run(resolve(None, SMALL + ["train.epochs=2"]), out, quiet=True, log=lambda *a: None)
    return out


def test_metrics_have_gradient_norms_and_silent_fractions(li_run):
    with open(li_run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        assert float(r["grad_norm_ff0"]) > 0 and float(r["grad_norm_ff1"]) > 0
        assert 0.0 <= float(r["hidden0_silent"]) <= 1.0


def test_analyse_writes_figures_and_consistent_numbers(li_run, tmp_path):
    res = analyse(li_run, tmp_path / "a", cls=1, top=5)
    for f in res["files"]:
        assert (tmp_path / "a" / f.split("/")[-1]).is_file()
    on_disk = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert on_disk == res
    assert res["class"] == 1 and len(res["top_neurons"]) == 5
    assert res["top_mean_spikes"] == sorted(res["top_mean_spikes"], reverse=True)
    rs = [v for v in res["pearson_weight_rate"].values() if np.isfinite(v)]
    assert rs and all(-1.0 <= v <= 1.0 for v in rs)
    # the correlations are of the run's output weights with the class-mean spike counts
    cfg, spec, params, ds, loss, n_steps = _load(li_run, "test")
    counts = class_counts(cfg, spec, params, ds, loss, n_steps)
    k = 2
    expect = pearson(params["ff1"][:, k], counts[ds.labels == k].mean(0))
    assert res["pearson_weight_rate"][str(k)] == pytest.approx(expect, abs=1e-4)
    # the weighted sums are w_ik times the plain sums
    w = params["ff1"][res["top_neurons"], 1]
    np.testing.assert_allclose(res["weighted_lambda_diff_sum"], w * np.array(res["lambda_diff_sum"]), rtol=1e-4,
                               atol=1e-12)


def test_weight_rate_correlation_flips_with_the_output_weights(li_run, tmp_path):
    """Negating the output weights negates every r: the analysis reads the weights it is given."""
    import shutil

    neg = tmp_path / "neg"
    shutil.copytree(li_run, neg)
    for name in ("best.npz", "checkpoint.npz"):
        ck = load_npz(neg / name)
        ck["param/ff1"] = -ck["param/ff1"]
        save_npz(neg / name, ck)
    a = analyse(li_run, tmp_path / "a", cls=0)["pearson_weight_rate"]
    b = analyse(neg, tmp_path / "b", cls=0)["pearson_weight_rate"]
    for k in a:
        if np.isfinite(a[k]):
            assert b[k] == pytest.approx(-a[k], abs=1e-4)


def test_analyse_rejects_bad_requests(li_run, tmp_path):
    with pytest.raises(UserError, match="class"):
        analyse(li_run, tmp_path / "x", cls=7)
    with pytest.raises(UserError, match="sample"):
        analyse(li_run, tmp_path / "x", sample=10_000)
    with pytest.raises(UserError, match="not a results folder"):
        analyse(tmp_path, tmp_path / "x")


def test_lift_raises_only_silent_neurons_inputs(tmp_path):
    """A hidden neuron that never spikes gets no gradient; the lift adds exactly lift_silent to its
    incoming weights after each epoch and leaves active neurons' weights to the optimiser."""
    over = SMALL + ["train.epochs=1", "train.lift_silent=0.25", "train.lr=1e-12", "model.init.input_mean=0.3",
                    "model.init.input_sd=1.5"]
    cfg = resolve(None, over)
    run(cfg, tmp_path / "run", quiet=True, log=lambda *a: None)
    with open(tmp_path / "run" / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    silent_frac = float(row["hidden0_silent"])
    assert 0.0 < silent_frac < 1.0  # the init makes some neurons silent and others active
    ck = load_npz(tmp_path / "run" / "checkpoint.npz")
    spec = build_spec(cfg, 5, 3)
    p0 = init_params(spec, InitSpec(**cfg.model.init.model_dump()), seed=cfg.train.seed)
    delta = (ck["param/ff0"].astype(np.float64) - p0["ff0"]).mean(axis=0)
    lifted = np.isclose(delta, 0.25, atol=1e-6)
    assert lifted.mean() == pytest.approx(silent_frac, abs=1e-4)  # metrics round to 4 digits
    assert np.all(np.abs(delta[~lifted]) < 1e-6)  # lr 1e-12: active neurons barely move


def test_plot_groups_by_architecture_and_draws_hidden_activity(li_run, tmp_path):
    from eventprop.plots import _group_key, plot_runs

    rec = tmp_path / "rec"
    run(resolve(None, SMALL + ["train.epochs=1", "model.recurrent=true"]), rec, quiet=True, log=lambda *a: None)
    assert _group_key(li_run) == "yinyang sum ffwd 30ms"
    assert _group_key(rec) == "yinyang sum recurrent 30ms"
    files = [p.name for p in plot_runs([li_run, rec], tmp_path / "figs")]
    assert "hidden_activity.png" in files and "learning_curves.png" in files
    table = (tmp_path / "figs" / "summary.md").read_text()
    assert "| yinyang sum ffwd 30ms | 1 |" in table and "| yinyang sum recurrent 30ms | 1 |" in table

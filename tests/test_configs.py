"""Every shipped config is valid, and an SHD config trains end to end on a file in the official layout."""

import glob
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from eventprop.config import load_file, validate

ROOT = os.path.dirname(os.path.dirname(__file__))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))


def test_configs_exist():
    names = {os.path.basename(c) for c in CONFIGS}
    for loss in ("xentropy", "sum", "max", "time"):
        assert f"mnist_{loss}.yaml" in names
    for loss in ("sum", "sum_exp", "max", "time"):
        for arch in ("ffwd", "recurrent"):
            assert f"shd_{loss}_{arch}.yaml" in names
    assert "shd_xentropy.yaml" in names and "shd_xentropy_400ms.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_is_valid_and_documented(path):
    cfg = validate(load_file(path))
    assert len(cfg.description) > 40  # each config says where its numbers come from


def write_shd(path, n, rng):
    vl_f = h5py.vlen_dtype(np.dtype("float16"))
    vl_u = h5py.vlen_dtype(np.dtype("uint16"))
    with h5py.File(path, "w") as f:
        t = f.create_dataset("spikes/times", (n,), dtype=vl_f)
        u = f.create_dataset("spikes/units", (n,), dtype=vl_u)
        labels = rng.integers(0, 20, n)
        for i in range(n):
            k = rng.integers(50, 200)
            t[i] = np.sort(rng.uniform(0, 0.3, k)).astype(np.float16)
            u[i] = (rng.integers(0, 30, k) + 30 * labels[i]).astype(np.uint16) % 700
        f["labels"] = labels.astype(np.uint16)
        f["extra/speaker"] = rng.integers(0, 4, n).astype(np.uint16)
        f["extra/keys"] = np.array([f"digit-{i}".encode() for i in range(20)])


def test_shd_config_trains_on_official_layout(tmp_path):
    rng = np.random.default_rng(0)
    write_shd(tmp_path / "shd_train.h5", 64, rng)
    write_shd(tmp_path / "shd_test.h5", 32, rng)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "eventprop.cli", "train", os.path.join(ROOT, "configs", "shd_sum_exp_recurrent.yaml"),
                        "--set", f"data.path={tmp_path}", "--set", "data.trial_ms=300", "--set", "model.hidden=[16]",
                        "--set", "train.epochs=2", "--set", "data.download=false", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "shd (64 train, 0 val, 32 test)" in r.stdout
    assert (out / "summary.json").is_file()


def test_k_reg_conversion_per_loss():
    from eventprop.losses import convert_k_reg

    assert convert_k_reg("sum_exp", 5e-10, 20, 20, 1400) == pytest.approx(2e-7)
    assert convert_k_reg("xentropy", 1e-9, 20, 20, 1400) == pytest.approx(4e-7)
    assert convert_k_reg("max", 2e-10, 20, 20, 1400) == pytest.approx(5.6e-6)  # extra 1/T in the authors' jump
    assert convert_k_reg("first_spike", 2e-7, 20, 20, 1400) == pytest.approx(4e-6)  # no output scale at all


def _quoted_k_reg(path):
    import re

    m = re.search(r"k_reg ([0-9.]+e-?[0-9]+)", validate(load_file(path)).description)
    return float(m.group(1)) if m else None


QUOTING = [c for c in CONFIGS if _quoted_k_reg(c) is not None]


def test_most_paper_configs_quote_their_k_reg():
    assert len(QUOTING) >= 9


@pytest.mark.parametrize("path", QUOTING, ids=os.path.basename)
def test_shipped_k_reg_is_the_converted_paper_value(path):
    """Configs that quote the paper's k_reg carry exactly its conversion for their loss (a strength
    that is 0 on purpose, e.g. no upper regularisation in the x-entropy runs, stays 0)."""
    from eventprop.losses import convert_k_reg

    cfg = validate(load_file(path))
    want = convert_k_reg(cfg.loss.name, _quoted_k_reg(path), cfg.model.tau_mem, cfg.model.out_tau_mem,
                         cfg.data.trial_ms)
    for k in (cfg.reg.k_upper, cfg.reg.k_lower):
        assert k == 0.0 or k == pytest.approx(want, rel=1e-6)
    assert max(cfg.reg.k_upper, cfg.reg.k_lower) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", ["ssc_published_best.yaml", "shd_published_best.yaml"])
def test_published_configs_train_end_to_end(tmp_path, name):
    """The published models' configs (delay line, on-grid data, blending, hetLIF, learned time
    constants, lift) run on files in the official layout, shrunk."""
    rng = np.random.default_rng(1)
    kind = name.split("_")[0]
    splits = ("train", "valid", "test") if kind == "ssc" else ("train", "test")
    for s in splits:
        write_shd(tmp_path / f"{kind}_{s}.h5", 48 if s == "train" else 24, rng)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "eventprop.cli", "train", os.path.join(ROOT, "configs", name),
                        "--set", f"data.path={tmp_path}", "--set", "data.trial_ms=300", "--set", "model.hidden=[16]",
                        "--set", "train.epochs=2", "--set", "data.download=false", "--set", "data.delay_copies=3",
                        "--set", "data.augment.blend=16", "--set", "model.dt_ms=2.0", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "summary.json").is_file()
    from eventprop.io import load_npz

    ck = load_npz(out / "checkpoint.npz")
    cfg = validate(load_file(os.path.join(ROOT, "configs", name)))
    assert ("param/tau_mem0" in ck) == bool(cfg.model.learn_tau)

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

"""The dataset registry ``load_dataset``."""

from pathlib import Path

import numpy as np
import pytest

from eventprop.data import DATASETS, load_dataset, save_spikes
from eventprop.errors import ConfigError, DataError
from eventprop.events import EventDataset, make_batch

from shared_data import MNIST as REAL_MNIST, need  # shared/ beside the repository


def test_unknown_name_lists_valid_names():
    with pytest.raises(DataError) as e:
        load_dataset("cifar", trial_ms=20, dt_ms=1)
    for name in DATASETS:
        assert name in str(e.value)


def test_yinyang_through_registry():
    d = load_dataset("yinyang", trial_ms=30.0, dt_ms=0.1, n_val=100, seed=2, n_train=200, n_test=50)
    assert (len(d["train"]), len(d["val"]), len(d["test"])) == (200, 100, 50)
    b = make_batch(d["train"], np.arange(8), 0.1, 300)
    assert np.all(b.counts() == 5)
    assert load_dataset("Yin-Yang".replace("-", ""), trial_ms=30, dt_ms=1, n_train=5, n_test=5)["val"] is None
    with pytest.raises(ConfigError, match="trial_ms"):
        load_dataset("yinyang", trial_ms=20.0, dt_ms=1.0, n_train=10, n_test=10)


def test_unknown_option():
    with pytest.raises(ConfigError, match="limit_train") as e:
        load_dataset("yinyang", trial_ms=30, dt_ms=1, limit_train=3)
    assert "n_train" in str(e.value)


def test_mnist_through_registry(tmp_path):
    d = load_dataset("mnist", need(REAL_MNIST), trial_ms=20.0, dt_ms=1.0, n_val=10, download=False,
                     limit_train=100, limit_test=20)
    assert (len(d["train"]), len(d["val"]), len(d["test"])) == (90, 10, 20)
    # fashion: same reader, other folder (here: a missing one, offline)
    with pytest.raises(DataError, match="Fashion-MNIST"):
        load_dataset("fashion-mnist", tmp_path, trial_ms=20.0, dt_ms=1.0, download=False)


def test_event_datasets_through_registry(tmp_path):
    ds = EventDataset.from_lists([[1.0, 2.0]] * 10, [[0, 3]] * 10, [0, 1] * 5, 4, 2)
    save_spikes(tmp_path / "train.npz", ds)
    d = load_dataset("spikes", tmp_path, trial_ms=10, dt_ms=1, n_val=2)
    assert (len(d["train"]), len(d["val"]), d["test"]) == (8, 2, None)
    with pytest.raises(ConfigError):
        load_dataset("spikes", trial_ms=10, dt_ms=1)
    with pytest.raises(DataError, match="shd_train.h5.*missing"):
        load_dataset("shd", tmp_path, trial_ms=1000, dt_ms=1, download=False)
    with pytest.raises(DataError, match="ssc_train.h5.*missing"):
        load_dataset("ssc", tmp_path, trial_ms=1000, dt_ms=1, download=False)

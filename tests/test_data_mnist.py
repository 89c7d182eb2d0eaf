"""MNIST / Fashion-MNIST IDX reading, latency encoding, folders and downloads."""

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eventprop.data import latency_encode, load_mnist, read_idx
from eventprop.data import mnist as mnist_mod
from eventprop.errors import DataError, UserError

from shared_data import MNIST as REAL, need  # shared/ beside the repository
NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return head + arr.tobytes()


def write_set(folder: Path, n_train=6, n_test=4, gz=True, seed=0, overrides=None):
    """Tiny IDX files; ``overrides`` maps a base name to raw bytes to write instead."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        NAMES[0]: rng.integers(0, 256, (n_train, 28, 28)),
        NAMES[1]: rng.integers(0, 10, n_train),
        NAMES[2]: rng.integers(0, 256, (n_test, 28, 28)),
        NAMES[3]: rng.integers(0, 10, n_test),
    }
    for name, arr in arrays.items():
        raw = (overrides or {}).get(name, idx_bytes(arr))
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


# ---------------------------------------------------------------------------------------------
# the real files


@pytest.fixture(scope="module")
def real():
    return load_mnist(need(REAL), download=False)


def test_real_counts_and_labels(real):
    assert len(real["train"]) == 60000 and len(real["test"]) == 10000 and real["val"] is None
    for ds in (real["train"], real["test"]):
        assert ds.n_units == 784 and ds.n_classes == 10
        assert ds.labels.min() == 0 and ds.labels.max() == 9
        assert set(np.unique(ds.labels)) == set(range(10))


def test_real_spike_counts_and_formula(real):
    with gzip.open(REAL / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(REAL / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    test = real["test"]
    assert np.array_equal(test.labels, labels)
    assert np.array_equal(test.spikes_per_sample(), (images > 1).sum(axis=1))
    for i in (0, 1, 1234, 9999):
        t, u = test.sample(i)
        assert np.array_equal(u, np.flatnonzero(images[i] > 1))
        np.testing.assert_allclose(t, (255.0 - images[i, u]) / 255.0 * (20 - 4) + 2)
    assert test.times.min() >= 2.0 and test.times.max() <= 18.0
    assert real["train"].times.min() >= 2.0 and real["train"].times.max() <= 18.0
    # some pixels are saturated: the earliest spike is exactly 2 dt
    assert real["train"].times.min() == 2.0


def test_real_validation_split_and_limits():
    d = load_mnist(need(REAL), download=False, n_val=500, seed=1, limit_train=3000, limit_test=100,
                   trial_ms=30.0, dt_ms=0.5)
    assert len(d["train"]) == 2500 and len(d["val"]) == 500 and len(d["test"]) == 100
    for ds in d.values():
        assert ds.times.min() >= 1.0 and ds.times.max() <= 29.0
    d2 = load_mnist(REAL, download=False, n_val=500, seed=1, limit_train=3000, limit_test=100,
                    trial_ms=30.0, dt_ms=0.5)
    assert np.array_equal(d["val"].labels, d2["val"].labels) and np.array_equal(d["val"].times, d2["val"].times)


# ---------------------------------------------------------------------------------------------
# tiny generated files


@pytest.mark.parametrize("gz", [True, False])
def test_tiny_files_roundtrip(tmp_path, gz):
    arrays = write_set(tmp_path, gz=gz)
    d = load_mnist(tmp_path, download=False)
    assert np.array_equal(d["train"].labels, arrays[NAMES[1]])
    assert np.array_equal(d["test"].spikes_per_sample(), (arrays[NAMES[2]].reshape(4, -1) > 1).sum(1))


def test_fashion_and_env_folder(tmp_path, monkeypatch):
    write_set(tmp_path / "fashion_mnist")
    monkeypatch.setenv("EVENTPROP_DATA", str(tmp_path))
    d = load_mnist(fashion=True, download=False)
    assert d["train"].class_names[0] == "T-shirt/top" and len(d["train"]) == 6
    with pytest.raises(DataError, match="mnist"):
        load_mnist(download=False)  # $EVENTPROP_DATA/mnist does not exist


def test_validation_split_disjoint(tmp_path):
    write_set(tmp_path, n_train=20)
    full = load_mnist(tmp_path, download=False)["train"]
    d = load_mnist(tmp_path, download=False, n_val=5, seed=3)
    assert len(d["train"]) == 15 and len(d["val"]) == 5
    got = sorted(tuple(ds.sample(i)[1]) for ds in (d["train"], d["val"]) for i in range(len(ds)))
    assert got == sorted(tuple(full.sample(i)[1]) for i in range(len(full)))
    with pytest.raises(DataError, match="n_val"):
        load_mnist(tmp_path, download=False, n_val=20)


BAD_CASES = {
    "magic": (NAMES[0], bytes([0, 0, 9, 3]) + np.array([6, 28, 28], ">u4").tobytes() + bytes(6 * 784), "magic"),
    "ndim": (NAMES[1], bytes([0, 0, 8, 2]) + np.array([6, 1], ">u4").tobytes() + bytes(6), "dimensions"),
    "shape": (NAMES[0], idx_bytes(np.zeros((6, 27, 28))), "shape"),
    "truncated": (NAMES[0], idx_bytes(np.zeros((6, 28, 28)))[:-10], "truncated"),
    "header": (NAMES[0], bytes([0, 0, 8, 3, 0, 0]), "truncated"),
    "empty": (NAMES[3], b"", "truncated"),
    "trailing": (NAMES[3], idx_bytes(np.zeros(4)) + b"xx", "trailing"),
    "count": (NAMES[1], idx_bytes(np.zeros(5)), "labels"),
    "label": (NAMES[1], idx_bytes(np.array([0, 1, 2, 3, 4, 10])), "label 10"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_files(tmp_path, case):
    name, raw, what = BAD_CASES[case]
    write_set(tmp_path, overrides={name: raw})
    with pytest.raises(DataError, match=what) as e:
        load_mnist(tmp_path, download=False)
    assert "idx" in str(e.value) and str(tmp_path) in str(e.value)
    assert "\n" not in str(e.value)


def test_corrupt_gzip(tmp_path):
    write_set(tmp_path)
    p = tmp_path / (NAMES[2] + ".gz")
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match="t10k-images.*gzip"):
        load_mnist(tmp_path, download=False)


def test_missing_file_no_download(tmp_path):
    write_set(tmp_path)
    (tmp_path / (NAMES[3] + ".gz")).unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*missing in") as e:
        load_mnist(tmp_path, download=False)
    assert str(tmp_path) in str(e.value)


def test_download_failure_is_clear(tmp_path, monkeypatch):
    monkeypatch.setitem(mnist_mod.MIRRORS, "mnist", [(tmp_path / "nowhere").as_uri() + "/"])
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*missing in.*download failed"):
        load_mnist(tmp_path / "data", download=True)
    assert not list((tmp_path / "data").glob("*"))  # no partial files left


def test_a_missing_explicit_folder_is_refused_not_created(tmp_path, monkeypatch):
    """A mistyped data.path gives one line and creates nothing, even with downloads on; only the
    download cache ($EVENTPROP_DATA/<name>, ~/.cache/eventprop/<name>) is created."""
    mirror = tmp_path / "mirror"
    write_set(mirror)
    monkeypatch.setitem(mnist_mod.MIRRORS, "mnist", [mirror.as_uri() + "/"])
    monkeypatch.setitem(mnist_mod.MD5, "mnist", {})
    for download in (True, False):
        with pytest.raises(DataError, match="does not exist") as e:
            load_mnist(tmp_path / "typo" / "mnist", download=download)
        assert "\n" not in str(e.value) and "download cache" in str(e.value)
        assert not (tmp_path / "typo").exists()
    monkeypatch.setenv("EVENTPROP_DATA", str(tmp_path / "cache"))
    assert len(load_mnist()["train"]) == 6  # the cache folder is made and filled
    assert (tmp_path / "cache" / "mnist" / (NAMES[0] + ".gz")).is_file()


def test_download_with_checksum(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_set(mirror)
    sums = {n + ".gz": hashlib.md5((mirror / (n + ".gz")).read_bytes()).hexdigest() for n in NAMES}
    monkeypatch.setitem(mnist_mod.MIRRORS, "mnist", [mirror.as_uri() + "/"])
    monkeypatch.setitem(mnist_mod.MD5, "mnist", sums)
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    d = load_mnist(tmp_path / "data")
    assert len(d["train"]) == 6 and (tmp_path / "data" / (NAMES[0] + ".gz")).is_file()
    # a checksum mismatch is a failed download, and leaves nothing behind
    monkeypatch.setitem(mnist_mod.MD5, "mnist", {k: "0" * 32 for k in sums})
    with pytest.raises(DataError, match="MD5"):
        load_mnist(tmp_path / "other")
    assert not list((tmp_path / "other").glob("*"))


def test_read_idx_direct(tmp_path):
    p = tmp_path / "x-idx1-ubyte"
    p.write_bytes(idx_bytes(np.arange(7)))
    assert read_idx(p, 1).tolist() == list(range(7))
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope", 1)


def test_bad_timing_arguments():
    with pytest.raises(UserError):
        latency_encode(np.zeros((1, 4), np.uint8), [0], trial_ms=3.0, dt_ms=1.0)


@settings(max_examples=60, deadline=None)
@given(
    images=hnp.arrays(np.uint8, st.tuples(st.integers(0, 5), st.integers(1, 12))),
    dt=st.sampled_from([0.1, 0.5, 1.0]),
    extra=st.floats(0, 100),
)
def test_encoder_property(images, dt, extra):
    T = 4 * dt + extra
    labels = np.arange(len(images)) % 10
    ds = latency_encode(images, labels, T, dt)
    assert np.array_equal(ds.spikes_per_sample(), (images > 1).sum(axis=1))
    if len(ds.times):
        assert ds.units.min() >= 0 and ds.units.max() < images.shape[1]
        assert ds.times.min() >= 2 * dt - 1e-9 and ds.times.max() <= T - 2 * dt + 1e-9
        sid = np.repeat(np.arange(len(ds)), ds.spikes_per_sample())
        np.testing.assert_allclose(ds.times, (255.0 - images[sid, ds.units]) / 255.0 * (T - 4 * dt) + 2 * dt)

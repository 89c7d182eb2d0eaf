"""The user spike-file format: reading, writing and validation."""

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventprop.data import load_spikes, read_spikes, save_spikes
from eventprop.errors import DataError, UserError
from eventprop.events import EventDataset


def small_ds(seed=0, n=5, n_units=9, n_classes=3, speakers=True):
    rng = np.random.default_rng(seed)
    times = [np.sort(rng.uniform(0, 50, rng.integers(0, 8))) for _ in range(n)]
    units = [rng.integers(0, n_units, len(t)) for t in times]
    labels = rng.integers(0, n_classes, n)
    spk = rng.integers(0, 3, n) if speakers else None
    return EventDataset.from_lists(times, units, labels, n_units, n_classes, spk, "mine", ["a", "b", "c"][:n_classes])


def same(a: EventDataset, b: EventDataset):
    assert np.array_equal(a.times, b.times) and np.array_equal(a.units, b.units)
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.labels, b.labels)
    assert (a.n_units, a.n_classes) == (b.n_units, b.n_classes)
    assert (a.speakers is None and b.speakers is None) or np.array_equal(a.speakers, b.speakers)


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_roundtrip(tmp_path, suffix):
    ds = small_ds()
    save_spikes(tmp_path / f"x{suffix}", ds)
    back = read_spikes(tmp_path / f"x{suffix}")
    same(ds, back)
    assert back.class_names == ["a", "b", "c"]
    assert not list(tmp_path.glob(".*part"))


def test_unsorted_spikes_and_inferred_sizes(tmp_path):
    np.savez(tmp_path / "u.npz", times=[3.0, 1.0, 2.0, 0.5], units=[4, 0, 2, 1], sample=[1, 0, 1, 0], labels=[0, 2])
    ds = read_spikes(tmp_path / "u.npz")
    assert ds.n_units == 5 and ds.n_classes == 3 and ds.speakers is None
    assert ds.sample(0)[1].tolist() == [0, 1] and ds.sample(1)[0].tolist() == [3.0, 2.0]


def test_integer_valued_floats_and_h5_by_hand(tmp_path):
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["times"] = np.array([1.0, 2.0])
        f["units"] = np.array([1.0, 3.0])
        f["sample"] = np.array([0.0, 0.0])
        f["labels"] = np.array([1.0])
        f["n_units"] = 10
    ds = read_spikes(tmp_path / "m.h5")
    assert ds.n_units == 10 and ds.units.tolist() == [1, 3] and ds.labels.tolist() == [1]


def test_folder_with_splits(tmp_path):
    save_spikes(tmp_path / "train.npz", small_ds(1, n=20, n_units=9))
    save_spikes(tmp_path / "test.h5", small_ds(2, n=4, n_units=9))
    d = load_spikes(tmp_path, n_val=5, seed=1)
    assert (len(d["train"]), len(d["val"]), len(d["test"])) == (15, 5, 4)
    assert d["train"].name.endswith("train") and d["val"].name.endswith("val")
    single = load_spikes(tmp_path / "train.npz")
    assert len(single["train"]) == 20 and single["val"] is None and single["test"] is None


def test_folder_harmonises_inferred_sizes(tmp_path):
    np.savez(tmp_path / "train.npz", times=[1.0], units=[3], sample=[0], labels=[1])
    np.savez(tmp_path / "test.npz", times=[1.0], units=[7], sample=[0], labels=[4])
    d = load_spikes(tmp_path)
    assert d["train"].n_units == d["test"].n_units == 8
    assert d["train"].n_classes == d["test"].n_classes == 5


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="train"):
        load_spikes(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_spikes(tmp_path / "nope.npz")
    save_spikes(tmp_path / "train.npz", small_ds())
    save_spikes(tmp_path / "val.npz", small_ds(3))
    with pytest.raises(UserError, match="n_val"):
        load_spikes(tmp_path, n_val=2)
    assert len(load_spikes(tmp_path)["val"]) == 5
    np.savez(tmp_path / "test.npz", times=[1.0], units=[3], sample=[0], labels=[1], n_units=4)
    with pytest.raises(DataError, match="n_units"):
        load_spikes(tmp_path)


GOOD = dict(times=np.array([1.0, 2.0, 3.0]), units=np.array([0, 1, 2]), sample=np.array([0, 1, 1]),
            labels=np.array([0, 1]))


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(times=None), "missing array times"),
        (dict(times=np.array([1.0, 2.0])), "equal lengths"),
        (dict(times=np.array([1.0, np.nan, 3.0])), "NaN"),
        (dict(times=np.array([1.0, -2.0, 3.0])), "negative spike time"),
        (dict(times=np.array(["a", "b", "c"])), "'times' must be numbers"),
        (dict(units=np.array([0, -1, 2])), "negative channel"),
        (dict(units=np.array([0.5, 1.0, 2.0])), "'units' must hold integers"),
        (dict(sample=np.array([0, 1, 2])), "'sample' index 2 out of range"),
        (dict(labels=np.array([0, -1])), "negative label"),
        (dict(n_units=np.int64(2)), "'n_units' = 2"),
        (dict(n_classes=np.int64(1)), "'n_classes' = 1"),
        (dict(n_units=np.array([5, 6])), "'n_units' must be a scalar"),
        (dict(speakers=np.array([1, 2, 3])), "'speakers' has 3 entries"),
        (dict(times=np.ones((3, 1))), "'times' must be 1-D"),
    ],
)
@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_bad_arrays(tmp_path, change, match, suffix):
    arrays = {**GOOD, **change}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    p = tmp_path / f"bad{suffix}"
    if suffix == ".npz":
        np.savez(p, **arrays)
    else:
        with h5py.File(p, "w") as f:
            for k, v in arrays.items():
                f[k] = v.astype("S") if v.dtype.kind == "U" else v
    with pytest.raises(DataError, match=match) as e:
        read_spikes(p)
    assert f"bad{suffix}" in str(e.value) and "\n" not in str(e.value)


def test_bad_files(tmp_path):
    np.savez(tmp_path / "obj.npz", times=np.array([1.0, "x"], dtype=object), units=[0, 1], sample=[0, 0], labels=[0])
    with pytest.raises(DataError, match="obj.npz"):
        read_spikes(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz.*not a readable"):
        read_spikes(tmp_path / "junk.npz")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="junk.h5.*not a readable HDF5"):
        read_spikes(tmp_path / "junk.h5")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(DataError, match="x.txt.*unknown spike file type"):
        read_spikes(tmp_path / "x.txt")
    np.savez(tmp_path / "ok.npz", **GOOD)
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cut.npz"):
        read_spikes(tmp_path / "cut.npz")
    with pytest.raises(UserError):
        save_spikes(tmp_path / "x.csv", small_ds())


@st.composite
def datasets(draw):
    n = draw(st.integers(0, 6))
    n_units = draw(st.integers(1, 30))
    n_classes = draw(st.integers(1, 5))
    times, units = [], []
    for _ in range(n):
        k = draw(st.integers(0, 10))
        times.append(draw(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=k, max_size=k)))
        units.append(draw(st.lists(st.integers(0, n_units - 1), min_size=k, max_size=k)))
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    return EventDataset.from_lists(times, units, labels, n_units, n_classes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ds=datasets(), suffix=st.sampled_from([".npz", ".h5"]))
def test_roundtrip_property(tmp_path, ds, suffix):
    p = tmp_path / f"p{suffix}"
    save_spikes(p, ds)
    same(ds, read_spikes(p))

"""SHD / SSC readers on tiny files written in the official HDF5 layout."""

import gzip
import hashlib
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from eventprop.data import load_shd, read_hsd_file, speaker_folds
from eventprop.data import shd as shd_mod
from eventprop.errors import DataError

SHD_KEYS = [f"digit-{i}" for i in range(20)]


def make_samples(n, seed=0, n_classes=20, n_speakers=4):
    rng = np.random.default_rng(seed)
    times, units = [], []
    for _ in range(n):
        k = int(rng.integers(0, 30))
        times.append(np.sort(rng.uniform(0, 1.2, k)))
        units.append(rng.integers(0, 700, k))
    labels = rng.integers(0, n_classes, n)
    speakers = rng.integers(0, n_speakers, n)
    return times, units, labels, speakers


def write_hsd(path, times, units, labels, speakers=None, keys=SHD_KEYS, tdtype=np.float16, udtype=np.uint16,
              labels_dtype=np.uint16, omit=()):
    """Write a file in the official layout (tonic's fixture uses float16 times, uint16 units)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(times)
    with h5py.File(path, "w") as f:
        if "spikes/times" not in omit:
            d = f.create_dataset("spikes/times", shape=(n,), dtype=h5py.vlen_dtype(np.dtype(tdtype)))
            for i, t in enumerate(times):
                d[i] = np.asarray(t, dtype=tdtype)
        if "spikes/units" not in omit:
            d = f.create_dataset("spikes/units", shape=(len(units),), dtype=h5py.vlen_dtype(np.dtype(udtype)))
            for i, u in enumerate(units):
                d[i] = np.asarray(u, dtype=udtype)
        if "labels" not in omit:
            f.create_dataset("labels", data=np.asarray(labels, dtype=labels_dtype))
        if speakers is not None:
            f.create_dataset("extra/speaker", data=np.asarray(speakers, dtype=np.uint16))
        if keys is not None:
            f.create_dataset("extra/keys", data=np.array([k.encode() for k in keys]))
        f.create_dataset("extra/meta_info/gender", data=np.zeros(4, np.uint8))
    return path


def write_split(folder, name, n, seed=0, **kw):
    t, u, lab, spk = make_samples(n, seed, n_classes=35 if name.startswith("ssc") else 20)
    keys = kw.pop("keys", [f"c{i}" for i in range(35)] if name.startswith("ssc") else SHD_KEYS)
    return write_hsd(Path(folder) / name, t, u, lab, spk, keys=keys, **kw), (t, u, lab, spk)


def test_read_float16_uint16(tmp_path):
    p, (t, u, lab, spk) = write_split(tmp_path, "shd_train.h5", 12)
    ds = read_hsd_file(p)
    assert len(ds) == 12 and ds.n_units == 700 and ds.n_classes == 20 and ds.class_names == SHD_KEYS
    assert np.array_equal(ds.labels, lab) and np.array_equal(ds.speakers, spk)
    for i in range(12):
        ti, ui = ds.sample(i)
        np.testing.assert_allclose(ti, np.asarray(t[i], np.float16).astype(np.float64) * 1000.0)
        assert np.array_equal(ui, u[i])


@pytest.mark.parametrize("tdtype,udtype", [(np.float64, np.int64), (np.float32, np.int32), (np.float16, np.uint16)])
def test_dtype_agnostic(tmp_path, tdtype, udtype):
    p = write_hsd(tmp_path / "x.h5", [[0.0, 0.5, 1.0], []], [[0, 5, 699], []], [1, 19],
                  speakers=[0, 1], tdtype=tdtype, udtype=udtype)
    ds = read_hsd_file(p)
    assert ds.times.tolist() == [0.0, 500.0, 1000.0] and ds.units.tolist() == [0, 5, 699]
    assert ds.spikes_per_sample().tolist() == [3, 0]


def test_load_shd_plain_folder_and_validation(tmp_path):
    write_split(tmp_path, "shd_train.h5", 30, seed=1)
    write_split(tmp_path, "shd_test.h5", 8, seed=2)
    d = load_shd(tmp_path, download=False)
    assert len(d["train"]) == 30 and d["val"] is None and len(d["test"]) == 8
    d = load_shd(tmp_path, download=False, n_val=10, seed=4)
    assert len(d["train"]) == 20 and len(d["val"]) == 10
    d2 = load_shd(tmp_path, download=False, n_val=10, seed=4)
    assert np.array_equal(d["val"].times, d2["val"].times)
    assert set(d["train"].speakers) | set(d["val"].speakers) <= set(range(4))


def test_tonic_folder_layouts(tmp_path, monkeypatch):
    # tonic.datasets.SHD(save_to=root) keeps files in root/SHD; SSC in root/SSC (older: root/SSC/SSC)
    write_split(tmp_path / "SHD", "shd_train.h5", 5)
    write_split(tmp_path / "SHD", "shd_test.h5", 3)
    for split, n in (("train", 6), ("valid", 4), ("test", 2)):
        write_split(tmp_path / "SSC" / "SSC", f"ssc_{split}.h5", n)
    d = load_shd(tmp_path, download=False)
    assert (len(d["train"]), len(d["test"])) == (5, 3)
    s = load_shd(tmp_path, ssc=True, download=False)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (6, 4, 2)
    assert s["train"].n_classes == 35
    s = load_shd(tmp_path, ssc=True, download=False, n_val=3)
    assert len(s["val"]) == 3
    # the environment variable points at the root of all datasets
    monkeypatch.setenv("EVENTPROP_DATA", str(tmp_path / "root"))
    write_split(tmp_path / "root" / "shd", "shd_train.h5", 2)
    write_split(tmp_path / "root" / "shd", "shd_test.h5", 2)
    assert len(load_shd(download=False)["train"]) == 2


@pytest.mark.parametrize("archive", ["gz", "zip"])
def test_compressed_files_are_decompressed_once(tmp_path, archive):
    src = tmp_path / "src"
    for split in ("train", "test"):
        p, _ = write_split(src, f"shd_{split}.h5", 4)
        dest = tmp_path / "data" / f"shd_{split}.h5.{archive}"
        dest.parent.mkdir(exist_ok=True)
        if archive == "gz":
            dest.write_bytes(gzip.compress(p.read_bytes()))
        else:
            with zipfile.ZipFile(dest, "w") as z:
                z.write(p, arcname=p.name)
    d = load_shd(tmp_path / "data", download=False)
    assert len(d["train"]) == 4
    assert (tmp_path / "data" / "shd_train.h5").is_file()
    assert not list((tmp_path / "data").glob(".*part"))
    (tmp_path / "data" / f"shd_train.h5.{archive}").unlink()  # the .h5 is used from now on
    assert len(load_shd(tmp_path / "data", download=False)["train"]) == 4


def test_corrupt_archive(tmp_path):
    (tmp_path / "shd_train.h5.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="shd_train.h5.gz.*decompress"):
        load_shd(tmp_path, download=False)
    assert not (tmp_path / "shd_train.h5").exists()


def test_speaker_folds(tmp_path):
    p, (_, _, _, spk) = write_split(tmp_path, "shd_train.h5", 40)
    ds = read_hsd_file(p)
    folds = speaker_folds(ds)
    assert [f[0] for f in folds] == sorted(set(spk.tolist()))
    for s, tr, va in folds:
        assert np.all(ds.speakers[va] == s) and np.all(ds.speakers[tr] != s)
        assert len(tr) + len(va) == len(ds)
    nospk = write_hsd(tmp_path / "n.h5", [[0.1]], [[1]], [0])
    with pytest.raises(DataError, match="speaker"):
        speaker_folds(read_hsd_file(nospk))


# ---------------------------------------------------------------------------------------------
# malformed files


def _bad(tmp_path, **kw):
    base = dict(times=[[0.1, 0.2], [0.3]], units=[[1, 2], [3]], labels=[0, 1], speakers=[0, 1])
    base.update(kw)
    return write_hsd(tmp_path / "shd_train.h5", base.pop("times"), base.pop("units"), base.pop("labels"), **base)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(omit=("spikes/times",)), "missing dataset 'spikes/times'"),
        (dict(omit=("labels",)), "missing dataset 'labels'"),
        (dict(labels=[0, 1, 2]), "entries but 'labels' has 3"),
        (dict(units=[[1], [3]]), "sample 0 has 2 spike times but 1 units"),
        (dict(labels=[0, 20]), "label 20 out of range"),
        (dict(times=[[0.1, -0.2], [0.3]]), "negative spike time"),
        (dict(times=[[0.1, np.nan], [0.3]]), "NaN"),
        (dict(units=[[1, 700], [3]]), "unit 700 out of range"),
        (dict(speakers=[0, 1, 2]), "extra/speaker"),
        (dict(keys=None, labels=[0, 1]), None),  # fine: no keys, classes from the labels
    ],
)
def test_malformed(tmp_path, kw, match):
    p = _bad(tmp_path, **kw)
    if match is None:
        assert read_hsd_file(p).n_classes == 2
        return
    with pytest.raises(DataError, match=match) as e:
        read_hsd_file(p)
    assert "shd_train.h5" in str(e.value) and "\n" not in str(e.value)


def test_not_vlen(tmp_path):
    with h5py.File(tmp_path / "shd_train.h5", "w") as f:
        f["spikes/times"] = np.zeros((2, 3))
        f["spikes/units"] = np.zeros((2, 3), int)
        f["labels"] = np.zeros(2, int)
    with pytest.raises(DataError, match="shd_train.h5.*variable-length"):
        read_hsd_file(tmp_path / "shd_train.h5")


def test_not_hdf5_and_truncated(tmp_path):
    (tmp_path / "shd_train.h5").write_bytes(b"this is not an hdf5 file" * 10)
    with pytest.raises(DataError, match="shd_train.h5.*HDF5"):
        load_shd(tmp_path, download=False)
    p, _ = write_split(tmp_path / "t", "shd_test.h5", 50)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="shd_test.h5"):
        read_hsd_file(p)


def test_missing_offline(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="shd_train.h5.*missing in.*download=False"):
        load_shd(tmp_path, download=False)
    nowhere = (tmp_path / "nowhere").as_uri() + "/"
    monkeypatch.setattr(shd_mod, "SOURCES", [(nowhere, ".h5.zip", {}), (nowhere, ".h5.gz", "md5sums.txt")])
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="SHD file shd_train.h5.*missing in.*download failed") as e:
        load_shd(tmp_path / "data")
    assert str(tmp_path / "data") in str(e.value)
    assert not list((tmp_path / "data").glob("*"))


def test_download_zip_and_gz_with_checksums(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    sums = {}
    for split in ("train", "test"):
        p, _ = write_split(tmp_path / "src", f"shd_{split}.h5", 3)
        mirror.mkdir(exist_ok=True)
        with zipfile.ZipFile(mirror / f"shd_{split}.h5.zip", "w") as z:
            z.write(p, arcname=p.name)
        (mirror / f"shd_{split}.h5.gz").write_bytes(gzip.compress(p.read_bytes()))
        for ext in ("zip", "gz"):
            sums[f"shd_{split}.h5.{ext}"] = hashlib.md5((mirror / f"shd_{split}.h5.{ext}").read_bytes()).hexdigest()
    (mirror / "md5sums.txt").write_text("".join(f"{v}  {k}\n" for k, v in sums.items() if k.endswith("gz")))
    url = mirror.as_uri() + "/"
    for d in "abc":  # an explicit data folder must exist (only the cache folders are created)
        (tmp_path / d).mkdir()
    # zip source with the right MD5
    monkeypatch.setattr(shd_mod, "SOURCES", [(url, ".h5.zip", {k: v for k, v in sums.items() if k.endswith("zip")})])
    assert len(load_shd(tmp_path / "a")["train"]) == 3
    # wrong MD5 on the zip source: falls back to the gz source checked against md5sums.txt
    monkeypatch.setattr(shd_mod, "SOURCES", [(url, ".h5.zip", {"shd_train.h5.zip": "0" * 32,
                                                                "shd_test.h5.zip": "0" * 32}),
                                             (url, ".h5.gz", "md5sums.txt")])
    assert len(load_shd(tmp_path / "b")["test"]) == 3
    assert (tmp_path / "b" / "shd_train.h5.gz").is_file() and not (tmp_path / "b" / "shd_train.h5.zip").exists()
    # every source wrong: a clear error naming the checksum problem
    monkeypatch.setattr(shd_mod, "SOURCES", [(url, ".h5.zip", {"shd_train.h5.zip": "0" * 32})])
    with pytest.raises(DataError, match="MD5"):
        load_shd(tmp_path / "c")


def test_read_on_grid_chunk_by_chunk(tmp_path, monkeypatch):
    """grid=(dt, n_steps) bins each chunk while reading: the same data as binning afterwards,
    4 bytes per spike, used for training as it is."""
    from eventprop.events import binned, make_batch

    p, _ = write_split(tmp_path, "shd_train.h5", 23, seed=3)
    full = read_hsd_file(p)
    monkeypatch.setattr(shd_mod, "_READ_CHUNK", 5)  # several chunks
    g = read_hsd_file(p, grid=(2.0, 500))
    ref = full.on_grid(2.0, 500)
    assert g.times.dtype == np.uint16 and g.units.dtype == np.uint16 and g.time_unit == 2.0
    np.testing.assert_array_equal(g.offsets, ref.offsets)
    np.testing.assert_array_equal(g.times, ref.times)
    np.testing.assert_array_equal(g.units, ref.units)
    assert binned(g, 2.0, 500)[0] is g.times
    idx = np.arange(23)
    np.testing.assert_array_equal(make_batch(g, idx, 2.0, 500).units, make_batch(full, idx, 2.0, 500).units)
    bad = _bad(tmp_path, times=[[0.1, -0.2], [0.3]])
    with pytest.raises(DataError, match="negative spike time .*sample 0"):
        read_hsd_file(bad, grid=(1.0, 100))


def test_a_missing_explicit_folder_is_refused_not_created(tmp_path, monkeypatch):
    """A mistyped data.path (e.g. a missing ../shared/data/spoken-dev) gives one line and creates
    nothing, with downloads on or off."""
    nowhere = (tmp_path / "nowhere").as_uri() + "/"
    monkeypatch.setattr(shd_mod, "SOURCES", [(nowhere, ".h5.zip", {})])
    for download in (True, False):
        with pytest.raises(DataError, match="does not exist.*download cache"):
            load_shd(tmp_path / "typo" / "shd", download=download)
        assert not (tmp_path / "typo").exists()

"""Spiking Heidelberg Digits (SHD) and Spiking Speech Commands (SSC) from the official HDF5 files.

Files (Cramer et al. 2020; https://zenkelab.org/datasets/, CC BY 4.0)::

    SHD: shd_train.h5  shd_test.h5                 (20 classes: digits 0-9, German and English)
    SSC: ssc_train.h5  ssc_valid.h5  ssc_test.h5   (35 classes)

Each may also be present compressed as ``<file>.h5.gz`` (compneuro.net mirror, SpyTorch) or
``<file>.h5.zip`` (zenkelab.org, tonic); it is decompressed into the same folder on first use
(atomically: temp file, then rename).

HDF5 layout read here (dtype-agnostic; tonic's fixtures use float16 times and uint16 units)::

    spikes/times    variable-length float arrays, one per sample, spike times in SECONDS
    spikes/units    variable-length int arrays, one per sample, channel 0..699
    labels          int, one per sample
    extra/speaker   int, one per sample (optional; used for leave-one-speaker-out folds)
    extra/keys      class names as bytes (optional; its length gives the number of classes)

Times become float64 milliseconds and units int. There are always 700 channels: a unit outside
0..699 is an error, as are negative or NaN times, a sample whose times and units differ in
length, datasets of different lengths, or labels outside 0..n_classes-1. Every such problem,
and a file that is not HDF5 or is truncated, raises :class:`DataError` naming the file.
Sample counts are read from the files, never assumed.

Folder: the ``path`` argument; else ``$EVENTPROP_DATA/shd`` (``ssc``); else
``~/.cache/eventprop/shd`` (``ssc``). The files may sit directly in that folder or where tonic
keeps them: ``<path>/SHD/`` for ``tonic.datasets.SHD(save_to=path)`` and ``<path>/SSC/`` (or
``<path>/SSC/SSC/``, older tonic) for ``tonic.datasets.SSC``, so an existing tonic cache is
reused. Missing files are downloaded when ``download=True``: first the ``.h5.zip`` from
zenkelab.org (checked against tonic's MD5 sums), then the ``.h5.gz`` from compneuro.net
(checked against that site's ``md5sums.txt`` when it can be fetched).

Splits: SHD has train and test; ``n_val > 0`` takes a seeded random validation subset from the
training set (the authors use 512). SSC's validation set is the official ``ssc_valid.h5``
(``n_val > 0`` keeps a seeded random subset of that many of its samples). For SHD
cross-validation use :func:`speaker_folds` (leave one speaker out).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..events import EventDataset
from ._common import DownloadFailed, atomic_copy_stream, check_n_val, existing_folder, fetch_text, split_validation
from ._common import download as _download

N_UNITS = 700
N_CLASSES = {"shd": 20, "ssc": 35}
SPLITS = {"shd": ("train", "test"), "ssc": ("train", "valid", "test")}

#: Download sources, tried in order: (base URL, file suffix, MD5 sums or the name of a checksum
#: list at the base URL).
SOURCES: list[tuple[str, str, dict | str]] = [
    (
        "https://zenkelab.org/datasets/",
        ".h5.zip",
        {
            "shd_train.h5.zip": "f3252aeb598ac776c1b526422d90eecb",
            "shd_test.h5.zip": "1503a5064faa34311c398fb0a1ed0a6f",
            "ssc_train.h5.zip": "d102be95e7144fcc0553d1f45ba94170",
            "ssc_valid.h5.zip": "b4eee3516a4a90dd0c71a6ac23a8ae43",
            "ssc_test.h5.zip": "a35ff1e9cffdd02a20eb850c17c37748",
        },
    ),
    ("https://compneuro.net/datasets/", ".h5.gz", "md5sums.txt"),
]

_READ_CHUNK = 2048  # samples per h5py read, to bound the peak memory of the conversion


# --------------------------------------------------------------------------------------------
# reading one file


def read_hsd_file(path: str | os.PathLike, n_classes: int | None = None, name: str | None = None,
                  grid: tuple[float, int] | None = None) -> EventDataset:
    """Read one SHD/SSC HDF5 file into an :class:`EventDataset` (700 channels, times in ms).

    ``n_classes`` defaults to the length of ``extra/keys`` (or, without keys, max label + 1).
    ``grid=(dt, n_steps)`` bins every chunk of samples as it is read and returns the compact
    on-grid dataset (:meth:`EventDataset.on_grid`: 4 bytes per spike), so the float times of the
    whole file are never held at once (SSC's training set: ~2.5 GB instead of ~7 GB).
    """
    import h5py

    path = Path(path)
    name = name or path.name
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or another format?): {e}") from None
    with f:
        def dataset(key: str, required: bool = True):
            obj = f.get(key)
            if obj is None:
                if required:
                    raise DataError(f"{path}: missing dataset '{key}' (expected the SHD/SSC layout)")
                return None
            if not isinstance(obj, h5py.Dataset):
                raise DataError(f"{path}: '{key}' is a group, expected a dataset")
            return obj

        times_ds, units_ds, labels_ds = dataset("spikes/times"), dataset("spikes/units"), dataset("labels")
        speaker_ds, keys_ds = dataset("extra/speaker", False), dataset("extra/keys", False)
        for key, d in (("spikes/times", times_ds), ("spikes/units", units_ds)):
            if d.ndim != 1 or h5py.check_vlen_dtype(d.dtype) is None:
                raise DataError(f"{path}: '{key}' must be a 1-D dataset of variable-length arrays, "
                                f"found shape {d.shape} dtype {d.dtype}")
        n = labels_ds.shape[0] if labels_ds.ndim == 1 else -1
        if n < 0:
            raise DataError(f"{path}: 'labels' must be 1-D, found shape {labels_ds.shape}")
        for key, d in (("spikes/times", times_ds), ("spikes/units", units_ds), ("extra/speaker", speaker_ds)):
            if d is not None and d.shape != (n,):
                raise DataError(f"{path}: '{key}' has {d.shape[0] if d.ndim else 0} entries but 'labels' has {n}")

        try:
            labels = _int_array(labels_ds[()], path, "labels")
            speakers = None if speaker_ds is None else _int_array(speaker_ds[()], path, "extra/speaker")
            keys = None if keys_ds is None else [_to_str(k) for k in np.atleast_1d(keys_ds[()])]
            t_parts, u_parts, counts = [], [], np.zeros(n, dtype=np.int64)
            packed = _Packed() if grid is not None else None
            for a in range(0, n, _READ_CHUNK):
                b = min(n, a + _READ_CHUNK)
                tv, uv = times_ds[a:b], units_ds[a:b]
                ct = np.fromiter((len(x) for x in tv), dtype=np.int64, count=b - a)
                cu = np.fromiter((len(x) for x in uv), dtype=np.int64, count=b - a)
                if not np.array_equal(ct, cu):
                    i = int(np.flatnonzero(ct != cu)[0])
                    raise DataError(f"{path}: sample {a + i} has {ct[i]} spike times but {cu[i]} units")
                counts[a:b] = ct
                if ct.sum():
                    t = np.concatenate(tv).astype(np.float64)
                    u = np.concatenate(uv)
                    if u.dtype.kind not in "iu":
                        if u.dtype.kind != "f" or not np.all(np.isfinite(u) & (u == np.round(u))):
                            raise DataError(f"{path}: 'spikes/units' must hold integer channel ids, found {u.dtype}")
                    t = t * 1000.0  # s -> ms
                    u = u.astype(np.int64)
                    _check_events(path, t, u, ct, a)
                    if grid is not None:  # bin this chunk now: only the compact form is kept
                        chunk = EventDataset(t, u, np.concatenate([[0], np.cumsum(ct)]), np.zeros(b - a, np.int64),
                                             N_UNITS, 1, name=name).on_grid(*grid)
                        t, u, counts[a:b] = chunk.times, chunk.units, np.diff(chunk.offsets)
                    if packed is not None:
                        packed.append(t, u, b / max(n, 1))
                    else:
                        t_parts.append(t)
                        u_parts.append(u)
        except DataError:
            raise
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: cannot read the data (truncated or malformed file?): {e}") from None

    if packed is not None:
        times, units = packed.arrays()
    else:
        times = np.concatenate(t_parts) if t_parts else np.zeros(0)
        units = np.concatenate(u_parts) if u_parts else np.zeros(0, np.int64)
    del t_parts, u_parts, packed
    if n_classes is None:
        n_classes = len(keys) if keys else (int(labels.max()) + 1 if n else 1)
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        bad_l = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataError(f"{path}: label {bad_l} out of range; expected 0..{n_classes - 1}")
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    ds = EventDataset(times, units, offsets, labels, N_UNITS, int(n_classes), speakers, name,
                      keys if keys and len(keys) == n_classes else [], time_unit=None if grid is None else float(grid[0]))
    if grid is not None:  # the chunks were binned: the dataset is its own binned form
        ds.mark_on_grid(int(grid[1]))
    return ds


class _Packed:
    """Binned chunks appended into one growing pair of arrays whose size is extrapolated from
    the fraction of the file read so far (no list of parts and final concatenation, which would
    hold the data twice)."""

    def __init__(self):
        self.t = self.u = None
        self.pos = 0

    def append(self, t, u, frac_done):
        need = self.pos + len(t)
        if self.t is None or need > len(self.t):
            cap = max(need, int(need / max(frac_done, 1e-6) * 1.03) + 1024)
            t2, u2 = np.empty(cap, t.dtype), np.empty(cap, u.dtype)
            if self.t is not None:
                t2[: self.pos], u2[: self.pos] = self.t[: self.pos], self.u[: self.pos]
            self.t, self.u = t2, u2
        self.t[self.pos : need], self.u[self.pos : need] = t, u
        self.pos = need

    def arrays(self):
        if self.t is None:
            return np.zeros(0, np.uint16), np.zeros(0, np.uint16)
        return self.t[: self.pos], self.u[: self.pos]


def _check_events(path, times, units, counts, first_sample) -> None:
    """Times finite and >= 0, units in range, for one chunk (sample numbers counted from
    ``first_sample``)."""
    if not len(times):
        return
    bad = ~np.isfinite(times)
    if bad.any():
        raise DataError(f"{path}: spike times contain NaN or infinite values (sample {first_sample + _sample_of(bad, counts)})")
    if times.min() < 0:
        raise DataError(f"{path}: negative spike time {times.min() / 1000:g} s "
                        f"(sample {first_sample + _sample_of(times < 0, counts)})")
    if units.min() < 0 or units.max() >= N_UNITS:
        badu = int(units.min()) if units.min() < 0 else int(units.max())
        raise DataError(f"{path}: spike unit {badu} out of range; SHD/SSC files have units 0..{N_UNITS - 1}")


def _int_array(a, path: Path, key: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise DataError(f"{path}: '{key}' must be 1-D, found shape {a.shape}")
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        return a.astype(np.int64)
    raise DataError(f"{path}: '{key}' must hold integers, found dtype {a.dtype}")


def _to_str(k) -> str:
    if isinstance(k, bytes | np.bytes_):
        return k.decode("utf-8", errors="replace")
    return str(k)


def _sample_of(mask: np.ndarray, counts: np.ndarray) -> int:
    first = int(np.flatnonzero(mask)[0])
    return int(np.searchsorted(np.cumsum(counts), first, side="right"))


# --------------------------------------------------------------------------------------------
# locating, decompressing and downloading files


def _candidate_folders(root: Path, kind: str) -> list[Path]:
    if kind == "shd":
        return [root, root / "SHD"]
    return [root, root / "SSC", root / "SSC" / "SSC"]


def _decompress(archive: Path, dest: Path) -> None:
    try:
        if archive.name.endswith(".gz"):
            with gzip.open(archive, "rb") as src:
                atomic_copy_stream(src, dest)
        else:
            with zipfile.ZipFile(archive) as z:
                names = [m for m in z.namelist() if not m.endswith("/")]
                pick = [m for m in names if Path(m).name == dest.name] or [m for m in names if m.endswith(".h5")]
                if not pick:
                    raise DataError(f"{archive}: the zip archive holds no {dest.name}")
                with z.open(pick[0]) as src:
                    atomic_copy_stream(src, dest)
    except DataError:
        raise
    except (EOFError, OSError, zipfile.BadZipFile, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{archive}: cannot decompress (truncated or corrupt archive?): {e}") from None


def locate_file(root: Path, fname: str, kind: str, download: bool) -> Path:
    """Path of ``fname`` (e.g. ``shd_train.h5``), decompressing or downloading it if needed."""
    folders = _candidate_folders(root, kind)
    for folder in folders:
        if (folder / fname).is_file():
            return folder / fname
    for folder in folders:
        for ext in (".gz", ".zip"):
            archive = folder / (fname + ext)
            if archive.is_file():
                _decompress(archive, folder / fname)
                return folder / fname
    where = " or ".join(str(f) for f in folders)
    label = kind.upper()
    if not download:
        raise DataError(f"{label} file {fname} (or {fname}.zip / {fname}.gz) is missing in {where} (download=False)")
    errors = []
    for base, suffix, sums in SOURCES:
        remote = fname[: -len(".h5")] + suffix
        try:
            if isinstance(sums, str):
                md5 = _parse_md5sums(fetch_text(base + sums)).get(remote)
            else:
                md5 = sums.get(remote)
            archive = root / remote
            _download([base + remote], archive, md5)
        except DownloadFailed as e:
            errors.append(str(e))
            continue
        except OSError as e:
            raise DataError(f"{label} file {fname} is missing and {root} cannot be written ({e})") from None
        _decompress(archive, root / fname)
        return root / fname
    raise DataError(
        f"{label} file {fname} (or {fname}.zip / {fname}.gz) is missing in {where} and the download failed "
        f"({'; '.join(errors)}); download it from https://zenkelab.org/datasets/ into {root}"
    )


def _parse_md5sums(text: str) -> dict:
    sums = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


# --------------------------------------------------------------------------------------------
# public API


def load_shd(path: str | os.PathLike | None = None, *, ssc: bool = False, n_val: int = 0, seed: int = 0,
             download: bool = True, grid: tuple[float, int] | None = None) -> dict:
    """Load SHD (or SSC with ``ssc=True``).

    Returns ``{"train", "val", "test"}`` of :class:`EventDataset` (``val`` is None for SHD with
    ``n_val = 0``). See the module docstring for folders, file layout and splits. ``grid=(dt,
    n_steps)``: hold the data binned on that grid, 4 bytes per spike (see :func:`read_hsd_file`).
    """
    kind = "ssc" if ssc else "shd"
    root = existing_folder(kind, path)
    parts = {}
    for split in SPLITS[kind]:
        fpath = locate_file(root, f"{kind}_{split}.h5", kind, download)
        parts[split] = read_hsd_file(fpath, name=f"{kind}-{split if split != 'valid' else 'val'}", grid=grid)
    # one class count for all splits (the largest key list / label range among the files)
    n_classes = max(d.n_classes for d in parts.values())
    for split, d in parts.items():
        if d.n_classes != n_classes:
            parts[split] = dataclasses.replace(d, n_classes=n_classes)._keep_grid_mark(d)
    if ssc:
        val = parts["valid"]
        n_val = check_n_val(n_val, len(val) + 1, val.name)
        if 0 < n_val < len(val):
            idx = np.sort(np.random.default_rng(seed).permutation(len(val))[:n_val])
            val = val.subset(idx)
        return {"train": parts["train"], "val": val, "test": parts["test"]}
    train, val = split_validation(parts["train"], n_val, seed)
    return {"train": train, "val": val, "test": parts["test"]}


def speaker_folds(ds: EventDataset) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Leave-one-speaker-out folds: ``[(speaker_id, train_idx, val_idx), ...]`` by speaker id.

    ``val_idx`` are the samples of that speaker and ``train_idx`` all others (sorted indices
    into ``ds``; use ``ds.subset``).
    """
    if ds.speakers is None:
        raise DataError(f"{ds.name}: no speaker ids (the file has no 'extra/speaker'), cannot make speaker folds")
    folds = []
    for s in np.unique(ds.speakers):
        in_fold = ds.speakers == s
        folds.append((int(s), np.flatnonzero(~in_fold), np.flatnonzero(in_fold)))
    return folds

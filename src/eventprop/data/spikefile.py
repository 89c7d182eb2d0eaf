"""A simple file format for your own spike data (``.npz`` or ``.h5``).

One file holds one labelled set of samples as flat arrays (one entry per spike or per sample):

=============  ==========  ================================================================
array          per         meaning
=============  ==========  ================================================================
``times``      spike       spike time in ms (float, finite, >= 0), relative to sample start
``units``      spike       input channel (integer, 0 <= unit < n_units)
``sample``     spike       index of the sample the spike belongs to (0 <= sample < n_samples)
``labels``     sample      class (integer, 0 <= label < n_classes); n_samples = len(labels)
``speakers``   sample      optional integer group id (e.g. speaker, for leave-one-out folds)
``n_units``    scalar      optional; default max(units) + 1
``n_classes``  scalar      optional; default max(labels) + 1
``class_names`` class      optional strings
=============  ==========  ================================================================

Spikes may come in any order; they are grouped by ``sample`` (keeping their order within a
sample). Integer-valued float arrays are accepted for the integer fields. ``.npz`` files are
read with ``allow_pickle=False`` (object arrays are refused); ``.h5``/``.hdf5`` files hold the
same names as top-level datasets. Any missing array, wrong shape or out-of-range value raises
:class:`DataError` naming the file and the array.

Writing: :func:`save_spikes` writes this format atomically (temp file, then rename), choosing
``.npz`` or ``.h5`` by the suffix of ``path``.

Loading: :func:`load_spikes` takes a single file (its samples become ``train``; ``test`` is
None) or a folder with ``train.npz`` (or ``train.h5``), optionally ``test.*`` and ``val.*``.
``n_val > 0`` takes a seeded random validation subset from ``train`` instead of a ``val`` file.
All sets of a folder share one ``n_units``/``n_classes`` (the largest given or inferred).

Example::

    np.savez("mine.npz", times=t_ms, units=ch, sample=sample_of_spike, labels=y, n_units=64)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..events import EventDataset
from ._common import atomic_path, split_validation

H5_SUFFIXES = (".h5", ".hdf5")
SUFFIXES = (".npz",) + H5_SUFFIXES
REQUIRED = ("times", "units", "sample", "labels")
OPTIONAL = ("speakers", "n_units", "n_classes", "class_names")


def _read_raw(path: Path) -> dict:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown spike file type; expected one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = {}
    if suffix == ".npz":
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise DataError(f"{path}: not a readable .npz file (it is not a zip archive)")
        try:
            with np.load(path, allow_pickle=False) as z:
                for k in REQUIRED + OPTIONAL:
                    if k in z.files:
                        raw[k] = z[k]
        except ValueError as e:
            raise DataError(f"{path}: cannot read the .npz file (object arrays are not allowed): {e}") from None
        except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, ... on malformed files
            raise DataError(f"{path}: not a readable .npz file (truncated or another format?): {e}") from None
    else:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                for k in REQUIRED + OPTIONAL:
                    if k in f:
                        if not isinstance(f[k], h5py.Dataset):
                            raise DataError(f"{path}: '{k}' is a group, expected a dataset")
                        raw[k] = f[k][()]
        except DataError:
            raise
        except (OSError, RuntimeError, TypeError, ValueError) as e:
            raise DataError(f"{path}: not a readable HDF5 file (truncated or another format?): {e}") from None
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise DataError(f"{path}: missing array{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                        f"(a spike file needs {', '.join(REQUIRED)})")
    return raw


def _ints(a, path: Path, key: str, ndim: int = 1) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim:
        raise DataError(f"{path}: '{key}' must be {'a scalar' if ndim == 0 else f'{ndim}-D'}, found shape {a.shape}")
    if a.dtype.kind in "iu" or a.dtype.kind == "b":
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        if np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            return a.astype(np.int64)
        raise DataError(f"{path}: '{key}' must hold integers, found non-integer values")
    raise DataError(f"{path}: '{key}' must hold integers, found dtype {a.dtype}")


def _parse(raw: dict, path: Path) -> dict:
    """Validate raw arrays; returns a dict of clean arrays plus given/inferred sizes."""
    times = np.asarray(raw["times"])
    if times.ndim != 1:
        raise DataError(f"{path}: 'times' must be 1-D, found shape {times.shape}")
    if times.dtype.kind not in "iuf":
        raise DataError(f"{path}: 'times' must be numbers (ms), found dtype {times.dtype}")
    times = times.astype(np.float64)
    units = _ints(raw["units"], path, "units")
    sample = _ints(raw["sample"], path, "sample")
    labels = _ints(raw["labels"], path, "labels")
    if not (len(times) == len(units) == len(sample)):
        raise DataError(f"{path}: 'times', 'units' and 'sample' must have equal lengths, "
                        f"found {len(times)}, {len(units)}, {len(sample)}")
    n = len(labels)
    if len(times):
        if not np.all(np.isfinite(times)):
            raise DataError(f"{path}: 'times' contains NaN or infinite values")
        if times.min() < 0:
            raise DataError(f"{path}: negative spike time {times.min():g} ms in 'times'; expected >= 0")
        if units.min() < 0:
            raise DataError(f"{path}: negative channel {int(units.min())} in 'units'")
        if sample.min() < 0 or sample.max() >= n:
            bad = int(sample.min()) if sample.min() < 0 else int(sample.max())
            raise DataError(f"{path}: 'sample' index {bad} out of range; 'labels' has {n} samples")
    if n and labels.min() < 0:
        raise DataError(f"{path}: negative label {int(labels.min())} in 'labels'")
    speakers = None
    if "speakers" in raw:
        speakers = _ints(raw["speakers"], path, "speakers")
        if len(speakers) != n:
            raise DataError(f"{path}: 'speakers' has {len(speakers)} entries but 'labels' has {n}")
    out = {"times": times, "units": units, "sample": sample, "labels": labels, "speakers": speakers}
    for key, data in (("n_units", units), ("n_classes", labels)):
        inferred = int(data.max()) + 1 if len(data) else 1
        if key in raw:
            given = int(_ints(raw[key], path, key, ndim=0))
            if given < inferred or given < 1:
                what = "channel" if key == "n_units" else "label"
                raise DataError(f"{path}: '{key}' = {given} but the file has {what} {inferred - 1}")
            out[key], out[key + "_given"] = given, True
        else:
            out[key], out[key + "_given"] = inferred, False
    names = []
    if "class_names" in raw:
        cn = np.atleast_1d(np.asarray(raw["class_names"]))
        names = [c.decode("utf-8", "replace") if isinstance(c, bytes | np.bytes_) else str(c) for c in cn]
    out["class_names"] = names
    return out


def _build(p: dict, name: str, n_units: int, n_classes: int) -> EventDataset:
    order = np.argsort(p["sample"], kind="stable")
    n = len(p["labels"])
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n:
        np.cumsum(np.bincount(p["sample"], minlength=n), out=offsets[1:])
    names = p["class_names"] if len(p["class_names"]) == n_classes else []
    return EventDataset(p["times"][order], p["units"][order], offsets, p["labels"], n_units, n_classes,
                        p["speakers"], name, names)


def read_spikes(path: str | os.PathLike, name: str | None = None) -> EventDataset:
    """Read one spike file (see the module docstring) into an :class:`EventDataset`."""
    path = Path(path)
    p = _parse(_read_raw(path), path)
    return _build(p, name or path.stem, p["n_units"], p["n_classes"])


def save_spikes(path: str | os.PathLike, ds: EventDataset) -> None:
    """Write ``ds`` in the spike file format (``.npz`` or ``.h5`` by suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: spike files must end in one of {', '.join(SUFFIXES)}")
    arrays = {
        "times": ds.times_ms(),
        "units": ds.units,
        "sample": np.repeat(np.arange(len(ds), dtype=np.int64), np.diff(ds.offsets)),
        "labels": ds.labels,
        "n_units": np.int64(ds.n_units),
        "n_classes": np.int64(ds.n_classes),
    }
    if ds.speakers is not None:
        arrays["speakers"] = ds.speakers
    if ds.class_names:
        arrays["class_names"] = np.array([str(c) for c in ds.class_names], dtype=np.str_)
    with atomic_path(path) as tmp:
        if suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                for k, v in arrays.items():
                    if k == "class_names":
                        f.create_dataset(k, data=np.array([c.encode("utf-8") for c in ds.class_names]))
                    else:
                        f.create_dataset(k, data=v)


def _find(folder: Path, stem: str) -> Path | None:
    hits = [folder / (stem + s) for s in SUFFIXES if (folder / (stem + s)).is_file()]
    if len(hits) > 1:
        raise DataError(f"{folder}: both {hits[0].name} and {hits[1].name} exist; keep one")
    return hits[0] if hits else None


def load_spikes(path: str | os.PathLike, *, n_val: int = 0, seed: int = 0) -> dict:
    """Load spike files: ``{"train", "val", "test"}`` of :class:`EventDataset` (or None).

    ``path`` is a single file (``test`` = None) or a folder with ``train``/``val``/``test``
    files (see the module docstring).
    """
    if path is None:
        raise ConfigError("the 'spikes' dataset needs a path to a spike file or a folder of them")
    path = Path(path).expanduser()
    if path.is_dir():
        files = {"train": _find(path, "train"), "val": _find(path, "val") or _find(path, "valid"),
                 "test": _find(path, "test")}
        if files["train"] is None:
            raise DataError(f"{path}: no train.npz or train.h5 in this folder")
    elif path.exists():
        files = {"train": path, "val": None, "test": None}
    else:
        raise DataError(f"{path}: file or folder not found")
    if files["val"] is not None and int(n_val) > 0:
        raise ConfigError(f"{path}: has a {files['val'].name} file, so n_val must be 0 (got {n_val})")
    parsed = {k: _parse(_read_raw(f), f) for k, f in files.items() if f is not None}
    sizes = {}
    for key in ("n_units", "n_classes"):
        given = {int(p[key]) for p in parsed.values() if p[key + "_given"]}
        if len(given) > 1:
            raise DataError(f"{path}: the files disagree on {key} ({', '.join(map(str, sorted(given)))})")
        sizes[key] = max(p[key] for p in parsed.values())
        if given and sizes[key] > max(given):
            raise DataError(f"{path}: a file needs {key} >= {sizes[key]} but another file sets {key} = {max(given)}")
    stem = path.name if path.is_dir() else path.stem
    out = {k: (None if k not in parsed else _build(parsed[k], f"{stem}-{k}", sizes["n_units"], sizes["n_classes"]))
           for k in ("train", "val", "test")}
    if files["val"] is None:
        out["train"], out["val"] = split_validation(out["train"], n_val, seed)
    return out

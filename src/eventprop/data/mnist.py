"""Latency-encoded MNIST and Fashion-MNIST from the standard IDX files.

Files (gzipped ``.gz`` or not), as distributed by LeCun et al. and by Zalando Research::

    train-images-idx3-ubyte[.gz]   train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]    t10k-labels-idx1-ubyte[.gz]

IDX layout (big-endian): two zero bytes, a type byte (``0x08`` = unsigned byte), a byte with the
number of dimensions, one uint32 per dimension, then the data. Image files are
``(n, 28, 28)``, label files ``(n,)``; anything else (wrong magic, dimensions, counts, a
truncated or over-long file, labels outside 0..9) raises :class:`DataError` naming the file.

Folder: the ``path`` argument; else ``$EVENTPROP_DATA/mnist`` (``fashion_mnist`` for
Fashion-MNIST); else ``~/.cache/eventprop/mnist``. Missing files are downloaded when
``download=True`` (MNIST: the PyTorch S3 mirror, then Google's CVDF mirror; Fashion-MNIST:
Zalando's S3 bucket), checked against the published MD5 sums and written atomically. If that
fails a :class:`DataError` says which file is missing where.

Encoding (Nowotny et al. 2025, Fig. 1): pixel ``i`` (row-major, channel ``i`` of 784) with grey
level ``x > 1`` fires one spike at ::

    t = (255 - x) / 255 * (T - 4 dt) + 2 dt    [ms]

with ``T = trial_ms`` (default 20) and ``dt = dt_ms`` (default 1), so spikes lie in
``[2 dt, T - 2 dt]``; pixels with ``x <= 1`` are silent. Dark (high) pixels fire first.
Within a sample the spikes are in channel order, not time order.

The optional validation set (``n_val`` > 0, e.g. 5000 for the paper's 55000/5000 split) is a
seeded random subset of the training images.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..events import EventDataset
from ._common import DownloadFailed, existing_folder, split_validation
from ._common import download as _download

N_PIXELS = 28 * 28

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: Download addresses (base URLs, tried in order) per dataset.
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion_mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}

#: Published MD5 sums of the gzipped files.
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}


# --------------------------------------------------------------------------------------------
# IDX files


def read_idx(path: str | os.PathLike, ndim: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzipped if the name ends in ``.gz``) into a uint8 array.

    ``ndim`` is the expected number of dimensions; ``shape`` optionally fixes the trailing
    dimensions (e.g. ``(28, 28)`` for images). Raises :class:`DataError` naming the file.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: truncated or corrupt gzip data ({e or type(e).__name__})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from None
    return parse_idx(raw, ndim, shape, str(path))


def parse_idx(raw: bytes, ndim: int, shape: tuple[int, ...] | None, name: str) -> np.ndarray:
    """Parse the bytes of an unsigned-byte IDX file; see :func:`read_idx`."""
    if len(raw) < 4:
        raise DataError(f"{name}: truncated IDX file ({len(raw)} bytes, no header)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        magic = int.from_bytes(raw[:4], "big")
        raise DataError(
            f"{name}: bad magic number 0x{magic:08X}; expected 0x{0x800 + ndim:08X} "
            f"(an unsigned-byte IDX file with {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    if raw[3] != ndim:
        raise DataError(f"{name}: IDX file has {raw[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX header ({len(raw)} bytes, expected at least {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if shape is not None and dims[1:] != tuple(shape):
        raise DataError(f"{name}: items have shape {dims[1:]}, expected {tuple(shape)}")
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) < expected:
        raise DataError(f"{name}: truncated: {len(raw)} bytes, expected {expected} for dimensions {dims}")
    if len(raw) > expected:
        raise DataError(f"{name}: {len(raw) - expected} unexpected trailing bytes after the data (dimensions {dims})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


# --------------------------------------------------------------------------------------------
# encoding


def latency_encode(images: np.ndarray, labels: np.ndarray, trial_ms: float = 20.0, dt_ms: float = 1.0,
                   name: str = "mnist", class_names: list[str] | None = None) -> EventDataset:
    """Latency-encode uint8 images ``(n, ...)`` (flattened row-major) as in the module docstring."""
    trial_ms, dt_ms = float(trial_ms), float(dt_ms)
    if not (np.isfinite(trial_ms) and np.isfinite(dt_ms) and dt_ms > 0 and trial_ms >= 4 * dt_ms):
        raise ConfigError(
            f"latency encoding needs dt_ms > 0 and trial_ms >= 4 * dt_ms, got trial_ms={trial_ms}, dt_ms={dt_ms}"
        )
    images = np.asarray(images)
    n = images.shape[0]
    flat = images.reshape(n, int(np.prod(images.shape[1:], dtype=np.int64)))
    n_units = flat.shape[1]
    mask = flat > 1
    counts = np.count_nonzero(mask, axis=1)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat_idx = np.flatnonzero(mask)  # row-major: sample-major, then pixel order
    units = (flat_idx % n_units).astype(np.int32)
    grey = flat.ravel()[flat_idx]
    # lookup table: one multiply per grey level rather than per spike
    lut = (255.0 - np.arange(256, dtype=np.float64)) / 255.0 * (trial_ms - 4 * dt_ms) + 2 * dt_ms
    times = lut[grey]
    return EventDataset(times, units, offsets, np.asarray(labels, dtype=np.int64), n_units, 10,
                        name=name, class_names=list(class_names or CLASS_NAMES["mnist"]))


# --------------------------------------------------------------------------------------------
# files and download


def _find_or_fetch(folder: Path, base: str, key: str, download_ok: bool) -> Path:
    for cand in (folder / base, folder / (base + ".gz")):
        if cand.is_file():
            return cand
    label = "Fashion-MNIST" if key == "fashion_mnist" else "MNIST"
    if not download_ok:
        raise DataError(
            f"{label} file {base}[.gz] is missing in {folder} (download=False); put the IDX files there "
            f"or point path / ${{EVENTPROP_DATA}} at the folder holding them"
        )
    gz = base + ".gz"
    dest = folder / gz
    try:
        _download([m + gz for m in MIRRORS[key]], dest, MD5[key].get(gz))
    except DownloadFailed as e:
        raise DataError(
            f"{label} file {base}[.gz] is missing in {folder} and the download failed ({e}); "
            f"copy the IDX files into that folder"
        ) from None
    except OSError as e:
        raise DataError(f"{label} file {base}[.gz] is missing in {folder} and cannot be written there ({e})") from None
    return dest


def load_mnist(path: str | os.PathLike | None = None, *, fashion: bool = False, trial_ms: float = 20.0,
               dt_ms: float = 1.0, n_val: int = 0, seed: int = 0, download: bool = True,
               limit_train: int | None = None, limit_test: int | None = None) -> dict:
    """Load latency-encoded MNIST (or Fashion-MNIST with ``fashion=True``).

    Returns ``{"train": EventDataset, "val": EventDataset or None, "test": EventDataset}`` with
    784 channels and 10 classes. ``limit_train`` / ``limit_test`` keep only the first images
    (before the validation split). See the module docstring for folders and encoding.
    """
    key = "fashion_mnist" if fashion else "mnist"
    folder = existing_folder(key, path)
    out: dict = {}
    for split, limit in (("train", limit_train), ("test", limit_test)):
        img_path = _find_or_fetch(folder, FILES[f"{split}_images"], key, download)
        lab_path = _find_or_fetch(folder, FILES[f"{split}_labels"], key, download)
        images = read_idx(img_path, 3, (28, 28))
        labels = read_idx(lab_path, 1)
        if len(images) != len(labels):
            raise DataError(f"{img_path}: {len(images)} images but {lab_path.name} has {len(labels)} labels")
        if len(labels) and labels.max() > 9:
            raise DataError(f"{lab_path}: label {int(labels.max())} out of range; expected 0..9")
        if limit is not None:
            if int(limit) < 0:
                raise ConfigError(f"limit_{split} must be >= 0, got {limit}")
            images, labels = images[: int(limit)], labels[: int(limit)]
        out[split] = latency_encode(images, labels, trial_ms, dt_ms, name=f"{key}-{split}",
                                    class_names=CLASS_NAMES[key])
    out["train"], out["val"] = split_validation(out["train"], n_val, seed)
    return {"train": out["train"], "val": out["val"], "test": out["test"]}

"""Datasets as ragged spike events, and augmentations on them.

Every loader returns ``{"train": EventDataset, "val": EventDataset or None, "test": EventDataset
or None}`` with spike times in ms. :func:`load_dataset` picks a loader by name:

* ``yinyang``: generated from ``seed``; 5 channels, 3 classes (:func:`load_yinyang`);
* ``mnist``, ``fashion_mnist``: IDX files, latency code; 784 channels, 10 classes
  (:func:`load_mnist`);
* ``shd``, ``ssc``: the official HDF5 files; 700 channels, 20 / 35 classes (:func:`load_shd`);
* ``spikes``: your own ``.npz``/``.h5`` spike files (:func:`load_spikes`).

Augmentations (:mod:`eventprop.data.augment`): :func:`id_jitter`, :func:`random_shift`,
:func:`random_dilate`, :func:`blend`, :func:`delay_line`.

Data folders: ``path`` if given, else ``$EVENTPROP_DATA/<name>``, else
``~/.cache/eventprop/<name>``. See each module's docstring for file formats and encodings.
"""

from __future__ import annotations

import inspect
import os

from ..errors import ConfigError, DataError
from .augment import blend, delay_line, id_jitter, random_dilate, random_shift
from .mnist import latency_encode, load_mnist, read_idx
from .shd import load_shd, read_hsd_file, speaker_folds
from .spikefile import load_spikes, read_spikes, save_spikes
from .yinyang import encode_yinyang, load_yinyang, yinyang_class, yinyang_points

DATASETS = ("yinyang", "mnist", "fashion_mnist", "shd", "ssc", "spikes")

__all__ = [
    "DATASETS",
    "load_dataset",
    "load_yinyang",
    "yinyang_points",
    "yinyang_class",
    "encode_yinyang",
    "load_mnist",
    "read_idx",
    "latency_encode",
    "load_shd",
    "read_hsd_file",
    "speaker_folds",
    "load_spikes",
    "read_spikes",
    "save_spikes",
    "id_jitter",
    "random_shift",
    "random_dilate",
    "blend",
    "delay_line",
]


def _extra_options(fn, fixed: set[str]) -> set[str]:
    return {p for p in inspect.signature(fn).parameters if p not in fixed}


def load_dataset(name: str, path: str | os.PathLike | None = None, *, trial_ms: float, dt_ms: float,
                 n_val: int = 0, seed: int = 0, download: bool = True, **kwargs) -> dict:
    """Load dataset ``name`` (one of :data:`DATASETS`); returns ``{"train", "val", "test"}``.

    ``n_val``: for ``mnist``, ``fashion_mnist``, ``shd`` and ``spikes`` a seeded random
    validation subset taken out of the training set (0 = none); for ``yinyang`` the size of a
    separately generated validation set (0 = none); for ``ssc`` the official validation split
    is always returned and ``n_val > 0`` keeps a random subset of it. ``trial_ms``/``dt_ms`` set
    the MNIST latency code and bound the Yin-Yang spike times; event datasets (SHD, SSC, spike
    files) are binned later, so they ignore them. Extra keyword arguments go to the loader
    (e.g. ``limit_train`` for MNIST, ``n_train``/``t_min``/``t_max`` for Yin-Yang).
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if key == "yinyang":
        fn, fixed = load_yinyang, {"seed", "n_val"}
    elif key in ("mnist", "fashion_mnist"):
        fn, fixed = load_mnist, {"path", "fashion", "trial_ms", "dt_ms", "n_val", "seed", "download"}
    elif key in ("shd", "ssc"):
        fn, fixed = load_shd, {"path", "ssc", "n_val", "seed", "download"}
    else:
        fn, fixed = load_spikes, {"path", "n_val", "seed"}
    allowed = _extra_options(fn, fixed)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for dataset {key!r}; "
            f"valid: {', '.join(sorted(allowed)) or 'none'}"
        )
    if key == "yinyang":
        out = load_yinyang(seed=seed, n_val=n_val, **kwargs)
        latest = max((d.times_ms().max() for d in out.values() if d is not None and len(d.times)), default=0.0)
        if latest >= trial_ms:
            raise ConfigError(f"Yin-Yang spikes reach {latest:g} ms but trial_ms = {trial_ms}; lower t_max")
        return out
    if key in ("mnist", "fashion_mnist"):
        return load_mnist(path, fashion=key == "fashion_mnist", trial_ms=trial_ms, dt_ms=dt_ms, n_val=n_val,
                          seed=seed, download=download, **kwargs)
    if key in ("shd", "ssc"):
        return load_shd(path, ssc=key == "ssc", n_val=n_val, seed=seed, download=download)
    return load_spikes(path, n_val=n_val, seed=seed)

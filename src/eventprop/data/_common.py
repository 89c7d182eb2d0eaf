"""Shared helpers for the dataset readers: data folders, atomic writes, downloads with
checksums, seeded validation splits and ragged-array plumbing.

Nothing here is part of the public API; the readers re-export what users need.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import ConfigError, DataError
from ..events import EventDataset

#: Environment variable naming the root folder of all datasets (``<root>/<name>``).
DATA_ENV = "EVENTPROP_DATA"

#: Seconds to wait on a network connection before giving up.
DOWNLOAD_TIMEOUT_S = 30.0


def data_folder(name: str, path: str | os.PathLike | None) -> Path:
    """The folder holding dataset ``name``.

    ``path`` if given; else ``$EVENTPROP_DATA/<name>``; else ``~/.cache/eventprop/<name>``.
    """
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser() / name
    return Path("~/.cache/eventprop").expanduser() / name


def existing_folder(name: str, path: str | os.PathLike | None) -> Path:
    """:func:`data_folder`, refusing an explicit ``path`` that does not exist (one line): only the
    cache folders (``$EVENTPROP_DATA/<name>``, ``~/.cache/eventprop/<name>``) are ever created, by
    a download, so a mistyped data.path is reported instead of made."""
    folder = data_folder(name, path)
    if path is not None and not folder.exists():
        cache = data_folder(name, None)
        raise DataError(f"data folder {str(path)!r} does not exist (data.path / --data); create it to download "
                        f"{name} there, or leave data.path unset to use the download cache {cache}")
    return folder


# --------------------------------------------------------------------------------------------
# atomic writes


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success rename it onto ``dest``.

    On any exception the temporary file is removed and ``dest`` is left untouched, so a killed
    or failed write never leaves a half-written file under the final name.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_copy_stream(src: BinaryIO, dest: str | os.PathLike) -> None:
    """Copy a binary stream into ``dest`` atomically."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        shutil.copyfileobj(src, f, length=1 << 20)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------
# downloads


class DownloadFailed(Exception):
    """A download did not succeed (network error or checksum mismatch); message says why."""


def md5sum(path: str | os.PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_text(url: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Fetch a small text resource; raises DownloadFailed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DownloadFailed(f"{url}: {_reason(e)}") from None


def download(urls: Sequence[str], dest: str | os.PathLike, md5: str | None = None,
             timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download the first URL of ``urls`` that works into ``dest`` (atomically).

    If ``md5`` is given the downloaded bytes must match it, else the next URL is tried.
    Raises :class:`DownloadFailed` naming every URL tried and why it failed.
    """
    errors = []
    for url in urls:
        try:
            with atomic_path(dest) as tmp:
                with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f, length=1 << 20)
                    f.flush()
                    os.fsync(f.fileno())
                if md5 is not None:
                    got = md5sum(tmp)
                    if got != md5.lower():
                        raise DownloadFailed(f"MD5 checksum mismatch (got {got}, expected {md5})")
            return
        except DownloadFailed as e:
            errors.append(f"{url}: {e}")
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {_reason(e)}")
    raise DownloadFailed("; ".join(errors) if errors else "no download address known")


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


# --------------------------------------------------------------------------------------------
# splits and ragged helpers


def check_n_val(n_val: int, n: int, what: str) -> int:
    n_val = int(n_val)
    if n_val < 0:
        raise ConfigError(f"n_val must be >= 0, got {n_val}")
    if n_val >= n and n_val > 0:
        raise DataError(f"{what}: n_val = {n_val} leaves no training samples (the set has {n})")
    return n_val


def split_validation(ds: EventDataset, n_val: int, seed: int) -> tuple[EventDataset, EventDataset | None]:
    """Seeded random split of ``ds`` into (train, val) with ``n_val`` validation samples.

    Both parts keep the original sample order. ``n_val = 0`` returns ``(ds, None)``.
    """
    n_val = check_n_val(n_val, len(ds), ds.name)
    if n_val == 0:
        return ds, None
    perm = np.random.default_rng(seed).permutation(len(ds))
    val_idx = np.sort(perm[:n_val])
    train_idx = np.sort(perm[n_val:])
    return ds.subset(train_idx, name=ds.name), ds.subset(val_idx, name=_val_name(ds.name))


def _val_name(name: str) -> str:
    return name[: -len("train")] + "val" if name.endswith("train") else name + "-val"


def sample_ids(offsets: np.ndarray) -> np.ndarray:
    """Sample index of every spike of a ragged dataset."""
    offsets = np.asarray(offsets, dtype=np.int64)
    return np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))


def offsets_from_ids(ids: np.ndarray, n_samples: int) -> np.ndarray:
    """Offsets of a ragged dataset whose spikes carry (sorted) sample ids ``ids``."""
    offsets = np.zeros(n_samples + 1, dtype=np.int64)
    if n_samples:
        np.cumsum(np.bincount(ids, minlength=n_samples), out=offsets[1:])
    return offsets


def with_events(ds: EventDataset, times: np.ndarray, units: np.ndarray, ids: np.ndarray,
                keep: np.ndarray | None = None, n_units: int | None = None) -> EventDataset:
    """A copy of ``ds`` with new per-spike ``times``/``units`` (sample ids ``ids``, sorted),
    keeping only spikes where ``keep`` is true. Labels, speakers and names are kept; ``times`` are
    in ds's time representation when they are ds's own (integer ticks), else in ms."""
    time_unit = ds.time_unit if np.asarray(times).dtype.kind in "iu" else None
    if keep is not None:
        times, units, ids = times[keep], units[keep], ids[keep]
    return EventDataset(
        times=times,
        units=units,
        offsets=offsets_from_ids(ids, len(ds)),
        labels=ds.labels.copy(),
        n_units=ds.n_units if n_units is None else int(n_units),
        n_classes=ds.n_classes,
        speakers=None if ds.speakers is None else ds.speakers.copy(),
        name=ds.name,
        class_names=list(ds.class_names),
        time_unit=time_unit,
    )


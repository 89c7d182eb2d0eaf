"""Spike data containers: ragged event datasets and per-batch spike structures on the dt grid.

Whole datasets are kept as ragged arrays (one flat ``times``/``units`` array plus per-sample
``offsets``); they are never dense over time x channels. A minibatch is turned on the fly into a
:class:`SpikeBatch`, a per-step CSR structure: the input spikes of sample ``b`` in step ``n`` are
``units[ptr[b, n]:ptr[b, n + 1]]``.

Binning convention: a spike at time ``t`` (ms) falls in step ``n = floor(t / dt)`` (with a 1e-9
tolerance, so that grid-aligned times such as 0.3 ms at dt = 0.1 ms land in their own step) and reaches its
targets at ``t_n = n * dt``, the start of that step. Spikes with ``n >= n_steps`` (after the trial
end T = n_steps * dt) are cropped. At most one spike per (unit, step) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DataError


@dataclass
class EventDataset:
    """A labelled spike dataset held as ragged arrays.

    times:    float64 or float32 (total_spikes,), spike times in ms, relative to the sample start;
              or, when ``time_unit`` is set, integer ticks: t = times * time_unit ms.
    units:    int32 or uint16 (total_spikes,), input channel of each spike, in [0, n_units).
    offsets:  int64 (n_samples + 1,), sample i owns times[offsets[i]:offsets[i + 1]].
    labels:   int64 (n_samples,), class of each sample, in [0, n_classes).
    n_units:  number of input channels.
    n_classes: number of classes.
    speakers: optional int64 (n_samples,), speaker id (for leave-one-speaker-out folds).
    name:     a short name for messages.
    time_unit: None (times in ms) or the length of one tick in ms (times are integer ticks). A
              dataset made by :meth:`on_grid` holds step indices (uint16) and channels (uint16):
              4 bytes per spike, and it is its own binned form (nothing is copied to train on it).
    """

    times: np.ndarray
    units: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    n_units: int
    n_classes: int
    speakers: np.ndarray | None = None
    name: str = "dataset"
    class_names: list[str] = field(default_factory=list)
    time_unit: float | None = None

    def __post_init__(self) -> None:
        t = np.asarray(self.times)
        if self.time_unit is None:
            self.times = np.ascontiguousarray(t, dtype=np.float32 if t.dtype == np.float32 else np.float64)
        else:
            if t.dtype.kind not in "iu":
                raise DataError(f"{self.name}: with time_unit set, times must be integer ticks, found {t.dtype}")
            self.time_unit = float(self.time_unit)
            self.times = np.ascontiguousarray(t)
        u = np.asarray(self.units)
        self.units = np.ascontiguousarray(u, dtype=np.uint16 if u.dtype == np.uint16 else np.int32)
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        self.labels = np.ascontiguousarray(self.labels, dtype=np.int64)
        if self.speakers is not None:
            self.speakers = np.ascontiguousarray(self.speakers, dtype=np.int64)
        self.validate()

    def validate(self) -> None:
        n = len(self.labels)
        if self.offsets.shape != (n + 1,):
            raise DataError(f"{self.name}: offsets has shape {self.offsets.shape}, expected ({n + 1},)")
        if self.times.shape != self.units.shape or self.times.ndim != 1:
            raise DataError(f"{self.name}: times and units must be 1-D arrays of equal length")
        if n and (self.offsets[0] != 0 or self.offsets[-1] != len(self.times) or np.any(np.diff(self.offsets) < 0)):
            raise DataError(f"{self.name}: offsets must rise from 0 to the number of spikes")
        if len(self.times):
            if self.time_unit is None and not np.all(np.isfinite(self.times)):
                raise DataError(f"{self.name}: spike times contain NaN or infinite values")
            if self.times.min() < 0:
                raise DataError(f"{self.name}: negative spike time {self.times.min():g} ms; expected times >= 0")
            if self.units.min() < 0 or self.units.max() >= self.n_units:
                raise DataError(
                    f"{self.name}: spike unit {int(self.units.min()) if self.units.min() < 0 else int(self.units.max())} "
                    f"out of range; expected 0 <= unit < {self.n_units}"
                )
        if n and (self.labels.min() < 0 or self.labels.max() >= self.n_classes):
            bad = int(self.labels.min()) if self.labels.min() < 0 else int(self.labels.max())
            raise DataError(f"{self.name}: label {bad} out of range; expected 0 <= label < {self.n_classes}")
        if self.speakers is not None and self.speakers.shape != (n,):
            raise DataError(f"{self.name}: speakers has shape {self.speakers.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Spike times (ms, float64) and units of sample i."""
        a, b = self.offsets[i], self.offsets[i + 1]
        t = self.times[a:b]
        return (t * self.time_unit if self.time_unit is not None else t.astype(np.float64, copy=False)), self.units[a:b]

    def times_ms(self) -> np.ndarray:
        """All spike times in ms as float64 (a view when they are held that way)."""
        if self.time_unit is not None:
            return self.times * self.time_unit
        return self.times.astype(np.float64, copy=False)

    def nbytes(self) -> int:
        """Memory held by the spike arrays (times, units, offsets)."""
        return int(self.times.nbytes + self.units.nbytes + self.offsets.nbytes)

    def on_grid(self, dt: float, n_steps: int) -> "EventDataset":
        """This dataset binned onto the grid (see the module docstring) and held compactly: step
        indices as ticks of ``dt`` and channels, 16 bits each where they fit (4 bytes per spike
        instead of 12, and no separate binned copy for training). Sub-step timing is dropped: the
        engine only sees the step of a spike anyway, but augmentations that move spikes in time
        (dilate, blend) then work on step-start times."""
        steps, units, offsets = _bin(self, float(dt), int(n_steps))
        ds = EventDataset(steps, units, offsets, self.labels.copy(), self.n_units, self.n_classes,
                          None if self.speakers is None else self.speakers.copy(), self.name,
                          list(self.class_names), time_unit=float(dt))
        return ds.mark_on_grid(int(n_steps))

    def mark_on_grid(self, n_steps: int) -> "EventDataset":
        """Declare that this dataset is binned on the grid of its ``time_unit`` with ``n_steps``
        steps (steps < n_steps, sorted by step then unit, one spike per (unit, step)), so that it
        is used as its own binned form. (Subsets keep the mark.)"""
        if self.time_unit is None:
            raise ValueError("only a dataset of integer ticks (time_unit set) can be on the grid")
        self.__dict__["_grid_n_steps"] = int(n_steps)
        return self

    def subset(self, idx: np.ndarray, name: str | None = None) -> "EventDataset":
        """A new dataset holding samples ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        counts = self.offsets[idx + 1] - self.offsets[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        gather = _ragged_gather(self.offsets, idx, offsets[-1])
        return EventDataset(
            times=self.times[gather],
            units=self.units[gather],
            offsets=offsets,
            labels=self.labels[idx],
            n_units=self.n_units,
            n_classes=self.n_classes,
            speakers=None if self.speakers is None else self.speakers[idx],
            name=name or self.name,
            class_names=list(self.class_names),
            time_unit=self.time_unit,
        )._keep_grid_mark(self)

    def _keep_grid_mark(self, parent: "EventDataset") -> "EventDataset":
        if "_grid_n_steps" in parent.__dict__:
            self.__dict__["_grid_n_steps"] = parent.__dict__["_grid_n_steps"]
        return self

    def spikes_per_sample(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_lists(cls, times, units, labels, n_units, n_classes, speakers=None, name="dataset", class_names=None):
        """Build from per-sample lists of time and unit arrays."""
        if len(times) != len(units) or len(times) != len(labels):
            raise DataError(f"{name}: times, units and labels must have the same number of samples")
        counts = np.array([len(t) for t in times], dtype=np.int64)
        for t, u in zip(times, units):
            if len(t) != len(u):
                raise DataError(f"{name}: a sample has {len(t)} times but {len(u)} units")
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        cat_t = np.concatenate([np.asarray(t, dtype=np.float64) for t in times]) if len(times) else np.zeros(0)
        cat_u = np.concatenate([np.asarray(u, dtype=np.int64) for u in units]) if len(units) else np.zeros(0, np.int64)
        return cls(cat_t, cat_u, offsets, np.asarray(labels), n_units, n_classes, speakers, name, list(class_names or []))


def _ragged_gather(offsets: np.ndarray, idx: np.ndarray, total: int) -> np.ndarray:
    """Flat indices of the events of samples ``idx``, in order."""
    starts = offsets[idx]
    counts = offsets[idx + 1] - starts
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # position within each sample's run, then add that sample's start
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + (np.arange(total, dtype=np.int64) - run_start)


@dataclass
class SpikeBatch:
    """Input spikes of a minibatch on the dt grid, as per-step CSR.

    ptr:    int64 (B, n_steps + 1); the spikes of sample b in step n are units[ptr[b, n]:ptr[b, n+1]].
    units:  int32 (total,), input unit indices.
    labels: int64 (B,).
    n_steps, dt: grid; the trial lasts T = n_steps * dt ms.
    """

    ptr: np.ndarray
    units: np.ndarray
    labels: np.ndarray
    n_steps: int
    dt: float
    input_delays: np.ndarray | None = None  # ms per network input, when built with learned input delays

    @property
    def batch_size(self) -> int:
        return self.ptr.shape[0]

    def counts(self) -> np.ndarray:
        """Input spikes per sample."""
        return self.ptr[:, -1] - self.ptr[:, 0]


def bin_events(
    times: np.ndarray, units: np.ndarray, n_units: int, dt: float, n_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bin one sample's events onto the grid: returns (steps, units), sorted by step then unit,
    cropped to [0, n_steps), with duplicate (unit, step) pairs removed."""
    steps = np.floor(np.asarray(times, dtype=np.float64) / dt + 1e-9).astype(np.int64)
    u = np.asarray(units, dtype=np.int64)
    keep = (steps >= 0) & (steps < n_steps) & (u >= 0) & (u < n_units)
    key = np.unique(steps[keep] * n_units + u[keep])  # sorted, de-duplicated
    return key // n_units, (key % n_units).astype(np.int32)


def binned(ds: EventDataset, dt: float, n_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dataset binned onto the grid (cached on the dataset): (steps, units, offsets), each
    sample sorted by step then unit, cropped to [0, n_steps), one spike per (unit, step)."""
    grid_n = ds.__dict__.get("_grid_n_steps")
    if grid_n is not None and ds.time_unit == float(dt) and grid_n <= n_steps:
        return ds.times, ds.units, ds.offsets  # already binned on this grid
    cache = ds.__dict__.setdefault("_binned", {})
    key = (float(dt), int(n_steps))
    if key not in cache:
        cache.clear()
        cache[key] = _bin(ds, float(dt), int(n_steps))
    return cache[key]


def _bin(ds: EventDataset, dt: float, n_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """bin_all on a dataset, steps and units as uint16 where they fit."""
    from ._binning import bin_all

    n = len(ds.times)
    small_s = n_steps <= 65536
    small_u = ds.n_units <= 65536
    out_s = np.empty(n, dtype=np.uint16 if small_s else np.int32)
    out_u = np.empty(n, dtype=np.uint16 if small_u else np.int32)
    scale = 1.0 if ds.time_unit is None else ds.time_unit
    pos, offsets = bin_all(ds.times, ds.units, ds.offsets, scale, dt, n_steps, ds.n_units, out_s, out_u)
    if pos < n:  # (crop or duplicates removed)
        out_s, out_u = out_s[:pos].copy(), out_u[:pos].copy()
    return out_s, out_u, offsets


def make_batch(
    ds: EventDataset,
    idx: np.ndarray,
    dt: float,
    n_steps: int,
    dropout: float = 0.0,
    rng: np.random.Generator | None = None,
    delay_copies: int = 1,
    delay_ms: float = 0.0,
    unit_shift: np.ndarray | None = None,
    input_delays: np.ndarray | None = None,
) -> SpikeBatch:
    """Turn samples ``idx`` of a ragged dataset into a :class:`SpikeBatch`.

    ``dropout`` removes each input spike independently with that probability (training only),
    using ``rng``. ``delay_copies > 1`` builds the published version's delay-line input on the
    fly: copy c of channel x is unit c * n_units + x and carries the same spikes delayed by
    c * delay_ms (rounded to whole steps; spikes pushed past the trial end are dropped), so the
    network sees n_units * delay_copies inputs without the dataset being copied.
    ``unit_shift`` (one integer per sample of ``idx``) moves each sample's channels, dropping
    spikes that leave [0, n_units): the shift augmentation applied while gathering, so that no
    shifted copy of the dataset (or its binning) is made each epoch. ``input_delays`` (ms, one
    per network input, i.e. n_units * delay_copies) delays each input's spikes by that time,
    rounded to whole steps (learned input delays; the batch remembers them).
    """
    from ._binning import gather_batch

    idx = np.ascontiguousarray(idx, dtype=np.int64)
    steps, units, offsets = binned(ds, dt, n_steps)
    n_ev = int((offsets[idx + 1] - offsets[idx]).sum())
    if dropout > 0.0:
        if rng is None:
            raise ValueError("dropout needs an rng")
        keep = (rng.random(n_ev) >= dropout).astype(np.uint8)
    else:
        keep = np.ones(n_ev, dtype=np.uint8)
    if unit_shift is None:
        shifts = np.zeros(len(idx), dtype=np.int64)
    else:
        shifts = np.ascontiguousarray(unit_shift, dtype=np.int64)
        if shifts.shape != idx.shape:
            raise ValueError(f"unit_shift has shape {shifts.shape}, expected one shift per sample {idx.shape}")
    if input_delays is None:
        unit_delay = np.zeros(0, dtype=np.int64)
    else:
        input_delays = np.asarray(input_delays, dtype=np.float64)
        if input_delays.shape != (ds.n_units * delay_copies,) or not np.all(np.isfinite(input_delays)) \
                or np.any(input_delays < 0):
            raise DataError(f"input_delays: expected {ds.n_units * delay_copies} finite delays >= 0 ms, "
                            f"got shape {input_delays.shape}")
        unit_delay = np.rint(input_delays / dt).astype(np.int64)
    ptr, out = gather_batch(steps, units, offsets, idx, keep, shifts, int(n_steps), int(delay_copies),
                            int(round(delay_ms / dt)), int(ds.n_units), unit_delay)
    return SpikeBatch(ptr=ptr, units=out, labels=ds.labels[idx].copy(), n_steps=n_steps, dt=dt,
                      input_delays=None if input_delays is None else input_delays.copy())


def batch_from_arrays(step_lists: list[tuple[np.ndarray, np.ndarray]], labels, n_steps: int, dt: float) -> SpikeBatch:
    """Build a SpikeBatch from per-sample (steps, units) arrays already on the grid (used in tests)."""
    B = len(step_lists)
    ptr = np.zeros((B, n_steps + 1), dtype=np.int64)
    parts = []
    total = 0
    for j, (steps, uu) in enumerate(step_lists):
        steps = np.asarray(steps, dtype=np.int64)
        uu = np.asarray(uu, dtype=np.int32)
        order = np.lexsort((uu, steps))
        steps, uu = steps[order], uu[order]
        counts = np.bincount(steps, minlength=n_steps)[:n_steps]
        ptr[j, 0] = total
        np.cumsum(counts, out=ptr[j, 1:])
        ptr[j, 1:] += total
        total += len(uu)
        parts.append(uu)
    units = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
    return SpikeBatch(ptr, units, np.asarray(labels, dtype=np.int64), n_steps, dt)

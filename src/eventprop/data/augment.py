"""Training-set augmentations on ragged spike data (Nowotny et al. 2025, after their ``utils.py``).

Every function takes an :class:`EventDataset` and returns a new one; the input is never
modified. Random draws come from the ``numpy.random.Generator`` passed in, so a fixed seed
gives the same result. The caller re-draws them every epoch, on the training set only.

Spikes pushed outside the channel range ``[0, n_units)`` (or below time 0) are dropped; spikes
after the trial end are left for the binning step to crop, unless a function takes ``t_max``.
Labels, speakers, names and the sample order are kept, except for :func:`blend`, which appends
new samples.

=====================  ==================================================================
function               effect
=====================  ==================================================================
``id_jitter``          per spike: unit += round(N(0, sigma))
``random_shift``       per sample: all units += s, s an integer uniform in [-f, f]
``random_dilate``      per sample: all times *= a factor uniform in [scale_min, scale_max]
``blend``              append mixtures of same-class samples, aligned in time and channel
``delay_line``         n_copies delayed copies of every channel (the published SHD input)
=====================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError
from ..events import EventDataset, _ragged_gather
from ._common import sample_ids, with_events


def _need_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ConfigError("augmentations need a numpy.random.Generator (rng=np.random.default_rng(seed))")
    return rng


def id_jitter(ds: EventDataset, sigma: float, rng: np.random.Generator) -> EventDataset:
    """Move every spike to channel ``unit + round(N(0, sigma))``; drop spikes leaving [0, n_units).

    Rounding is to the nearest integer (halves to even). ``sigma = 0`` returns an equal copy.
    """
    rng = _need_rng(rng)
    sigma = float(sigma)
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"id_jitter sigma must be >= 0, got {sigma}")
    units = ds.units.astype(np.int64) + np.rint(rng.normal(0.0, sigma, size=len(ds.units))).astype(np.int64)
    keep = (units >= 0) & (units < ds.n_units)
    return with_events(ds, ds.times, units, sample_ids(ds.offsets), keep)


def random_shift(ds: EventDataset, f_shift: int, rng: np.random.Generator) -> EventDataset:
    """Shift all channels of each sample by one integer drawn uniformly from [-f_shift, f_shift].

    Both ends are included. (The authors' code truncates a float draw from U(-f, f) towards 0,
    so 0 is twice as likely as other shifts and +-f never occurs; we use the documented inclusive
    integer draw instead.) Spikes shifted outside [0, n_units) are dropped.
    """
    rng = _need_rng(rng)
    f = int(f_shift)
    if f < 0 or f != f_shift:
        raise ConfigError(f"random_shift needs an integer f_shift >= 0, got {f_shift}")
    shift = rng.integers(-f, f + 1, size=len(ds))
    from .._binning import shift_units  # one pass (the SHD train set has ~70 M spikes)

    times, units, offsets = shift_units(ds.times, ds.units, ds.offsets, shift, ds.n_units)
    return EventDataset(times=times, units=units, offsets=offsets, labels=ds.labels.copy(), n_units=ds.n_units,
                        n_classes=ds.n_classes, speakers=None if ds.speakers is None else ds.speakers.copy(),
                        name=ds.name, class_names=list(ds.class_names), time_unit=ds.time_unit)


def random_dilate(ds: EventDataset, scale_min: float, scale_max: float, rng: np.random.Generator,
                  *, log_uniform: bool = False, t_max: float | None = None) -> EventDataset:
    """Multiply the spike times of each sample by a factor drawn uniformly from
    [scale_min, scale_max] (``log_uniform=True``: exp of a uniform draw in [ln min, ln max], as
    the authors' code does). With ``t_max``, spikes at ``t >= t_max`` are dropped.
    """
    rng = _need_rng(rng)
    lo, hi = float(scale_min), float(scale_max)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
        raise ConfigError(f"random_dilate needs 0 < scale_min <= scale_max, got {scale_min}, {scale_max}")
    if log_uniform:
        factor = np.exp(rng.uniform(np.log(lo), np.log(hi), size=len(ds)))
    else:
        factor = rng.uniform(lo, hi, size=len(ds))
    ids = sample_ids(ds.offsets)
    times = ds.times_ms() * factor[ids]
    keep = None if t_max is None else times < float(t_max)
    return with_events(ds, times, ds.units, ids, keep)


def _sample_means(ds: EventDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample spike count, mean time and mean channel (0 for empty samples)."""
    counts = np.diff(ds.offsets)
    ids = sample_ids(ds.offsets)
    denom = np.maximum(counts, 1)
    mean_t = np.bincount(ids, weights=ds.times_ms(), minlength=len(ds)) / denom
    mean_u = np.bincount(ids, weights=ds.units.astype(np.float64), minlength=len(ds)) / denom
    return counts, mean_t, mean_u


def blend(ds: EventDataset, n_new: int, probs: Sequence[float] = (0.5, 0.5), rng: np.random.Generator | None = None,
          *, t_max: float | None = None) -> EventDataset:
    """Return ``ds`` followed by ``n_new`` new samples, each a blend of ``len(probs)`` samples
    of one class.

    For each new sample: a random sample of ``ds`` is picked and its class taken; ``len(probs)``
    samples of that class are drawn with replacement; each is shifted in time (by a real
    amount) and in channel (by an integer, rounded) so that its mean spike time and mean
    channel equal the mean of those means over the drawn samples; each spike of drawn sample
    ``i`` is kept with probability ``probs[i]``; the kept spikes are merged and sorted by time.
    Spikes pushed outside [0, n_units) or before time 0 (or to ``t_max`` and later, if given)
    are dropped.
    Empty drawn samples contribute nothing and do not enter the means. New samples get
    speaker -1 (if ``ds`` has speakers). The original samples come first and are unchanged.
    """
    rng = _need_rng(rng)
    n_new = int(n_new)
    p = np.asarray(probs, dtype=np.float64).ravel()
    if n_new < 0:
        raise ConfigError(f"blend n_new must be >= 0, got {n_new}")
    if len(p) == 0 or not np.all((p >= 0) & (p <= 1)):
        raise ConfigError(f"blend probs must be probabilities in [0, 1], got {list(probs)}")
    if n_new == 0 or len(ds) == 0:
        return _concat(ds, [], [], np.zeros(1, np.int64), np.zeros(0, np.int64))
    k = len(p)
    counts, mean_t, mean_u = _sample_means(ds)

    # choose the samples: class of a random sample, then k random members of that class
    order = np.argsort(ds.labels, kind="stable")
    class_start = np.searchsorted(ds.labels[order], np.arange(ds.n_classes + 1))
    pick = rng.integers(0, len(ds), size=n_new)
    cls = ds.labels[pick]
    size = (class_start[cls + 1] - class_start[cls])[:, None]
    drawn = order[class_start[cls][:, None] + np.floor(rng.random((n_new, k)) * size).astype(np.int64)]  # (n_new, k)

    # alignment targets: mean over the non-empty drawn samples of their means
    nonempty = counts[drawn] > 0
    n_ok = np.maximum(nonempty.sum(axis=1), 1)
    target_t = (mean_t[drawn] * nonempty).sum(axis=1) / n_ok
    target_u = (mean_u[drawn] * nonempty).sum(axis=1) / n_ok
    shift_t = target_t[:, None] - mean_t[drawn]  # (n_new, k)
    shift_u = np.rint(target_u[:, None] - mean_u[drawn]).astype(np.int64)

    # gather the spikes of the drawn samples, a block of new samples at a time (bounded
    # memory; each block is sorted on its own, which is cheaper than one global sort)
    t_parts, u_parts, count_parts = [], [], []
    spikes_per_new = counts[drawn].sum(axis=1)
    block_end = np.cumsum(spikes_per_new)
    budget = 4_000_000  # spikes per block
    a = 0
    while a < n_new:
        base = block_end[a - 1] if a else 0
        b = max(a + 1, int(np.searchsorted(block_end, base + budget, side="right")))
        idx = drawn[a:b].ravel()
        c = counts[idx]
        g = _ragged_gather(ds.offsets, idx, int(c.sum()))
        t = ds.times[g] * (ds.time_unit or 1.0) + np.repeat(shift_t[a:b].ravel(), c)
        u = ds.units[g].astype(np.int64) + np.repeat(shift_u[a:b].ravel(), c)
        local = np.repeat(np.arange(b - a, dtype=np.int64), spikes_per_new[a:b])
        keep = (rng.random(len(g)) < np.repeat(np.tile(p, b - a), c)) & (u >= 0) & (u < ds.n_units) & (t >= 0)
        if t_max is not None:
            keep &= t < float(t_max)
        t, u, local = t[keep], u[keep], local[keep]
        o = np.lexsort((t, local))  # by new sample, then time (stable: ties keep draw order)
        t_parts.append(t[o])
        u_parts.append(u[o].astype(np.int32))
        count_parts.append(np.bincount(local, minlength=b - a))
        a = b
    new_counts = np.concatenate(count_parts)
    new_offsets = np.zeros(n_new + 1, dtype=np.int64)
    np.cumsum(new_counts, out=new_offsets[1:])
    return _concat(ds, np.concatenate(t_parts), np.concatenate(u_parts), new_offsets, cls)


def _concat(ds: EventDataset, t, u, new_offsets: np.ndarray, new_labels: np.ndarray) -> EventDataset:
    n_new = len(new_labels)
    offsets = np.concatenate([ds.offsets, ds.offsets[-1] + new_offsets[1:]])
    speakers = None
    if ds.speakers is not None:
        speakers = np.concatenate([ds.speakers, np.full(n_new, -1, dtype=np.int64)])
    return EventDataset(
        times=np.concatenate([ds.times_ms(), np.asarray(t, dtype=np.float64)]),
        units=np.concatenate([ds.units, np.asarray(u, dtype=np.int32)]),
        offsets=offsets,
        labels=np.concatenate([ds.labels, np.asarray(new_labels, dtype=np.int64)]),
        n_units=ds.n_units,
        n_classes=ds.n_classes,
        speakers=speakers,
        name=ds.name,
        class_names=list(ds.class_names),
    )


def delay_line(ds: EventDataset, n_copies: int, delay_ms: float) -> EventDataset:
    """Delay-line input: ``n_copies`` copies of every channel, copy ``c`` delayed by ``c * delay_ms``.

    The result has ``n_units * n_copies`` channels; copy ``c`` of channel ``x`` is channel
    ``c * n_units + x`` (copy 0 is the original, undelayed). Every sample gets exactly
    ``n_copies`` times its spikes (copy by copy); nothing is cropped here, spikes delayed past
    the trial end are cropped when binned. The published SHD model uses 11 copies 30 ms apart
    (the authors' ``N_INPUT_DELAY = 10`` counts only the delayed copies).

    Memory: the result holds ``n_copies`` times the spikes. For a large set (SHD train with 11
    copies is ~10 GB) apply it per minibatch, to ``ds.subset(batch_idx)``, instead.
    """
    n_copies = int(n_copies)
    delay_ms = float(delay_ms)
    if n_copies < 1:
        raise ConfigError(f"delay_line needs n_copies >= 1, got {n_copies}")
    if not (np.isfinite(delay_ms) and delay_ms >= 0):
        raise ConfigError(f"delay_line needs delay_ms >= 0, got {delay_ms}")
    counts = np.diff(ds.offsets)
    ids = sample_ids(ds.offsets)
    # destination of copy c of spike j (position `within` in sample i):
    #   n_copies * offsets[i] + c * count_i + within
    base = n_copies * ds.offsets[ids] + (np.arange(len(ds.times), dtype=np.int64) - ds.offsets[ids])
    step = counts[ids]
    del ids
    times = np.empty(len(ds.times) * n_copies, dtype=np.float64)
    units = np.empty(len(ds.times) * n_copies, dtype=np.int32)
    for c in range(n_copies):
        dest = base + c * step
        times[dest] = ds.times_ms() + c * delay_ms
        units[dest] = ds.units + c * ds.n_units
    return EventDataset(
        times=times,
        units=units,
        offsets=ds.offsets * n_copies,
        labels=ds.labels.copy(),
        n_units=ds.n_units * n_copies,
        n_classes=ds.n_classes,
        speakers=None if ds.speakers is None else ds.speakers.copy(),
        name=ds.name,
        class_names=list(ds.class_names),
    )

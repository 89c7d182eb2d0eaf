"""Augmentations: properties on random ragged datasets, plus exact small cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventprop.data import blend, delay_line, id_jitter, random_dilate, random_shift
from eventprop.errors import UserError
from eventprop.events import EventDataset

SETTINGS = dict(max_examples=50, deadline=None)


@st.composite
def datasets(draw, min_samples=0, with_speakers=None):
    n = draw(st.integers(min_samples, 6))
    n_units = draw(st.integers(1, 25))
    n_classes = draw(st.integers(1, 4))
    times, units = [], []
    for _ in range(n):
        k = draw(st.integers(0, 12))
        times.append(draw(st.lists(st.floats(0, 500, allow_nan=False), min_size=k, max_size=k)))
        units.append(draw(st.lists(st.integers(0, n_units - 1), min_size=k, max_size=k)))
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    spk = with_speakers if with_speakers is not None else draw(st.booleans())
    speakers = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)) if spk else None
    return EventDataset.from_lists(times, units, labels, n_units, n_classes, speakers, "aug", [])


def in_range(ds: EventDataset):
    if len(ds.times):
        assert ds.units.min() >= 0 and ds.units.max() < ds.n_units and ds.times.min() >= 0


def assert_same(a: EventDataset, b: EventDataset):
    assert np.array_equal(a.times, b.times) and np.array_equal(a.units, b.units)
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.labels, b.labels)


def unchanged_meta(ds, out):
    assert len(out) == len(ds) and np.array_equal(out.labels, ds.labels) and out.n_units == ds.n_units
    assert (ds.speakers is None) == (out.speakers is None)


def frozen(ds):
    return ds.times.copy(), ds.units.copy(), ds.offsets.copy()


def not_modified(ds, before):
    assert np.array_equal(ds.times, before[0]) and np.array_equal(ds.units, before[1])
    assert np.array_equal(ds.offsets, before[2])


# ---------------------------------------------------------------------------------------------
# id_jitter


@settings(**SETTINGS)
@given(ds=datasets(), sigma=st.floats(0, 10), seed=st.integers(0, 2**32 - 1))
def test_id_jitter_property(ds, sigma, seed):
    before = frozen(ds)
    out = id_jitter(ds, sigma, np.random.default_rng(seed))
    not_modified(ds, before)
    unchanged_meta(ds, out)
    in_range(out)
    assert np.all(out.spikes_per_sample() <= ds.spikes_per_sample())
    for i in range(len(ds)):  # kept spikes keep their time and order
        t_out, t_in = out.sample(i)[0], ds.sample(i)[0]
        pos = 0
        for t in t_out:
            while t_in[pos] != t:
                pos += 1
            pos += 1
    assert_same(out, id_jitter(ds, sigma, np.random.default_rng(seed)))


def test_id_jitter_zero_and_statistics():
    ds = EventDataset.from_lists([np.arange(20000.0)], [np.full(20000, 500)], [0], 1000, 1)
    assert_same(ds, id_jitter(ds, 0.0, np.random.default_rng(0)))
    out = id_jitter(ds, 3.0, np.random.default_rng(1))
    d = out.units - 500
    assert abs(d.mean()) < 0.1 and abs(d.std() - 3.0) < 0.1 and np.all(d == np.round(d))


# ---------------------------------------------------------------------------------------------
# random_shift


@settings(**SETTINGS)
@given(ds=datasets(), f=st.integers(0, 30), seed=st.integers(0, 2**32 - 1))
def test_random_shift_property(ds, f, seed):
    out = random_shift(ds, f, np.random.default_rng(seed))
    unchanged_meta(ds, out)
    in_range(out)
    assert np.all(out.spikes_per_sample() <= ds.spikes_per_sample())
    assert_same(out, random_shift(ds, f, np.random.default_rng(seed)))
    if f == 0:
        assert_same(out, ds)


def test_random_shift_is_one_inclusive_integer_per_sample():
    n = 400
    ds = EventDataset.from_lists([np.array([1.0, 2.0, 3.0])] * n, [np.array([10, 11, 15])] * n, [0] * n, 30, 1)
    out = random_shift(ds, 2, np.random.default_rng(0))
    assert np.all(out.spikes_per_sample() == 3)
    shifts = out.units.reshape(n, 3) - np.array([10, 11, 15])
    assert np.all(shifts == shifts[:, :1])  # one shift per sample
    assert set(np.unique(shifts)) == {-2, -1, 0, 1, 2}  # both ends reachable
    # shifted out of range -> dropped
    edge = EventDataset.from_lists([np.array([1.0, 2.0])] * 50, [np.array([0, 4])] * 50, [0] * 50, 5, 1)
    out = random_shift(edge, 3, np.random.default_rng(1))
    assert out.spikes_per_sample().min() < 2 and out.units.max() < 5
    with pytest.raises(UserError):
        random_shift(ds, -1, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# random_dilate


@settings(**SETTINGS)
@given(ds=datasets(), lo=st.floats(0.5, 1.5), width=st.floats(0, 1), seed=st.integers(0, 2**32 - 1),
       log_uniform=st.booleans())
def test_random_dilate_property(ds, lo, width, seed, log_uniform):
    hi = lo + width
    out = random_dilate(ds, lo, hi, np.random.default_rng(seed), log_uniform=log_uniform)
    unchanged_meta(ds, out)
    in_range(out)
    assert np.array_equal(out.offsets, ds.offsets) and np.array_equal(out.units, ds.units)
    for i in range(len(ds)):
        t0, t1 = ds.sample(i)[0], out.sample(i)[0]
        pos = t0 > 1e-3
        if pos.any():
            r = t1[pos] / t0[pos]
            assert np.allclose(r, r[0]) and lo * (1 - 1e-12) <= r[0] <= hi * (1 + 1e-12)
    cropped = random_dilate(ds, lo, hi, np.random.default_rng(seed), t_max=300.0)
    assert np.all(cropped.spikes_per_sample() <= ds.spikes_per_sample())
    if len(cropped.times):
        assert cropped.times.max() < 300.0
    assert_same(out, random_dilate(ds, lo, hi, np.random.default_rng(seed), log_uniform=log_uniform))


def test_random_dilate_bad_args():
    ds = EventDataset.from_lists([[1.0]], [[0]], [0], 1, 1)
    with pytest.raises(UserError):
        random_dilate(ds, 0.0, 1.0, np.random.default_rng(0))
    with pytest.raises(UserError):
        random_dilate(ds, 2.0, 1.0, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# blend


@settings(**SETTINGS)
@given(ds=datasets(min_samples=1), n_new=st.integers(0, 8),
       probs=st.lists(st.floats(0, 1), min_size=1, max_size=3), seed=st.integers(0, 2**32 - 1))
def test_blend_property(ds, n_new, probs, seed):
    before = frozen(ds)
    out = blend(ds, n_new, probs, np.random.default_rng(seed))
    not_modified(ds, before)
    n = len(ds)
    assert len(out) == n + n_new and out.n_units == ds.n_units and out.n_classes == ds.n_classes
    assert_same(out.subset(np.arange(n)), ds)  # originals first and unchanged
    in_range(out)
    new = out.subset(np.arange(n, n + n_new))
    assert set(new.labels.tolist()) <= set(ds.labels.tolist())
    for i in range(len(new)):
        assert np.all(np.diff(new.sample(i)[0]) >= 0)  # merged and sorted by time
    if ds.speakers is not None:
        assert np.array_equal(out.speakers[:n], ds.speakers) and np.all(out.speakers[n:] == -1)
    assert_same(out, blend(ds, n_new, probs, np.random.default_rng(seed)))


def test_blend_alignment_exact():
    # one sample per class: with probs (1, 1) a blend is that sample twice, with no shift
    a = (np.array([1.0, 3.0, 8.0]), np.array([2, 5, 5]))
    b = (np.array([10.0, 20.0]), np.array([7, 8]))
    ds = EventDataset.from_lists([a[0], b[0]], [a[1], b[1]], [0, 1], 10, 2, speakers=[4, 5])
    out = blend(ds, 6, (1.0, 1.0), rng=np.random.default_rng(0))
    for i in range(2, 8):
        t, u = out.sample(i)
        src = a if out.labels[i] == 0 else b
        assert np.array_equal(t, np.repeat(src[0], 2)) and sorted(u.tolist()) == sorted(np.repeat(src[1], 2).tolist())
    # two class members: each is moved so its mean time/channel is the average of the two means
    c = (np.array([0.0, 2.0]), np.array([0, 2]))  # mean t 1, mean unit 1
    d = (np.array([10.0, 12.0]), np.array([6, 8]))  # mean t 11, mean unit 7 -> target 6, 4
    ds = EventDataset.from_lists([c[0], d[0]], [c[1], d[1]], [0, 0], 10, 1)
    out = blend(ds, 40, (1.0, 1.0), rng=np.random.default_rng(0))
    seen = set()
    for i in range(2, 42):
        t, u = out.sample(i)
        case = (tuple(t.tolist()), tuple(sorted(u.tolist())))
        assert case in {
            ((0.0, 0.0, 2.0, 2.0), (0, 0, 2, 2)),  # c drawn twice: no shift
            ((10.0, 10.0, 12.0, 12.0), (6, 6, 8, 8)),  # d drawn twice
            ((5.0, 5.0, 7.0, 7.0), (3, 3, 5, 5)),  # c and d, both moved to mean t 6, mean unit 4
        }
        seen.add(case)
    assert len(seen) == 3
    # probabilities thin the spikes
    out = blend(ds, 200, (0.5, 0.5), rng=np.random.default_rng(0))
    assert abs(out.spikes_per_sample()[2:].mean() - 2.0) < 0.3
    with pytest.raises(UserError):
        blend(ds, 1, (1.5,), rng=np.random.default_rng(0))
    with pytest.raises(UserError):
        blend(ds, 1)  # no rng


# ---------------------------------------------------------------------------------------------
# delay_line


@settings(**SETTINGS)
@given(ds=datasets(), n_copies=st.integers(1, 5), delay=st.floats(0, 100))
def test_delay_line_property(ds, n_copies, delay):
    out = delay_line(ds, n_copies, delay)
    assert out.n_units == ds.n_units * n_copies and len(out) == len(ds)
    assert np.array_equal(out.spikes_per_sample(), n_copies * ds.spikes_per_sample())
    in_range(out)
    for i in range(len(ds)):
        t0, u0 = ds.sample(i)
        t1, u1 = out.sample(i)
        k = len(t0)
        for c in range(n_copies):
            assert np.array_equal(u1[c * k:(c + 1) * k], u0 + c * ds.n_units)
            np.testing.assert_allclose(t1[c * k:(c + 1) * k], t0 + c * delay)
    if n_copies == 1:
        assert_same(out, ds)


"""Batching: the numba binning/gathering kernels against the plain NumPy definition."""

import numpy as np
from hypothesis import given, settings, strategies as st

from eventprop.events import EventDataset, bin_events, make_batch


def random_ds(seed, n=12, n_units=9, T=30.0):
    rng = np.random.default_rng(seed)
    times, units = [], []
    for _ in range(n):
        k = rng.integers(0, 40)
        t = rng.uniform(0, T * 1.2, k)
        t[: k // 3] = np.round(t[: k // 3])  # exact bin edges too
        times.append(t)
        units.append(rng.integers(0, n_units, k))
    return EventDataset.from_lists(times, units, rng.integers(0, 3, n), n_units, 3)


def unpack(batch, j):
    steps = np.repeat(np.arange(batch.n_steps), np.diff(batch.ptr[j]))
    return steps, batch.units[batch.ptr[j, 0]:batch.ptr[j, -1]]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), dt=st.sampled_from([0.5, 1.0, 2.0]), n_steps=st.integers(1, 40))
def test_make_batch_matches_definition(seed, dt, n_steps):
    ds = random_ds(seed)
    idx = np.random.default_rng(seed).permutation(len(ds))[:7]
    b = make_batch(ds, idx, dt, n_steps)
    assert b.ptr.shape == (7, n_steps + 1)
    for j, i in enumerate(idx):
        s_ref, u_ref = bin_events(*ds.sample(i), ds.n_units, dt, n_steps)
        s, u = unpack(b, j)
        np.testing.assert_array_equal(s, s_ref)
        np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(b.labels, ds.labels[idx])


def test_delay_line_batches():
    ds = random_ds(3)
    b = make_batch(ds, np.arange(5), 1.0, 30, delay_copies=3, delay_ms=4.0)
    for j in range(5):
        s0, u0 = bin_events(*ds.sample(j), ds.n_units, 1.0, 30)
        S = np.concatenate([s0 + 4 * c for c in range(3)])
        U = np.concatenate([u0 + ds.n_units * c for c in range(3)])
        keep = S < 30
        key = np.sort(S[keep] * 100 + U[keep])
        s, u = unpack(b, j)
        np.testing.assert_array_equal(s * 100 + u, key)  # sorted by step, then unit


def test_dropout_keeps_a_seeded_subset():
    ds = random_ds(5, n=40)
    full = make_batch(ds, np.arange(40), 1.0, 30)
    a = make_batch(ds, np.arange(40), 1.0, 30, dropout=0.5, rng=np.random.default_rng(1))
    b = make_batch(ds, np.arange(40), 1.0, 30, dropout=0.5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a.units, b.units)
    assert 0.3 * len(full.units) < len(a.units) < 0.7 * len(full.units)
    for j in range(40):
        s, u = unpack(a, j)
        fs, fu = unpack(full, j)
        assert set(zip(s, u)) <= set(zip(fs, fu))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), f=st.integers(0, 12))
def test_random_shift_kernel_matches_numpy_definition(seed, f):
    from eventprop.data import random_shift

    ds = random_ds(seed)
    out = random_shift(ds, f, np.random.default_rng(seed))
    shift = np.random.default_rng(seed).integers(-f, f + 1, size=len(ds))  # the same draw
    ids = np.repeat(np.arange(len(ds)), np.diff(ds.offsets))
    units = ds.units.astype(np.int64) + shift[ids]
    keep = (units >= 0) & (units < ds.n_units)
    np.testing.assert_array_equal(out.units, units[keep])
    np.testing.assert_array_equal(out.times, ds.times[keep])
    np.testing.assert_array_equal(np.diff(out.offsets), np.bincount(ids[keep], minlength=len(ds)))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), f=st.integers(0, 12), copies=st.sampled_from([1, 3]))
def test_shift_while_gathering_equals_shifted_dataset(seed, f, copies):
    """The trainer's shift applied in the batch kernel gives the batch of the shifted dataset."""
    from eventprop.data import random_shift

    ds = random_ds(seed)
    shifted = random_shift(ds, f, np.random.default_rng(seed))
    shifts = np.random.default_rng(seed).integers(-f, f + 1, size=len(ds))  # the same draw
    idx = np.random.default_rng(seed + 1).permutation(len(ds))[:7]
    a = make_batch(shifted, idx, 1.0, 30, delay_copies=copies, delay_ms=4.0)
    b = make_batch(ds, idx, 1.0, 30, delay_copies=copies, delay_ms=4.0, unit_shift=shifts[idx])
    np.testing.assert_array_equal(a.ptr - a.ptr[0, 0], b.ptr - b.ptr[0, 0])
    np.testing.assert_array_equal(a.units, b.units)


def test_on_grid_dataset_is_compact_and_gives_the_same_batches():
    from eventprop.data import random_dilate

    ds = random_ds(11, n=30)
    g = ds.on_grid(1.0, 30)
    assert g.times.dtype == np.uint16 and g.units.dtype == np.uint16 and g.time_unit == 1.0
    assert g.times.nbytes + g.units.nbytes == 4 * len(g.times)
    idx = np.arange(30)[::-1]
    for copies in (1, 3):
        a = make_batch(ds, idx, 1.0, 30, delay_copies=copies, delay_ms=4.0)
        b = make_batch(g, idx, 1.0, 30, delay_copies=copies, delay_ms=4.0)
        np.testing.assert_array_equal(a.ptr, b.ptr)
        np.testing.assert_array_equal(a.units, b.units)
    # the on-grid dataset is used as it is (no binned copy), and its subsets too
    from eventprop.events import binned

    assert binned(g, 1.0, 30)[0] is g.times
    sub = g.subset(np.array([4, 2]))
    assert binned(sub, 1.0, 30)[0] is sub.times
    # a coarser grid or a shorter trial re-bins from the step-start times
    np.testing.assert_array_equal(make_batch(g, idx, 2.0, 15).units, make_batch(ds.on_grid(1.0, 30), idx, 2.0, 15).units)
    # times come out in ms
    t, u = g.sample(3)
    s_ref, u_ref = bin_events(*ds.sample(3), ds.n_units, 1.0, 30)
    assert t.dtype == np.float64
    np.testing.assert_array_equal(t, s_ref * 1.0)
    np.testing.assert_array_equal(u, u_ref)
    d = random_dilate(g, 2.0, 2.0, np.random.default_rng(0))  # works on ms, not on ticks
    np.testing.assert_allclose(d.sample(3)[0], 2.0 * t)

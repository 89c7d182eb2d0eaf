"""Yin-Yang generation and encoding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventprop.data import encode_yinyang, load_yinyang, yinyang_class, yinyang_points
from eventprop.errors import UserError


def test_sizes_names_and_channels():
    d = load_yinyang(seed=3, n_train=300, n_val=50, n_test=40)
    assert [len(d[k]) for k in ("train", "val", "test")] == [300, 50, 40]
    for ds in d.values():
        assert ds.n_units == 5 and ds.n_classes == 3
        assert ds.class_names == ["yin", "yang", "dot"]
        assert np.all(ds.spikes_per_sample() == 5)
        for i in range(len(ds)):
            assert sorted(ds.sample(i)[1].tolist()) == [0, 1, 2, 3, 4]


def test_default_sizes():
    d = load_yinyang()
    assert [len(d[k]) for k in ("train", "val", "test")] == [5000, 1000, 1000]
    # balanced classes (rejection sampling against a uniformly drawn goal class)
    counts = np.bincount(d["train"].labels, minlength=3)
    assert np.all(np.abs(counts - 5000 / 3) < 150)


def test_no_validation_set():
    assert load_yinyang(n_train=10, n_val=0, n_test=10)["val"] is None


def test_encoding_matches_points():
    d = load_yinyang(seed=1, n_train=200, n_val=0, n_test=1, t_min=2.0, t_max=27.0)["train"]
    for i in range(len(d)):
        t, u = d.sample(i)
        by_unit = dict(zip(u.tolist(), t.tolist()))
        v = (np.array([by_unit[c] for c in range(4)]) - 2.0) / 25.0
        assert v[0] + v[2] == pytest.approx(1.0) and v[1] + v[3] == pytest.approx(1.0)
        assert by_unit[4] == 2.0  # bias at t_min
        assert yinyang_class(v[0], v[1]) == d.labels[i]
        assert np.hypot(v[0] - 0.5, v[1] - 0.5) <= 0.5 + 1e-9
        assert np.all(np.diff(t) >= 0)  # time-sorted within a sample


def test_geometry_of_original():
    # dots, and the two halves away from the dots
    assert yinyang_class(0.75, 0.5) == 2 and yinyang_class(0.25, 0.5) == 2
    assert yinyang_class(0.5, 0.9) == 1  # upper half, far from the right dot
    assert yinyang_class(0.5, 0.1) == 0  # lower half, far from the left dot
    assert yinyang_class(0.75, 0.63) == 0  # disc around the right dot (minus the dot) is class 0
    assert yinyang_class(0.25, 0.37) == 1  # disc around the left dot (minus the dot) is class 1


def test_seeded_and_split_independent():
    a = load_yinyang(seed=5, n_train=100, n_val=20, n_test=20)
    b = load_yinyang(seed=5, n_train=100, n_val=20, n_test=20)
    c = load_yinyang(seed=6, n_train=100, n_val=20, n_test=20)
    assert np.array_equal(a["train"].times, b["train"].times)
    assert not np.array_equal(a["train"].times, c["train"].times)
    # a split depends only on the seed and its own size
    d = load_yinyang(seed=5, n_train=50, n_val=20, n_test=20)
    assert np.array_equal(a["test"].times, d["test"].times)
    assert not np.array_equal(a["train"].times[:100], a["test"].times[:100])


def test_bad_times():
    with pytest.raises(UserError):
        load_yinyang(n_train=5, t_min=10.0, t_max=5.0)


@settings(max_examples=60, deadline=None)
@given(
    xy=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=0, max_size=20),
    t_min=st.floats(0, 10),
    span=st.floats(0, 50),
    t_bias=st.one_of(st.none(), st.floats(0, 60)),
)
def test_encoder_property(xy, t_min, span, t_bias):
    xy = np.array(xy, dtype=float).reshape(-1, 2)
    labels = np.zeros(len(xy), dtype=int)
    ds = encode_yinyang(xy, labels, t_min, t_min + span, t_bias)
    assert len(ds) == len(xy) and len(ds.times) == 5 * len(xy)
    if len(xy):
        assert ds.units.min() >= 0 and ds.units.max() < 5
        data = ds.times[ds.units < 4]
        assert data.min() >= t_min - 1e-9 and data.max() <= t_min + span + 1e-9
        bias = ds.times[ds.units == 4]
        assert np.all(bias == (t_min if t_bias is None else t_bias))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 60), seed=st.integers(0, 2**32 - 1))
def test_points_property(n, seed):
    xy, labels = yinyang_points(n, np.random.default_rng(seed))
    assert xy.shape == (n, 2) and labels.shape == (n,)
    assert np.all((xy >= 0) & (xy < 1))
    assert np.array_equal(yinyang_class(xy[:, 0], xy[:, 1]), labels)
    xy2, labels2 = yinyang_points(n, np.random.default_rng(seed))
    assert np.array_equal(xy, xy2) and np.array_equal(labels, labels2)

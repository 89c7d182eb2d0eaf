"""The Yin-Yang dataset (Kriener, Göltz & Petrovici 2021), generated from a seed; no download.

Geometry (as in the original ``YinYangDataset``, big radius ``R = 0.5``, small radius
``r = 0.1``): points ``(x, y)`` are drawn uniformly in the square ``[0, 2R)^2 = [0, 1)^2`` and
kept only inside the big circle of radius ``R`` around ``(R, R)``. With ``d_r`` and ``d_l`` the
distances to the right dot centre ``(1.5 R, R)`` and the left dot centre ``(0.5 R, R)``:

* label 2 (``"dot"``): ``d_r < r`` or ``d_l < r``;
* label 1: ``d_r <= r``, or ``r < d_l <= R/2``, or ``y > R`` and ``d_r > R/2``;
* label 0: every other point inside the circle.

Labels 0/1/2 are the original code's numbering (class names ``["yin", "yang", "dot"]`` in that
order), so results are comparable with published Yin-Yang numbers.

Class balance follows the original's rejection sampling: each sample first draws its goal class
uniformly from {0, 1, 2}, then points are drawn until one of that class turns up. (We draw the
candidate points in vectorised batches, so the random stream differs from the original code.)

Spike encoding (time-to-first-spike, one spike per channel, 5 channels):

====== ========= ==============================================
channel value v   spike time (ms)
====== ========= ==============================================
0      x         ``t_min + v * (t_max - t_min)``
1      y         same
2      1 - x     same
3      1 - y     same
4      (bias)    ``t_bias`` (default ``t_min``)
====== ========= ==============================================

Defaults ``t_min = 2`` ms and ``t_max = 27`` ms suit a 30 ms trial. The train, validation and
test sets are generated independently from three seeds spawned from ``seed``
(:class:`numpy.random.SeedSequence`), so each split depends only on ``seed`` and its own size.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..events import EventDataset

R_BIG = 0.5
R_SMALL = 0.1
N_UNITS = 5
CLASS_NAMES = ["yin", "yang", "dot"]


def yinyang_class(x: np.ndarray, y: np.ndarray, r_small: float = R_SMALL, r_big: float = R_BIG) -> np.ndarray:
    """Class (0, 1 or 2) of points inside the big circle, with the original's geometry."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    d_right = np.hypot(x - 1.5 * r_big, y - r_big)
    d_left = np.hypot(x - 0.5 * r_big, y - r_big)
    region1 = (
        (d_right <= r_small)
        | ((d_left > r_small) & (d_left <= 0.5 * r_big))
        | ((y > r_big) & (d_right > 0.5 * r_big))
    )
    dots = (d_right < r_small) | (d_left < r_small)
    return np.where(dots, 2, region1.astype(np.int64)).astype(np.int64)


def yinyang_points(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points ``(n, 2)`` in [0, 1)^2 and their labels, class-balanced by rejection sampling."""
    n = int(n)
    if n < 0:
        raise ConfigError(f"number of Yin-Yang samples must be >= 0, got {n}")
    goal = rng.integers(0, 3, size=n)
    xy = np.empty((n, 2), dtype=np.float64)
    for c in range(3):
        where = np.flatnonzero(goal == c)
        need = len(where)
        found: list[np.ndarray] = []
        have = 0
        while have < need:
            # the dots cover ~8% of the circle, so draw generously for them
            batch = max(64, 16 * (need - have))
            cand = rng.random((batch, 2)) * (2.0 * R_BIG)
            inside = np.hypot(cand[:, 0] - R_BIG, cand[:, 1] - R_BIG) <= R_BIG
            cand = cand[inside]
            cand = cand[yinyang_class(cand[:, 0], cand[:, 1]) == c]
            found.append(cand)
            have += len(cand)
        if need:
            xy[where] = np.concatenate(found)[:need]
    return xy, goal.astype(np.int64)


def encode_yinyang(xy: np.ndarray, labels: np.ndarray, t_min: float = 2.0, t_max: float = 27.0,
                   t_bias: float | None = None, name: str = "yinyang") -> EventDataset:
    """Encode points ``xy`` (n, 2) in [0, 1]^2 as 5-channel latency spikes (see module doc).

    Within each sample the spikes are sorted by time (ties by channel).
    """
    t_min, t_max = float(t_min), float(t_max)
    t_bias = t_min if t_bias is None else float(t_bias)
    if not (np.isfinite(t_min) and np.isfinite(t_max) and 0.0 <= t_min <= t_max):
        raise ConfigError(f"Yin-Yang encoding needs 0 <= t_min <= t_max, got t_min={t_min}, t_max={t_max}")
    if not (np.isfinite(t_bias) and t_bias >= 0.0):
        raise ConfigError(f"Yin-Yang t_bias must be a finite time >= 0, got {t_bias}")
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    n = len(xy)
    values = np.stack([xy[:, 0], xy[:, 1], 1.0 - xy[:, 0], 1.0 - xy[:, 1]], axis=1)
    times = np.empty((n, N_UNITS), dtype=np.float64)
    times[:, :4] = t_min + values * (t_max - t_min)
    times[:, 4] = t_bias
    units = np.broadcast_to(np.arange(N_UNITS, dtype=np.int64), (n, N_UNITS))
    order = np.lexsort((units, times), axis=1) if n else np.zeros((0, N_UNITS), np.int64)
    times = np.take_along_axis(times, order, axis=1)
    units = np.take_along_axis(units, order, axis=1)
    return EventDataset(
        times=times.ravel(),
        units=units.ravel(),
        offsets=np.arange(n + 1, dtype=np.int64) * N_UNITS,
        labels=np.asarray(labels, dtype=np.int64),
        n_units=N_UNITS,
        n_classes=3,
        name=name,
        class_names=list(CLASS_NAMES),
    )


def load_yinyang(seed: int = 0, n_train: int = 5000, n_val: int = 1000, n_test: int = 1000,
                 t_min: float = 2.0, t_max: float = 27.0, t_bias: float | None = None) -> dict:
    """Generate the Yin-Yang train / validation / test sets.

    Returns ``{"train": EventDataset, "val": EventDataset or None, "test": EventDataset}``;
    ``n_val = 0`` gives ``val = None``. See the module docstring for geometry and encoding.
    """
    seeds = np.random.SeedSequence(int(seed)).spawn(3)
    out: dict = {}
    for key, n, ss in (("train", n_train, seeds[0]), ("val", n_val, seeds[1]), ("test", n_test, seeds[2])):
        if key == "val" and int(n) == 0:
            out[key] = None
            continue
        xy, labels = yinyang_points(n, np.random.default_rng(ss))
        out[key] = encode_yinyang(xy, labels, t_min, t_max, t_bias, name=f"yinyang-{key}")
    return out

"""Figure conventions (eventprop.plots): limits from the data, integer ticks, bars from 0 with
labels above the error caps, log axes only with labelled ticks."""

import numpy as np
import pytest

from eventprop.plots import _acc_limits, _auto_log, _bar_labels, _int_ticks, _mpl, _scale_of

pytestmark = pytest.mark.quick


def test_accuracy_limits_show_every_point():
    lo, hi = _acc_limits([14.0, 55.0, 97.3])  # an SHD epoch at 14 % is drawn
    assert lo <= 13.0 and 97.3 < hi <= 100.5 and lo % 5 == 0
    assert _acc_limits([]) == (0.0, 100.5)
    assert _acc_limits([99.9, 100.0])[1] == 100.5


def test_bars_from_zero_labels_above_caps_integer_ticks_and_log_axes():
    plt = _mpl()
    fig, ax = plt.subplots()
    ax.set_ylim(0, 118)
    ax.bar([0, 1], [50.0, 80.0], yerr=[5.0, 2.0], capsize=3)
    _bar_labels(ax, [0, 1], [50.0, 80.0], [5.0, 2.0])
    assert ax.get_ylim()[0] == 0
    texts = [t for t in ax.texts]
    assert [t.get_text() for t in texts] == ["50.0", "80.0"]
    assert [t.xy[1] for t in texts] == [55.0, 82.0] and all(t.get_va() == "bottom" for t in texts)
    ax.plot([1, 2, 3], [1, 2, 3])
    _int_ticks(ax)
    fig.canvas.draw()
    assert all(float(x).is_integer() for x in ax.get_xticks())
    fig2, (a, b) = plt.subplots(1, 2)
    a.plot([1, 2], [0.5, 0.6])
    _auto_log(a, [0.5, 0.6])  # inside one decade: linear from 0, largest point inside
    assert a.get_yscale() == "linear" and a.get_ylim()[0] == 0 and a.get_ylim()[1] > 0.6
    b.plot([1, 2, 3], [1e-4, 1e-2, 1.0])
    _auto_log(b, [1e-4, 1e-2, 1.0])
    fig2.canvas.draw()
    assert b.get_yscale() == "log"
    labels = [t.get_text() for t in b.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3
    assert _scale_of(np.array([3e-5, -1e-5])) == (1e-5, " (×1e-5)") and _scale_of(np.array([0.5]))[1] == ""
    plt.close("all")

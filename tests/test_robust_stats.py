"""The hand-written medians the detectors use are np.median, bit for bit (a live check takes them
every few steps, where np.median's overhead was most of a check), and the vectorised search for
a stall's onset picks the candidate the plain loop over candidates picks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lrdoctor.detectors import base
from lrdoctor.detectors.base import median_of, spearman_trend, window_medians
from lrdoctor.detectors.stall import _CANDIDATES, _stall_onset

SETTINGS = settings(max_examples=300, deadline=None)
# ties, signed zeros, huge values whose sum overflows, infinities, NaN
VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1.0, 1e308, -1e308]))


def _same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


@pytest.mark.filterwarnings("ignore:overflow encountered")  # 1e308 + 1e308, in np.median as here
@SETTINGS
@given(x=arrays(np.float64, st.integers(min_value=1, max_value=60), elements=VALUES))
def test_median_of_is_np_median(x):
    want = float(np.median(x))
    assert _same(median_of(x), want)


def test_median_of_empty_is_nan():
    assert np.isnan(median_of(np.zeros(0)))


@st.composite
def windows(draw):
    x = draw(arrays(np.float64, st.integers(min_value=1, max_value=80),
                    elements=st.floats(min_value=-1e300, max_value=1e300) | st.sampled_from([0.0, 1.0, 2.0])))
    m = draw(st.integers(min_value=1, max_value=12))
    starts = np.array([draw(st.integers(min_value=0, max_value=len(x) - 1)) for _ in range(m)])
    lengths = np.array([draw(st.integers(min_value=1, max_value=len(x) - s)) for s in starts])
    return x, starts, lengths


@pytest.mark.parametrize("cells", [base._MATRIX_CELLS, 0], ids=["one sorted matrix", "one partition per window"])
@SETTINGS
@given(w=windows())
def test_window_medians_are_np_median(cells, w):
    x, starts, lengths = w
    want = np.array([np.median(x[s:s + k]) for s, k in zip(starts, lengths, strict=True)])
    assert np.array_equal(window_medians(x, starts, lengths, max_cells=cells), want)


def _loop_onset(x, min_len, edge_fraction, max_drop, max_trend):
    """The search as it was written before it was vectorised: one candidate at a time."""
    n = len(x)
    for i in np.unique(np.linspace(0, n - min_len, _CANDIDATES).astype(int)):
        seg = x[i:]
        k = max(3, int(len(seg) * edge_fraction))
        if float(np.median(seg[:k]) - np.median(seg[-k:])) < max_drop and spearman_trend(seg) > max_trend:
            return int(i)
    return None


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=8, max_value=3000), seed=st.integers(min_value=0, max_value=2**31 - 1),
       stall_at=st.floats(min_value=0.0, max_value=1.0), noise=st.floats(min_value=0.0, max_value=0.5),
       edge_fraction=st.sampled_from([0.05, 0.1, 0.3, 1.0]), max_drop=st.floats(min_value=0.0, max_value=0.5))
def test_stall_onset_matches_the_loop_over_candidates(n, seed, stall_at, noise, edge_fraction, max_drop):
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    x = np.exp(-np.minimum(t, stall_at * n) / (n / 5)) + noise * rng.standard_normal(n)
    min_len = max(8, int(np.ceil(0.5 * n)))
    assert _stall_onset(x, min_len, edge_fraction, max_drop, -0.3) == _loop_onset(x, min_len, edge_fraction,
                                                                                  max_drop, -0.3)

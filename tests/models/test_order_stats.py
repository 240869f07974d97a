"""models.order_stats gives numpy's median and percentile bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from models.order_stats import median, median_of_arrays, percentile


def _arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    arrays = []
    for n in (1, 2, 3, 4, 5, 8, 9, 10, 17, 64, 285, 286, 287, 1000):
        arrays.append(rng.standard_normal(n))
        arrays.append(np.round(rng.standard_normal(n), 1))  # ties
        arrays.append(rng.integers(50, 300, n) / 250.0)  # RR intervals in s at 250 Hz
        arrays.append(np.abs(rng.standard_normal(n)) * 1e-3)
    return arrays


@pytest.mark.parametrize("index", range(len(_arrays())))
def test_median_equals_numpys(index: int) -> None:
    values = _arrays()[index]
    got, expected = median(values), float(np.median(values))
    assert got == expected
    if got != 0.0:  # a zero may come out with the other sign (see median's docstring)
        assert np.signbit(got) == np.signbit(expected)


@pytest.mark.parametrize("q", [0, 1, 20, 25, 37.5, 50, 80, 99, 100])
def test_percentile_equals_numpys(q: float) -> None:
    for values in _arrays():
        expected = float(np.percentile(values, q))
        got = percentile(values, q)
        assert got == expected, (values.size, q, got, expected)
        assert np.signbit(got) == np.signbit(expected)


@pytest.mark.parametrize("count", range(1, 26))
def test_median_of_arrays_equals_numpys(count: int) -> None:
    rng = np.random.default_rng(count)
    for values in (rng.standard_normal((count, 3, 40)), np.round(rng.random((count, 3, 40)), 1)):
        arrays = list(values)
        expected = np.median(np.stack(arrays, axis=-1), axis=-1)
        np.testing.assert_array_equal(median_of_arrays(arrays), expected)


def test_pacing_float32_median_equals_numpys() -> None:
    from models.pacing import _median as pacing_median

    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 4, 9, 10, 4997, 4998):
        for trial in range(8):
            values = (np.abs(rng.standard_normal(n)) * 0.05).astype(np.float32)
            if trial % 3 == 1:
                values = np.round(values, 2).astype(np.float32)  # ties
            if trial % 3 == 2 and n > 2:
                values[rng.integers(n)] = np.nan  # numpy's median is then NaN
            expected, got = float(np.median(values)), pacing_median(values)
            assert got == expected or (np.isnan(got) and np.isnan(expected))


def test_pacing_threshold_shortcut_changes_no_spike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a count shows the floor is low, the threshold is the one the median gives."""
    import models.pacing as pacing

    rng = np.random.default_rng(11)
    signals = []
    for noise in (0.0005, 0.003, 0.006, 0.009, 0.012, 0.05):  # floors either side of the bound
        x = rng.normal(0.0, noise, size=(12, 5000)).astype(np.float32)
        x[:, 400::800] += 0.8  # spikes
        signals.append(x)
    fast = [pacing.pacing_spikes(x, 500.0) for x in signals]
    monkeypatch.setattr(pacing, "_QUIET_FLOOR", np.float32(-1.0))  # always the exact median
    for x, found in zip(signals, fast, strict=True):
        expected = pacing.pacing_spikes(x, 500.0)
        assert found is not None and expected is not None
        np.testing.assert_array_equal(found, expected)

"""The direct call of sosfilt's compiled core gives exactly ``scipy.signal.sosfilt``."""

from __future__ import annotations

import numpy as np
import scipy.signal

from models.filtering import sosfilt_rows, sosfiltfilt_rows


def test_rows_filtered_as_scipy_does() -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(12, 2600))
    for sos in (
        scipy.signal.butter(2, [0.5, 40.0], btype="bandpass", fs=250.0, output="sos"),
        scipy.signal.butter(5, 0.5, btype="highpass", fs=250.0, output="sos"),
    ):
        zi = scipy.signal.sosfilt_zi(sos)
        state = zi[None, :, :] * x[:, None, :1]  # (rows, sections, 2)
        expected, _ = scipy.signal.sosfilt(sos, x, axis=-1, zi=np.moveaxis(state, 1, 0))
        np.testing.assert_array_equal(sosfilt_rows(sos, x.copy(), state), expected)
        # Another layout (a reversed view) takes the public call: the same values.
        reversed_rows = x[:, ::-1]
        expected, _ = scipy.signal.sosfilt(sos, reversed_rows, axis=-1, zi=np.moveaxis(state, 1, 0))
        np.testing.assert_array_equal(sosfilt_rows(sos, reversed_rows, state), expected)


def test_sosfiltfilt_rows_equals_scipys_sosfiltfilt() -> None:
    rng = np.random.default_rng(2)
    x = np.cumsum(rng.standard_normal((12, 2500)), axis=1)
    for order, band, kind in (
        (2, [0.5, 40.0], "bandpass"),
        (5, 0.5, "highpass"),
        (2, 0.5, "highpass"),
    ):
        sos = scipy.signal.butter(order, band, btype=kind, fs=250.0, output="sos")
        zi = scipy.signal.sosfilt_zi(sos)
        for edge in (1, 15, 33):
            expected = scipy.signal.sosfiltfilt(sos, x, axis=-1, padlen=edge)
            np.testing.assert_array_equal(sosfiltfilt_rows(sos, zi, edge, x), expected)

"""The amplitude step the writers use when they turn millivolts into integers.

DICOM stores 16-bit integers with a sensitivity per channel; FHIR SampledData stores
integers with a ``factor``. Both writers use the same rule so a record exported either way
carries the same precision: the step is the smallest value of the 1-2-5 series
(0.1, 0.2, 0.5, 1, 2, 5, ... microvolts) for which the channel's peak fits a signed 16-bit
integer. A round trip then changes any sample by at most half a step (0.05 uV for
channels under 3.2 mV, 0.1 uV under 6.5 mV), far below any ECG amplifier's noise.
"""

from __future__ import annotations

INT16_MAX = 32767
#: Candidate steps in microvolts per count, smallest first.
STEPS_UV: tuple[float, ...] = tuple(
    round(m * 10.0**e, 6) for e in range(-1, 5) for m in (1.0, 2.0, 5.0)
)


def quantisation_step_uv(peak_mv: float) -> float:
    """The step (uV per count) for a channel whose largest |sample| is ``peak_mv``."""
    peak_uv = abs(peak_mv) * 1000.0
    for step in STEPS_UV:
        if peak_uv / step <= INT16_MAX:
            return step
    raise ValueError(f"peak {peak_mv} mV does not fit 16-bit samples")

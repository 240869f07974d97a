"""The signal-quality gate: decide, before classification, whether an ECG can be interpreted.

:func:`assess_quality` looks for what makes a recording unreadable or misleading: too short,
a lead (or every lead) flat, a lead railing at the amplifier's limit, heavy high-frequency
noise (muscle, mains), strong baseline wander, and standard leads that are missing. Each
finding is a human-readable reason naming the leads (``"V3 flat (lead off?)"``).

Two levels:

* **rejected** (``acceptable=False``): the model must not score it. Too short, no standard
  lead, every lead flat, or too few usable leads (flat or drowned in noise).
* **warning** (``acceptable=True`` with reasons): scores are given but the problem is shown,
  e.g. one lead off, clipping, moderate noise, baseline wander, leads not recorded.

Thresholds were set from the 500 PTB-XL records in the shared data (both 500 Hz and 100 Hz
versions), see the comment at each constant: every record there is acceptable and the clean
ones (no noise/drift/electrode flag) raise at most a rare baseline-wander warning.
Vectorised numpy over leads: about 1-2 ms for 10 s x 12 leads at 500 Hz.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import scipy.fft

from adapters.record import STANDARD_LEADS, Ecg, standard_12_lead
from models.mains import MAINS_HZ, SEARCH_HZ, hum_bound
from models.resampling import Spectra, fold
from models.results import QualityReport

#: Shorter recordings are rejected: the model was trained on 10 s, and heart rate and rhythm
#: need several beats (5 s is 4 beats at 50/min).
MIN_DURATION_S = 5.0

#: Flat-line detection works on 0.5 s windows: a window whose peak-to-peak amplitude is below
#: 20 uV holds no ECG. Real leads are never that still for long: the smallest whole-record
#: peak-to-peak amplitude in PTB-XL is 0.2 mV, and at most 10% of a real lead's windows fall
#: under 20 uV (long pauses in a low-voltage lead).
FLAT_WINDOW_S = 0.5
FLAT_WINDOW_MV = 0.02
#: A lead with at least this share of flat windows is "flat (lead off?)"; with at least
#: FLAT_PARTIAL_FRACTION it is flat "for part of the recording" (an electrode came loose).
FLAT_LEAD_FRACTION = 0.6
FLAT_PARTIAL_FRACTION = 0.3

#: Saturation (clipping): the signal sits at its own maximum or minimum in plateaus. A plateau
#: is a run of samples within SAT_TOLERANCE of the extreme lasting at least SAT_MIN_RUN_S
#: (and 3 samples). PTB-XL leads have at most 2 such plateaus (a held last sample, a broad
#: R peak); clipping at half the R amplitude gives one per beat. The first and last flat-check
#: window (FLAT_WINDOW_S) are ignored: PTB-XL holds the last value for up to 130 ms at the end.
SAT_MIN_RUN_S = 0.008
SAT_MIN_RUNS = 4
SAT_TOLERANCE = 0.002  # of the lead's peak-to-peak amplitude (and at least 0.1 uV)

#: High-frequency noise: robust RMS (1.4826 x median absolute value, so QRS complexes, which
#: fill under 15% of the time, do not count) of everything above NOISE_CUTOFF_HZ. PTB-XL:
#: median 5 uV, maximum 37 uV at 500 Hz and 42 uV at 100 Hz. Muscle tremor and mains hum
#: raise it; white noise of standard deviation s adds about 0.9 s at 500 Hz.
NOISE_CUTOFF_HZ = 40.0
NOISE_WARN_MV = 0.06
#: Above this a lead is unusable: the noise is as large as a small QRS complex.
NOISE_BAD_MV = 0.2
#: Share of the high-frequency power within 1 Hz of 50 or 60 Hz above which the reason names
#: mains interference rather than muscle noise.
MAINS_SHARE = 0.5

#: Baseline wander: peak-to-peak of the signal's content below BASELINE_CUTOFF_HZ (breathing,
#: movement, electrode drift). PTB-XL: 99th percentile 1.1 mV, maximum 3.2 mV (clean) and
#: 9 mV (flagged for drift). Warning only: the model's preprocessing removes the baseline.
BASELINE_CUTOFF_HZ = 0.7
BASELINE_WANDER_MV = 3.0

#: Rejected when fewer than this share of the recorded standard leads is usable: with five
#: of twelve leads gone, territory-specific findings (inferior vs anterior) are guesses.
MIN_USABLE_FRACTION = 2 / 3


def assess_quality(ecg: Ecg, spectra: Spectra | None = None) -> QualityReport:
    """Run the quality gate on one ECG (any lead set, any sampling rate).

    The standard leads are judged (other leads, e.g. Frank X/Y/Z, are ignored); leads the
    12-lead view has to derive (III, aVR, aVL, aVF from I and II) are not judged twice.
    ``spectra``: the record's shared spectra (:class:`models.resampling.Spectra`); the gate
    leaves there the most mains hum a recorded standard lead can carry (its spectrum shows
    it), so that the measurements need not look for hum that is not there.
    """
    fatal: list[str] = []
    warnings: list[str] = []
    if ecg.amplitude_assumed is not None:
        warnings.append(
            f"amplitude {ecg.amplitude_assumed}: voltages, ST levels, other amplitudes "
            "and pacing spikes are not reported"
        )

    if ecg.duration_s < MIN_DURATION_S:
        fatal.append(
            f"recording too short ({ecg.duration_s:.1f} s; at least {MIN_DURATION_S:g} s needed)"
        )

    recorded = [name for name in STANDARD_LEADS if name in ecg.leads]
    if not recorded:
        fatal.append(f"none of the 12 standard leads is present (leads: {', '.join(ecg.leads)})")
        return QualityReport(acceptable=False, reasons=tuple(fatal + warnings))
    if len(recorded) < len(STANDARD_LEADS):
        # Only then build the 12-lead view: it knows which limb leads can be derived.
        missing = standard_12_lead(ecg).missing
        if missing:
            warnings.append(f"{_join([n for n in STANDARD_LEADS if n in missing])} not recorded")

    if tuple(ecg.leads) == tuple(recorded):
        signal = ecg.signal  # already the standard leads in order: no copy
    else:
        signal = ecg.signal[[ecg.leads.index(name) for name in recorded]]
    fs = float(ecg.fs)

    window_max, window_min = _window_extremes(signal, fs)
    flat_fraction = ((window_max - window_min) < FLAT_WINDOW_MV).mean(axis=1)
    flat = flat_fraction >= FLAT_LEAD_FRACTION
    partly_flat = ~flat & (flat_fraction >= FLAT_PARTIAL_FRACTION)
    if flat.all():
        fatal.append("no signal: every lead is flat")
        return QualityReport(
            acceptable=False, reasons=tuple(fatal + warnings), unusable_leads=tuple(recorded)
        )

    noise_mv, mains_share, wander_mv, hum_mv = _spectral_measures(signal, fs)
    if spectra is not None:
        spectra.hum_bound_mv = hum_mv
    plateaus = _plateau_counts(signal, fs, window_max, window_min)

    noisy_bad = ~flat & (noise_mv >= NOISE_BAD_MV)
    noisy = ~flat & ~noisy_bad & (noise_mv >= NOISE_WARN_MV)
    saturated = ~flat & (plateaus >= SAT_MIN_RUNS)
    wandering = ~flat & (wander_mv >= BASELINE_WANDER_MV)
    unusable = flat | noisy_bad

    names = np.array(recorded)
    if flat.any():
        leads = list(names[flat])
        warnings.append(
            f"{_join(leads, recorded)} flat ({'lead' if len(leads) == 1 else 'leads'} off?)"
        )
    if partly_flat.any():
        warnings.append(f"{_join(names[partly_flat], recorded)} flat for part of the recording")
    if saturated.any():
        warnings.append(
            f"{_join(names[saturated], recorded)} clipped (signal saturated at its limit)"
        )
    for level, mask in (("very noisy", noisy_bad), ("noisy", noisy)):
        if mask.any():
            cause = (
                "mains interference"
                if float(np.median(mains_share[mask])) >= MAINS_SHARE
                else "high-frequency noise"
            )
            peak = float(noise_mv[mask].max())
            warnings.append(
                f"{_join(names[mask], recorded)} {level} ({cause}, up to {peak:.2f} mV)"
            )
    if wandering.any():
        peak = float(wander_mv[wandering].max())
        warnings.append(
            f"baseline wander in {_join(names[wandering], recorded)} (up to {peak:.1f} mV)"
        )

    n_usable = int((~unusable).sum())
    if n_usable < MIN_USABLE_FRACTION * len(recorded):
        fatal.append(
            f"too few usable leads ({n_usable} of {len(recorded)}; "
            f"at least {int(np.ceil(MIN_USABLE_FRACTION * len(recorded)))} needed)"
        )

    return QualityReport(
        acceptable=not fatal,
        reasons=tuple(fatal + warnings),
        unusable_leads=tuple(str(n) for n in names[unusable]),
    )


def _window_extremes(signal: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Per lead and FLAT_WINDOW_S window: the maximum and the minimum (leads x windows).

    Shared by the flat-line check (window peak-to-peak) and the saturation check (the lead's
    extremes away from the record's ends), so the signal is scanned once for both.
    """
    width = max(1, round(FLAT_WINDOW_S * fs))
    n_windows = max(1, signal.shape[1] // width)
    if signal.shape[1] < width:
        width = signal.shape[1]
    windows = signal[:, : n_windows * width].reshape(signal.shape[0], n_windows, width)
    return windows.max(axis=2), windows.min(axis=2)


def _spectral_measures(
    signal: np.ndarray, fs: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per lead: robust high-frequency noise (mV), its share near 50/60 Hz, baseline p-p (mV);
    and the most mains hum (mV) any lead can carry (:func:`models.mains.hum_bound`).

    One real FFT serves both ends of the spectrum. Before it, the straight line joining the
    first and last 0.1 s is removed (and added back to the baseline), so the jump between
    the record's ends does not leak into every frequency.
    """
    n_leads, n = signal.shape
    edge = max(1, min(n // 4, round(0.1 * fs)))
    start = signal[:, :edge].mean(axis=1, keepdims=True)
    end = signal[:, -edge:].mean(axis=1, keepdims=True)
    ramp, first, mains_band, n_low, n_grid, grid_ramp = _layout(n, fs)
    line = start + (end - start) * ramp
    same = line.dtype == signal.dtype  # (float32 records): subtracted into line's buffer
    spectrum = scipy.fft.rfft(np.subtract(signal, line, out=line if same else None), axis=1)

    if first is not None:
        # The median of every sample at ~250 Hz is as good an estimate and half the work;
        # those samples come from a folded spectrum at the short length (half the FFT),
        # the bins below the cutoff folded as zeros.
        stride = max(1, int(fs // 250))
        if stride > 1 and n % (2 * stride) == 0:
            hf = fold(spectrum, n, stride, low=first)
        else:
            masked = spectrum.copy()
            masked[:, :first] = 0.0
            hf = scipy.fft.irfft(masked, n, axis=1)[:, ::stride]
        noise = 1.4826 * _row_median(np.abs(hf))
        power = np.abs(spectrum[:, first:]) ** 2
        hf_power = power.sum(axis=1)
        mains_share = power[:, mains_band].sum(axis=1) / np.maximum(hf_power, 1e-20)
    else:  # sampled too slowly to see anything above the cutoff
        noise = np.zeros(n_leads)
        mains_share = np.zeros(n_leads)

    # Baseline: only the bins below the cutoff, inverse-transformed at a coarse rate (10 Hz,
    # plenty for a component under 1 Hz): a short inverse FFT instead of a full-length one.
    slow = scipy.fft.irfft(spectrum[:, :n_low], n_grid, axis=1) * (n_grid / n)
    baseline = slow + (start + (end - start) * grid_ramp)
    wander = np.ptp(baseline, axis=1)
    return noise, mains_share, wander, hum_bound(spectrum, n, fs)


@lru_cache(maxsize=32)
def _layout(n: int, fs: float) -> tuple[np.ndarray, int | None, np.ndarray, int, int, np.ndarray]:
    """What :func:`_spectral_measures` needs of a record's length and rate, made once per
    (n, fs) (a tenth of its time when made per record): the end-to-end ramp (1, n), the
    first bin at or above NOISE_CUTOFF_HZ (None: none), the mains bins from that one on,
    the bins below BASELINE_CUTOFF_HZ, the coarse baseline grid's length and its ramp."""
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)[None, :]
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    high = freqs >= NOISE_CUTOFF_HZ
    first = int(np.argmax(high)) if high.any() else None  # the bins from the cutoff up
    mains_band = np.logical_or.reduce([np.abs(freqs - f) <= SEARCH_HZ for f in MAINS_HZ])
    n_low = int(np.count_nonzero(freqs < BASELINE_CUTOFF_HZ))
    n_grid = max(2 * n_low + 2, round(n / fs * 10))
    grid = np.arange(n_grid) * (n / n_grid)
    grid_ramp = (grid / max(n - 1, 1))[None, :]
    mains_band = mains_band[first or 0 :]
    for array in (ramp, mains_band, grid_ramp):
        array.flags.writeable = False  # shared by every record of this length and rate
    return ramp, first, mains_band, n_low, n_grid, grid_ramp


def _row_median(values: np.ndarray) -> np.ndarray:
    """Median per row (lower median); np.partition is about twice as fast as np.median."""
    k = (values.shape[1] - 1) // 2
    values.partition(k, axis=1)  # in place: the callers' array is a temporary
    return values[:, k]


def _plateau_counts(
    signal: np.ndarray, fs: float, window_max: np.ndarray, window_min: np.ndarray
) -> np.ndarray:
    """Per lead, the number of plateaus at the lead's own maximum or minimum (see SAT_*)."""
    n_windows = window_max.shape[1]
    if n_windows >= 3:  # leave out the first and last window (edge artefacts)
        width = max(1, round(FLAT_WINDOW_S * fs))
        inner = signal[:, width : (n_windows - 1) * width]
        top = window_max[:, 1:-1].max(axis=1, keepdims=True)
        bottom = window_min[:, 1:-1].min(axis=1, keepdims=True)
    else:
        inner = signal
        top = window_max.max(axis=1, keepdims=True)
        bottom = window_min.min(axis=1, keepdims=True)
    tolerance = np.maximum(1e-4, SAT_TOLERANCE * (top - bottom))
    min_run = max(3, round(SAT_MIN_RUN_S * fs))
    counts = np.zeros(inner.shape[0], dtype=np.int64)
    for at_extreme in (inner >= top - tolerance, inner <= bottom + tolerance):
        # Run-length analysis only where there are enough extreme samples to form the
        # plateaus: almost every real lead has a handful, so this skips nearly all the work.
        candidates = np.nonzero(np.count_nonzero(at_extreme, axis=1) >= SAT_MIN_RUNS * min_run)[0]
        if candidates.size == 0:
            continue
        padded = np.zeros((candidates.size, inner.shape[1] + 2), dtype=np.int8)
        padded[:, 1:-1] = at_extreme[candidates]
        steps = np.diff(padded, axis=1)
        rows, starts = np.nonzero(steps == 1)
        _, ends = np.nonzero(steps == -1)
        long_runs = (ends - starts) >= min_run
        found = np.bincount(rows[long_runs], minlength=candidates.size)
        counts[candidates] = np.maximum(counts[candidates], found)
    return counts


def _join(leads: Sequence[str] | np.ndarray, of: Sequence[str] = ()) -> str:
    """Lead names for a reason: "V1, V2", or "all leads" when they are every lead judged."""
    names = [str(lead) for lead in leads]
    if of and len(names) == len(of) > 2:
        return "all leads"
    return ", ".join(names)

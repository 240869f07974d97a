"""ECG measurements: what the cart prints above the tracing, and what criteria read.

:func:`measure` returns, for every key of :data:`SPECS`, a :class:`~models.results.Measurement`
with its UCUM unit and LOINC code (``value=None`` when it cannot be measured, e.g. PR in
atrial fibrillation): rate and RR irregularity; PR, QRS, QT, QTc (Bazett, Fridericia); P,
QRS and T frontal axes; P-wave presence, duration, amplitude and terminal force in V1; per
lead R, S, Q, R-peak time, terminal S, notching, ST at J and J+60 ms, T amplitude;
Sokolow-Lyon and Cornell voltages, R-wave transition, R' in V1/V2; pacing spikes. Lead-wise
keys carry ``Measurement.per_lead``.

How (the "representative beat" approach of interpretive carts):

1. Pacing spikes on the signal as read, at the source rate (:mod:`models.pacing`): they are
   1-2 ms wide and any resampling or low-pass would erase them.
2. Resample to 250 Hz (4 ms resolution is finer than any tolerance an interval is read to);
   a 0.5-40 Hz band-passed copy for delineation, the unfiltered copy for amplitudes. All
   leads present take part: the 12 standard leads (limb leads derived from I and II when
   absent) and any other recorded lead (Holter ``ECG1``, ``CM5``...), so two-lead records
   are measured on the leads they have.
3. R peaks with neurokit2's detector on lead II, or the first usable of V5, I, V6, ..., then
   any other lead; when that lead's RR series is irregular, the next usable leads are tried
   too and the most regular series is kept (a lead that counts tall T waves as beats, or
   misses clipped ones, makes a regular rhythm look irregular); detections far shallower than
   the median QRS (blocked P waves, T waves) are not beats. Heart rate = 60 / median RR;
   irregularity = coefficient of variation of the RR intervals between beats of the dominant
   QRS shape (step 4; the intervals into and out of ectopic beats are left out, as the rhythm
   is that of the dominant beats).
4. Median beats from the beats whose QRS matches the dominant morphology (ectopic beats left
   out), and global boundaries from all usable leads (:mod:`models.delineation`).
5. Per-lead amplitudes and shapes on the unfiltered median beat (:mod:`models.lead_features`).

Why not neurokit2's wave delineation (``ecg_delineate``, method "dwt", per beat on lead II)?
On the shared PTB-XL records it gave QRS durations of 150-380 ms for normal ECGs and PR
intervals of 50-140 ms, and its delineation alone took about 150 ms per record. The
median-beat approach measures what cardiologists and carts report (global, multi-lead
intervals) in about 5 ms CPU per 10 s record (benchmarks/bench_quality_measurements.py).

Accuracy (benchmarks/eval_measurements.py; the model card's measurement section): against
the QT Database cardiologists and five carts' own intervals. T end is found per lead by
Zhang's trapezium-area method in a physiological R-to-T-end window for the RR, and the
latest of the leads with a clear T wave is the global T end.

Never raises on a real recording: any failure of a step leaves the dependent values None.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.signal

from adapters.record import STANDARD_LEADS, Ecg, standard_signal
from models.delineation import BEAT_AFTER_S, BEAT_BEFORE_S, WORK_FS, delineate, median_beats
from models.ectopy import members, premature_beats
from models.filtering import butter_sections, sosfiltfilt_rows
from models.lead_features import lead_features, summarise
from models.mains import without_mains
from models.measurement_specs import SCALE_DEPENDENT_KEYS, SPECS
from models.order_stats import median
from models.pacing import paced_share, pacing_spikes
from models.resampling import Spectra, decimate, rational_ratio
from models.results import Measurement
from models.rpeak_detect import neurokit_peaks

logger = logging.getLogger(__name__)

#: Only the first minute is measured: intervals are read from a 10 s resting ECG, and a
#: 30-minute Holter record would otherwise cost seconds.
MAX_ANALYSIS_S = 60.0
#: Leads tried for R-peak detection, best first: II has the clearest P and QRS in most people.
DETECTION_LEADS = ("II", "V5", "I", "V6", "V4", "aVF", "V2", "III", "V3", "V1", "aVL", "aVR")
#: A lead whose band-passed peak-to-peak is below this carries no usable QRS.
MIN_LEAD_PTP_MV = 0.1
#: Physiological RR range (s): 300/min to 20/min. Peaks closer than this are not two beats.
MIN_RR_S, MAX_RR_S = 0.2, 3.0
#: R peaks found on a lead with RR more irregular than this (coefficient of variation) are
#: checked against the next usable detection leads, up to DETECTION_TRIES leads in all, and
#: the most regular series wins: a lead that also picks up tall T waves, or misses beats on a
#: clipped or small QRS, makes a regular rhythm look irregular; a truly irregular rhythm
#: (atrial fibrillation, ectopics) is irregular on every lead and costs only the extra tries.
RECHECK_RR_CV = 0.1
DETECTION_TRIES = 3
#: A detection whose steepest spatial slope (all usable leads, +-60 ms) is below this share of
#: the median detection's is not a QRS complex but a P wave (blocked P waves in 2:1 AV block)
#: or a T wave, and is not counted as a beat. Ectopic QRS complexes are at least as steep.
MIN_QRS_SLOPE_SHARE = 0.3
#: Plausible ranges (ms, deg): a value outside is reported as not measurable rather than wrong.
PLAUSIBLE = {
    "pr": (60.0, 500.0),
    "qrs": (40.0, 250.0),
    "qt": (200.0, 750.0),
}


def measure(ecg: Ecg, spectra: Spectra | None = None) -> dict[str, Measurement]:
    """Heart rate, rhythm, intervals, axes, P/QRS/ST-T features and pacing of one ECG.

    Every key of :data:`SPECS` is always present; values that cannot be measured are None.
    Lead-wise keys (``SPECS[key].summary`` set) carry ``per_lead`` values for the leads
    that were recorded (or derived from I and II) and usable. Amplitudes and pacing
    (:data:`~models.measurement_specs.SCALE_DEPENDENT_KEYS`) are None where the file gives no
    millivolt scale. ``spectra``: the record's spectrum when the model input's resampling
    already computed it (:class:`models.resampling.Spectra`).
    """
    try:
        values, per_lead = _measure_values(ecg, spectra)
    except Exception:  # never let a measurement failure cost the classification
        logger.warning("ECG measurements failed", exc_info=True)
        values, per_lead = {}, {}
    if ecg.amplitude_assumed is not None:  # on an assumed scale a voltage is not a finding
        for name in SCALE_DEPENDENT_KEYS:
            values.pop(name, None)
            per_lead.pop(name, None)
    return {
        name: Measurement(
            name=name,
            value=values.get(name),
            unit=spec.unit,
            loinc=spec.loinc,
            display=spec.display,
            per_lead=per_lead.get(name, {}) if spec.summary is not None else None,
        )
        for name, spec in SPECS.items()
    }


# ---------------------------------------------------------------------------- pipeline


@dataclass
class _Prepared:
    signal: np.ndarray  # (leads, n) band-passed 0.5-40 Hz at WORK_FS: delineation
    raw: np.ndarray  # (leads, n) resampled, mains removed, not filtered: R peaks, amplitudes
    usable: np.ndarray  # (leads,) bool
    #: The 12 standard leads first (recorded, or derived from I and II), then any other
    #: recorded lead under its own name (Holter "ECG1", "CM5", Frank "vx"...).
    leads: tuple[str, ...]
    standard: np.ndarray  # (leads,) bool: a standard lead that was recorded or derived


def _measure_values(
    ecg: Ecg, spectra: Spectra | None = None
) -> tuple[dict[str, float | None], dict[str, dict[str, float]]]:
    values: dict[str, float | None] = {}
    per_lead: dict[str, dict[str, float]] = {}
    limit = int(MAX_ANALYSIS_S * float(ecg.fs))
    if ecg.n_samples > limit:  # cut first: the 12-lead view of a Holter record is large
        ecg = ecg.with_signal(ecg.signal[:, :limit], ecg.leads)
        spectra = None  # the whole record's spectra say nothing exact about its start
    # Pacing spikes are 0.5-2 ms wide: look for them before any resampling or filtering.
    low_pass = ecg.filters.low_pass_hz if ecg.filters is not None else None
    spikes = pacing_spikes(ecg.signal, float(ecg.fs), low_pass)
    prepared = _prepare(ecg, spectra)
    if prepared is None:  # flat or too short: nothing measured, not even "no spikes"
        return values, per_lead
    if spikes is not None:
        values["pacing_spike_count"] = float(spikes.size)
    peaks = _r_peaks(prepared)
    if peaks is None or peaks.size < 3:
        return values, per_lead
    peaks = _qrs_like(prepared, peaks)
    if spikes is not None:
        values["paced_beat_share"] = paced_share(spikes, peaks / WORK_FS, float(ecg.fs))
    rr = np.diff(peaks) / WORK_FS
    rr_median = median(rr)
    values["heart_rate"] = round(60.0 / rr_median, 1)

    medians = median_beats(prepared.signal, prepared.raw, prepared.usable, peaks)
    if medians is None:  # no dominant shape: the variation of all intervals
        values["rr_irregularity"] = round(float(np.std(rr) / np.mean(rr)), 3)
        return values, per_lead
    values["rr_irregularity"] = _dominant_rr_irregularity(peaks, medians.beats, rr, prepared)
    ventricular, supraventricular = premature_beats(peaks, medians.beats, prepared.signal.shape[1])
    values["ventricular_premature_beats"] = ventricular
    values["supraventricular_premature_beats"] = supraventricular
    usable = prepared.usable
    position = np.searchsorted(peaks, medians.beats)
    next_s = rr[position[position < rr.size]]  # the intervals after and before those beats
    previous_s = rr[position[position > 0] - 1]
    waves = delineate(
        medians.filtered[usable],
        rr_median,
        median(next_s) if next_s.size else None,
        median(previous_s) if previous_s.size else None,
        values["rr_irregularity"],
    )
    ms = 1000.0 / WORK_FS
    if waves.qrs_on is not None and waves.qrs_off is not None:
        values["qrs"] = _plausible("qrs", (waves.qrs_off - waves.qrs_on) * ms)
        values["axis"] = _axis(medians.filtered, prepared, waves.qrs_on, waves.qrs_off)
        values["p_wave_present"] = float(waves.p_on is not None)
    if waves.qrs_on is not None and waves.p_on is not None:
        values["pr"] = _plausible("pr", (waves.qrs_on - waves.p_on) * ms)
    if waves.qrs_on is not None and waves.t_end is not None:
        qt = _plausible("qt", (waves.t_end - waves.qrs_on) * ms)
        values["qt"] = qt
        if qt is not None:
            values["qtc"] = round(qt / math.sqrt(rr_median))
            values["qtc_fridericia"] = round(qt / rr_median ** (1.0 / 3.0))
    lead_wise = usable & prepared.standard
    names = [n for n, keep in zip(prepared.leads, lead_wise, strict=True) if keep]
    derived, per_lead = lead_features(medians.wide[lead_wise], names, waves)
    values.update(derived)
    summaries = {k: spec.summary for k, spec in SPECS.items() if spec.summary is not None}
    values.update(summarise(per_lead, summaries))
    return values, per_lead


def _dominant_rr_irregularity(
    peaks: np.ndarray, dominant: np.ndarray, rr: np.ndarray, prepared: _Prepared
) -> float:
    """Coefficient of variation of the RR intervals between beats of the dominant QRS shape.

    The rhythm is that of the dominant beats; ectopic (differently shaped) complexes are
    stated apart (AHA/ACCF/HRS 2007 part II: "sinus rhythm with premature ventricular
    complexes"), so the intervals into and out of them are left out. Beats too near the
    record's ends to enter the median beat count as dominant. With fewer than 3 intervals
    left, all intervals are used.
    """
    n = prepared.signal.shape[1]
    before, after = round(BEAT_BEFORE_S * WORK_FS), round(BEAT_AFTER_S * WORK_FS)
    judged = (peaks - before >= 0) & (peaks + after < n)
    keep = members(peaks, dominant) | ~judged
    both = keep[:-1] & keep[1:]
    kept = rr[both] if both.sum() >= 3 else rr
    return round(float(np.std(kept) / np.mean(kept)), 3)


def _plausible(name: str, value_ms: float) -> float | None:
    low, high = PLAUSIBLE[name]
    return float(round(value_ms)) if low <= value_ms <= high else None


def _prepare(ecg: Ecg, spectra: Spectra | None = None) -> _Prepared | None:
    fs = float(ecg.fs)
    rows, derived, missing = standard_signal(ecg)
    extra = [i for i, name in enumerate(ecg.leads) if name not in STANDARD_LEADS]
    if extra:
        rows = np.concatenate([rows, ecg.signal[extra]], axis=0)
    leads = STANDARD_LEADS + tuple(ecg.leads[i] for i in extra)
    standard = np.array([i < len(STANDARD_LEADS) for i in range(len(leads))])
    standard[: len(STANDARD_LEADS)] = [name not in missing for name in STANDARD_LEADS]
    if abs(fs - WORK_FS) > 1e-6:
        up, down = rational_ratio(WORK_FS, fs)
        window = _resampling_filter(up, down)
        # The model input's float64 copy of the same rows where it made one (only read here).
        wide = spectra.float64(rows) if spectra is not None else rows.astype(np.float64)
        signal = decimate(wide, up, down, window, spectra)
    else:
        signal = rows.astype(np.float64)
    if signal.shape[1] < int(2 * WORK_FS):
        return None
    signal = without_mains(signal, WORK_FS, _hum_bound(spectra, bool(derived), bool(extra)))
    filtered = _zero_phase(signal, 2, (0.5, 40.0), "bandpass")
    recorded = standard.copy()
    recorded[len(STANDARD_LEADS) :] = True
    usable = (np.ptp(filtered, axis=1) >= MIN_LEAD_PTP_MV) & recorded
    if not usable.any():
        return None
    return _Prepared(filtered, signal, usable, leads, standard)


def _hum_bound(spectra: Spectra | None, derived: bool, extra: bool) -> float | None:
    """The most hum the 12-lead view can carry, from the quality gate's bound over the
    recorded standard leads: a derived lead (III = II - I...) up to twice it; None where
    unknown or where leads the gate does not judge (Frank, Holter channels) are measured."""
    if spectra is None or spectra.hum_bound_mv is None or extra:
        return None
    return spectra.hum_bound_mv * (2.0 if derived else 1.0)


def _zero_phase(x: np.ndarray, order: int, band: tuple[float, ...], btype: str) -> np.ndarray:
    """``scipy.signal.sosfiltfilt`` along the last axis (odd padding), filter designed once.

    The same arithmetic as scipy's; it only skips designing the filter and its initial state
    again on every call, which cost as much as the filtering of a 10 s record.
    """
    sos, zi, edge = butter_sections(order, band[0] if len(band) == 1 else band, btype, WORK_FS)
    if x.shape[-1] <= edge:
        raise ValueError(f"signal of {x.shape[-1]} samples is shorter than the {edge} pad")
    out = sosfiltfilt_rows(sos, zi, edge, x.reshape(-1, x.shape[-1]))
    return np.asarray(out.reshape(x.shape[:-1] + out.shape[-1:]))


@functools.cache
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """The FIR low-pass ``scipy.signal.resample_poly`` designs by default (Kaiser, beta 5)."""
    rate = max(up, down)
    return np.asarray(scipy.signal.firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0)))


def _nk_clean(x: np.ndarray) -> np.ndarray:
    """neurokit2's ``ecg_clean`` (method "neurokit") with its filters designed once.

    The same steps as neurokit2 0.2: a 0.5 Hz 5th-order Butterworth high-pass
    (``sosfiltfilt``), then a moving average over one 50 Hz period (``filtfilt``, "pad").
    ``nk.ecg_clean`` designs both filters again on every call, a third of its time.
    """
    clean = _zero_phase(x, 5, (0.5,), "highpass")
    return _moving_average_zero_phase(clean, int(WORK_FS / 50.0))


@functools.cache
def _moving_average(width: int) -> tuple[np.ndarray, np.ndarray]:
    """The taps of a ``width``-sample moving average (``lfilter``'s own normalisation, each
    tap divided by the denominator ``width``) and ``lfilter_zi`` of it, made once."""
    taps = np.ones(width)
    return taps / float(width), np.asarray(scipy.signal.lfilter_zi(taps, [width]))


def _fir_pass(taps: np.ndarray, x: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """``scipy.signal.lfilter(taps, [1.0], x, zi=zi)[0]`` for a 1-D ``x``: what lfilter does
    for a one-coefficient denominator (a full ``np.convolve``, the state added to its first
    samples), without its argument checks and ``np.apply_along_axis``, which cost more
    than the convolution of a 10 s lead."""
    full = np.convolve(taps, x)
    full[: zi.size] += zi
    return full[: full.size - taps.size + 1]


def _moving_average_zero_phase(x: np.ndarray, width: int) -> np.ndarray:
    """``scipy.signal.filtfilt(np.ones(width), [width], x, method="pad")`` of a 1-D signal:
    the same odd padding, initial state and two passes (each ``lfilter``'s own arithmetic,
    :func:`_fir_pass`); ``lfilter_zi`` (a linear solve) is computed once, not on every call."""
    taps, zi = _moving_average(width)
    edge = 3 * width
    if x.shape[-1] <= edge:
        raise ValueError(f"signal of {x.shape[-1]} samples is shorter than the {edge} pad")
    ext = np.concatenate([2 * x[:1] - x[edge:0:-1], x, 2 * x[-1:] - x[-2 : -edge - 2 : -1]])
    y = _fir_pass(taps, ext, zi * ext[:1])
    y = _fir_pass(taps, y[::-1], zi * y[-1:])
    return np.asarray(y[::-1][edge:-edge])


def _r_peaks(prepared: _Prepared) -> np.ndarray | None:
    """R-peak sample indices (at WORK_FS) from the first usable detection lead that works."""
    order = [prepared.leads.index(name) for name in DETECTION_LEADS]
    order += list(range(len(STANDARD_LEADS), len(prepared.leads)))
    best: tuple[float, np.ndarray] | None = None
    tries = 0
    for index in order:
        if not prepared.usable[index]:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cleaned = _nk_clean(prepared.raw[index])
                peaks = neurokit_peaks(cleaned, int(WORK_FS)).astype(np.int64)
        except Exception:  # neurokit raises on pathological input; try the next lead
            logger.debug("R-peak detection failed on lead %s", prepared.leads[index], exc_info=True)
            continue
        # Already strictly increasing (no np.unique needed): the detector keeps a peak only
        # more than MIN_DELAY_S after the one before.
        if peaks.size < 3:
            continue
        rr = np.diff(peaks) / WORK_FS
        if not MIN_RR_S <= median(rr) <= MAX_RR_S:
            continue
        variation = float(np.std(rr) / np.mean(rr))
        if best is None or variation < best[0]:
            best = (variation, peaks)
        tries += 1
        if best[0] <= RECHECK_RR_CV or tries >= DETECTION_TRIES:
            break
    return None if best is None else best[1]


def _qrs_like(prepared: _Prepared, peaks: np.ndarray) -> np.ndarray:
    """The detections steep enough to be QRS complexes (see MIN_QRS_SLOPE_SHARE)."""
    # All leads usable (the usual case): the array itself, not a copy of it. The differences
    # squared in place: the same floats as np.diff(...) ** 2, two arrays fewer.
    usable = prepared.usable
    signal = prepared.signal if usable.all() else prepared.signal[usable]
    steps = np.subtract(signal[:, 1:], signal[:, :-1])
    slope = np.sqrt(np.multiply(steps, steps, out=steps).sum(axis=0))
    half = round(0.06 * WORK_FS)
    # Each detection's window [p - half, p + half) at once; indices clipped at the record's
    # ends repeat a sample of the (cut) window, so every maximum is that of the window.
    window = np.clip(peaks[:, None] + np.arange(-half, half)[None, :], 0, slope.size - 1)
    steepest = slope[window].max(axis=1)
    kept = peaks[steepest >= MIN_QRS_SLOPE_SHARE * median(steepest)]
    return kept if kept.size >= 3 else peaks


def _axis(beat: np.ndarray, prepared: _Prepared, qrs_on: int, qrs_off: int) -> float | None:
    """Frontal QRS axis from the net QRS areas in I and aVF.

    With Einthoven's triangle, lead I = |H| cos(a) and aVF = |H| (sqrt(3)/2) sin(a), so
    a = atan2(2 aVF / sqrt(3), I).
    """
    i, avf = prepared.leads.index("I"), prepared.leads.index("aVF")
    if not (prepared.usable[i] and prepared.usable[avf]):
        return None
    window = beat[:, qrs_on : qrs_off + 1]
    areas = (window - window[:, :1]).sum(axis=1)
    lead_i, lead_avf = float(areas[i]), float(areas[avf])
    if abs(lead_i) + abs(lead_avf) < 1e-9:
        return None
    return float(round(math.degrees(math.atan2(2.0 * lead_avf / math.sqrt(3.0), lead_i))))

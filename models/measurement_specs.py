"""What every measurement key means: its UCUM unit, LOINC code, display name and, for
lead-wise keys, how the per-lead values are summarised (the table :func:`models.measurements.
measure` fills, and what results, cards and FHIR Observations name a value by).

Split from :mod:`models.measurements` (how the values are measured) so the table reads as
one piece of policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Summary = Literal["max", "extreme", "V5V6", "IV6", "any"]


@dataclass(frozen=True)
class MeasurementSpec:
    unit: str
    loinc: str | None
    display: str
    #: For lead-wise measurements (``Measurement.per_lead``): how ``value`` summarises the
    #: leads. "max": the largest per-lead value; "extreme": the signed per-lead value of
    #: largest magnitude; "V5V6" / "IV6": the larger of those two leads' values; "any": 1 when
    #: any lead has the feature. None: a global measurement, no per-lead values.
    summary: Summary | None = None


#: What each key means: UCUM unit, LOINC code (LOINC's EKG measurement codes: 8625-6 PR,
#: 8633-0 QRS, 8634-8 QT, 8636-3 QTc, 8867-4 heart rate, 8626-4/8632-2/8638-9 axes) and display.
#: Conventions: amplitudes in mV relative to the isoelectric PR segment just before QRS onset,
#: measured on the median beat (ectopic beats left out) after a 0.05-150 Hz band (never the
#: model's low-pass); durations in ms; "1" = dimensionless (counts, shares, 0/1 flags).
SPECS: dict[str, MeasurementSpec] = {
    # ---- rate and rhythm
    "heart_rate": MeasurementSpec("/min", "8867-4", "Heart rate"),
    # No LOINC code names RR variability as a number; 76281-5 is a coded rhythm, not this.
    # Over the intervals between dominant-shape beats (ectopic beats' intervals left out).
    "rr_irregularity": MeasurementSpec(
        "1", None, "RR irregularity (coefficient of variation of RR)"
    ),
    # Premature beats in the recording (models.ectopy): another QRS shape (ventricular, or
    # aberrant), or the dominant shape >= 20 % early and followed by a pause (supraventricular).
    "ventricular_premature_beats": MeasurementSpec(
        "1", None, "Premature beats of another QRS shape"
    ),
    "supraventricular_premature_beats": MeasurementSpec(
        "1", None, "Premature beats of the dominant QRS shape"
    ),
    # ---- global intervals (multi-lead, onset of earliest lead to offset of latest)
    "pr": MeasurementSpec("ms", "8625-6", "PR interval"),
    "qrs": MeasurementSpec("ms", "8633-0", "QRS duration"),
    "qt": MeasurementSpec("ms", "8634-8", "QT interval"),
    "qtc": MeasurementSpec("ms", "8636-3", "QTc (Bazett)"),
    # 8636-3 is "QT interval corrected"; the service reports Bazett under it, Fridericia apart.
    "qtc_fridericia": MeasurementSpec("ms", None, "QTc (Fridericia)"),
    # ---- frontal axes (from net areas in I and aVF)
    "axis": MeasurementSpec("deg", "8632-2", "QRS axis (frontal)"),
    "p_axis": MeasurementSpec("deg", "8626-4", "P axis (frontal)"),
    "t_axis": MeasurementSpec("deg", "8638-9", "T axis (frontal)"),
    # ---- P wave
    # 1: a P wave precedes the QRS in the median beat; 0: looked for and none found (e.g. AF);
    # None: no median beat to look in.
    "p_wave_present": MeasurementSpec("1", None, "P wave present"),
    "p_duration": MeasurementSpec("ms", None, "P-wave duration"),
    # Signed peak of the P wave per lead (positive or negative part, whichever is larger).
    "p_amplitude": MeasurementSpec("mV", None, "P-wave amplitude", summary="extreme"),
    # Morris index: depth (mV, positive) x duration (ms) of the negative terminal part of P in
    # V1; 0 when the P in V1 has no negative terminal part. Abnormal >= 4 mV.ms (0.04 mm.s).
    "p_terminal_force_v1": MeasurementSpec("mV.ms", None, "P terminal force in V1"),
    # ---- QRS amplitudes and morphology, per lead
    # R: the largest positive QRS deflection; S: the depth (positive mV) of the largest
    # negative deflection after the first R (or of the whole QRS when there is no R: QS).
    "r_amplitude": MeasurementSpec("mV", None, "R amplitude", summary="max"),
    "s_amplitude": MeasurementSpec("mV", None, "S amplitude (depth)", summary="max"),
    # Initial negative deflection before the first R; 0 when there is none.
    "q_duration": MeasurementSpec("ms", None, "Q-wave duration", summary="max"),
    # QRS onset to the peak of the last R (R' when present): intrinsicoid deflection.
    "r_peak_time": MeasurementSpec("ms", None, "R-peak time", summary="V5V6"),
    # Duration of the negative deflection that ends the QRS; 0 when the QRS ends upright.
    "terminal_s_duration": MeasurementSpec("ms", None, "Terminal S duration", summary="IV6"),
    # 1: two peaks of the same polarity within the QRS (notched or M-shaped), else 0.
    "qrs_notched": MeasurementSpec("1", None, "Notched QRS", summary="any"),
    # 1: an R' (second positive deflection after an S) in V1 or V2 (rsr', rsR', rSR'), else 0.
    "rsr_prime_v1": MeasurementSpec("1", None, "R' in V1/V2 (rsr')"),
    # Sokolow-Lyon: S(V1) + max(R(V5), R(V6)); LVH >= 3.5 mV.
    "sokolow_lyon": MeasurementSpec("mV", None, "Sokolow-Lyon voltage"),
    # Cornell: R(aVL) + S(V3); LVH > 2.8 mV (men), > 2.0 mV (women).
    "cornell_voltage": MeasurementSpec("mV", None, "Cornell voltage"),
    # First precordial lead (1 = V1 ... 6 = V6) where R >= S; 7 when none up to V6.
    "r_wave_transition": MeasurementSpec("1", None, "R-wave transition lead (V1=1 ... V6=6)"),
    # ---- ST-T, per lead (relative to the PR segment)
    "st_j": MeasurementSpec("mV", None, "ST level at J point", summary="extreme"),
    "st_j60": MeasurementSpec("mV", None, "ST level at J+60 ms", summary="extreme"),
    "t_amplitude": MeasurementSpec("mV", None, "T-wave amplitude", summary="extreme"),
    # ---- pacing (detected on the raw signal at the source rate, >= 400 Hz only)
    # Narrow (< 4 ms), steep deflections in the first MAX_ANALYSIS_S seconds; None when the
    # source rate is too low to see a pacing spike reliably (e.g. 100 or 250 Hz).
    "pacing_spike_count": MeasurementSpec("1", None, "Pacing spikes (count)"),
    # Share of the detected beats with a pacing spike in the 300 ms before their QRS.
    "paced_beat_share": MeasurementSpec("1", None, "Share of paced beats"),
}

#: Keys whose values depend on the millivolt scale: the amplitudes (mV, mV.ms) and the pacing
#: values, whose spikes are found by an absolute amplitude (``models.pacing.MIN_SPIKE_MV``).
#: Not reported for an ECG whose scale the file does not give (``Ecg.amplitude_assumed``);
#: times, rate, rhythm and axes are.
SCALE_DEPENDENT_KEYS = frozenset(
    {k for k, spec in SPECS.items() if spec.unit.startswith("mV")}
    | {"pacing_spike_count", "paced_beat_share"}
)

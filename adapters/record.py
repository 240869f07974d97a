"""The canonical ECG record every reader produces and every writer consumes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np

from adapters.errors import EcgFormatError

#: Standard 12-lead order used everywhere in the project.
STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)  # fmt: skip

#: Sampling rates outside this range are treated as a corrupt header, not a real ECG.
MIN_FS_HZ = 50.0
MAX_FS_HZ = 20_000.0
#: Anything above this many millivolts is a scale error (uV read as mV), not physiology.
MAX_ABS_MV = 100.0


#: How a written FHIR note or DICOM annotation says that the amplitude scale was assumed
#: (``Ecg.amplitude_assumed`` follows it): a file converted from an uncalibrated record must
#: not pass its assumed millivolts on as measured ones, and reading such a file back keeps
#: the assumption (it only withholds amplitude findings, so a note cannot make one up).
ASSUMED_SCALE_NOTE = "Amplitude scale assumed, not recorded: "


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def written_notes(amplitude_assumed: str | None, statements: Sequence[str]) -> list[str]:
    """The notes a writer stores (FHIR ``Observation.note``, DICOM annotation texts): the
    assumed scale first when there is one, then the statements; :func:`split_scale_note`
    takes them apart again on reading."""
    scale = [] if amplitude_assumed is None else [ASSUMED_SCALE_NOTE + amplitude_assumed]
    return [*scale, *statements]


_WFDB_ASSUMPTION = (
    "uncalibrated: the header gives no ADC gain, so WFDB's default of {gain} units per mV is "
    "assumed"
)


def uncalibrated_wfdb(gain: float) -> str:
    """``Ecg.amplitude_assumed`` of a WFDB record whose header gives no ADC gain at all."""
    return _WFDB_ASSUMPTION.format(gain=f"{gain:g}")


#: The assumptions this project's readers make and its writers write: only these are read
#: back word for word. Any other text after the note's prefix is the file's own, shown to
#: clinicians beside an AI reading, so it is replaced by :data:`STATED_SCALE_ASSUMPTION`.
_KNOWN_ASSUMPTION = re.compile(
    re.escape(_WFDB_ASSUMPTION).replace(re.escape("{gain}"), r"[0-9]{1,6}(?:\.[0-9]{1,6})?")
)
STATED_SCALE_ASSUMPTION = "stated by the file: its amplitude scale was not recorded"


def split_scale_note(statements: Sequence[str]) -> tuple[list[str], str | None]:
    """A reader's statements without a scale note (:func:`written_notes`), and the
    assumption it names."""
    kept: list[str] = []
    assumed: str | None = None
    for statement in statements:
        if not statement.startswith(ASSUMED_SCALE_NOTE):
            kept.append(statement)
            continue
        stated = statement[len(ASSUMED_SCALE_NOTE) :].strip()
        known = stated if _KNOWN_ASSUMPTION.fullmatch(stated) else STATED_SCALE_ASSUMPTION
        assumed = assumed or known
    return kept, assumed


@dataclass(frozen=True)
class EcgSource:
    """Where a record came from: the format, a path or URI, and the hash of the original bytes."""

    format: str
    uri: str | None
    sha256: str


@dataclass(frozen=True, eq=False)
class MedianBeats:
    """Representative (median) beats as stored by the cart: one beat per lead, millivolts."""

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]


@dataclass(frozen=True)
class RecordingFilters:
    """The filters the cart applied before storing the samples, as the file states them (Hz).

    ``low_pass_hz`` is the upper edge of the recorded band (DICOM's Filter High Frequency,
    MUSE's LowPassFilter, aECG's MDC_ECG_CTL_VBL_ATTR_FILTER_LOW_PASS); ``high_pass_hz`` the
    lower edge; ``notch_hz`` a mains filter. None: the file does not say. It matters for
    what a record *can* show: AHA/ACCF/HRS (2007, part I) asks for 150 Hz in adults, and a
    pacing spike of 0.5-2 ms does not survive a 100 Hz low-pass.
    """

    low_pass_hz: float | None = None
    high_pass_hz: float | None = None
    notch_hz: float | None = None


@dataclass(frozen=True, eq=False)
class Ecg:
    """One ECG recording in the project's canonical form.

    ``signal`` is float32, shape ``(n_leads, n_samples)``, in **millivolts**; ``fs`` is the
    sampling rate in Hz; ``leads`` names the rows with standard names (``I``, ``II``, ``III``,
    ``aVR``, ``aVL``, ``aVF``, ``V1``..``V6``) and any extra leads under their own names.
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    source: EcgSource
    start_time: datetime | None = None
    patient_id: str | None = None
    device: str | None = None
    #: Interpretation text carried by the file (machine or cardiologist statements).
    statements: tuple[str, ...] = ()
    #: Coded diagnoses carried by the file, as ``system|code`` (e.g. ``http://snomed.info/sct|426783006``).
    diagnosis_codes: tuple[str, ...] = ()
    median_beats: MedianBeats | None = None
    extra: dict[str, str] = field(default_factory=dict)
    #: The cart's filters as the file states them (None: it does not say).
    filters: RecordingFilters | None = None
    #: Why the millivolt scale is assumed rather than given (None: the file gives it). A
    #: WFDB header with no ADC gain on any channel is "uncalibrated" (header(5)) and read at
    #: WFDB's default of 200 units per mV: times and shapes hold, amplitudes may not.
    amplitude_assumed: str | None = None

    def __post_init__(self) -> None:
        name = self.source.uri or self.source.format
        if isinstance(self.signal, np.ndarray) and self.signal.dtype != np.float32:
            object.__setattr__(self, "signal", self.signal.astype(np.float32))
        problem = signal_problem(self.signal, self.fs, self.leads)
        if problem is not None:
            raise EcgFormatError(name, *problem)
        beats = self.median_beats
        skipped = None if beats is None else signal_problem(beats.signal, beats.fs, beats.leads)
        if skipped is not None:  # the cart's beats are extra: never lose the rhythm to them
            object.__setattr__(self, "median_beats", None)
            self.extra["median_beats_skipped"] = f"median beats: {skipped[0]}"
        if self.start_time is not None and utc_representable(self.start_time) is None:
            object.__setattr__(self, "start_time", None)  # as a file without a start time

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / float(self.fs)

    def lead(self, name: str) -> np.ndarray:
        """The samples of one lead, in millivolts."""
        try:
            return self.signal[self.leads.index(name)]
        except ValueError:
            raise KeyError(f"lead {name!r} not in {list(self.leads)}") from None

    def with_signal(self, signal: np.ndarray, leads: Sequence[str], fs: float | None = None) -> Ecg:
        """A copy with a new signal (same source and metadata)."""
        return replace(self, signal=signal, leads=tuple(leads), fs=self.fs if fs is None else fs)


@dataclass(frozen=True, eq=False)
class StandardLeads:
    """An ECG in standard 12-lead order, with what had to be derived or is missing."""

    ecg: Ecg
    derived: frozenset[str]
    missing: frozenset[str]


def _derive_limb_leads(available: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Einthoven and Goldberger: III = II - I, aVR = -(I+II)/2, aVL = I - II/2, aVF = II - I/2."""
    derived: dict[str, np.ndarray] = {}
    lead_i, lead_ii = available.get("I"), available.get("II")
    if lead_i is None or lead_ii is None:
        return derived
    formulas = {
        "III": lambda: lead_ii - lead_i,
        "aVR": lambda: -(lead_i + lead_ii) / 2.0,
        "aVL": lambda: lead_i - lead_ii / 2.0,
        "aVF": lambda: lead_ii - lead_i / 2.0,
    }
    for name, formula in formulas.items():
        if name not in available:
            derived[name] = formula().astype(np.float32)
    return derived


def standard_signal(ecg: Ecg) -> tuple[np.ndarray, frozenset[str], frozenset[str]]:
    """The signal of :func:`standard_12_lead`'s view, and the leads derived and missing.

    For a record already in standard 12-lead order (most carts) that is the record's own
    array, as is (do not write to it): no copy and no new :class:`Ecg` to validate, which the
    signal work of every classification would otherwise pay twice.
    """
    if tuple(ecg.leads) == STANDARD_LEADS:
        return ecg.signal, frozenset(), frozenset()
    view = standard_12_lead(ecg)
    return view.ecg.signal, view.derived, view.missing


def standard_12_lead(ecg: Ecg) -> StandardLeads:
    """Reorder to the standard 12 leads, deriving III/aVR/aVL/aVF from I and II if absent.

    Leads that are neither recorded nor derivable are filled with zeros and listed in
    ``missing``; extra leads (e.g. Frank X/Y/Z) are dropped from this view.
    """
    available = {name: ecg.signal[i] for i, name in enumerate(ecg.leads)}
    derived = _derive_limb_leads(available)
    rows: list[np.ndarray] = []
    missing: set[str] = set()
    for name in STANDARD_LEADS:
        if name in available:
            rows.append(available[name])
        elif name in derived:
            rows.append(derived[name])
        else:
            rows.append(np.zeros(ecg.n_samples, dtype=np.float32))
            missing.add(name)
    view = ecg.with_signal(np.stack(rows).astype(np.float32, copy=False), STANDARD_LEADS)
    return StandardLeads(ecg=view, derived=frozenset(derived), missing=frozenset(missing))


def utc_representable(moment: datetime | None) -> datetime | None:
    """``moment``, or None where its UTC offset carries it outside years 1-9999.

    "0001-01-01T00:00+01:00" is a valid ISO time whose UTC time is in year 0: every later
    step that converts to UTC (storage, cards, FHIR output, the audit trail) would raise. A
    time nobody can have recorded an ECG at is read as no time, the same as a file without.
    """
    if moment is None or moment.tzinfo is None:
        return moment
    try:
        moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return moment


def signal_problem(
    signal: object, fs: float, leads: Sequence[str]
) -> tuple[str, str | None] | None:
    """What is wrong with samples (leads x samples, mV) at ``fs`` named ``leads``, and a hint;
    None when they can be used. The record's own checks, also applied to its median beats
    (readers build those from the file's rate, scale and lead codes too: a beat at NaN Hz or
    1e30 mV would otherwise travel on into the viewer and every conversion)."""
    if not isinstance(signal, np.ndarray) or signal.ndim != 2:
        return "signal must be a 2-D array (leads x samples)", None
    n_leads, n_samples = signal.shape
    if n_leads == 0 or n_samples == 0:
        return "the recording holds no samples", None
    if len(leads) != n_leads:
        return f"{n_leads} signal rows but {len(leads)} lead names", None
    if len(set(leads)) != n_leads:
        return f"duplicate lead names {list(leads)}", None
    if not (MIN_FS_HZ <= float(fs) <= MAX_FS_HZ):  # NaN fails this too
        return (
            f"sampling rate {fs} Hz is outside {MIN_FS_HZ:g}-{MAX_FS_HZ:g} Hz",
            "the header is probably corrupt",
        )
    # One pass: the maximum of |x| is NaN or inf exactly when a sample is.
    peak = float(np.abs(signal).max())
    if not np.isfinite(peak):
        return "the signal contains NaN or infinite samples", None
    if peak > MAX_ABS_MV:
        return (
            f"peak amplitude {peak:.1f} mV is not physiological",
            "the amplitude units are probably wrong (microvolts read as millivolts?)",
        )
    return None

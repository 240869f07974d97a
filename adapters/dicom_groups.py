"""Which multiplex group of a DICOM waveform is the rhythm and which the median beat.

The 12-lead ECG IOD (PS3.3 A.34.3) has a rhythm group and, optionally, an averaged beat;
the group label is free text, Waveform Originality (type 1) tells the recorded rhythm
(ORIGINAL) from the derived beat (DERIVED). Split from :mod:`adapters.dicom`.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from adapters.errors import EcgFormatError

#: The longest averaged beat: one cardiac cycle at 30/min, with margins.
MAX_MEDIAN_BEAT_S = 2.5
#: Multiplex group labels carts give the averaged beat (DICOM leaves the label free text).
MEDIAN_LABELS = ("MEDIAN", "AVERAGE", "REPRESENTATIVE", "TEMPLATE")


def _duration_s(group: Dataset) -> float:
    try:
        return float(group.get("NumberOfWaveformSamples", 0)) / float(group.SamplingFrequency)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return 0.0


def pick_groups(groups: list[Dataset], where: str) -> tuple[int, int | None]:
    """Index of the rhythm group and of the median-beat group (if any).

    By label first ("RHYTHM"; "MEDIAN BEAT" or another cart's word for the averaged beat).
    Without a rhythm label: an ORIGINAL group (Waveform Originality; the median beat is
    DERIVED), and among several candidates the longest, since a median beat lasts one cycle
    and a rhythm seconds. Without a median label, a DERIVED group no longer than
    :data:`MAX_MEDIAN_BEAT_S` beside the rhythm is the median beat.
    """
    labels = [str(g.get("MultiplexGroupLabel", "")).upper() for g in groups]
    originality = [str(g.get("WaveformOriginality", "")).upper() for g in groups]
    median = next(
        (i for i, lab in enumerate(labels) if any(word in lab for word in MEDIAN_LABELS)), None
    )
    rhythm = next((i for i, lab in enumerate(labels) if "RHYTHM" in lab), None)
    if rhythm is None:
        originals = [i for i, o in enumerate(originality) if o == "ORIGINAL" and i != median]
        others = [i for i in range(len(groups)) if i != median]
        if not others:  # one averaged beat is not a recording to classify
            raise EcgFormatError(
                where,
                f"the only multiplex group is {labels[0]!r}: median beats, no rhythm",
                "send the ECG with its rhythm waveform",
            )
        rhythm = max(originals or others, key=lambda i: (_duration_s(groups[i]), -i))
    if median is None:
        median = next(
            (
                i
                for i, g in enumerate(groups)
                if i != rhythm
                and originality[i] == "DERIVED"
                and 0 < _duration_s(g) <= MAX_MEDIAN_BEAT_S
            ),
            None,
        )
    return rhythm, median


def unread_groups(groups: list[Dataset], rhythm: int, median: int | None) -> str:
    """The multiplex groups neither read as the rhythm nor as the median beat, each as
    ``number label (seconds s)``; "" when every group was read."""
    out = []
    for i, group in enumerate(groups):
        if i in (rhythm, median):
            continue
        label = str(group.get("MultiplexGroupLabel", "") or "unlabelled")
        out.append(f"{i + 1} {label} ({_duration_s(group):g} s)")
    return "; ".join(out)

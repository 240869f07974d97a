"""The canonical record out as a DICOM ECG waveform (12-lead, General or Ambulatory ECG
Waveform Storage, chosen by channels, length and rate); read back by :mod:`adapters.dicom`.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import DS

from adapters.dicom import AMBULATORY_ECG, GENERAL_ECG, SNOMED_SYSTEM, TWELVE_LEAD_ECG
from adapters.leads import mdc_lead_term
from adapters.quantise import quantisation_step_uv
from adapters.record import Ecg, RecordingFilters, written_notes


def _coded(value: str, scheme: str, meaning: str, version: str | None = None) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    if version:
        item.CodingSchemeVersion = version
    item.CodeMeaning = meaning
    return item


def _channel_source(name: str) -> Dataset:
    term = mdc_lead_term(name)
    # MDC 2:0 is the unspecified lead; the meaning then carries the lead's own name.
    return _coded(f"2:{term if term is not None else 0}", "MDC", f"Lead {name}")


def _sop_class(n_channels: int, n_samples: int, fs: float) -> str:
    """The most specific ECG IOD whose constraints (PS3.3 A.34) the recording satisfies."""
    if n_channels <= 13 and n_samples <= 16384 and 200 <= fs <= 1000:
        return TWELVE_LEAD_ECG
    if n_channels <= 24 and 200 <= fs <= 1000:
        return GENERAL_ECG
    if n_channels <= 12 and 50 <= fs <= 1000:
        return AMBULATORY_ECG
    return GENERAL_ECG


def _filter_attributes(filters: RecordingFilters | None) -> list[tuple[str, float]]:
    """The channel attributes (PS3.3 C.10.9.1.4.3) for what ``filters`` states: DICOM
    names a filter by the band edge it sets, so the high-pass is Filter Low Frequency."""
    if filters is None:
        return []
    stated = (
        ("FilterLowFrequency", filters.high_pass_hz),
        ("FilterHighFrequency", filters.low_pass_hz),
        ("NotchFilterFrequency", filters.notch_hz),
    )
    return [(keyword, hz) for keyword, hz in stated if hz is not None]


def _multiplex_group(
    signal: np.ndarray,
    leads: tuple[str, ...],
    fs: float,
    label: str,
    originality: str,
    filters: RecordingFilters | None = None,
) -> Dataset:
    group = Dataset()
    group.MultiplexGroupTimeOffset = "0"
    group.WaveformOriginality = originality
    group.NumberOfWaveformChannels = signal.shape[0]
    group.NumberOfWaveformSamples = signal.shape[1]
    group.SamplingFrequency = f"{fs:g}"
    group.MultiplexGroupLabel = label
    channels = []
    counts = np.empty(signal.shape, dtype="<i2")
    for i, name in enumerate(leads):
        step_uv = quantisation_step_uv(float(np.abs(signal[i]).max(initial=0.0)))
        counts[i] = np.rint(signal[i].astype(np.float64) * 1000.0 / step_uv)
        channel = Dataset()
        channel.ChannelSourceSequence = Sequence([_channel_source(name)])
        channel.ChannelSensitivity = f"{step_uv:g}"
        channel.ChannelSensitivityUnitsSequence = Sequence(
            [_coded("uV", "UCUM", "microvolt", "1.4")]
        )
        channel.ChannelSensitivityCorrectionFactor = "1"
        channel.ChannelBaseline = "0"
        channel.ChannelSampleSkew = "0"
        channel.WaveformBitsStored = 16
        for keyword, hz in _filter_attributes(filters):
            setattr(channel, keyword, DS(hz, auto_format=True))  # DS holds 16 characters
        channels.append(channel)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformData = counts.T.tobytes()  # interleaved: sample-major, channel-minor
    return group


def ecg_to_dicom(
    ecg: Ecg,
    *,
    patient_id: str | None = None,
    patient_name: str = "",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    accession_number: str = "",
) -> FileDataset:
    """An ECG Waveform Storage dataset for ``ecg`` (12-lead when the IOD allows it).

    Lead codes are MDC (CID 3001); samples are int16 with a per-channel sensitivity in uV
    given by :func:`quantisation_step_uv`. Statements become free-text waveform
    annotations and SNOMED CT diagnosis codes coded ones, so our reader recovers both.
    """
    when = ecg.start_time or datetime.now()
    sop_class = _sop_class(len(ecg.leads), ecg.n_samples, float(ecg.fs))
    instance = UID(sop_instance_uid) if sop_instance_uid else generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)

    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = instance
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "ECG"
    ds.PatientName = patient_name
    ds.PatientID = patient_id if patient_id is not None else (ecg.patient_id or "")
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = when.strftime("%Y%m%d")
    ds.StudyTime = when.strftime("%H%M%S")
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.AccessionNumber = accession_number
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = ecg.device or ""

    groups = [
        _multiplex_group(ecg.signal, ecg.leads, float(ecg.fs), "RHYTHM", "ORIGINAL", ecg.filters)
    ]
    if ecg.median_beats is not None:
        beats = ecg.median_beats
        groups.append(
            _multiplex_group(beats.signal, beats.leads, float(beats.fs), "MEDIAN BEAT", "DERIVED")
        )
    ds.WaveformSequence = Sequence(groups)

    notes: list[Dataset] = []
    for statement in written_notes(ecg.amplitude_assumed, ecg.statements):
        note = Dataset()
        note.UnformattedTextValue = statement[:1024]
        note.ReferencedWaveformChannels = [1, 0]  # group 1, all channels
        note.AnnotationGroupNumber = 0
        notes.append(note)
    for code in ecg.diagnosis_codes:
        system, _, value = code.partition("|")
        if system != SNOMED_SYSTEM or not value:
            continue
        note = Dataset()
        note.ConceptNameCodeSequence = Sequence([_coded("121071", "DCM", "Finding")])
        note.ConceptCodeSequence = Sequence([_coded(value, "SCT", f"SNOMED CT {value}")])
        note.ReferencedWaveformChannels = [1, 0]
        note.AnnotationGroupNumber = 0
        notes.append(note)
    if notes:
        ds.WaveformAnnotationSequence = Sequence(notes)
    return ds


def ecg_to_dicom_bytes(ecg: Ecg, **kwargs: Any) -> bytes:
    """:func:`ecg_to_dicom` serialised as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    ecg_to_dicom(ecg, **kwargs).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()

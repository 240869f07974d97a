"""Small files that declare or inflate to huge records, built here (never committed).

Each is sized like the ones that went through before the fix (hundreds of MB decoded from
a few hundred KB or less), so that on unprotected code the memory test fails clearly
without endangering the machine.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

#: Decoded size of each bomb: ~600 MB as float64, far over every default limit.
LEADS = 12
SAMPLES = 6_250_000


def hdf5_bomb() -> bytes:
    """An SPH-layout HDF5 file whose 'ecg' dataset is 12 x 6.25 M float64 of fill value:
    chunks never written take no space, so the file is a couple of KB."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset(
            "ecg",
            shape=(LEADS, SAMPLES),
            dtype="float64",
            chunks=(LEADS, 65536),
            compression="gzip",
            fillvalue=0.0,
        )
    return buffer.getvalue()


def matlab_bomb() -> bytes:
    """A CPSC-style MATLAB 5 file: struct ECG with 12 x 6.25 M zeros, compressed."""
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(
        buffer,
        {"ECG": {"sex": "M", "age": 50, "data": np.zeros((LEADS, SAMPLES // 2))}},
        do_compression=True,
    )
    return buffer.getvalue()


def matlab_cell_bomb() -> bytes:
    """A MATLAB 5 file whose only element is a cell array declaring 100,000 x 100,000
    cells: loadmat would allocate the object array before reading a single cell."""

    def element(kind: int, payload: bytes) -> bytes:
        padded = payload + b"\0" * (-len(payload) % 8)
        return struct.pack("<II", kind, len(payload)) + padded

    flags = element(6, struct.pack("<II", 1, 0))  # miUINT32: class 1 = cell
    dims = element(5, struct.pack("<ii", 100_000, 100_000))  # miINT32
    name = element(1, b"ECG")  # miINT8
    matrix = element(14, flags + dims + name)
    header = b"MATLAB 5.0 MAT-file, security test".ljust(116, b" ") + b"\0" * 8
    header += struct.pack("<H", 0x0100) + b"IM"
    return header + matrix


def deflated_dicom_bomb(dicom_waveform: bytes) -> bytes:
    """A real DICOM ECG re-encoded Deflated Explicit VR Little Endian, with a 600 MB private
    OB element of zeros deflated into ~600 KB."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(dicom_waveform))
    meta = ds.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    deflater = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [head.getvalue(), deflater.compress(body.getvalue())]
    size = LEADS * SAMPLES * 8
    # (0009,0010) private creator, then (0009,1010) OB of ``size`` zero bytes
    out.append(deflater.compress(struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 4) + b"SEC "))
    out.append(deflater.compress(struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, size)))
    zeros = bytes(1 << 20)
    for _ in range(size >> 20):
        out.append(deflater.compress(zeros))
    out.append(deflater.flush())
    return b"".join(out)


def wfdb_bomb() -> dict[str, bytes]:
    """A WFDB record of 12 signals x 2.5 M samples (format 80, one byte each): a 30 MB
    signal file of zeros whose float64 decoding is 240 MB."""
    n = 2_500_000
    lines = [f"bomb 12 500 {n}"]
    lines += [f"bomb.dat 80 200/mV 8 0 0 0 0 L{i + 1}" for i in range(12)]
    return {"bomb.hea": ("\n".join(lines) + "\n").encode(), "bomb.dat": bytes(12 * n)}


def aecg_bomb(template: bytes) -> bytes:
    """An HL7 aECG whose first two leads' digits are 3 M values each ("12 12 12 ..."): 18 MB
    of text (each text node under libxml2's 10 MB cap) that a token list would turn into
    ~350 MB of Python strings (two-character strings are not shared singletons)."""
    out, position = [], 0
    for _ in range(2):
        start = template.index(b"<digits>", position) + len(b"<digits>")
        end = template.index(b"</digits>", start)
        out += [template[position:start], b"12 " * 3_000_000]
        position = end
    return b"".join([*out, template[position:]])


def sampled_data_dimensions_bomb(n: int = 2_000_000) -> bytes:
    """A FHIR Observation whose one SampledData interleaves ``n`` channels
    (``dimensions: n``) of one sample each: 4 MB of JSON, under every sample limit, that
    was read as ``n`` leads (max_ecg_leads counted components, not dimensions): one
    numpy row and one lead name per channel, hundreds of MB and seconds of CPU."""
    sampled = {
        "origin": {"value": 0, "unit": "mV", "code": "mV"},
        "period": 2,
        "dimensions": n,
        "data": "1 " * n,
    }
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.24", "code": "131328"}]},
        "component": [{"code": {"text": "I"}, "valueSampledData": sampled}],
    }
    import json

    return json.dumps(observation).encode()


def aecg_lead_flood(template: bytes, n: int = 20_000) -> bytes:
    """An HL7 aECG whose one sequence set holds ``n`` lead sequences of two samples each
    (6 MB, under the body and markup limits): each was a lead (max_ecg_leads was never
    counted), and each new lead was compared with every one before it: 20,000 of them
    took about 8 s of CPU in the web process, 85,000 (27 MB) over two minutes, and the
    record was stored."""
    text = template.decode("utf-8")
    start = text.index('<component>\n\t\t\t\t\t\t<sequence classCode="OBS">')
    end = text.index("</component>", start) + len("</component>")
    sequence = text[start:end]
    digits = sequence[sequence.index("<digits>") : sequence.index("</digits>") + 9]
    sequence = sequence.replace(digits, "<digits>1 2</digits>")
    leads = "".join(sequence.replace("MDC_ECG_LEAD_II", f"MDC_ECG_LEAD_X{i}") for i in range(n))
    return (text[:start] + leads + text[end:]).encode("utf-8")


def muse_lead_flood(template: bytes, n: int = 20_000) -> bytes:
    """A GE MUSE export whose rhythm waveform holds ``n`` LeadData of one sample each: the
    same flood as :func:`aecg_lead_flood` in the other XML format."""
    text = template.decode("utf-8")
    rhythm = text.index("<WaveformType>Rhythm</WaveformType>")
    first = text.index("<LeadData>", rhythm)
    last = text.rindex("</LeadData>") + len("</LeadData>")
    lead = (
        "<LeadData><LeadID>X{}</LeadID><LeadAmplitudeUnitsPerBit>4.88</LeadAmplitudeUnitsPerBit>"
        "<WaveFormData>AQA=</WaveFormData></LeadData>"
    )
    declared = text[rhythm:first].replace("<NumberofLeads>8<", f"<NumberofLeads>{n}<")
    head = text[:rhythm] + declared
    return (head + "".join(lead.format(i) for i in range(n)) + text[last:]).encode()

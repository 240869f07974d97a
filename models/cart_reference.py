"""The carts' own global measurements carried by the clinical-format samples.

GE MUSE (``Ecg.extra``), Mortara via DICOM and HL7 aECG (``Ecg.extra``), Philips XML
1.03/1.04 (their ``globalmeasurements``) and SCP-ECG (section 7, the global measurements of
the reference beat), the last two read here because the adapters do not expose them. They
are the cart reference of :mod:`models.measurement_validation` (split out of it to keep each
module readable in one sitting).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from lxml import etree

from adapters import Ecg, load_ecg
from models.measurement_validation import Case


def _ms(text: str | None) -> float | None:
    """'161 ms' or '161' -> 161.0; anything unreadable (e.g. 'Indeterminate') -> None."""
    if text is None:
        return None
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def _philips_globals(path: Path) -> dict[str, float | None]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    root = etree.parse(str(path), parser).getroot()

    def text(tag: str) -> str | None:
        # 1.03 keeps them under <globalmeasurements>, 1.04 under <globalmeasurements> of an
        # <interpretation>/<measurements> block: take the first element of that name.
        found = root.xpath(f"//*[local-name()='{tag}']")
        return found[0].text if found else None

    return {
        "pr": _ms(text("meanprint")),
        "qrs": _ms(text("meanqrsdur")),
        "qt": _ms(text("meanqtint")),
        "qtc": _ms(text("meanqtc")),
        "heart_rate": _ms(text("meanventrate")),
        "axis": _ms(text("qrsfrontaxis")),
        "p_axis": _ms(text("pfrontaxis")),
        "t_axis": _ms(text("tfrontaxis")),
    }


#: SCP-ECG (EN 1064 / ISO 11073-91064) section 7 marks a value it did not compute with 29999.
SCP_UNDEFINED = 29999


def _scp_globals(path: Path) -> dict[str, float | None]:
    """Section 7 of an SCP-ECG file: the cart's boundaries (ms) of reference beat type 0.

    Layout: a 6-byte file header; section 0 lists (id, length, 1-based offset) of every
    section; section 7 has a 16-byte section header, then the number of QRS types, the number
    of pacemaker spikes, the mean RR and PP (ms), then per QRS type P onset, P offset, QRS
    onset, QRS offset, T offset (ms, unsigned) and the P, QRS, T frontal axes (deg, signed).
    """
    data = path.read_bytes()
    if len(data) < 6 + 16:
        return {}
    (section0_length,) = struct.unpack_from("<I", data, 6 + 4)
    pointers: dict[int, tuple[int, int]] = {}
    for offset in range(6 + 16, min(6 + section0_length, len(data)) - 9, 10):
        section, length, index = struct.unpack_from("<HII", data, offset)
        pointers[section] = (length, index)
    length, index = pointers.get(7, (0, 0))
    body_at = index - 1 + 16
    if length < 16 + 6 + 16 or index < 1 or body_at + 6 + 16 > len(data):
        return {}
    types, _spikes, rr, _pp = struct.unpack_from("<BBHH", data, body_at)
    if types < 1:
        return {}
    p_on, _p_off, qrs_on, qrs_off, t_off = struct.unpack_from("<5H", data, body_at + 6)
    p_axis, qrs_axis, t_axis = struct.unpack_from("<3h", data, body_at + 6 + 10)

    def span(a: int, b: int) -> float | None:
        return float(b - a) if SCP_UNDEFINED not in (a, b) and b > a else None

    def angle(value: int) -> float | None:
        return float(value) if -180 <= value <= 360 else None  # 999: not computed

    return {
        "pr": span(p_on, qrs_on),
        "qrs": span(qrs_on, qrs_off),
        "qt": span(qrs_on, t_off),
        "heart_rate": 60000.0 / rr if 0 < rr < SCP_UNDEFINED else None,
        "axis": angle(qrs_axis),
        "p_axis": angle(p_axis),
        "t_axis": angle(t_axis),
    }


#: Where each vendor's adapter leaves the cart's globals in ``Ecg.extra``: the key that tells
#: the vendor apart, then our measurement name -> the vendor's key (all in ms or degrees;
#: ``heart_rate`` straight, or from ``rr`` in ms).
EXTRA_KEYS: tuple[tuple[str, dict[str, str]], ...] = (
    ("PRInterval", {  # GE MUSE
        "pr": "PRInterval", "qrs": "QRSDuration", "qt": "QTInterval", "qtc": "QTCorrected",
        "heart_rate": "VentricularRate", "axis": "RAxis", "p_axis": "PAxis", "t_axis": "TAxis",
    }),
    ("QRS Duration", {  # DICOM waveform annotations
        "pr": "PR Interval", "qrs": "QRS Duration", "qt": "QT Interval", "qtc": "QTc Interval",
        "rr": "RR Interval", "axis": "QRS Axis", "p_axis": "P Axis", "t_axis": "T Axis",
    }),
    ("MDC_ECG_TIME_PD_QRS", {  # HL7 aECG annotations
        "pr": "MDC_ECG_TIME_PD_PR", "qrs": "MDC_ECG_TIME_PD_QRS", "qt": "MDC_ECG_TIME_PD_QT",
        "qtc": "MDC_ECG_TIME_PD_QTc", "axis": "MDC_ECG_ANGLE_QRS_FRONT",
        "p_axis": "MDC_ECG_ANGLE_P_FRONT", "t_axis": "MDC_ECG_ANGLE_T_FRONT",
    }),
)  # fmt: skip


def cart_reference(path: Path, ecg: Ecg) -> dict[str, float | None]:
    """The cart's own global measurements for one sample file (empty when it has none)."""
    extra = ecg.extra
    fmt = ecg.source.format
    if fmt == "philips" or (path.suffix.lower() == ".xml" and "document" in extra):
        return _philips_globals(path)
    if fmt == "scp-ecg":
        return _scp_globals(path)
    for marker, keys in EXTRA_KEYS:
        if marker in extra or (marker == "PRInterval" and "QRSDuration" in extra):
            values = {name: _ms(extra.get(key)) for name, key in keys.items()}
            if "rr" in values:
                rr = values.pop("rr")
                values["heart_rate"] = 60000.0 / rr if rr else None
            return values
    return {}


#: The clinical-format samples that carry a cart's measurements (relative to ``formats/``).
CART_FILES = (
    "ge_muse_xml/muse-sinus.xml",
    "philips_xml/129DYPRG.XML",
    "philips_xml/3191723_ZZDEMOPTONLY_1-04_orig.xml",
    "dicom/pydicom_waveform_ecg.dcm",
    "hl7_aecg/Example_aECG_HL7_2003-12.xml",
    "scp_ecg/ECG_20060620_112352_197001138994.SCP",
    "scp_ecg/ECG_20170504_163507_123456789.SCP",
    "scp_ecg/Example.scp",
)


def cart_cases(formats_dir: Path) -> Iterator[Case]:
    for relative in CART_FILES:
        path = formats_dir / relative
        ecg = load_ecg(path)
        reference = cart_reference(path, ecg)
        if reference:
            yield Case(relative, ecg, reference)

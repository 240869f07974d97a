"""Voltage units as factors to millivolts: one table for every reader that lower-cases them.

WFDB headers, FHIR ``Quantity`` codes and DICOM's channel sensitivity units all carry UCUM or
UCUM-like symbols ("uV", "mV", "µV"), which the readers compare case-insensitively (carts
write "UV" and "uv" too). HL7 aECG (strict, case-sensitive UCUM) and GE MUSE (its own words,
"MICROVOLTS") keep tables of their own.
"""

from __future__ import annotations

#: Lower-cased voltage unit -> factor to millivolts (both micro signs: U+00B5 and U+03BC).
MV_PER_UNIT: dict[str, float] = {
    "mv": 1.0,
    "uv": 1e-3,
    "µv": 1e-3,
    "μv": 1e-3,
    "nv": 1e-6,
    "v": 1e3,
}
# The spelled-out names: DICOM code meanings ("microvolt"), FHIR Quantity.unit display text.
MV_PER_UNIT.update(
    {f"{prefix}volt{plural}": factor for prefix, factor in
     (("nano", 1e-6), ("micro", 1e-3), ("milli", 1.0), ("", 1e3)) for plural in ("", "s")}
)  # fmt: skip


def mv_factor(unit: str | None) -> float | None:
    """Millivolts per ``unit`` (None: empty or not a voltage); case and spaces ignored."""
    if unit is None:
        return None
    return MV_PER_UNIT.get(str(unit).strip().lower())

"""The values criteria read: measurements flattened, plus the few derived lead-group features.

:func:`criteria_values` turns ``{key: Measurement}`` (from :func:`models.measurements.measure`)
into a :class:`Values` map:

* every measurement key with its value (``None``: not measured);
* every per-lead value as ``key.LEAD`` (``st_j60.V2``, ``r_amplitude.V1``);
* derived features that need lead groups, each with a description naming the leads
  (the evidence a reader checks on the tracing):

  - ``st_elevation_excess_mv``: over pairs of contiguous leads, the largest amount by which
    both leads' ST level at J+60 ms exceeds its limit (0.2 mV in V2-V3, 0.1 mV elsewhere;
    AHA/ACCF/HRS 2009 part VI, Wagner et al., for men >= 40 years; the limit for unknown sex);
  - ``st_depression_excess_mv``: the same for ST depression beyond 0.05 mV (aVR left out:
    its ST is the mirror of the lateral leads);
  - ``early_repol_j_excess_mv``: the same for the J point (``st_j``) above 0.1 mV, over the
    contiguous pairs of inferior (II, III, aVF) and lateral (I, aVL, V4-V6) leads only: the
    early repolarization pattern's territory (Macfarlane et al., JACC 2015;66:470, consensus;
    V1-V3 left out, where J elevation is common in normal men and is Brugada's territory);
  - ``q_wave_contiguous_ms``: the largest Q duration found in both leads of a contiguous pair
    (aVR and V1 left out, where a Q/QS is normal);
  - ``q_wave_anterior_ms`` / ``q_wave_lateral_ms``: per territory, the largest amount (ms) by
    which both leads of a contiguous pair exceed their Q-duration limit (30 ms; 20 ms in
    V2-V3; Fourth Universal Definition of MI, Thygesen et al. 2018): anterior V2-V4 (V1 left
    out, where a QS alone is normal), lateral I, aVL, V4-V6. Inferior infarction reads
    ``q_wave_contiguous_ms`` (the catalog says why);
  - ``t_inverted_leads``: leads with T below -0.1 mV, aVR, III and V1 left out (T may be
    negative there in normal adults);
  - ``t_low_leads``: leads among I, II and V3-V6 (where T is normally upright) whose T is
    low, flat or inverted: below 10 % of the R wave of the same lead (AHA/ACCF/HRS 2009
    part IV, "low T wave");
  - ``limb_qrs_max_mv`` / ``precordial_qrs_max_mv``: the largest QRS amplitude (R + S) in
    the limb / precordial leads (low-voltage criteria);
  - ``r_v1_mv``, ``rs_ratio_v1``, ``p_amplitude_ii_mv``, ``r_v3_mv``: single-lead values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from models.results import Measurement

LIMB_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF")
PRECORDIAL_LEADS = ("V1", "V2", "V3", "V4", "V5", "V6")
#: Neighbouring leads of the Cabrera limb sequence and the precordial row ("contiguous").
CONTIGUOUS_PAIRS: tuple[tuple[str, str], ...] = (
    ("aVL", "I"),
    ("II", "aVF"),
    ("aVF", "III"),
    ("II", "III"),
    ("V1", "V2"),
    ("V2", "V3"),
    ("V3", "V4"),
    ("V4", "V5"),
    ("V5", "V6"),
    ("I", "V6"),
)
#: ST elevation limits at J (mV): AHA/ACCF/HRS 2009 part VI (men >= 40 years in V2-V3).
ST_ELEVATION_LIMIT_MV: Mapping[str, float] = {"V2": 0.2, "V3": 0.2}
ST_ELEVATION_DEFAULT_MV = 0.1
ST_DEPRESSION_LIMIT_MV = 0.05
#: Early repolarization: J point >= 0.1 mV in 2 contiguous inferior or lateral leads
#: (Macfarlane et al. 2015); V1-V3 and aVR are not part of its territory.
EARLY_REPOL_J_MV = 0.1
EARLY_REPOL_SKIP = ("aVR", "V1", "V2", "V3")
T_INVERSION_MV = -0.1
T_INVERSION_NORMAL_LEADS = ("aVR", "III", "V1")
#: Q-wave limits (ms) and the contiguous pairs of each infarct territory (Fourth Universal
#: Definition of MI, Thygesen et al. 2018: any Q > 20 ms in V2-V3, >= 30 ms elsewhere).
Q_WAVE_LIMIT_MS: Mapping[str, float] = {"V2": 20.0, "V3": 20.0}
Q_WAVE_DEFAULT_MS = 30.0
Q_TERRITORIES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "anterior": (("V2", "V3"), ("V3", "V4")),
    "lateral": (("aVL", "I"), ("I", "V6"), ("V4", "V5"), ("V5", "V6")),
}
#: Leads where the T wave is normally upright (AHA/ACCF/HRS part IV), and the "low T" limit.
T_UPRIGHT_LEADS = ("I", "II", "V3", "V4", "V5", "V6")
T_LOW_FRACTION_OF_R = 0.1


@dataclass
class Values:
    """Values by key (None: not measured) and, for derived keys, the evidence naming leads."""

    values: dict[str, float | None] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> float | None:
        return self.values.get(key)

    def describe(self, key: str) -> str | None:
        return self.descriptions.get(key)


#: One lead's value of a lead-wise measurement (``st_j60``, ``V2``), None where not measured.
Lead = Callable[[str, str], "float | None"]


def criteria_values(measurements: Mapping[str, Measurement]) -> Values:
    out = Values()
    for key, m in measurements.items():
        out.values[key] = None if m.value is None else float(m.value)
        for lead, value in (getattr(m, "per_lead", None) or {}).items():
            out.values[f"{key}.{lead}"] = float(value)
    _derive(out)
    return out


def values_from(mapping: Mapping[str, float | None]) -> Values:
    """A :class:`Values` from a plain dict (tests, site files), derived keys added."""
    out = Values(values=dict(mapping))
    _derive(out)
    return out


def _derive(out: Values) -> None:
    flat = out.values

    def lead(key: str, name: str) -> float | None:
        return flat.get(f"{key}.{name}")

    for derivation, _ in DERIVATIONS:
        derivation(lead, out.values, out.descriptions)


def lead_reader(measurements: Mapping[str, Measurement]) -> Lead:
    """``key.LEAD`` of :func:`criteria_values`, read from the measurements themselves (the
    flattened map of every lead of every measurement is not built)."""

    def lead(key: str, name: str) -> float | None:
        m = measurements.get(key)
        per_lead = None if m is None else getattr(m, "per_lead", None)
        if not per_lead:
            return None
        value = per_lead.get(name)
        return None if value is None else float(value)

    return lead


_ALL_LEADS = LIMB_LEADS + PRECORDIAL_LEADS


@dataclass(frozen=True)
class PairExcess:
    """A derived feature over pairs of leads: the largest amount by which *both* leads of a
    pair exceed their limits (``sign * value - limit``), the first such pair on a tie, with
    its description (``where``: "V2/V3 (+0.25/+0.31 mV)")."""

    key: str
    lead_key: str
    limits: Mapping[str, float]
    sign: float
    pairs: tuple[tuple[str, str], ...]  # the pairs it reads, in order
    sentence: Callable[[float, str], str]  # (excess, where) -> description
    shown: str = "{:+.2f}"
    unit: str = "mV"
    digits: int | None = 3  # None: not rounded

    def where(self, a: str, b: str, va: float, vb: float) -> str:
        return f"{a}/{b} ({self.shown.format(va)}/{self.shown.format(vb)} {self.unit})"

    def derive(self, lead: Lead, v: dict[str, float | None], d: dict[str, str]) -> None:
        best: tuple[float, str, str, float, float] | None = None
        for a, b in self.pairs:
            va, vb = lead(self.lead_key, a), lead(self.lead_key, b)
            if va is None or vb is None:
                continue
            excess = min(self.sign * va - self.limits[a], self.sign * vb - self.limits[b])
            if best is None or excess > best[0]:
                best = (excess, a, b, va, vb)
        if best is None:
            v[self.key] = None
            return
        excess = best[0] if self.digits is None else round(best[0], self.digits)
        v[self.key] = excess
        d[self.key] = self.sentence(excess, self.where(*best[1:]))


def _pairs(
    skip: tuple[str, ...], pairs: tuple[tuple[str, str], ...] = CONTIGUOUS_PAIRS
) -> tuple[tuple[str, str], ...]:
    return tuple((a, b) for a, b in pairs if a not in skip and b not in skip)


def _state(excess: float, over: str) -> str:
    return over if excess > 0 else "within"


def _q_territory_sentence(territory: str, excess: float, where: str) -> str:
    return (
        f"Q wave {where}, {_state(excess, 'beyond')} the limit (20 ms V2-V3, 30 ms elsewhere) "
        f"in 2 contiguous {territory} leads"
    )


_Q_LIMITS = {lead: Q_WAVE_LIMIT_MS.get(lead, Q_WAVE_DEFAULT_MS) for lead in _ALL_LEADS}
#: In the order :func:`criteria_values` writes them.
PAIR_FEATURES: tuple[PairExcess, ...] = (
    PairExcess(
        "st_elevation_excess_mv",
        "st_j60",
        {lead: ST_ELEVATION_LIMIT_MV.get(lead, ST_ELEVATION_DEFAULT_MV) for lead in _ALL_LEADS},
        1.0,
        _pairs(()),
        lambda excess, where: (
            f"ST at J+60 {where}, {_state(excess, 'above')} the elevation limit "
            "(0.2 mV V2-V3, 0.1 mV elsewhere) in 2 contiguous leads"
        ),
    ),
    PairExcess(
        "st_depression_excess_mv",
        "st_j60",
        dict.fromkeys(_ALL_LEADS, ST_DEPRESSION_LIMIT_MV),
        -1.0,
        _pairs(("aVR",)),
        lambda excess, where: (
            f"ST at J+60 {where}, {_state(excess, 'beyond')} the 0.05 mV "
            "depression limit in 2 contiguous leads"
        ),
    ),
    PairExcess(
        "early_repol_j_excess_mv",
        "st_j",
        dict.fromkeys(_ALL_LEADS, EARLY_REPOL_J_MV),
        1.0,
        _pairs(EARLY_REPOL_SKIP),
        lambda excess, where: (
            f"J point {where}, {_state(excess, 'above')} 0.1 mV in 2 contiguous "
            "inferior/lateral leads"
        ),
    ),
    # The largest Q duration found in both leads of a pair: an excess over a 0 ms limit
    # (1.0 * q - 0.0 is q, to the bit), not rounded.
    PairExcess(
        "q_wave_contiguous_ms",
        "q_duration",
        dict.fromkeys(_ALL_LEADS, 0.0),
        1.0,
        _pairs(("aVR", "V1")),
        lambda _, where: f"Q wave {where} in contiguous leads",
        shown="{:.0f}",
        unit="ms",
        digits=None,
    ),
    # Per infarct territory: how far both leads of its best contiguous pair exceed the Q limit
    # (V1 is left out: a Q or QS complex there alone is normal).
    *(
        PairExcess(
            f"q_wave_{territory}_ms",
            "q_duration",
            _Q_LIMITS,
            1.0,
            pairs,
            partial(_q_territory_sentence, territory),
            shown="{:.0f}",
            unit="ms",
            digits=1,
        )
        for territory, pairs in Q_TERRITORIES.items()
    ),
)


def _t_inverted(lead: Lead, v: dict[str, float | None], d: dict[str, str]) -> None:
    t_leads = [
        name
        for name in _ALL_LEADS
        if name not in T_INVERSION_NORMAL_LEADS and lead("t_amplitude", name) is not None
    ]
    if t_leads:
        inverted = [name for name in t_leads if (lead("t_amplitude", name) or 0.0) < T_INVERSION_MV]
        v["t_inverted_leads"] = float(len(inverted))
        d["t_inverted_leads"] = (
            f"T inverted (< -0.1 mV) in {', '.join(inverted)}" if inverted else "no inverted T"
        )
    else:
        v["t_inverted_leads"] = None


def _t_low(lead: Lead, v: dict[str, float | None], d: dict[str, str]) -> None:
    """Leads (of those where T is normally upright) with T below 10 % of the lead's R wave."""
    low, seen = [], 0
    for name in T_UPRIGHT_LEADS:
        t, r = lead("t_amplitude", name), lead("r_amplitude", name)
        if t is None or r is None:
            continue
        seen += 1
        if t < T_LOW_FRACTION_OF_R * max(r, 0.0):
            low.append(name)
    v["t_low_leads"] = float(len(low)) if seen >= 3 else None
    if seen >= 3:
        d["t_low_leads"] = (
            f"T low, flat or inverted (< 10 % of R) in {', '.join(low)}"
            if low
            else "T upright (>= 10 % of R) in I, II, V3-V6"
        )


def _qrs_voltage(lead: Lead, v: dict[str, float | None], d: dict[str, str]) -> None:
    for name, leads in (
        ("limb_qrs_max_mv", LIMB_LEADS),
        ("precordial_qrs_max_mv", PRECORDIAL_LEADS),
    ):
        amplitudes = []
        for one in leads:
            r, s = lead("r_amplitude", one), lead("s_amplitude", one)
            if r is not None and s is not None:
                amplitudes.append((r + s, one))
        v[name] = round(max(amplitudes)[0], 3) if len(amplitudes) >= 3 else None
        if amplitudes and v[name] is not None:
            peak, where = max(amplitudes)
            d[name] = f"largest QRS amplitude {peak:.2f} mV ({where})"


def _single_leads(lead: Lead, v: dict[str, float | None], d: dict[str, str]) -> None:
    r_v1, s_v1 = lead("r_amplitude", "V1"), lead("s_amplitude", "V1")
    v["r_v1_mv"] = r_v1
    v["rs_ratio_v1"] = None if r_v1 is None or s_v1 is None else round(r_v1 / max(s_v1, 0.05), 2)
    v["p_amplitude_ii_mv"] = lead("p_amplitude", "II")
    v["r_v3_mv"] = lead("r_amplitude", "V3")


Derivation = Callable[[Lead, dict[str, "float | None"], dict[str, str]], None]
#: The derived features, in the order :func:`criteria_values` writes them, each with the keys
#: it writes: each reads lead values only (never another's output), so any one can be
#: derived alone (:class:`models.criteria_part.PartValues` derives only what criteria read).
DERIVATIONS: tuple[tuple[Derivation, tuple[str, ...]], ...] = (
    *((f.derive, (f.key,)) for f in PAIR_FEATURES),
    (_t_inverted, ("t_inverted_leads",)),
    (_t_low, ("t_low_leads",)),
    (_qrs_voltage, ("limb_qrs_max_mv", "precordial_qrs_max_mv")),
    (_single_leads, ("r_v1_mv", "rs_ratio_v1", "p_amplitude_ii_mv", "r_v3_mv")),
)
DERIVED_KEYS: dict[str, Derivation] = {key: f for f, keys in DERIVATIONS for key in keys}
#: Every key the derivation of a key writes (with it).
DERIVED_WRITES: dict[str, tuple[str, ...]] = {key: keys for _, keys in DERIVATIONS for key in keys}

"""The derived features of :mod:`models.criteria_values`, over every ECG of a part at once.

:func:`models.criteria_values.criteria_values` derives them one ECG at a time, some 140 lead
look-ups each (a third of a part's criteria work outside the encoder). Here each lead-wise
measurement is one (ECGs, 12) matrix, and each feature a few array operations over it; only
the descriptions (and Python's own ``round``) are made per ECG. The values are those of the
per-ECG code to the bit: comparisons, ``min``/``max`` and first-on-tie choices are written
as that code makes them (``min(x, y)`` is ``y if y < x else x``, with the sign of a zero
kept), and an ECG whose lead values hold a NaN or an infinity, or whose largest QRS ties
between leads, is derived by the per-ECG code itself. ``tests/models/test_criteria_part``
checks the equality on PTB-XL records and on edge values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import compress

import numpy as np

from models.criteria_values import (
    DERIVED_KEYS,
    DERIVED_WRITES,
    LIMB_LEADS,
    PAIR_FEATURES,
    PRECORDIAL_LEADS,
    T_INVERSION_MV,
    T_INVERSION_NORMAL_LEADS,
    T_LOW_FRACTION_OF_R,
    T_UPRIGHT_LEADS,
    PairExcess,
    lead_reader,
)
from models.results import Measurement

LEADS = LIMB_LEADS + PRECORDIAL_LEADS
_INDEX = {lead: i for i, lead in enumerate(LEADS)}
_LEAD_SET = frozenset(LEADS)
_NAN_ROW = [np.nan] * len(LEADS)

#: Derived key -> (value per ECG, description per ECG).
Columns = dict[str, tuple[list[float | None], list[str | None]]]


class LeadMatrices:
    """A part's lead-wise measurements as (ECGs, 12) float64 matrices, NaN where a lead was
    not measured, made once per key."""

    def __init__(self, measurements: Sequence[Mapping[str, Measurement]]) -> None:
        self.measurements = measurements
        self._made: dict[str, tuple[np.ndarray, np.ndarray, list[list[float]]]] = {}

    def __call__(self, key: str) -> tuple[np.ndarray, np.ndarray, list[list[float]]]:
        """The matrix, which ECGs' values are all finite (the others are derived per ECG),
        and the matrix as Python floats (for descriptions)."""
        made = self._made.get(key)
        if made is not None:
            return made
        rows: list[list[float]] = []
        present: list[int] = []
        for measurements in self.measurements:
            m = measurements.get(key)
            per_lead = None if m is None else getattr(m, "per_lead", None)
            if not per_lead:
                rows.append(_NAN_ROW)
                present.append(0)
                continue
            if tuple(per_lead) == LEADS:  # the usual case: every lead, in the standard order
                rows.append(list(per_lead.values()))
                present.append(len(LEADS))
                continue
            rows.append([per_lead.get(lead, np.nan) for lead in LEADS])
            if per_lead.keys() <= _LEAD_SET:
                present.append(len(per_lead))
            else:
                present.append(sum(lead in per_lead for lead in LEADS))
        matrix = np.array(rows, dtype=np.float64).reshape(len(rows), len(LEADS))
        finite = np.isfinite(matrix).sum(axis=1) == np.array(present, dtype=np.int64)
        made = self._made[key] = (matrix, finite, matrix.tolist())
        return made


#: A vectorised derivation: its columns, and the ECGs the per-ECG code must derive.
PartDerivation = Callable[[LeadMatrices], tuple[Columns, np.ndarray]]


def derive_part(key: str, leads: LeadMatrices) -> Columns:
    """The columns of ``key``'s derivation (every key it writes) over the part."""
    columns, exact = _PART[key](leads)
    derivation = DERIVED_KEYS[key]
    for i in np.flatnonzero(~exact).tolist():
        values: dict[str, float | None] = {}
        descriptions: dict[str, str] = {}
        derivation(lead_reader(leads.measurements[i]), values, descriptions)
        for written in DERIVED_WRITES[key]:
            columns[written][0][i] = values.get(written)
            columns[written][1][i] = descriptions.get(written)
    return columns


def _first_min(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``min(x, y)`` elementwise as Python takes it (x unless y < x), NaN where either is."""
    return np.where(np.isnan(x) | np.isnan(y), np.nan, np.where(y < x, y, x))


def _pair_part(feature: PairExcess, leads: LeadMatrices) -> tuple[Columns, np.ndarray]:
    matrix, exact, floats = leads(feature.lead_key)
    a = [_INDEX[p] for p, _ in feature.pairs]
    b = [_INDEX[q] for _, q in feature.pairs]
    limit_a = np.array([feature.limits[p] for p, _ in feature.pairs])
    limit_b = np.array([feature.limits[q] for _, q in feature.pairs])
    excess = _first_min(
        feature.sign * matrix[:, a] - limit_a, feature.sign * matrix[:, b] - limit_b
    )
    filled = np.where(np.isnan(excess), -np.inf, excess)
    first = filled.argmax(axis=1)  # the first pair of the largest excess
    best = filled[np.arange(len(filled)), first]
    values: list[float | None] = []
    descriptions: list[str | None] = []
    for i, (j, value) in enumerate(zip(first.tolist(), best.tolist(), strict=True)):
        if value == -np.inf:  # no pair with both leads (finite rows only reach here)
            values.append(None)
            descriptions.append(None)
            continue
        shown = value if feature.digits is None else round(value, feature.digits)
        p, q = feature.pairs[j]
        values.append(shown)
        where = feature.where(p, q, floats[i][a[j]], floats[i][b[j]])
        descriptions.append(feature.sentence(shown, where))
    return {feature.key: (values, descriptions)}, exact


def _lead_counts(
    counted: list[bool],
    flagged: list[list[bool]],
    names: Sequence[str],
    describe: Callable[[list[str]], str],
) -> tuple[list[float | None], list[str | None]]:
    """Per ECG: how many leads are flagged, and the description naming them (None, None
    where the ECG is not ``counted``)."""
    values: list[float | None] = []
    descriptions: list[str | None] = []
    for count, row in zip(counted, flagged, strict=True):
        if not count:
            values.append(None)
            descriptions.append(None)
            continue
        which = list(compress(names, row))
        values.append(float(len(which)))
        descriptions.append(describe(which))
    return values, descriptions


def _t_inverted(leads: LeadMatrices) -> tuple[Columns, np.ndarray]:
    matrix, exact, _ = leads("t_amplitude")
    read = [i for i, lead in enumerate(LEADS) if lead not in T_INVERSION_NORMAL_LEADS]
    names = [LEADS[i] for i in read]
    t = matrix[:, read]
    measured = (~np.isnan(t)).any(axis=1).tolist()
    values, descriptions = _lead_counts(
        measured,
        (t < T_INVERSION_MV).tolist(),
        names,
        lambda which: f"T inverted (< -0.1 mV) in {', '.join(which)}" if which else "no inverted T",
    )
    return {"t_inverted_leads": (values, descriptions)}, exact


def _t_low(leads: LeadMatrices) -> tuple[Columns, np.ndarray]:
    t_matrix, t_exact, _ = leads("t_amplitude")
    r_matrix, r_exact, _ = leads("r_amplitude")
    read = [_INDEX[lead] for lead in T_UPRIGHT_LEADS]
    t, r = t_matrix[:, read], r_matrix[:, read]
    both = ~np.isnan(t) & ~np.isnan(r)
    low = both & (t < T_LOW_FRACTION_OF_R * np.where(r < 0.0, 0.0, r))  # max(r, 0.0)
    values, descriptions = _lead_counts(
        (both.sum(axis=1) >= 3).tolist(),
        low.tolist(),
        T_UPRIGHT_LEADS,
        lambda which: (
            f"T low, flat or inverted (< 10 % of R) in {', '.join(which)}"
            if which
            else "T upright (>= 10 % of R) in I, II, V3-V6"
        ),
    )
    return {"t_low_leads": (values, descriptions)}, t_exact & r_exact


def _qrs_voltage(leads: LeadMatrices) -> tuple[Columns, np.ndarray]:
    r_matrix, r_exact, _ = leads("r_amplitude")
    s_matrix, s_exact, _ = leads("s_amplitude")
    exact = r_exact & s_exact
    columns: Columns = {}
    for key, group in (
        ("limb_qrs_max_mv", LIMB_LEADS),
        ("precordial_qrs_max_mv", PRECORDIAL_LEADS),
    ):
        read = [_INDEX[lead] for lead in group]
        amplitude = r_matrix[:, read] + s_matrix[:, read]
        filled = np.where(np.isnan(amplitude), -np.inf, amplitude)
        first = filled.argmax(axis=1)
        peak = filled[np.arange(len(filled)), first]
        counted = (~np.isnan(amplitude)).sum(axis=1)
        # max() of (amplitude, lead) pairs breaks a tie by the lead's name: per ECG there.
        exact = exact & (((filled == peak[:, None]).sum(axis=1) == 1) | (counted < 3))
        values: list[float | None] = []
        descriptions: list[str | None] = []
        for n, j, top in zip(counted.tolist(), first.tolist(), peak.tolist(), strict=True):
            if n < 3:
                values.append(None)
                descriptions.append(None)
                continue
            values.append(round(top, 3))
            descriptions.append(f"largest QRS amplitude {top:.2f} mV ({group[j]})")
        columns[key] = (values, descriptions)
    return columns, exact


def _single_leads(leads: LeadMatrices) -> tuple[Columns, np.ndarray]:
    _, r_exact, r_floats = leads("r_amplitude")
    _, s_exact, s_floats = leads("s_amplitude")
    _, p_exact, p_floats = leads("p_amplitude")
    v1, v3, ii = _INDEX["V1"], _INDEX["V3"], _INDEX["II"]
    r_v1 = [_none(row[v1]) for row in r_floats]
    s_v1 = [_none(row[v1]) for row in s_floats]
    ratio = [
        None if r is None or s is None else round(r / (0.05 if s < 0.05 else s), 2)  # max(s, .05)
        for r, s in zip(r_v1, s_v1, strict=True)
    ]
    unsaid: list[str | None] = [None] * len(r_v1)
    columns: Columns = {
        "r_v1_mv": (r_v1, list(unsaid)),
        "rs_ratio_v1": (ratio, list(unsaid)),
        "p_amplitude_ii_mv": ([_none(row[ii]) for row in p_floats], list(unsaid)),
        "r_v3_mv": ([_none(row[v3]) for row in r_floats], list(unsaid)),
    }
    return columns, r_exact & s_exact & p_exact


def _none(value: float) -> float | None:
    return None if value != value else value  # NaN: not measured (finite rows only)


_PART: dict[str, PartDerivation] = {f.key: partial(_pair_part, f) for f in PAIR_FEATURES}
_PART.update(
    t_inverted_leads=_t_inverted,
    t_low_leads=_t_low,
    limb_qrs_max_mv=_qrs_voltage,
    precordial_qrs_max_mv=_qrs_voltage,
    **dict.fromkeys(("r_v1_mv", "rs_ratio_v1", "p_amplitude_ii_mv", "r_v3_mv"), _single_leads),
)
assert set(_PART) == set(DERIVED_KEYS), "a derived feature without its part form"

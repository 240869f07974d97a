"""Which findings the leads of a recording can support: policy as data.

The model scores any ECG, but a finding whose criteria live in leads that were not recorded
cannot be assessed from it (a 2-lead Holter strip says nothing about an anterior infarct or
the QRS axis). The table below states, per catalog label, the leads its textbook criteria
read (the AHA/ACCF/HRS recommendations for the standardization and interpretation of the
ECG, parts I-VI, 2007-2009); a label is *assessable* when every group has at least one lead
present (recorded, or derived from I and II by Einthoven's and Goldberger's equations).

Rhythm and interval labels need any one lead, so they are absent from the table (always
assessable when a lead exists). Labels not listed (a department's own sentence) are never
reported as not assessable: the service cannot know which leads a free text needs.
"""

from __future__ import annotations

from collections.abc import Iterable

from adapters.record import STANDARD_LEADS

ALL_12 = tuple((lead,) for lead in STANDARD_LEADS)
#: For each label id: groups of leads; each group needs one of its leads present.
REQUIRED_LEADS: dict[str, tuple[tuple[str, ...], ...]] = {
    # a normal ECG, the superclasses and territory-wide findings need the whole 12-lead set
    "normal_ecg": ALL_12,
    "myocardial_infarction": ALL_12,
    "st_t_change": ALL_12,
    "conduction_disturbance": ALL_12,
    "hypertrophy": ALL_12,
    "acute_st_elevation": ALL_12,
    "ischaemic_st_t_changes": ALL_12,
    "st_depression": ALL_12,
    "t_wave_inversion": ALL_12,
    "t_wave_abnormality": ALL_12,
    "pathological_q_waves": ALL_12,
    "low_qrs_voltage": ALL_12,
    # territories
    "anterior_mi": (("V1", "V2"), ("V3",), ("V4",)),
    "inferior_mi": (("II",), ("III",), ("aVF",)),
    "lateral_mi": (("I",), ("aVL",), ("V5", "V6")),
    # bundle branch blocks, pre-excitation: QRS morphology in V1, V5/V6 and I
    "left_bundle_branch_block": (("V1",), ("V5", "V6"), ("I",)),
    "incomplete_left_bundle_branch_block": (("V1",), ("V5", "V6"), ("I",)),
    "right_bundle_branch_block": (("V1",), ("V5", "V6"), ("I",)),
    "incomplete_right_bundle_branch_block": (("V1",), ("V5", "V6"), ("I",)),
    "nonspecific_ivcd": (("V1",), ("V5", "V6"), ("I",)),
    "wpw": (("V1",), ("I",), ("II",)),
    # the frontal QRS axis needs two orthogonal limb leads
    "left_axis_deviation": (("I",), ("aVF",)),
    "right_axis_deviation": (("I",), ("aVF",)),
    "left_anterior_fascicular_block": (("I",), ("aVF",), ("aVL",)),
    "left_posterior_fascicular_block": (("I",), ("aVF",), ("III",)),
    # voltage criteria (Sokolow-Lyon, Cornell) and the P wave in II and V1
    "left_ventricular_hypertrophy": (("V1",), ("V5", "V6"), ("aVL",), ("V3",)),
    "right_ventricular_hypertrophy": (("V1",), ("V5", "V6"), ("I",), ("aVF",)),
    "left_atrial_enlargement": (("II",), ("V1",)),
    "right_atrial_enlargement": (("II",), ("V1",)),
}
_DERIVABLE_FROM_I_II = ("III", "aVR", "aVL", "aVF")


def present_leads(leads: Iterable[str]) -> frozenset[str]:
    """Standard leads recorded, plus those derivable from I and II."""
    present = {lead for lead in leads if lead in STANDARD_LEADS}
    if {"I", "II"} <= present:
        present.update(_DERIVABLE_FROM_I_II)
    return frozenset(present)


def missing_for(label_id: str, leads: Iterable[str]) -> tuple[str, ...]:
    """The leads ``label_id`` needs that the recording lacks (one per unmet group)."""
    present = present_leads(leads)
    needed: list[str] = []
    for group in REQUIRED_LEADS.get(label_id, ()):
        if not present.intersection(group):
            needed.append(" or ".join(group))
    return tuple(needed)


def not_assessable(label_ids: Iterable[str], leads: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``{label_id: missing leads}`` for the labels the recorded leads cannot support."""
    lead_list = list(leads)
    out: dict[str, tuple[str, ...]] = {}
    for label_id in label_ids:
        missing = missing_for(label_id, lead_list)
        if missing:
            out[label_id] = missing
    return out

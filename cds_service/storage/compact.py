"""Compact result rows: per result only what varies, the rest stored once by its digest.

A catalog-wide result was ~31 KB of JSON, ~85 % of it the same in every result of a model
version: each label's text, severity, codes (SNOMED, SCP), calibration flag and criteria
ids, and each measurement's name, unit, LOINC code and display text. That part (the
*parts*) is stored once in ``result_parts``, keyed by the SHA-256 of its canonical JSON
(content-addressed: the same parts from any process, any day, are one row); a result row
keeps the digest and, per score, its label id, probability, similarity, evidence lines and
embedding-only probability, per measurement its value and per-lead values.

Reading joins the two back into exactly the :class:`ClassificationResult` that was stored
(``tests/jobs/test_result_storage.py`` checks it on real records of several formats). Rows
written before this form (the full ``to_dict()``, no ``parts_digest``) are read as before.

The row keeps ``scores[*].label_id`` and ``scores[*].probability`` under those names, so
the reviewer list's SQL filter (:meth:`EcgStore._has_score`) reads either form alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from cds_service.lru import BoundedLru
from models.results import ClassificationResult, Code, LabelScore, Measurement, QualityReport

#: ``form`` of a compact row (a full ``to_dict()`` row has no ``form`` key).
COMPACT_FORM = 2

#: The static part of one score / one measurement, as the memo key holds it.
_LabelStatic = tuple[str, str, str, tuple[Code, ...], bool, tuple[str, ...]]
_MeasurementStatic = tuple[str, str, str, str | None, str]


@dataclass(frozen=True)
class Parts:
    """The static part of results, decoded once and shared by every result that names it."""

    model_version: str
    calibration: str
    #: label id -> (text, severity, codes, calibrated, criteria)
    labels: Mapping[str, tuple[str, Any, tuple[Code, ...], bool, tuple[str, ...]]]
    #: measurement key -> (name, unit, loinc, display)
    measurements: Mapping[str, tuple[str, str, str | None, str]]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Parts:
        return cls(
            model_version=body["model_version"],
            calibration=body["calibration"],
            labels={
                label_id: (
                    text,
                    severity,
                    tuple(Code(system, code, display) for system, code, display in codes),
                    calibrated,
                    tuple(criteria),
                )
                for label_id, (text, severity, codes, calibrated, criteria) in body[
                    "labels"
                ].items()
            },
            measurements={
                key: (name, unit, loinc, display)
                for key, (name, unit, loinc, display) in body["measurements"].items()
            },
        )


@dataclass(frozen=True)
class Split:
    """A result split for storage: the row's JSON, and the parts it names (digest, body)."""

    row: dict[str, Any]
    digest: str
    body: dict[str, Any]


def parts_digest(body: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of a parts body."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ResultCodec:
    """Splits results into row + parts and joins them back. Thread-safe; one per ledger.

    The parts of a batch's results are nearly always one and the same: they are found by a
    memo keyed on their static fields (hashing those is far cheaper than writing and hashing
    their JSON), and decoded parts are kept by digest (a digest names one content forever).
    """

    def __init__(self, memo_size: int = 64) -> None:
        self._memo: BoundedLru[tuple[Any, ...], tuple[str, dict[str, Any]]] = BoundedLru(memo_size)
        self._decoded: BoundedLru[str, Parts] = BoundedLru(memo_size)

    def split(self, result: ClassificationResult) -> Split | None:
        """The compact row of ``result``, or None when it cannot be split exactly (two
        scores of one label id: the row then keeps the full ``to_dict()``)."""
        labels: dict[str, _LabelStatic] = {}
        for s in result.scores:
            labels[s.label_id] = (s.label_id, s.text, s.severity, s.codes, s.calibrated, s.criteria)
        if len(labels) != len(result.scores):
            return None
        measurements: tuple[_MeasurementStatic, ...] = tuple(
            (key, m.name, m.unit, m.loinc, m.display) for key, m in result.measurements.items()
        )
        key = (
            result.model_version,
            result.calibration,
            frozenset(labels.values()),
            frozenset(measurements),
        )
        known = self._memo.get(key)
        if known is None:
            body = {
                "model_version": result.model_version,
                "calibration": result.calibration,
                "labels": {
                    label_id: [
                        text,
                        severity,
                        [[c.system, c.code, c.display] for c in codes],
                        calibrated,
                        list(criteria),
                    ]
                    for label_id, text, severity, codes, calibrated, criteria in labels.values()
                },
                "measurements": {
                    k: [name, unit, loinc, display]
                    for k, name, unit, loinc, display in measurements
                },
            }
            known = (parts_digest(body), body)
            self._memo.put(key, known)
        q = result.quality
        row = {
            "form": COMPACT_FORM,
            "parts": known[0],
            "quality": {
                "acceptable": q.acceptable,
                "reasons": list(q.reasons),
                "out_of_distribution": q.out_of_distribution,
                "unusable_leads": list(q.unusable_leads),
            },
            "measurements": {
                k: [m.value, None if m.per_lead is None else dict(m.per_lead)]
                for k, m in result.measurements.items()
            },
            "scores": [_score_row(s) for s in result.scores],
        }
        return Split(row, known[0], known[1])

    def known_parts(self, digest: str) -> Parts | None:
        return self._decoded.get(digest)

    def add_parts(self, digest: str, body: Mapping[str, Any]) -> Parts:
        parts = Parts.from_body(body)
        self._decoded.put(digest, parts)
        return parts


def _score_row(s: LabelScore) -> dict[str, Any]:
    """What varies of one score; ``label_id`` and ``probability`` keep their full names (the
    list filter reads them in SQL), empty evidence and a missing fused probability are left
    out."""
    out: dict[str, Any] = {
        "label_id": s.label_id,
        "probability": s.probability,
        "sim": s.similarity,
    }
    if s.evidence:
        out["ev"] = list(s.evidence)
    if s.embedding_probability is not None:
        out["emb"] = s.embedding_probability
    return out


def join(row: Mapping[str, Any], parts: Parts | None) -> ClassificationResult:
    """The result a stored row holds: a compact row with its parts, or a full one."""
    if row.get("form") != COMPACT_FORM:
        return ClassificationResult.from_dict(dict(row))
    if parts is None:
        raise ValueError(f"result parts {row.get('parts')} are not stored")
    quality = row["quality"]
    scores = []
    for s in row["scores"]:
        text, severity, codes, calibrated, criteria = parts.labels[s["label_id"]]
        scores.append(
            LabelScore(
                label_id=s["label_id"],
                text=text,
                probability=s["probability"],
                similarity=s["sim"],
                severity=severity,
                codes=codes,
                calibrated=calibrated,
                evidence=tuple(s.get("ev", ())),
                criteria=criteria,
                embedding_probability=s.get("emb"),
            )
        )
    measurements = {}
    for key, (value, per_lead) in row["measurements"].items():
        name, unit, loinc, display = parts.measurements[key]
        measurements[key] = Measurement(name, value, unit, loinc, display, per_lead)
    return ClassificationResult(
        model_version=parts.model_version,
        quality=QualityReport(
            acceptable=quality["acceptable"],
            reasons=tuple(quality["reasons"]),
            out_of_distribution=quality["out_of_distribution"],
            unusable_leads=tuple(quality["unusable_leads"]),
        ),
        measurements=measurements,
        scores=tuple(scores),
        calibration=parts.calibration,
    )


def full_form(row: Mapping[str, Any], body: Mapping[str, Any] | None) -> dict[str, Any]:
    """The full ``to_dict()`` form of a stored row (the downgrade writes rows back in it)."""
    parts = None if body is None else Parts.from_body(body)
    return join(row, parts).to_dict()

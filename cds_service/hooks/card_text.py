"""The words on a card: dates, the summary line, measurements, the detail table (Markdown)."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.record import utc_representable
from cds_service.hooks.assess import Assessment, CardPolicy, EcgRef, label_name
from models.catalog import LabelCatalog
from models.results import ClassificationResult, LabelScore

SUMMARY_MAX = 139  # "fewer than 140 characters"


def ecg_date(acquired: datetime | None) -> str:
    if acquired is None:
        return "date unknown"
    if acquired.tzinfo is not None and utc_representable(acquired) is not None:
        acquired = acquired.astimezone(UTC)  # else: its own calendar date
    return acquired.date().isoformat()


def fit_summary(text: str) -> str:
    """Trim to fewer than 140 characters on a word boundary, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= SUMMARY_MAX:
        return text
    cut = text[: SUMMARY_MAX - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "…"


def _fmt_measurement(result: ClassificationResult, name: str, label: str, unit: str) -> str | None:
    m = result.measurements.get(name)
    if m is None or m.value is None:
        return None
    return f"{label} {m.value:.0f} {unit}"


def measurements_line(result: ClassificationResult) -> str:
    parts = [
        _fmt_measurement(result, "heart_rate", "HR", "/min"),
        _fmt_measurement(result, "pr", "PR", "ms"),
        _fmt_measurement(result, "qrs", "QRS", "ms"),
        _fmt_measurement(result, "qt", "QT", "ms"),
        _fmt_measurement(result, "qtc", "QTc", "ms"),
        _fmt_measurement(result, "axis", "axis", "°"),
    ]
    present = [p for p in parts if p]
    return " · ".join(present) if present else "not measurable on this tracing"


def evidence_text(score: LabelScore, limit: int = 3) -> str:
    """The measured evidence of a finding, escaped, for a table cell ("—" when none)."""
    lines = score.measured_evidence[:limit]
    if not lines:
        return "—" if not score.criteria else "criteria not measurable here"
    return escape("; ".join(lines))


#: Markdown metacharacters (CommonMark backslash-escapes them all) plus ``:``, ``.`` and
#: ``@``, which GFM-style renderers turn into autolinks: links, images, emphasis, code spans,
#: headings and table cells made from outside text all stay plain text. (``-``, ``+`` and
#: ``=`` only mean something at the start of a line; outside text never starts one.)
_MARKDOWN_PUNCTUATION = frozenset("\\`*_{}[]()#!|~:.@")
#: Raw HTML is live in many CDS clients' Markdown renderers: entities, never tags.
_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}


def escape(text: str) -> str:
    """``text`` from outside (ids, file names, problems, drug names) as inert Markdown: one
    line, every Markdown and HTML metacharacter escaped, control characters dropped."""
    out: list[str] = []
    for char in " ".join(str(text).split()):
        if char in _HTML:
            out.append(_HTML[char])
        elif char in _MARKDOWN_PUNCTUATION:
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
    return "".join(out)


def detail_markdown(
    ecg: EcgRef,
    result: ClassificationResult,
    assessment: Assessment,
    catalog: LabelCatalog,
    policy: CardPolicy,
) -> str:
    lines: list[str] = []
    if not result.quality.acceptable:
        reasons = "; ".join(result.quality.reasons) or "signal quality not acceptable"
        lines.append(f"**The ECG could not be interpreted:** {escape(reasons)}.")
    else:
        shown = list(assessment.findings[: policy.max_findings])
        if shown:
            lines += [
                "**Findings** (calibrated probability; the measurements each rests on)",
                "",
                "| Finding | Probability | Severity | Measured evidence |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {escape(label_name(s, catalog))} | {s.probability:.0%} | {s.severity} | "
                f"{evidence_text(s)} |"
                for s in shown
            ]
        else:
            top = result.scores[:3]
            lines.append(
                f"No finding reached the reporting threshold (p ≥ {policy.finding_threshold:.2f})."
            )
            if top:
                listed = ", ".join(
                    f"{escape(label_name(s, catalog))} {s.probability:.0%}" for s in top
                )
                lines.append(f"Highest scores: {listed}.")
    lines += ["", f"- **Measurements:** {measurements_line(result)}"]
    notes: list[str] = []
    if result.quality.acceptable and result.quality.reasons:
        notes.append("; ".join(result.quality.reasons))
    if result.quality.out_of_distribution:
        notes.append("this ECG looks unlike the model's training data: interpret with care")
    lines.append(f"- **Signal quality:** {escape('; '.join(notes)) if notes else 'acceptable'}")
    origin = f" · source: {escape(ecg.origin)}" if ecg.origin else ""
    calibration = f" Calibration: {escape(result.calibration)}." if result.calibration else ""
    lines += [
        "",
        f"*AI interpretation by zero-shot model `{result.model_version}`; not reviewed by a "
        f"clinician. Confirm on the tracing before acting.*{origin}{calibration}",
    ]
    return "\n".join(lines)

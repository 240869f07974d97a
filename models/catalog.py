"""The zero-shot label catalog: the conditions the ECG-text model scores, with codes and severity.

The shipped catalog is ``models/catalog/labels.yaml`` (its header documents every field).
:func:`load_catalog` validates a catalog file with pydantic and turns any mistake into a
:class:`CatalogError` that names the file, the label and what is wrong. Free-text labels typed
by a user become a catalog too, through :meth:`LabelCatalog.from_texts`.

Example::

    catalog = load_catalog()
    af = catalog.get("atrial_fibrillation")
    af.prompts        # ('atrial fibrillation', 'Atrial fibrillation with an irregularly ...', ...)
    catalog.label_ids_for_code(SNOMED_SYSTEM, "164889003")   # ['atrial_fibrillation']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.criteria import CriteriaCatalog, CriteriaError
from models.criteria_schema import parse_criteria
from models.results import Code, Severity

SNOMED_SYSTEM = "http://snomed.info/sct"
#: PTB-XL's SCP-ECG statement table (71 statements; PTB-XL v1.0.3 on PhysioNet). SCP-ECG
#: statement acronyms have no FHIR code system of their own, so the table's address names them.
SCP_SYSTEM = "https://physionet.org/content/ptb-xl/1.0.3/scp_statements.csv"
#: Short names allowed for ``system`` in the YAML file.
SYSTEM_ALIASES: Mapping[str, str] = {"snomed": SNOMED_SYSTEM, "scp": SCP_SYSTEM}
#: PTB-XL diagnostic superclasses (``diagnostic_class`` in scp_statements.csv).
PTBXL_SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")

DEFAULT_CATALOG_PATH = Path(__file__).resolve().parent / "catalog" / "labels.yaml"

#: A free-text label longer than this is almost certainly pasted text, not a condition.
MAX_FREE_TEXT_CHARS = 300
MAX_ID_CHARS = 64
_ID_PATTERN = r"^[a-z0-9][a-z0-9_]*$"


class CatalogError(ValueError):
    """A catalog file or free-text label list that cannot be used; the message says where, why."""


@dataclass(frozen=True)
class Calibration:
    """Maps raw cosine similarity to probability: ``sigmoid(slope * similarity + intercept)``."""

    slope: float
    intercept: float


@dataclass(frozen=True)
class Label:
    """One condition the model scores, with a prompt ensemble, codes and clinical severity."""

    id: str
    name: str
    prompts: tuple[str, ...]
    codes: tuple[Code, ...] = ()
    severity: Severity = "info"
    calibration: Calibration | None = None
    #: PTB-XL SCP statement codes and/or superclasses whose presence makes a record positive.
    ptbxl: tuple[str, ...] = ()
    #: For critical labels: calibrated probability at or above which to raise a critical alert.
    critical_threshold: float | None = None
    #: Ids of the measurable criteria the label rests on (all must hold; see
    #: :mod:`models.criteria`). ``()``: none, the embedding alone. ``None``: not named, so the
    #: scorer resolves them from the label's text (:mod:`models.resolution`).
    criteria: tuple[str, ...] | None = None
    #: Whether this finding on the latest ECG makes ordering a QT-prolonging drug a risk.
    qt_risk: bool = False

    @property
    def text(self) -> str:
        """The label's representative text (its first prompt)."""
        return self.prompts[0]

    def snomed_codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.codes if c.system == SNOMED_SYSTEM)

    def is_ptbxl_positive(self, statements: Iterable[str]) -> bool | None:
        """Whether a PTB-XL record with these statements/superclasses is positive for the label.

        ``statements`` should hold the record's SCP codes and their diagnostic superclasses
        (see :func:`ptbxl_statements_with_superclasses`). ``None`` when the label has no PTB-XL
        mapping, so it cannot be evaluated on PTB-XL.
        """
        if not self.ptbxl:
            return None
        present = set(statements)
        return any(code in present for code in self.ptbxl)


class LabelCatalog:
    """An ordered, id-unique collection of :class:`Label`, with the criteria they may name."""

    def __init__(self, labels: Iterable[Label], criteria: CriteriaCatalog | None = None) -> None:
        self.labels: tuple[Label, ...] = tuple(labels)
        #: The measurable criteria (the catalog file's ``criteria:`` section); None: the
        #: scorer uses the shipped ones.
        self.criteria = criteria
        self._by_id: dict[str, Label] = {}
        for label in self.labels:
            if label.id in self._by_id:
                raise CatalogError(f"duplicate label id {label.id!r}")
            self._by_id[label.id] = label

    def __iter__(self) -> Iterator[Label]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label_id: object) -> bool:
        return label_id in self._by_id

    def __repr__(self) -> str:
        return f"LabelCatalog({len(self)} labels)"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(label.id for label in self.labels)

    def get(self, label_id: str) -> Label:
        try:
            return self._by_id[label_id]
        except KeyError:
            raise KeyError(f"no label {label_id!r} in the catalog") from None

    def subset(self, label_ids: Iterable[str]) -> LabelCatalog:
        """A catalog of just these labels, in the order given."""
        return LabelCatalog((self.get(i) for i in label_ids), self.criteria)

    def label_ids_for_code(self, system: str, code: str) -> list[str]:
        """Ids of every label carrying ``system|code`` (aliases ``snomed``/``scp`` accepted)."""
        system = SYSTEM_ALIASES.get(system, system)
        return [
            label.id
            for label in self.labels
            if any(c.system == system and c.code == code for c in label.codes)
        ]

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> LabelCatalog:
        """Ad-hoc labels from free text (e.g. typed by a clinician): one prompt each, severity info.

        The id is a slug of the text (``"Hyperkalaemia with peaked T waves"`` ->
        ``hyperkalaemia_with_peaked_t_waves``), made unique with ``_2``, ``_3``... suffixes.
        No codes, no calibration: the scorer applies its documented default mapping.
        """
        if isinstance(texts, str):
            raise CatalogError("texts must be a list of label texts, not one string")
        labels: list[Label] = []
        used: set[str] = set()
        for index, raw in enumerate(texts):
            if not isinstance(raw, str):
                raise CatalogError(f"label text #{index + 1} is {type(raw).__name__}, not a string")
            text = " ".join(raw.split())
            if not text:
                raise CatalogError(f"label text #{index + 1} is empty")
            if len(text) > MAX_FREE_TEXT_CHARS:
                raise CatalogError(
                    f"label text #{index + 1} is {len(text)} characters; "
                    f"keep it under {MAX_FREE_TEXT_CHARS} (a condition, not a report)"
                )
            base = slugify(text)
            label_id, n = base, 1
            while label_id in used:
                n += 1
                suffix = f"_{n}"
                label_id = base[: MAX_ID_CHARS - len(suffix)] + suffix
            used.add(label_id)
            labels.append(Label(id=label_id, name=text, prompts=(text,), severity="info"))
        return cls(labels)


def slugify(text: str) -> str:
    """Lowercase ASCII letters and digits joined by underscores, at most 64 characters."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:MAX_ID_CHARS].rstrip("_")
    return slug or "label"


def ptbxl_statements_with_superclasses(
    scp_codes: Iterable[str], diagnostic_class: Mapping[str, str]
) -> set[str]:
    """A PTB-XL record's SCP codes plus the diagnostic superclasses they belong to.

    ``diagnostic_class`` maps statement code -> superclass, from the ``diagnostic_class``
    column of scp_statements.csv (form and rhythm statements have none).
    """
    codes = set(scp_codes)
    return codes | {diagnostic_class[c] for c in codes if diagnostic_class.get(c)}


# ------------------------------------------------------------------------ file schema


class _CodeSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str | None = None

    @field_validator("code", mode="before")
    @classmethod
    def _code_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted SNOMED code as an int; SNOMED codes are strings.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("system")
    @classmethod
    def _known_system(cls, value: str) -> str:
        value = SYSTEM_ALIASES.get(value, value)
        if not re.match(r"^(https?://|urn:)", value):
            raise ValueError(
                f"system {value!r} is neither an alias ({', '.join(SYSTEM_ALIASES)}) nor a URI"
            )
        return value


class _CalibrationSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slope: float
    intercept: float


class _LabelSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_ID_PATTERN, max_length=MAX_ID_CHARS)
    name: str = Field(min_length=1)
    severity: Literal["critical", "warning", "info", "normal"]
    prompts: list[str] = Field(min_length=2, max_length=5)
    codes: list[_CodeSchema] = Field(default_factory=list)
    ptbxl: list[str] = Field(default_factory=list)
    calibration: _CalibrationSchema | None = None
    critical_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    criteria: list[str] | None = None
    qt_risk: bool = False

    @field_validator("prompts")
    @classmethod
    def _prompts_not_blank(cls, value: list[str]) -> list[str]:
        cleaned = [" ".join(p.split()) for p in value]
        if any(not p for p in cleaned):
            raise ValueError("prompts must not be blank")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("prompts must be distinct")
        return cleaned

    def to_label(self) -> Label:
        return Label(
            id=self.id,
            name=self.name,
            prompts=tuple(self.prompts),
            codes=tuple(Code(c.system, c.code, c.display) for c in self.codes),
            severity=self.severity,
            calibration=(
                Calibration(self.calibration.slope, self.calibration.intercept)
                if self.calibration
                else None
            ),
            ptbxl=tuple(self.ptbxl),
            critical_threshold=self.critical_threshold,
            criteria=None if self.criteria is None else tuple(self.criteria),
            qt_risk=self.qt_risk,
        )


class _CatalogSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    labels: list[dict[str, Any]] = Field(min_length=1)
    criteria: list[Any] = Field(default_factory=list)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(label)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def load_catalog(path: Path | str | None = None) -> LabelCatalog:
    """Read and validate a catalog file (default: the shipped ``models/catalog/labels.yaml``).

    Raises :class:`CatalogError` naming the file, the label (id or position) and the problem.
    """
    file = Path(path) if path is not None else DEFAULT_CATALOG_PATH
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"{file}: cannot read the catalog ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{file}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"{file}: expected a mapping with a 'labels' list at the top level")
    try:
        document = _CatalogSchema.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(f"{file}: {_describe(exc)}") from None
    labels: list[Label] = []
    seen: set[str] = set()
    for index, item in enumerate(document.labels):
        label_ref = f"label #{index + 1}"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            label_ref += f" ({item['id']!r})"
        try:
            label = _LabelSchema.model_validate(item).to_label()
        except ValidationError as exc:
            raise CatalogError(f"{file}: {label_ref}: {_describe(exc)}") from None
        if label.id in seen:
            raise CatalogError(f"{file}: {label_ref}: duplicate label id {label.id!r}")
        seen.add(label.id)
        labels.append(label)
    try:
        criteria = parse_criteria(document.criteria, where=str(file))
    except CriteriaError as exc:
        raise CatalogError(str(exc)) from None
    for index, label in enumerate(labels):
        unknown = [c for c in label.criteria or () if c not in criteria]
        if unknown:
            raise CatalogError(
                f"{file}: label #{index + 1} ({label.id!r}): criteria {unknown} are not in "
                "the criteria section"
            )
    return LabelCatalog(labels, criteria)


def snomed_to_label_ids(code: str, catalog: LabelCatalog | None = None) -> list[str]:
    """Ids of the catalog labels carrying this SNOMED CT code (default: the shipped catalog).

    For evaluation on records labelled with SNOMED codes (PhysioNet/CinC ``# Dx:`` lines).
    """
    return (catalog or _default_catalog()).label_ids_for_code(SNOMED_SYSTEM, str(code))


_DEFAULT: LabelCatalog | None = None


def _default_catalog() -> LabelCatalog:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_catalog()
    return _DEFAULT

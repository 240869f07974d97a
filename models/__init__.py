"""The ECG-text model: encoders, zero-shot classification, label catalog, training, evaluation.

Uses :mod:`adapters` for input; knows nothing of web services, queues or databases.
"""

from typing import TYPE_CHECKING, Any

from models.catalog import Label, LabelCatalog, load_catalog
from models.measurements import measure
from models.quality import assess_quality
from models.results import ClassificationResult, Code, LabelScore, Measurement, QualityReport

if TYPE_CHECKING:
    from models.classifier import ZeroShotClassifier


def __getattr__(name: str) -> Any:
    # Imported on first use: the classifier pulls in torch, which plain-data users
    # of ``models`` (the service's storage, the CLI's --help) should not pay for.
    if name == "ZeroShotClassifier":
        from models.classifier import ZeroShotClassifier

        return ZeroShotClassifier
    raise AttributeError(f"module 'models' has no attribute {name!r}")


__all__ = [
    "ClassificationResult",
    "Code",
    "Label",
    "LabelCatalog",
    "LabelScore",
    "Measurement",
    "QualityReport",
    "ZeroShotClassifier",
    "assess_quality",
    "load_catalog",
    "measure",
]

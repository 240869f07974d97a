"""The ECG-text model: encoders, zero-shot classification, label catalog, training, evaluation.

Uses :mod:`adapters` for input; knows nothing of web services, queues or databases.
"""

from models.catalog import Label, LabelCatalog, load_catalog
from models.measurements import measure
from models.quality import assess_quality
from models.results import ClassificationResult, Code, LabelScore, Measurement, QualityReport

__all__ = [
    "ClassificationResult",
    "Code",
    "Label",
    "LabelCatalog",
    "LabelScore",
    "Measurement",
    "QualityReport",
    "assess_quality",
    "load_catalog",
    "measure",
]

"""A hospital's own calibration: per-label maps fitted on its labelled archive.

``ecg-cds calibrate --data DIR`` (:func:`models.site_fit.fit_site_calibration`) scores a
site's labelled ECGs with the shipped model (embedding + criteria fusion), then fits one
Platt map per label on the final logit, ``p = sigmoid(slope * logit(p_model) + intercept)``,
shrunk towards the identity by a Gaussian prior (a label with few positives moves little).
The file is written beside the model (``site_calibration.json`` by default) and the service
loads it by setting (``ECG_CDS_SITE_CALIBRATION``); results, cards and the model card name
it (:attr:`SiteCalibration.name`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.fusion import logit, sigmoid

SITE_CALIBRATION_NAME = "site_calibration.json"


class SiteCalibrationError(ValueError):
    """A site calibration file that cannot be used (the message names the file and why)."""


@dataclass(frozen=True)
class SiteMap:
    slope: float
    intercept: float
    n: int = 0
    positives: int = 0


@dataclass
class SiteCalibration:
    """Per-label maps on the model's final logit, with what they were fitted on."""

    name: str
    fitted_on: str
    model_version: str
    labels: dict[str, SiteMap] = field(default_factory=dict)
    created: str = ""

    def apply_logit(self, label_id: str, z: np.ndarray) -> np.ndarray:
        """The site-calibrated logits (unchanged for a label without a site map)."""
        fitted = self.labels.get(label_id)
        if fitted is None:
            return z
        return fitted.slope * np.asarray(z, dtype=np.float64) + fitted.intercept

    def apply(self, label_id: str, p: np.ndarray) -> np.ndarray:
        return sigmoid(self.apply_logit(label_id, logit(p)))

    @property
    def description(self) -> str:
        return f"site calibration {self.name!r} ({self.fitted_on})"

    def save(self, path: Path) -> None:
        data = {
            "method": "p = sigmoid(slope * logit(p_model) + intercept), per label; MAP fit with "
            "a Gaussian prior around the identity (slope 1, intercept 0)",
            "name": self.name,
            "fitted_on": self.fitted_on,
            "model_version": self.model_version,
            "created": self.created,
            "labels": {k: asdict(v) for k, v in sorted(self.labels.items())},
        }
        Path(path).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> SiteCalibration:
        file = Path(path)
        try:
            data = json.loads(file.read_text())
            return cls(
                name=str(data["name"]),
                fitted_on=str(data["fitted_on"]),
                model_version=str(data.get("model_version", "")),
                created=str(data.get("created", "")),
                labels={k: SiteMap(**v) for k, v in data.get("labels", {}).items()},
            )
        except OSError as exc:
            raise SiteCalibrationError(f"{file}: cannot read ({exc.strerror or exc})") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise SiteCalibrationError(
                f"{file}: not a site calibration file ({exc}); write one with "
                "`ecg-cds calibrate --data DIR`"
            ) from None

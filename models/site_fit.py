"""Fit a site calibration on a hospital's own labelled archive (``ecg-cds calibrate``).

The archive is read by :func:`models.labelled.labelled_records` (statements inside
MUSE/Philips files, a reports CSV ``file,report``, a CinC-format folder or a PTB-XL layout).
Every ECG is scored by the model as served (embedding + criteria fusion); per catalog label
with at least :data:`models.calibration.MIN_POSITIVES` positives and negatives, a Platt map
on the final logit is fitted (MAP, Gaussian prior around the identity, so few positives move
it little). Labels below that keep the shipped scores; the file lists what it fitted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from models.calibration import MIN_POSITIVES
from models.catalog import LabelCatalog
from models.classifier import ZeroShotClassifier
from models.fusion import logit
from models.fusion_fit import channel_scores
from models.labelled import labelled_records
from models.site import SiteCalibration, SiteMap


def fit_site_map(z: np.ndarray, y: np.ndarray, prior: float = 1.0) -> SiteMap | None:
    pos = int(y.sum())
    if pos < MIN_POSITIVES or len(y) - pos < MIN_POSITIVES:
        return None

    def loss(params: np.ndarray) -> float:
        a, b = params
        t = a * z + b
        return float(np.sum(np.logaddexp(0.0, t) - y * t) + prior * ((a - 1) ** 2 + b**2))

    res = minimize(
        loss, x0=np.array([1.0, 0.0]), method="L-BFGS-B", bounds=[(0.0, None), (None, None)]
    )
    a, b = (float(v) for v in res.x)
    return SiteMap(slope=round(a, 4), intercept=round(b, 4), n=len(y), positives=pos)


def fit_site_calibration(
    clf: ZeroShotClassifier,
    data: Path,
    *,
    name: str,
    reports_csv: Path | None = None,
) -> SiteCalibration:
    catalog = clf.catalog
    records = labelled_records(data, catalog, reports_csv=reports_csv, split="val")
    if not records:
        raise ValueError(f"{data}: no labelled ECGs found (statements, reports CSV or # Dx codes)")
    site_free = ZeroShotClassifier(clf.model, clf.directory, catalog=catalog)  # no site map
    labels = LabelCatalog(catalog.labels, catalog.criteria)
    scores = channel_scores(site_free, records, labels)
    maps: dict[str, SiteMap] = {}
    for j, label in enumerate(labels):
        assessed = ~np.isnan(scores.y[:, j])
        fitted = fit_site_map(logit(scores.fused[assessed, j]), scores.y[assessed, j])
        if fitted is not None:
            maps[label.id] = fitted
    return SiteCalibration(
        name=name,
        fitted_on=f"{data} ({len(records)} labelled ECGs, {len(maps)} labels fitted)",
        model_version=clf.model_version,
        labels=maps,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )

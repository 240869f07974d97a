"""Shared fixtures for the model tests: the shipped classifier, loaded once per session."""

from __future__ import annotations

import pytest

from models.classifier import ZeroShotClassifier


@pytest.fixture(scope="session")
def classifier() -> ZeroShotClassifier:
    return ZeroShotClassifier.from_pretrained()

"""Tests of the ECG format adapters on real files."""

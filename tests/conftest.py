"""Shared helpers for the harness's own tests."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

pytest_plugins = ["pytester"]


@pytest.fixture
def data_dir() -> Path:
    """Recorded data from real runs (timelines, guest output)."""
    return DATA

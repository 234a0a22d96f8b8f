"""Shared fixtures: the original models' reference layout (tests/data, see its README)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parent / "data"
MANIFEST_PATH = DATA / "official_models.json.gz"


@pytest.fixture(scope="session")
def manifest() -> dict:
    """The original models' state-dict layouts, parameter counts, GMACs and factory settings, by name."""
    with gzip.open(MANIFEST_PATH, "rt", encoding="utf-8") as handle:
        return json.load(handle)["models"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

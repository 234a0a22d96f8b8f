"""Shared fixtures: the reference manifest in ../shared (tests skip with a reason when absent)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
MANIFEST_PATH = SHARED / "reference" / "official_models.json"


@pytest.fixture(scope="session")
def manifest() -> dict:
    """The original models' state-dict layouts (../shared/reference/official_models.json)."""
    if not MANIFEST_PATH.is_file():
        pytest.skip(f"reference manifest not found at {MANIFEST_PATH} (../shared is absent)")
    return json.loads(MANIFEST_PATH.read_text())["models"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

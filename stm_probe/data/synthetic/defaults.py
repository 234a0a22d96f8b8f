"""The synthetic set's splits, defaults and limits, and the side images are rendered at."""
from __future__ import annotations

SPLITS: tuple[str, ...] = ("train", "val", "shape-only", "texture-only", "cue-conflict")
_SPLIT_CODE = {name: code for code, name in enumerate(SPLITS, start=1)}

DEFAULT_CLASSES = 8
MIN_CLASSES, MAX_CLASSES = 2, 16
DEFAULT_SIZE = 64
MIN_SIZE, MAX_SIZE = 32, 1024
DEFAULT_NUM_IMAGES = 10_000
MAX_NUM_IMAGES = 1_000_000
CROP_PCT = 0.875  # the evaluation transform's crop fraction (stm_probe.data.DEFAULT_CROP_PCT)
PREFIX = "synthetic"


def render_side(size: int) -> int:
    """Side in px an image is rendered at for a model input of ``size``: ``int(size / 0.875)``."""
    return int(size / CROP_PCT)

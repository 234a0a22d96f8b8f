"""`BiasMethod`: one inductive-bias probe inside `stm-probe bias` (one file per method).

A method gets the standard views of a batch (pixels (B, 3, S, S) in [0, 1], labels (B,) with
-1 = unknown, indices (B,) positions in the source) and returns per-image values keyed by
``(variant, level, level2, metric)``: ``variant`` a text setting (an order, a filter, a method,
a category; "" if none), ``level`` and ``level2`` numbers (None if unused: keys must survive a
JSON round trip for resume, which NaN does not). `BiasProbe` prefixes
the method's name (the ``probe`` column of ``bias.csv``). Random draws come from
``self.stream(*parts, repeat)`` and `stm_probe.core.seeds`, keyed by image index.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

Key = tuple  # (variant, level, level2, metric)


class BiasMethod:
    """Base of every bias method (see module docstring)."""

    name: ClassVar[str] = ""
    statistics: ClassVar[dict[str, str]] = {}  # metric -> "rate" | "mean" | "max"
    randomised: ClassVar[bool] = False
    per_image_values: ClassVar[bool] = True  # False: too many to write to per_image.csv (Fourier cells)
    skip_reason: ClassVar[str] = "no value could be measured"

    def __init__(self, config: Any, session: Any) -> None:
        self.config = config
        self.session = session

    @property
    def input_size(self) -> int:
        return self.session.options.input_size

    def stream(self, *parts: Any) -> int:
        """The seeds stream of this method for ``parts`` (e.g. a level and the repeat)."""
        from ...core.seeds import stream_id

        return stream_id(self.session.seed, "bias", self.name, *parts)

    def check(self) -> list[str]:
        """Validate settings against the session (UsageError); before any folder is made. Returns notes."""
        return []

    def check_model(self, model: Any) -> list[str]:
        """Validate one loaded model (UsageError). Returns notes."""
        return []

    def measure(self, model: Any, batch: Any, repeat: int) -> dict[Key, np.ndarray]:
        raise NotImplementedError

    def summarise(self, values: dict[Key, np.ndarray], seed: int, n_boot: int) -> dict[Key, tuple] | None:
        """Optional: {key: (value, ci_low, ci_high, n_images, n_skipped)}; None = the generic summary
        (stm_probe.core.stats.summarise_values by ``statistics[metric]``)."""
        return None

    def artefacts(self, out_dir: Path, model: str, values: dict[Key, np.ndarray]) -> list[Path]:
        """Optional array files of one model (e.g. fourier/<model>.npy)."""
        return []

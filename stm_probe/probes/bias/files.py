"""Where the bias methods' array files lie in a run folder, and which rate a Fourier heat map holds;
no torch, so the figures (`stm_probe.plots.bias_attribution`, `stm_probe.plots.bias_fourier`) read
them by the same names."""
from __future__ import annotations

from pathlib import Path

#: the Fourier heat map's metric, first choice first: error rate with labels, flip rate without
MAP_METRICS = ("error", "flip")


def attribution_path(out_dir: Path, model: str) -> Path:
    """Where the example images and maps of one model are saved."""
    return Path(out_dir) / "attribution" / f"{model}.npz"


def fourier_map_path(out_dir: str | Path, model: str) -> Path:
    """Where the Fourier heat map of ``model`` is saved: ``fourier/<model>.npy``."""
    return Path(out_dir) / "fourier" / f"{model}.npy"

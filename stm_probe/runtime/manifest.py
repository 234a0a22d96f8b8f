"""Run folders and the run manifest (manifest.json); atomic writes and file hashes come from ``stm_probe.files``."""
from __future__ import annotations

import platform
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import write_json

if TYPE_CHECKING:
    import torch

TRACKED_PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "captum", "torchattacks", "safetensors")


def default_out_dir(analysis: str, root: str | Path = "runs") -> Path:
    """``runs/<analysis>-<YYYYmmdd-HHMMSS>`` (a suffix is added if it exists)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{analysis}-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_description(device: "torch.device") -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class RunRecord:
    """Collects what a run did and writes ``manifest.json`` into its output folder at the end."""

    def __init__(self, analysis: str, out_dir: Path, call: dict[str, Any] | None = None) -> None:
        from .. import __version__

        self.out_dir = out_dir
        self.started = time.perf_counter()
        self.data: dict[str, Any] = {
            "tool": "stm-probe", "version": __version__, "analysis": analysis,
            "call": call if call is not None else {"argv": list(sys.argv)},
            "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "packages": package_versions(), "models": [], "outputs": [],
        }

    def update(self, **fields: Any) -> None:
        self.data.update(fields)

    def add_model(self, entry: dict[str, Any]) -> None:
        self.data["models"].append(entry)

    def add_output(self, path: Path) -> None:
        self.data["outputs"].append(str(Path(path).relative_to(self.out_dir)))

    def write(self) -> Path:
        self.data["wall_time_s"] = round(time.perf_counter() - self.started, 3)
        path = self.out_dir / "manifest.json"
        write_json(path, self.data)
        return path

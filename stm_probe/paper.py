"""The paper artefacts that need no checkpoint: the teaser (F1), the architecture table (T-arch) and
the throughput table (T-speed).

Each writer puts a data file (CSV), a readable table or figure drawn from that file, and a small
``manifest.json`` (what it is, where the numbers come from, software versions) into one folder.
`stm-probe paper teaser|arch|speed --out DIR` calls them; the recipes in ``analyses/`` call that.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import UsageError
from .models.facts import PUBLISHED_CSV

#: the paper's throughput protocol (T-speed)
SPEED_PROTOCOL = dict(batch_size=128, input_size=224, warmup=10, iterations=100)


def published_numbers() -> Any:
    """The authors' published numbers (stm, size, model, imagenet1k_top1, coco_maskrcnn_1x_box_ap, ...)."""
    from importlib.resources import files

    from .runtime.results import read_table

    return read_table(Path(str(files("stm_probe") / "resources" / PUBLISHED_CSV)),
                      ("stm", "size", "model", "imagenet1k_top1"), "the package (reinstall stm-probe)")


def architecture_frame() -> Any:
    """T-arch: one row per unified model: dims, depths, heads (or groups), the STM's window / halo /
    spatial-reduction setting, drop path, parameters (millions) and GMACs at 224 (static facts)."""
    import pandas as pd

    from .models.configs import SIZES
    from .models.facts import MODEL_FACTS
    from .models.stms import STM_RECORDS

    rows = []
    for size in SIZES:
        for stm, record in STM_RECORDS.items():
            name = f"unified_{stm}_{size}"
            if size not in record.sizes or name not in MODEL_FACTS:
                continue  # a registered STM without counted facts: `stm-probe models --build` counts it
            s = record.settings(size)
            block = s["block_kwargs"]
            rows.append({"model": name, "stm": stm, "size": size, "dims": _join(s["dims"]),
                         "depths": _join(s["depths"]), "heads_or_groups": _join(block.get("num_heads", ())) or "-",
                         "mixer_setting": record.describe_mixer(size), "drop_path": s["drop_path_rate"],
                         "params_m": round(MODEL_FACTS[name].params / 1e6, 2),
                         "gmacs_224": MODEL_FACTS[name].gmacs_224})
    return pd.DataFrame(rows)


def _join(values: Sequence[Any]) -> str:
    return "-".join(str(v) for v in values)


def write_architecture(out: Path) -> list[Path]:
    """``arch.csv`` and ``arch.md`` (a Markdown table) in ``out``."""
    from .runtime.results import write_frame

    frame = architecture_frame()
    out.mkdir(parents=True, exist_ok=True)
    write_frame(out / "arch.csv", frame)
    paths = [out / "arch.csv", _write_markdown(out / "arch.md", frame, "Unified backbones: only the STM differs "
                                                "(static facts; parameters with the 1000-class head)")]
    return paths + [_write_manifest(out, "T-arch", "stm_probe.models.configs and stm_probe.models.facts (counted on "
                                    "the built models; equal to the original code's reference manifest)", paths)]


def write_teaser(out: Path) -> list[Path]:
    """F1: ``teaser.csv`` (published top-1, parameters, GMACs per unified model) and the bubble
    figure drawn from it (top-1 vs parameters, bubble area ~ GMACs, one colour per STM)."""
    from .models.facts import MODEL_FACTS
    from .runtime.results import write_frame

    frame = published_numbers()
    frame = frame.assign(params_m=[MODEL_FACTS[m].params / 1e6 for m in frame["model"]],
                         gmacs_224=[MODEL_FACTS[m].gmacs_224 for m in frame["model"]])
    out.mkdir(parents=True, exist_ok=True)
    write_frame(out / "teaser.csv", frame)
    paths = [out / "teaser.csv", *draw_teaser(out / "teaser.csv")]
    return paths + [_write_manifest(out, "F1 teaser", "published ImageNet-1k top-1 of the unified models (the paper's "
                                    "tables, stm_probe/resources/published_numbers.csv); parameters and GMACs from "
                                    "stm_probe.models.facts. The reference file holds no numbers of the original "
                                    "(non-unified) networks, so only the unified models are drawn", paths)]


def draw_teaser(csv_path: Path) -> list[Path]:
    """The teaser figure from ``teaser.csv`` alone."""
    from .plots.figures import new_figure, save_figure
    from .runtime.results import read_table

    frame = read_table(csv_path, ("stm", "size", "model", "imagenet1k_top1", "params_m", "gmacs_224"),
                       "stm-probe paper teaser")
    fig, ax = new_figure(figsize=(7, 4), layout="constrained", squeeze=True)
    colours = _stm_colours(list(dict.fromkeys(frame["stm"])))
    for stm, rows in frame.groupby("stm", sort=False):
        rows = rows.sort_values("params_m")
        ax.plot(rows["params_m"], rows["imagenet1k_top1"], color=colours[stm], linewidth=1, zorder=1)
        ax.scatter(rows["params_m"], rows["imagenet1k_top1"], s=rows["gmacs_224"] * 25, color=colours[stm],
                   alpha=0.6, edgecolor="black", linewidth=0.5, label=stm, zorder=2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("parameters (millions, log2)")
    ax.set_ylabel("ImageNet-1k top-1 (%)")
    ax.set_title("Unified backbones, published top-1 (bubble area ~ GMACs at 224)", fontsize=10)
    ax.legend(title="STM", fontsize=8, markerscale=0.5, loc="lower right")
    ax.grid(alpha=0.3)
    return save_figure(fig, csv_path.with_suffix(""), formats=("png", "pdf"))  # a paper figure: vector too


def _stm_colours(stms: list[str]) -> dict[str, Any]:
    from .plots.style import STM_COLOURS

    return {s: STM_COLOURS[s] for s in stms}


def measure_speed(models: Sequence[str], device: str = "auto", batch_size: int = 128, input_size: int = 224,
                  warmup: int = 10, iterations: int = 100, quiet: bool = False) -> Any:
    """T-speed rows: images/s of each model (random init) forward and forward+backward, in fp32."""
    import pandas as pd
    import torch

    from .models import create_model, expand_model_patterns
    from .runtime.precision import Precision, numeric_flags
    from .core.seeds import seeded
    from .runtime.session import resolve_device
    from .speed import measure_throughput

    rows = []
    target = resolve_device(device)
    for name in expand_model_patterns(list(models)):
        with seeded(0, target):
            net = create_model(name, input_size=input_size).to(target)
        row = {"model": name, "device": str(target), "batch_size": batch_size, "input_size": input_size,
               "warmup": warmup, "iterations": iterations}
        for backward in (False, True):
            key = "forward_backward_img_s" if backward else "forward_img_s"
            with numeric_flags(Precision()):  # strict fp32: CUDA convolutions would otherwise run in TF32
                speed = measure_throughput(net, batch_size, input_size, target, warmup, iterations, backward)
            row[key] = round(speed, 2)
            if not quiet:
                print(f"{name}: {key.replace('_img_s', '')} {row[key]:.1f} img/s")
        rows.append(row)
        del net
        if target.type == "cuda":
            torch.cuda.empty_cache()
    return pd.DataFrame(rows)


def write_speed(out: Path, models: Sequence[str], device: str = "auto", batch_size: int = 128, input_size: int = 224,
                warmup: int = 10, iterations: int = 100, quiet: bool = False) -> list[Path]:
    """``speed.csv`` and ``speed.md`` in ``out`` (see `measure_speed`)."""
    from .runtime.results import write_frame

    if min(batch_size, input_size, iterations) < 1 or warmup < 0:
        raise UsageError("paper speed: --batch-size, --input-size and --iterations must be positive, --warmup >= 0")
    frame = measure_speed(models, device, batch_size, input_size, warmup, iterations, quiet)
    out.mkdir(parents=True, exist_ok=True)
    write_frame(out / "speed.csv", frame)
    protocol = dict(batch_size=batch_size, input_size=input_size, warmup=warmup, iterations=iterations)
    title = f"Throughput (images/s, fp32, random init) on {_device_name(frame['device'].iloc[0])}, " \
            f"batch {batch_size} at {input_size}, {warmup} warm-up and {iterations} timed iterations" + \
            ("" if protocol == SPEED_PROTOCOL else " (reduced from the paper's protocol: batch 128 at 224, 10 warm-up, "
             "100 timed iterations)")
    paths = [out / "speed.csv", _write_markdown(out / "speed.md", frame, title)]
    return paths + [_write_manifest(out, "T-speed", title, paths, protocol=protocol)]


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {_cpu_count()} cores)"


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _write_markdown(path: Path, frame: Any, title: str) -> Path:
    from .files import atomic_path

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join([f"{title}\n", header, rule, *body, ""]), encoding="utf-8")
    return path


def _write_manifest(out: Path, artefact: str, source: str, paths: Sequence[Path], **extra: Any) -> Path:
    from . import __version__
    from .runtime.results import file_checksums
    from .files import atomic_path

    record = {"artefact": artefact, "source": source, "tool": f"stm-probe {__version__}",
              "python": platform.python_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra,
              "checksums": file_checksums(out, list(paths))}
    path = out / "manifest.json"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path

"""Export: a split written as PNGs in ImageFolder layout, with a ``synthetic.json`` record."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ...errors import UsageError
from .defaults import DEFAULT_CLASSES, DEFAULT_SIZE
from .shapes import SHAPES
from .spec import SyntheticSpec
from .textures import TEXTURES


def export_imagefolder(split: str, out_dir: str | os.PathLike, num_images: int, seed: int = 0,
                       classes: int = DEFAULT_CLASSES, size: int = DEFAULT_SIZE) -> list[Path]:
    """Write images ``0 .. num_images - 1`` of a split as PNGs in ImageFolder layout; returns their paths.

    Files are ``out_dir/<relpath>`` (:meth:`SyntheticSpec.relpath`): ``<k>-<name>/<index>.png``,
    read back by ``--data out_dir`` with the same labels and pixels; cue-conflict uses the
    cue-conflict probe's ``<shape>/<shape><index>-<texture class><index>.png``. ``synthetic.json``
    in ``out_dir`` records the set. ``out_dir`` must not exist or be empty (UsageError otherwise).
    """
    spec = SyntheticSpec(split=split, classes=classes, size=size, seed=seed, num_images=num_images)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} already exists and is not an empty folder; choose a new folder")
    written = []
    for index in range(num_images):
        path = out / spec.relpath(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        spec.image(index).save(path, format="PNG")
        written.append(path)
    record = {"data": f"{spec.location}&n={num_images}", "split": split, "classes": classes, "size": size,
              "seed": seed, "num_images": num_images, "side": spec.side, "class_names": list(spec.class_names),
              "shapes": list(SHAPES[:classes]), "textures": [t._asdict() for t in TEXTURES[:classes]]}
    (out / "synthetic.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return written

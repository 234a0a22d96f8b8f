"""Rebuild the embedded sample images in this folder from the scikit-image wheel.

Maintainer tool only: stm-probe does not depend on scikit-image at run time. Usage::

    pip download --no-deps scikit-image==0.26.0 -d /tmp/skimg
    cd /tmp/skimg && unzip -q scikit_image-*.whl 'skimage/data/*'
    python data/build_sample_set.py /tmp/skimg/skimage/data

Every output is RGB JPEG (quality 85, 4:2:0, no metadata). Images whose short side is
above 320 px are downsized with Lanczos so that the short side is 320 px; smaller ones keep
their size (never upscaled). Grayscale sources are replicated to three channels. A crop is
taken from the full-resolution source *before* downsizing; boxes are (left, top, right,
bottom) in source pixels. The table in README.md lists the same names, boxes and licences.
"""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

SHORT_SIDE = 320
QUALITY = 85

# output name -> (source file in skimage/data, crop box or None)
SOURCES: dict[str, tuple[str, tuple[int, int, int, int] | None]] = {
    "astronaut.jpg": ("astronaut.png", None),
    "astronaut_crop_face.jpg": ("astronaut.png", (40, 0, 360, 320)),
    "brick.jpg": ("brick.png", None),
    "camera.jpg": ("camera.png", None),
    "chelsea.jpg": ("chelsea.png", None),
    "coffee.jpg": ("coffee.png", None),
    "coffee_crop_cup.jpg": ("coffee.png", (120, 0, 440, 400)),
    "coins.jpg": ("coins.png", None),
    "grass.jpg": ("grass.png", None),
    "gravel.jpg": ("gravel.png", None),
    "hubble_deep_field.jpg": ("hubble_deep_field.jpg", None),
    "hubble_deep_field_crop_tl.jpg": ("hubble_deep_field.jpg", (0, 0, 500, 436)),
    "retina.jpg": ("retina.jpg", None),
    "retina_crop_disc.jpg": ("retina.jpg", (60, 380, 700, 1020)),
    "rocket.jpg": ("rocket.jpg", None),
    "rocket_crop_tower.jpg": ("rocket.jpg", (160, 0, 480, 427)),
}


def build(src_dir: Path, out_dir: Path) -> None:
    """Write every entry of ``SOURCES`` from ``src_dir`` into ``out_dir``."""
    for out_name, (src_name, box) in SOURCES.items():
        with Image.open(src_dir / src_name) as im:
            im = im.convert("RGB")
            if box is not None:
                im = im.crop(box)
            w, h = im.size
            s = min(w, h)
            if s > SHORT_SIDE:
                im = im.resize((round(w * SHORT_SIDE / s), round(h * SHORT_SIDE / s)), Image.LANCZOS)
            im.save(out_dir / out_name, "JPEG", quality=QUALITY, optimize=True, subsampling="4:2:0")
            print(f"{out_name:32s} {im.size[0]}x{im.size[1]}  <- {src_name} {box or ''}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python data/build_sample_set.py PATH/TO/skimage/data")
    build(Path(sys.argv[1]), Path(__file__).resolve().parent / "images")

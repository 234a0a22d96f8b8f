"""The cache of corrupted images between models: in memory up to a budget, then in sparse memmaps on disk."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np


#: corrupted images kept in memory between models up to this many bytes; beyond, they go to disk
MEMORY_CACHE_BYTES = 2 << 30


class CorruptionCache:
    """Corrupted images (H, W, 3) uint8 by (key, image index): in memory up to ``budget`` bytes, then in
    one sparse ``.npy`` memmap per key under ``folder`` (made fresh; removed by `close`).

    A key names everything that defines the pixels (see `Corruptor.key`), so a different seed, size or
    image list never reads another run's images; only images written by this object are ever read.
    """

    def __init__(self, num_images: int, folder: Path | None, budget: int = MEMORY_CACHE_BYTES) -> None:
        self.num_images = num_images
        self.folder = Path(folder) if folder is not None else None
        self.budget = budget
        self.used = 0
        self.memory: dict[tuple, dict[int, np.ndarray]] = {}
        self.maps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # key -> (memmap, filled mask)
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder)  # a killed run's images: never trusted

    def get(self, key: tuple, index: int) -> np.ndarray | None:
        found = self.memory.get(key, {}).get(index)
        if found is None and key in self.maps:
            array, filled = self.maps[key]
            found = np.array(array[index]) if filled[index] else None
        return found

    def put(self, key: tuple, index: int, image: np.ndarray) -> None:
        if self.used + image.nbytes <= self.budget:
            self.memory.setdefault(key, {})[index] = image
            self.used += image.nbytes
            return
        if self.folder is None:
            return  # nowhere to spill: the image is remade when it is needed again
        if key not in self.maps:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(repr(key).encode("utf-8")).hexdigest()[:20]
            array = np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=np.uint8,
                                              shape=(self.num_images, *image.shape))
            self.maps[key] = (array, np.zeros(self.num_images, dtype=bool))
        array, filled = self.maps[key]
        array[index] = image
        filled[index] = True

    @property
    def on_disk(self) -> int:
        return int(sum(f.sum() for _, f in self.maps.values()))

    def close(self) -> None:
        self.memory.clear()
        self.maps.clear()
        self.used = 0
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)

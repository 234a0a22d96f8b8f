"""What a probe run is made of: a `Unit` (one pass over the images for one model), the `UnitResult`
it gathers (per-image values by key), and the columns of the tidy CSV every probe writes.

Tidy CSV columns: ``model, stm, size, weights, <setting columns>, metric, value, ci_low, ci_high,
n_images, n_skipped, repeats, repeat_mean, repeat_low, repeat_high, <probe constants>, seed,
input_size``. ``value``/``ci_*``/``n_images`` describe repeat 0 (so a run with ``--repeats 1``
gives the same numbers); ``repeat_*`` the mean and Student-t 95% interval over the repeats.
"""
from __future__ import annotations

import collections
import functools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

ID_COLUMNS = ("model", "stm", "size", "weights")
VALUE_COLUMNS = ("metric", "value", "ci_low", "ci_high", "n_images", "n_skipped", "repeats", "repeat_mean",
                 "repeat_low", "repeat_high")
RUN_COLUMNS = ("seed", "input_size")

Key = tuple  # (*setting values, metric); a probe's `key_type` names the fields


@dataclass(frozen=True)
class Extra:
    """The metric slot of a key that holds artefact data, not a metric: per-image arrays a probe keeps for
    its files or for numbers it makes from several keys (saved examples, Gram rows, predictions). Never
    summarised, never a CSV row; ``(corruption, severity, Extra("error"))`` and ``(..., "error")`` are two keys."""

    name: str

    def __str__(self) -> str:
        return f"extra:{self.name}"


def is_extra(key: Key) -> bool:
    """Whether ``key`` holds artefact data (its metric is an `Extra`)."""
    return isinstance(key[-1], Extra)


class Values(dict):
    """Per-image values by key, ``{(*setting values, metric): array (B, ...) or (N, ...)}``, as a probe's
    ``measure`` returns them and a `UnitResult` holds them: metrics (a ``str`` metric, summarised into
    rows) and extras (an `Extra` metric, artefact data)."""

    def metrics(self) -> dict[Key, np.ndarray]:
        return {key: value for key, value in self.items() if not is_extra(key)}

    def extras(self) -> dict[Key, np.ndarray]:
        return {key: value for key, value in self.items() if is_extra(key)}


def key_type(setting_columns: tuple[str, ...]) -> type:
    """The named key of a probe with these setting columns: a named tuple ``(*setting_columns, metric)``,
    equal to (and hashing as) the plain tuple of the same values."""
    return _key_types(tuple(setting_columns))


@functools.lru_cache(maxsize=None)
def _key_types(columns: tuple[str, ...]) -> type:
    return collections.namedtuple("Key", (*columns, "metric"))


def _encode_key(key: Key) -> list:
    return [{"extra": part.name} if isinstance(part, Extra) else part for part in key]


def _decode_key(parts: list) -> Key:
    return tuple(Extra(part["extra"]) if isinstance(part, dict) else part for part in parts)


class Summary(NamedTuple):
    """One tidy row's numbers, as a probe's ``summarise`` returns them for a key (a plain 5-tuple reads the same)."""

    value: float
    ci_low: float  # 95% interval; NaN where none (maxima, one image)
    ci_high: float
    n_images: int  # images the value rests on
    n_skipped: int  # images the probe left out for this key


@dataclass(frozen=True)
class Unit:
    """One pass over the images for one model: a setting group of the probe, and the repeat."""

    label: str  # for progress bars, e.g. "translation" or "pgd Linf eps=4"
    parts: tuple = ()  # what defines it (hashable, JSON-able), part of the cache key
    repeat: int = 0


@dataclass
class UnitResult:
    """Per-image values of one model x unit, gathered over batches."""

    columns: dict[str, str]  # model, stm, size, weights
    unit: Unit
    indices: np.ndarray  # (N,) image positions in the session's source
    values: Values  # (N, ...) per key
    skipped_files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.values, Values):
            self.values = Values(self.values)

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"indices": self.indices, **{f"v{i}": v for i, v in enumerate(self.values.values())}}
        meta = {"columns": self.columns, "label": self.unit.label, "parts": list(self.unit.parts),
                "repeat": self.unit.repeat, "keys": [_encode_key(k) for k in self.values],
                "skipped_files": self.skipped_files}
        return arrays, meta

    @classmethod
    def from_arrays(cls, unit: Unit, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "UnitResult":
        keys = [_decode_key(k) for k in meta["keys"]]
        values = Values((k, arrays[f"v{i}"]) for i, k in enumerate(keys))
        return cls(meta["columns"], unit, arrays["indices"], values, list(meta.get("skipped_files", [])))

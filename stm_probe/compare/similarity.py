"""The report's "Representation similarity" section: from a `cka` analysis, the CKA between every two
models stage by stage (a matrix per kernel and stage; not a ranked headline column, since CKA
describes a pair of models, not one). No torch."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..plots.cka import entity_label, stage_layers
from .folders import AnalysisRun


def _cell(row: pd.Series | None) -> str:
    if row is None or not np.isfinite(row["value"]):
        return "n/a"
    text = f"{row['value']:.3f}"
    if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
        text += f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    return text


def cross_model_tables(frame: pd.DataFrame) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per kernel and stage: CKA `value [95% interval]` between every two models
    (rows and columns: model and weights) at that stage; empty with a single model."""
    frame = frame[frame["metric"] == "cka"].copy()
    for column in ("value", "ci_low", "ci_high"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    tables = []
    for kernel, rows in frame.groupby("kernel", sort=False):
        entities = list(dict.fromkeys(zip(rows["model"].astype(str), rows["weights"].astype(str))))
        if len(entities) < 2:
            continue
        estimator = str(rows["estimator"].iloc[0])
        lookup = {(str(r["model"]), str(r["weights"]), str(r["layer"]), str(r["other_model"]), str(r["other_weights"]),
                   str(r["other_layer"])): r for _, r in rows.iterrows()}
        for stage, chosen in stage_layers(rows).items():
            header = ["model", *[entity_label(*e) for e in entities]]
            body = [[entity_label(*a), *[_cell(lookup.get((*a, chosen[a], *b, chosen[b]))) for b in entities]]
                    for a in entities]
            title = f"{kernel} CKA, {stage.replace('stage', 'stage ')} ({estimator} estimator, n = {int(rows['n_images'].min())})"
            tables.append((title, header, body))
    return tables


def similarity_runs(runs: Sequence[AnalysisRun]) -> list[AnalysisRun]:
    return [run for run in runs if run.probe == "cka"]

"""Numbers unchanged: every probe, run on fixed non-trivial weights, gives the stored golden CSVs.

The cases, the weights (micro halo and ConvNeXt models, layer scales and norms near 1 so the STMs
matter, drawn independently of the models' own initialisation) and the six labelled sample images
are defined in ``tests/data/golden/make_golden.py``; that script wrote the ``*.csv`` beside it from
the code as it was. A refactor must leave these numbers as they are; if a change of numbers is
intended, rerun the script and say why in the commit.

Tolerances: text and integer columns (model, metric, settings, n_images, n_skipped, repeats, seed,
...) must match exactly; floating columns to rtol 1e-4, atol 1e-9. Float32 sums taken in another
order (another thread count or BLAS blocking) move a probe's values by ~1e-6 relative; 1e-4 leaves
two decades of headroom for that while a real change of a protocol (another crop, seed, metric or
weight) moves values by far more. The atol only absorbs interval ends that are 0 up to rounding
(e.g. 2.8e-15); the smallest real value in the golden files is 2.5e-5. Checked: the golden CSVs
are reproduced with 1 and 2 intra-op threads.
"""
from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
RTOL, ATOL = 1e-4, 1e-9


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_maker()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return make_golden.write_checkpoints(tmp_path_factory.mktemp("golden"))


def _round_trip(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the golden file stores it (same CSV writer, read back the same way)."""
    return pd.read_csv(io.StringIO(frame.to_csv(index=False, float_format="%.9g")))


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame, case: str) -> None:
    assert list(got.columns) == list(want.columns), f"{case}: columns changed"
    assert len(got) == len(want), f"{case}: {len(got)} rows, golden {len(want)}"
    for column in want.columns:
        a, b = got[column], want[column]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            x, y = a.to_numpy(float), b.to_numpy(float)
            whole = np.all((y[np.isfinite(y)] % 1) == 0)  # counts and integer settings: exactly
            same = np.isclose(x, y, rtol=0 if whole else RTOL, atol=0 if whole else ATOL, equal_nan=True)
        else:  # text and flags: exactly
            x, y = a.fillna("").astype(str).to_numpy(), b.fillna("").astype(str).to_numpy()
            same = x == y
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            raise AssertionError(f"{case}: column {column!r} row {i} ({dict(want.iloc[i, :8])}): {x[i]!r} != golden "
                                 f"{y[i]!r} ({int((~same).sum())} value(s) differ)")


def test_golden_files_cover_every_case() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.csv")) == sorted(make_golden.CASES)
    probes = {probe for probe, _ in make_golden.CASES.values()}
    assert {"eval", "erf", "invariance", "adversarial", "bias", "corruption", "data-efficiency"} <= probes


@pytest.mark.slow  # every probe end to end on fixed weights: the full suite
@pytest.mark.parametrize("case", list(make_golden.CASES))
def test_numbers_unchanged(case: str, checkpoints: list[str]) -> None:
    got = _round_trip(make_golden.run_case(case, checkpoints))
    want = pd.read_csv(GOLDEN / f"{case}.csv")
    assert_same_rows(got, want, case)

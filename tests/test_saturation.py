"""Columns that cannot separate models are neither ranked nor tested, the ERF headline is taken where it
varies, and the heat map marks cells no test separates from the best (issue #21)."""
from __future__ import annotations

import numpy as np
import pytest
import pandas as pd

from stm_probe.compare.pairwise import tied_with_best
from stm_probe.probes.columns import HeadlineSpec, saturation
from stm_probe.probes.erf import ErfProbe, area_ratio_bounds


def spec(**kwargs) -> HeadlineSpec:
    return HeadlineSpec("a", "a:k", "k", "m", **kwargs)


def test_identical_or_bound_columns_are_saturated_and_others_not() -> None:
    assert saturation([0.5, 0.5, 0.5], spec()) == "identical"
    assert saturation([0.5, 0.5 + 1e-6], spec()) == ""
    low, high = area_ratio_bounds(64)
    assert np.isclose(high, (63 / 64) ** 2) and np.isclose(low, (3 / 64) ** 2)
    assert saturation([high, 1.0, high], spec(bounds=(low, high))) == "at its bound"  # 1.0: never reached
    assert saturation([high, 0.5], spec(bounds=(low, high))) == ""
    assert saturation([np.nan, 0.3], spec()) == ""  # one finite value: nothing to compare


def _erf_frame(values: dict[tuple[int, float], list[float]], size: int = 64) -> pd.DataFrame:
    rows = [{"model": f"m{i}", "init_copy": False, "stage": stage, "threshold": t, "metric": "area_ratio",
             "value": v, "input_size": size} for (stage, t), vs in values.items() for i, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_erf_headline_moves_to_the_deepest_stage_and_threshold_that_varies() -> None:
    high = area_ratio_bounds(64)[1]
    varied = _erf_frame({(4, 0.99): [high, high], (3, 0.99): [0.4, 0.6], (4, 0.5): [0.2, 0.3]})
    (column,) = ErfProbe.compare_columns("erf", varied)
    assert column.where == {"init_copy": False, "stage": 3, "threshold": 0.99} and column.bounds[1] == high
    deep = _erf_frame({(4, 0.99): [high, high], (3, 0.99): [high, high], (4, 0.5): [0.2, 0.3]})
    (column,) = ErfProbe.compare_columns("erf", deep)
    assert column.where["stage"] == 4 and column.where["threshold"] == 0.5
    at_1024 = _erf_frame({(4, 0.99): [0.3, 0.5], (3, 0.99): [0.1, 0.2]}, size=1024)
    assert ErfProbe.compare_columns("erf", at_1024)[0].where["stage"] == 4  # RepLKNet's setting when it varies


def test_cells_no_test_separates_from_the_best_are_tied_with_it() -> None:
    specs = [spec(), HeadlineSpec("a", "a:u", "u", "m", test=None)]
    table = pd.DataFrame({"key": ["a:k"] * 3 + ["a:u"] * 3, "model": ["x", "y", "z"] * 2,
                          "rank": [1, 2, 3, 2, 1, 3]})
    pairs = pd.DataFrame({"key": ["a:k"] * 3, "a": ["x", "x", "y"], "b": ["y", "z", "z"],
                          "significant": [False, True, True]})
    tied = tied_with_best(specs, table, pairs)
    assert tied == {"a:k": {"y"}, "a:u": {"x", "z"}}  # z differs from x (held); y does not; no tests: all tied


def test_a_tied_cell_stays_distinct_from_an_untied_one_when_the_heat_map_is_shown_small(tmp_path) -> None:
    """Two worst cells of one colour: the one no test separates from the best must not look like the other
    at a quarter of the size (where a thin hatch alone vanished and the colour read as a difference)."""
    from PIL import Image
    from matplotlib import colormaps

    from stm_probe.plots.summary import plot_summary

    values = pd.DataFrame({"k": [1.0, 0.0, 0.0], "j": [0.0, 1.0, 0.5]}, index=["x", "y", "z"])
    worst = np.array(colormaps["viridis"](0.0)[:3]) * 255

    def worst_coloured_share(tied: dict) -> float:
        (png,) = plot_summary(values, {"k": "higher", "j": "higher"}, {}, tmp_path / f"h{len(tied)}", formats=["png"],
                              tied=tied)
        image = Image.open(png).convert("RGB")
        small = np.asarray(image.resize((image.width // 4, image.height // 4), Image.Resampling.BOX), float)
        return float((np.abs(small - worst).max(-1) < 30).mean())

    untied, tied = worst_coloured_share({}), worst_coloured_share({"k": {"y"}})
    assert untied > 0 and tied == pytest.approx(untied * 2 / 3, rel=0.2)  # 3 worst cells -> 2: y's is paled

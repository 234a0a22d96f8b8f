"""A new probe from ONE file (tests/toy_probe.py) and ONE registration line runs through the CLI, the API,
`stm-probe compare` (with its own headline column) and `stm-probe plot` (issue #22)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stm_probe
from stm_probe.cli import main
from stm_probe.probes import PROBES, register_probe

MODELS = ["--model", "unified_convnext_micro", "--model", "unified_pvt_micro"]
SMALL = ["--input-size", "32", "--num-images", "3", "--bootstrap", "200", "--quiet"]


@pytest.fixture(scope="module")
def contrast() -> str:
    register_probe("contrast", "toy_probe:ContrastProbe")  # the one line a new probe needs
    yield "contrast"
    del PROBES["contrast"]


def test_cli_and_api_give_the_same_numbers_and_the_analytic_ones(contrast: str, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert main([contrast, *MODELS, *SMALL, "--contrast", "1,0.25", "--out", str(out)]) == 0
    cli = pd.read_csv(out / "contrast.csv")
    api = stm_probe.run(contrast, models=["unified_convnext_micro", "unified_pvt_micro"], input_size=32,
                        num_images=3, contrast=[1.0, 0.25], bootstrap=200, quiet=True)
    key = ["model", "contrast", "metric"]
    merged = cli.merge(api, on=key, suffixes=("_cli", "_api"))
    assert len(merged) == len(cli) == 8
    assert np.allclose(merged["value_cli"], merged["value_api"])
    unchanged = cli[cli["contrast"] == 1.0].set_index("metric")["value"]
    assert (unchanged["consistency"] == 100).all() and np.allclose(unchanged["kl"], 0.0, atol=1e-12)
    assert (cli[(cli["contrast"] == 0.25) & (cli["metric"] == "kl")]["value"] > 0).all()
    per_image = pd.read_csv(out / "per_image.csv")
    kl = per_image[(per_image["metric"] == "kl") & (per_image["contrast"] == 0.25)]
    means = kl.groupby("model")["value"].mean()
    table = cli[(cli["metric"] == "kl") & (cli["contrast"] == 0.25)].set_index("model")["value"]
    assert np.allclose(means.sort_index(), table.sort_index())


def test_compare_shows_its_headline_column_and_plot_redraws_it(contrast: str, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", *MODELS, "--analyses", contrast, "--set", "contrast.contrast=1,0.5", *SMALL,
                 "--out", str(out)]) == 0
    csv = pd.read_csv(out / contrast / "contrast.csv")
    report = (out / "report.md").read_text()
    header = [c.strip() for c in next(line for line in report.splitlines()
                                      if line.startswith("| model |")).strip("|").split("|")]
    column = header.index("KL at contrast 0.5 (nats)")
    for model in ("unified_convnext_micro", "unified_pvt_micro"):
        cells = [c.strip() for c in next(line for line in report.splitlines()
                                         if line.startswith(f"| {model} |")).strip("|").split("|")]
        row = csv[(csv["model"] == model) & (csv["metric"] == "kl") & (csv["contrast"] == 0.5)].iloc[0]
        # one row of the CSV: its value and bootstrap interval, 3 decimals (nats)
        assert cells[column].startswith(f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"), cells
    for old in (out / contrast).glob("*.png"):
        old.unlink()
    assert main(["plot", contrast, str(out / contrast)]) == 0
    assert list((out / contrast).glob("*.png"))


def test_its_declared_metric_range_guards_files_read_back(contrast: str, tmp_path: Path) -> None:
    from stm_probe.errors import UsageError
    from stm_probe.probes import metric_ranges
    from stm_probe.runtime.results import read_results

    rows = pd.DataFrame({"model": ["m", "m"], "contrast": [0.5, 0.5], "metric": ["consistency", "kl"],
                         "value": [50.0, 0.2]})
    rows.to_csv(tmp_path / "contrast.csv", index=False)
    assert len(read_results(tmp_path / "contrast.csv", ranges=metric_ranges(contrast))) == 2
    rows.assign(value=[50.0, -0.2]).to_csv(tmp_path / "contrast.csv", index=False)
    with pytest.raises(UsageError, match="out of its metric's range"):
        read_results(tmp_path / "contrast.csv", ranges=metric_ranges(contrast))

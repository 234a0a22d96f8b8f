"""The paper artefacts that need no checkpoint: T-arch against the built models, the teaser's facts."""
from __future__ import annotations

import json

import pytest
import torch

from stm_probe import paper
from stm_probe.models.registry import build_unified


@pytest.mark.parametrize("name", ["unified_convnext_micro", "unified_pvt_micro", "unified_dcn_v3_micro"])
def test_architecture_row_matches_the_built_model(name):
    """dims and depths of the table are those of the network actually built (meta device, no weights)."""
    row = paper.architecture_frame().set_index("model").loc[name]
    with torch.device("meta"):
        model = build_unified(name)
    depths = [len(stage) for stage in model.stages]
    dims = [layer.reduction[0].out_channels if hasattr(layer, "reduction") else layer.stem[3].out_channels
            for layer in model.downsample_layers]
    assert row["depths"] == "-".join(map(str, depths))
    assert row["dims"] == "-".join(map(str, dims))
    counted = sum(p.numel() for p in model.parameters())
    assert row["params_m"] == pytest.approx(counted / 1e6, abs=0.006)


def test_architecture_table_files(tmp_path):
    paths = paper.write_architecture(tmp_path)
    assert {p.name for p in paths} == {"arch.csv", "arch.md", "manifest.json"}
    lines = (tmp_path / "arch.md").read_text().splitlines()
    assert sum(line.startswith("| unified_") for line in lines) == 20
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["checksums"]) == {"arch.csv"}


def test_teaser_carries_the_published_numbers(tmp_path):
    """Values from the paper's Table (unified tiny models, ImageNet-1k top-1)."""
    paper.write_teaser(tmp_path)
    frame = __import__("pandas").read_csv(tmp_path / "teaser.csv").set_index("model")
    assert len(frame) == 20
    assert frame.loc["unified_swin_tiny", "imagenet1k_top1"] == 82.3
    assert frame.loc["unified_dcn_v3_tiny", "imagenet1k_top1"] == 83.3
    assert frame.loc["unified_halo_micro", "params_m"] == pytest.approx(4.389672)
    assert (tmp_path / "teaser.png").stat().st_size > 10_000

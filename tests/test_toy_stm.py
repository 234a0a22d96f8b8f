"""A new STM from ONE block file (tests/toy_stm_block.py) and ONE record (`register_stm` below): it is
built by name and alias, loads a checkpoint made at another input size through its block's resizer,
enters timm's registry, keeps its colour in figures, is listed by `stm-probe models` and is compared
by `stm-probe compare` beside a paper STM (issue #22)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import stm_probe
from stm_probe.cli import main
from stm_probe.models.stms import StmRecord, register_stm, unregister_stm

TOY = StmRecord(
    name="toypool", block="toy_stm_block:PoolMixerBlock", release_stem="poolformer", aliases=("pool",),
    sizes={"micro": dict(dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), drop_path_rate=0.0,
                         block_kwargs=dict(pool_size=(3, 3, 3, 3)))},
    colour="#117733", label="average pooling (toy)", mixer_setting="{pool_size} average pool")


@pytest.fixture(scope="module")
def toy() -> str:
    register_stm(TOY)
    yield "unified_toypool_micro"
    unregister_stm(TOY.name)


def test_builds_by_name_and_alias(toy: str) -> None:
    from stm_probe.models.names import UNIFIED_MODELS, unified_spec

    assert toy in UNIFIED_MODELS and len(UNIFIED_MODELS) == 21
    assert unified_spec("unified_micro_pool").name == toy and unified_spec("unified_poolformer_micro").name == toy
    model = stm_probe.create_model("unified_micro_pool", input_size=64, num_classes=5)
    assert type(model.stages[2][1]).__name__ == "PoolMixerBlock"
    assert model.stages[0][0].pos_bias.shape == (1, 16, 56, 56)  # stage 1 map at the build size, 224 px
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 5)


def test_a_checkpoint_at_another_size_is_resized_by_the_block(toy: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    small = stm_probe.create_model(toy, img_size=64, num_classes=5)  # built (trained) at 64 px
    path = tmp_path / "toy.pth"
    torch.save({"model": small.state_dict()}, path)
    large = stm_probe.create_model(toy, img_size=96, checkpoint=str(path), num_classes=5)
    table = small.state_dict()["stages.1.0.pos_bias"]  # (1, 32, 8, 8) at 64 px; 12x12 at 96 px
    expected = F.interpolate(table, size=(12, 12), mode="bilinear", align_corners=False)
    assert torch.allclose(large.state_dict()["stages.1.0.pos_bias"], expected)
    assert torch.equal(large.state_dict()["head.weight"], small.state_dict()["head.weight"])


def test_timm_and_the_model_table_know_it(toy: str) -> None:
    import timm

    from stm_probe.models import register_with_timm
    from stm_probe.models.summary import model_table

    register_with_timm()
    assert timm.is_model(toy)
    row = model_table(["unified_toypool_*"])[0]
    expected = sum(p.numel() for p in stm_probe.create_model(toy).parameters())
    assert row["name"] == toy and row["stm"] == "toypool" and row["params"] == expected


def test_figures_and_compare_show_it(toy: str, tmp_path: Path) -> None:
    from stm_probe.plots.style import model_look

    assert model_look(toy).colour == "#117733"
    out = tmp_path / "cmp"
    assert main(["compare", "--model", toy, "--model", "unified_convnext_micro", "--analyses", "erf",
                 "--input-size", "64", "--num-images", "2", "--bootstrap", "200", "--quiet", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert f"| {toy} |" in report
    erf = next(out.rglob("erf.csv"))
    assert toy in erf.read_text()
    for old in erf.parent.glob("*.png"):
        old.unlink()
    assert main(["plot", "erf", str(erf.parent)]) == 0  # redrawn from the files
    assert list(erf.parent.glob("*.png"))

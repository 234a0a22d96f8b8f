"""Safe checkpoint loading: layouts, the -ema quirk, refusal of code, errors, resizing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from stm_probe.checkpoint import file_sha256
from stm_probe.errors import UsageError
from stm_probe.models import create_model


@pytest.fixture(scope="module")
def trained_sd() -> dict[str, torch.Tensor]:
    """A seeded 'trained' state dict of unified_convnext_micro: every float entry randomised."""
    gen = torch.Generator().manual_seed(1)
    model = create_model("unified_convnext_micro")
    return {k: (torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone())
            for k, v in model.state_dict().items()}


def _assert_loaded(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[key]), key


LAYOUTS = {
    "raw": lambda sd: sd,
    "model": lambda sd: {"model": sd, "epoch": 3},
    "state_dict": lambda sd: {"state_dict": sd},
    "model_ema": lambda sd: {"model_ema": sd},
    "module_prefix": lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_round_trip_layouts(layout: str, trained_sd, tmp_path: Path) -> None:
    path = tmp_path / f"{layout}.pth"
    torch.save(LAYOUTS[layout](trained_sd), path)
    model = create_model("unified_conv_micro", checkpoint=path)
    _assert_loaded(model, trained_sd)
    record = model.stm_probe_weights
    assert record["sha256"] == file_sha256(path) and len(record["sha256"]) == 64
    assert record["checkpoint_key"] == {"raw": "<root>", "module_prefix": "model"}.get(layout, layout)


def test_safetensors(trained_sd, tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in trained_sd.items()}, str(path))
    _assert_loaded(create_model("unified_convnext_micro", checkpoint=path), trained_sd)


def test_ema_file_quirk_requires_a_choice(trained_sd, tmp_path: Path) -> None:
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in trained_sd.items()}
    path = tmp_path / "unified_convnext_micro-ema.pth"
    torch.save({"model": trained_sd, "model_ema": ema}, path)
    with pytest.raises(UsageError, match="--checkpoint-key model_ema"):
        create_model("unified_convnext_micro", checkpoint=path)
    model = create_model("unified_convnext_micro", checkpoint=path, checkpoint_key="model_ema")
    _assert_loaded(model, ema)
    assert model.stm_probe_weights["checkpoint_key"] == "model_ema"


class _Payload:
    """Pickles to a call of os.system: what a malicious checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(UsageError, match="safe loading refuses") as info:
        create_model("unified_convnext_micro", checkpoint=path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_truncated_file_gives_one_line_error(trained_sd, tmp_path: Path) -> None:
    path = tmp_path / "t.pth"
    torch.save(trained_sd, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UsageError, match="truncated") as info:
        create_model("unified_convnext_micro", checkpoint=path)
    assert "\n" not in str(info.value)


def test_wrong_model_names_the_likely_owner(trained_sd, tmp_path: Path) -> None:
    path = tmp_path / "convnext.pth"
    torch.save({"model": trained_sd}, path)
    with pytest.raises(UsageError, match="looks like a checkpoint of unified_convnext_micro") as info:
        create_model("unified_swin_micro", checkpoint=path)
    assert "missing" in str(info.value) and "\n" not in str(info.value)


def test_non_strict_loads_what_fits(trained_sd, tmp_path: Path) -> None:
    partial = {k: v for k, v in trained_sd.items() if not k.startswith("head.")}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(UsageError, match="missing: head.weight"):
        create_model("unified_convnext_micro", checkpoint=path)
    model = create_model("unified_convnext_micro", checkpoint=path, strict=False)
    assert torch.equal(model.state_dict()["stage_norms.0.weight"], trained_sd["stage_norms.0.weight"])
    assert model.stm_probe_weights["skipped_problems"]


def test_swin_computed_buffers_are_ignored(tmp_path: Path) -> None:
    """relative_position_index / attn_mask in a checkpoint are replaced by the model's own."""
    fresh = create_model("unified_swin_micro")
    sd = {k: (torch.zeros_like(v) if k.endswith(("relative_position_index", "attn_mask")) else v)
          for k, v in fresh.state_dict().items()}
    path = tmp_path / "swin.pth"
    torch.save({"model": sd}, path)
    loaded = create_model("unified_swin_micro", checkpoint=path)
    for key, value in fresh.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_pvt_pos_embed_resized_bilinear_on_load(tmp_path: Path) -> None:
    """A 224 checkpoint loads into a model built for 256: position embeddings resized as the original."""
    sd = create_model("unified_pvt_micro").state_dict()
    path = tmp_path / "pvt.pth"
    torch.save(sd, path)
    model = create_model("unified_pvt_micro", img_size=256, checkpoint=path)
    key = "stages.0.0.pos_embed"
    assert model.state_dict()[key].shape == (1, 32, 64, 64)
    expected = F.interpolate(sd[key], size=(64, 64), mode="bilinear", align_corners=True)
    assert torch.allclose(model.state_dict()[key], expected)


def test_swin_bias_table_resized_bicubic_on_load(tmp_path: Path) -> None:
    """A model built at 128 has a 4x4 last-stage window (7x7 table); a 224 checkpoint's 13x13
    tables are resized bicubically, as the original loader does."""
    sd = create_model("unified_swin_micro").state_dict()
    path = tmp_path / "swin224.pth"
    torch.save({"model": sd}, path)
    model = create_model("unified_swin_micro", img_size=128, checkpoint=path)
    key = "stages.3.0.attn.relative_position_bias_table"
    table = sd[key]  # (169, heads)
    grid = table.permute(1, 0).reshape(1, -1, 13, 13)
    expected = F.interpolate(grid, size=(7, 7), mode="bicubic").reshape(-1, 49).permute(1, 0)
    assert model.state_dict()[key].shape == (49, table.shape[1])
    assert torch.allclose(model.state_dict()[key], expected)
    key0 = "stages.0.0.attn.relative_position_bias_table"
    assert torch.equal(model.state_dict()[key0], sd[key0])  # same size: untouched

"""Safe checkpoint loading: layouts, the -ema quirk, refusal of code, errors, resizing."""
from __future__ import annotations

import os
import pickle
import random
import zipfile
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


@pytest.mark.slow  # builds a dozen models: the full suite
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


# --- files that are not checkpoints: one line saying what they are ---------------------------------
def _refusal(path: Path, model: str = "unified_convnext_micro", **kwargs) -> str:
    with pytest.raises(UsageError) as info:
        create_model(model, checkpoint=path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _random_bytes(n: int = 4096) -> bytes:
    data = random.Random(0).randbytes(n)
    assert data[0] != 0x80 and not data.startswith(b"PK")  # not a pickle or zip by chance
    return data


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path) -> None:
    for name in ("noise.pth", "noise.safetensors", "noise.bin"):
        path = tmp_path / name
        path.write_bytes(_random_bytes())
        message = _refusal(path)
        assert "is not a PyTorch or safetensors file" in message and "could run code" not in message


def test_directory_empty_file_and_text_files(tmp_path: Path) -> None:
    assert "is a directory, not a file" in _refusal(tmp_path)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert "is empty (0 bytes)" in _refusal(empty)
    lfs = tmp_path / "lfs.pth"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 123\n")
    assert "Git LFS pointer" in _refusal(lfs)
    page = tmp_path / "page.pth"
    page.write_text("<!DOCTYPE html><html>Not Found</html>")
    assert "HTML" in _refusal(page)


def test_truncated_zip_and_safetensors(trained_sd, tmp_path: Path) -> None:
    path = tmp_path / "t.pth"
    torch.save(trained_sd, path)
    path.write_bytes(path.read_bytes()[:1000])
    assert "truncated or damaged PyTorch file (zip format)" in _refusal(path)
    st = tmp_path / "t.safetensors"
    save_file({k: v.contiguous() for k, v in trained_sd.items()}, str(st))
    st.write_bytes(st.read_bytes()[: st.stat().st_size - 100])
    assert "is not a readable safetensors file" in _refusal(st)


def test_zip_archive_that_is_not_a_checkpoint(trained_sd, tmp_path: Path) -> None:
    inner = tmp_path / "w.pth"
    torch.save(trained_sd, inner)
    path = tmp_path / "weights.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("README.txt", "weights inside")
        archive.write(inner, "release/w.pth")
    assert "is a zip archive, not a PyTorch checkpoint (it holds README.txt, release/w.pth)" in _refusal(path)


def test_formats_are_read_by_content_not_suffix(trained_sd, tmp_path: Path) -> None:
    """A .pth holding safetensors and a .safetensors holding a torch.save zip both load."""
    st_as_pth = tmp_path / "really_safetensors.pth"
    save_file({k: v.contiguous() for k, v in trained_sd.items()}, str(st_as_pth))
    model = create_model("unified_convnext_micro", checkpoint=st_as_pth)
    _assert_loaded(model, trained_sd)
    assert model.stm_probe_weights["checkpoint_format"] == "safetensors"
    zip_as_st = tmp_path / "really_torch.safetensors"
    torch.save({"model": trained_sd}, zip_as_st)
    model = create_model("unified_convnext_micro", checkpoint=zip_as_st)
    _assert_loaded(model, trained_sd)
    assert model.stm_probe_weights["checkpoint_format"] == "pytorch"
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": trained_sd}, legacy, _use_new_zipfile_serialization=False)
    model = create_model("unified_convnext_micro", checkpoint=legacy)
    _assert_loaded(model, trained_sd)
    assert model.stm_probe_weights["checkpoint_format"] == "pytorch-legacy"


def test_unsafe_pickles_and_foreign_pickles(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    legacy = tmp_path / "evil_legacy.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Payload(marker)}, legacy, _use_new_zipfile_serialization=False)
    message = _refusal(legacy)
    assert "safe loading refuses" in message and "could run code" in message and "system" in message
    assert not marker.exists()
    foreign = tmp_path / "plain_pickle.pth"
    foreign.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    message = _refusal(foreign)
    assert "is a pickle that torch.load cannot read safely" in message and "could run code" not in message


# --- non-strict loading: how much came from the file ------------------------------------------------
def _fraction(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> float:
    """Share of the target's floating elements (computed buffers aside) with a same-shaped source entry."""
    counted = {k: v.numel() for k, v in target.items()
               if v.is_floating_point() and not k.endswith(("relative_position_index", "attn_mask"))}
    loaded = sum(n for k, n in counted.items() if k in source and source[k].shape == target[k].shape)
    return loaded / sum(counted.values())


def test_non_strict_records_the_loaded_fraction(trained_sd, tmp_path: Path) -> None:
    partial = {k: v for k, v in trained_sd.items() if not k.startswith("head.")}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    model = create_model("unified_convnext_micro", checkpoint=path, strict=False)
    expected = _fraction(partial, model.state_dict())
    assert 0.5 < expected < 1.0
    record = model.stm_probe_weights
    assert record["loaded_fraction"] == pytest.approx(expected, abs=1e-6)
    assert record["weights"] == f"checkpoint (non-strict, {int(expected * 100)}% loaded)"
    full = tmp_path / "full.pth"
    torch.save(trained_sd, full)
    record = create_model("unified_convnext_micro", checkpoint=full, strict=False).stm_probe_weights
    assert record["weights"] == "checkpoint" and record["loaded_fraction"] == 1.0


def test_non_strict_refuses_another_models_checkpoint(trained_sd, tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    torch.save({"model": trained_sd}, path)
    expected = _fraction(trained_sd, create_model("unified_pvt_micro").state_dict())
    assert 0.05 < expected < 0.5  # stem, downsampling, stage norms and head are shared
    message = _refusal(path, "unified_pvt_micro", strict=False)
    assert message == (f"only {int(expected * 100)}% of unified_pvt_micro's parameters are in '{path}': it is not "
                       "this model's checkpoint; use --model unified_convnext_micro, or --min-loaded 0 to run anyway")
    model = create_model("unified_pvt_micro", checkpoint=path, strict=False, min_loaded=0.0)
    assert model.stm_probe_weights["loaded_fraction"] == pytest.approx(expected, abs=1e-6)
    assert model.stm_probe_weights["weights"] == f"checkpoint (non-strict, {int(expected * 100)}% loaded)"
    assert torch.equal(model.state_dict()["head.weight"], trained_sd["head.weight"])


# --- non-finite weights -----------------------------------------------------------------------------
@pytest.mark.parametrize("strict", [True, False])
def test_non_finite_weights_are_refused(trained_sd, tmp_path: Path, strict: bool) -> None:
    bad = dict(trained_sd)
    first = "stages.0.0.dwconv.weight"  # before the other bad tensor in the model's key order
    bad[first] = bad[first].clone()
    bad[first].view(-1)[:5] = float("nan")
    bad[first].view(-1)[7] = float("inf")
    bad["head.bias"] = torch.full_like(bad["head.bias"], float("-inf"))
    path = tmp_path / "nan.pth"
    torch.save(bad, path)
    message = _refusal(path, strict=strict)
    numel = bad[first].numel()
    assert f"'{first}' has 6 NaN/Inf value(s) of {numel} and 1 more tensor(s)" in message

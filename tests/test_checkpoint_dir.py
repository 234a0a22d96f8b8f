"""``--checkpoint-dir``: release names (halonet, internimage), canonical names, ``-ema``,
safetensors and timm names are found; two fitting files or none are refused in one line naming the
files; an explicit ``--checkpoint`` wins; the session records which model got which file."""
from __future__ import annotations

from pathlib import Path

import pytest

from stm_probe.api import light_checks
from stm_probe.errors import UsageError
from stm_probe.models.checkpoint_dir import candidate_names, checkpoints_from_dir, find_checkpoints
from stm_probe.options import RunOptions
from stm_probe.runtime.session import open_session


def _files(folder: Path, *names: str) -> Path:
    for name in names:
        (folder / name).write_bytes(b"weights")
    return folder


def test_release_and_canonical_names_are_found(tmp_path: Path) -> None:
    _files(tmp_path, "unified_halonet_tiny.pth", "unified_internimage_small-ema.pth", "unified_convnext_micro.pth",
           "unified_pvt_base.safetensors", "resnet18.pth", "notes.txt", "unified_swin_tiny.pth")
    models = ["unified_halo_tiny", "unified_dcn_v3_small", "unified_convnext_micro", "unified_pvt_base", "resnet18"]
    assert find_checkpoints(models, tmp_path) == {
        "unified_halo_tiny": str(tmp_path / "unified_halonet_tiny.pth"),
        "unified_dcn_v3_small": str(tmp_path / "unified_internimage_small-ema.pth"),
        "unified_convnext_micro": str(tmp_path / "unified_convnext_micro.pth"),
        "unified_pvt_base": str(tmp_path / "unified_pvt_base.safetensors"),
        "resnet18": str(tmp_path / "resnet18.pth"),
    }


def test_canonical_name_of_a_renamed_stem_and_case_are_accepted(tmp_path: Path) -> None:
    _files(tmp_path, "unified_dcn_v3_tiny.pth", "Unified_Halo_Micro.PTH")
    found = find_checkpoints(["unified_dcn_v3_tiny", "unified_halo_micro"], tmp_path)
    assert found == {"unified_dcn_v3_tiny": str(tmp_path / "unified_dcn_v3_tiny.pth"),
                     "unified_halo_micro": str(tmp_path / "Unified_Halo_Micro.PTH")}
    assert "unified_internimage_tiny-ema.safetensors" in candidate_names("unified_dcn_v3_tiny")


@pytest.mark.parametrize("names", [("unified_swin_tiny.pth", "unified_swin_tiny-ema.pth"),
                                   ("unified_swin_tiny.pth", "unified_swin_tiny.safetensors")])
def test_two_fitting_files_are_refused_naming_both(tmp_path: Path, names: tuple[str, str]) -> None:
    _files(tmp_path, *names)
    with pytest.raises(UsageError) as info:
        find_checkpoints(["unified_swin_tiny"], tmp_path)
    message = str(info.value)
    assert "\n" not in message and all(name in message for name in names)
    assert "--checkpoint unified_swin_tiny=PATH" in message


def test_a_model_without_a_file_is_refused_naming_the_expected_names(tmp_path: Path) -> None:
    _files(tmp_path, "unified_halonet_tiny.pth")
    with pytest.raises(UsageError) as info:
        find_checkpoints(["unified_halo_tiny", "unified_dcn_v3_micro"], tmp_path)
    message = str(info.value)
    assert "\n" not in message and "no file for unified_dcn_v3_micro" in message
    assert "unified_internimage_micro[-ema].pth" in message and "unified_dcn_v3_micro[-ema].pth" in message


def test_an_explicit_checkpoint_wins_and_each_model_is_reported(tmp_path: Path, capsys) -> None:
    _files(tmp_path, "unified_pvt_tiny.pth", "unified_pvt_tiny-ema.pth", "unified_swin_tiny.pth")
    chosen = str(tmp_path / "unified_pvt_tiny-ema.pth")
    found, lines = checkpoints_from_dir(["unified_pvt_tiny", "unified_swin_tiny"], {"unified_pvt_tiny": chosen},
                                        tmp_path)
    assert found == {"unified_swin_tiny": str(tmp_path / "unified_swin_tiny.pth")}  # the ambiguity is resolved
    assert lines == [f"unified_swin_tiny: {tmp_path / 'unified_swin_tiny.pth'} (from --checkpoint-dir)",
                     f"unified_pvt_tiny: {chosen} (--checkpoint, not --checkpoint-dir)"]
    assert capsys.readouterr().err.count("stm-probe: unified_") == 2


def test_the_session_takes_the_files_and_notes_them(tmp_path: Path) -> None:
    _files(tmp_path, "unified_internimage_micro.pth", "unified_convnext_micro.pth")
    own = tmp_path / "mine.pth"
    own.write_bytes(b"weights")
    options = RunOptions(model=("unified_*_micro",), checkpoint=(f"unified_convnext_micro={own}",),
                         checkpoint_dir=str(tmp_path), input_size=32, quiet=True)
    with pytest.raises(UsageError, match="no file for unified_halo_micro"):
        open_session("eval", options, call={}, write_files=False)
    options = RunOptions(model=("unified_dcn_v3_micro", "unified_convnext_micro"),
                         checkpoint=(f"unified_convnext_micro={own}",), checkpoint_dir=str(tmp_path), input_size=32,
                         quiet=True)
    session = open_session("eval", options, call={}, write_files=False)
    assert session.checkpoints == {"unified_convnext_micro": str(own),
                                   "unified_dcn_v3_micro": str(tmp_path / "unified_internimage_micro.pth")}
    found = tmp_path / "unified_internimage_micro.pth"
    assert f"unified_dcn_v3_micro: {found} (from --checkpoint-dir)" in session.notes


def test_light_checks_refuse_a_missing_or_file_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--checkpoint-dir .* does not exist"):
        light_checks(RunOptions(model=("unified_pvt_tiny",), checkpoint_dir=str(tmp_path / "none")))
    _files(tmp_path, "file.pth")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        light_checks(RunOptions(model=("unified_pvt_tiny",), checkpoint_dir=str(tmp_path / "file.pth")))

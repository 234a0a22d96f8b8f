"""The Python API as a notebook sees it: ``dir(stm_probe)`` lists it, `run` keeps the run's notes, manifest
and folder in ``frame.attrs``, `load_run` refuses what is no finished run in one line, `list_models`; and
every subcommand's ``--help`` ends with examples that parse."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import stm_probe
from stm_probe.cli import build_parser
from stm_probe.errors import UsageError


def test_dir_and_all_list_the_public_api() -> None:
    for name in ("run", "load_run", "create_model", "list_models", "UsageError", "PROBES"):
        assert name in stm_probe.__all__ and name in dir(stm_probe)
        assert getattr(stm_probe, name) is not None
    assert "importlib" not in dir(stm_probe)


def test_import_is_light() -> None:
    code = "import sys, stm_probe; dir(stm_probe); print('torch' in sys.modules, 'pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_list_models() -> None:
    assert stm_probe.list_models("unified_*_micro") == ["unified_halo_micro", "unified_pvt_micro", "unified_swin_micro",
                                                        "unified_convnext_micro", "unified_dcn_v3_micro"]
    assert stm_probe.list_models(["unified_tiny_attn", "unified_micro_conv"]) == ["unified_pvt_tiny",
                                                                                  "unified_convnext_micro"]
    assert len(stm_probe.list_models()) == 20


def test_run_without_files_keeps_notes_and_manifest() -> None:
    frame = stm_probe.run("erf", models=["unified_micro_conv", "unified_micro_attn"], input_size=64, num_images=1,
                          stages=(4,), thresholds=(0.5,), bootstrap=0, quiet=True)
    assert frame.attrs["folder"] is None
    assert any("ran at random init" in note for note in frame.attrs["notes"])
    manifest = frame.attrs["manifest"]
    assert manifest["analysis"] == "erf" and [m["name"] for m in manifest["models"]] == ["unified_convnext_micro",
                                                                                         "unified_pvt_micro"]


def test_load_run_refuses_what_is_no_finished_run(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a folder"):
        stm_probe.load_run(tmp_path / "missing")
    running = tmp_path / "running"
    running.mkdir()
    (running / "run.json").write_text(json.dumps({"probe": "erf", "status": "incomplete"}))
    with pytest.raises(UsageError, match="--resume"):
        stm_probe.load_run(running)
    compare = tmp_path / "compare"
    (compare / "erf").mkdir(parents=True)
    (compare / "erf" / "manifest.json").write_text("{}")
    (compare / "report.md").write_text("# report")
    with pytest.raises(UsageError, match="compare folder"):
        stm_probe.load_run(compare)


def _subparsers() -> dict:
    import argparse

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_subcommand_help_ends_with_examples_that_parse() -> None:
    commands = _subparsers()
    for name, sub in commands.items():
        text = sub.format_help()
        examples = text.split("examples:\n", 1)[1].splitlines()
        assert 1 <= len(examples) <= 3, name
        for line in examples:
            argv = shlex.split(line.split("  #")[0])
            argv = [a for a in argv if "=" not in a or a.startswith("-")][1:]  # no env assignment, no 'stm-probe'
            assert argv[0] in commands, line
            build_parser().parse_args(argv)  # parses (files need not exist)


def test_train_help_describes_train() -> None:
    text = _subparsers()["train"].format_help()
    assert "Train a model" in text and "Settings of one training run" not in text


def test_run_refuses_what_is_no_probe() -> None:
    with pytest.raises(UsageError, match="is no probe"):
        stm_probe.run(dict, models="unified_micro_conv")
    with pytest.raises(UsageError, match="unknown probe 'erv'.*did you mean erf"):
        stm_probe.run("erv", models="unified_micro_conv")

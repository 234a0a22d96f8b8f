"""The command line: the models table against the reference manifest, one-line errors, exit codes."""
from __future__ import annotations

import csv
import json
import io
import subprocess
import sys
from pathlib import Path

import pytest

from stm_probe.cli import main


def test_models_table_matches_manifest(manifest: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in rows] == list(manifest)
    for row in rows:
        ref = manifest[row["name"]]
        assert int(row["params"]) == ref["param_count"]
        assert float(row["gmacs_224"]) == pytest.approx(ref["gmacs_224"], rel=0.01)
        assert (row["stm"], row["size"]) == (ref["family"], ref["size"])
    assert "unified_tiny_attn" in next(r for r in rows if r["name"] == "unified_pvt_tiny")["aliases"]


def _error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("stm-probe: error:")
    return err


@pytest.mark.parametrize("argv, expected", [
    (["erf", "--model", "unified_swim_tiny"], "did you mean unified_swin_tiny"),
    (["erf", "--model", "unified_micro_conv", "--batch-size", "0"], "--batch-size"),
    (["erf", "--model", "unified_micro_conv", "--input-size", "100"], "multiple of 32"),
    (["erf", "--model", "unified_micro_conv", "--checkpoint", "/nope.pth"], "does not exist"),
    (["erf", "--model", "unified_micro_conv", "--data", "/no/such/dir"], "no such file"),
    (["erf", "--model", "unified_micro_conv", "--thresholds", "0.2,x"], "'x' is not a number"),
    (["invariance", "--model", "unified_micro_conv", "--kind", "scale", "--kind", "translation"],
     "--kind given twice: give one comma-separated list, e.g. --kind scale,translation"),
    (["erf", "--model", "unified_micro_conv", "--device", "tpu"], "--device"),
    (["plot", "erf", "/no/such/run"], "is not a folder"),
    (["erf", "--model", "unified_micro_conv", "--subset-seed", "-3"], "--subset-seed -3"),
    (["eval", "--model", "unified_micro_conv", "--labels", "/"], "is a folder, not a file"),
    (["eval", "--model", "unified_micro_conv", "--checkpoint-dir", "/no/such/dir"], "--checkpoint-dir"),
    (["corruption", "--model", "unified_micro_conv", "--severities", "0,6"], "severity 0"),
    (["erf", "--model", "unified_micro_conv", "--precision", "fp16", "--device", "cpu"], "needs a CUDA device"),
    (["compare", "--model", "unified_micro_conv", "--set", "erf.stagez=2"], "did you mean stages"),
])
def test_bad_input_is_one_line_exit_2(argv: list[str], expected: str, capsys, tmp_path: Path) -> None:
    assert main(argv + (["--out", str(tmp_path / "o")] if argv[0] != "plot" else [])) == 2
    assert expected in _error_line(capsys)
    assert not (tmp_path / "o").exists()  # nothing written for a run that never started


def test_unknown_subcommand_and_help() -> None:
    done = subprocess.run([sys.executable, "-m", "stm_probe", "erf", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--compare-init" in done.stdout and "--checkpoint" in done.stdout
    done = subprocess.run([sys.executable, "-m", "stm_probe", "frobnicate"], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_train_make_data_and_plot_train_commands(tmp_path: Path, capsys) -> None:
    """The CLI wiring: make-data writes the split, train writes a checkpoint the probes load, plot redraws."""
    from PIL import Image

    assert main(["make-data", "--split", "val", "--out", str(tmp_path / "set"), "--num-images", "8",
                 "--classes", "2", "--size", "32"]) == 0
    images = sorted((tmp_path / "set").rglob("*.png"))
    assert len(images) == 8 and Image.open(images[0]).size == (36, 36)  # rendered at int(32 / 0.875)
    out = tmp_path / "train"
    assert main(["train", "--model", "unified_convnext_micro", "--data", str(tmp_path / "set"), "--val-fraction",
                 "0.25", "--epochs", "1", "--batch-size", "4", "--input-size", "32", "--out", str(out),
                 "--quiet"]) == 0
    log = list(csv.DictReader((out / "train_log.csv").open()))
    assert len(log) == 1 and 0 <= float(log[0]["val_acc"]) <= 100
    (out / "train_curve.png").unlink()
    assert main(["plot", "train", str(out)]) == 0 and (out / "train_curve.png").exists()
    capsys.readouterr()
    assert main(["erf", "--model", "unified_convnext_micro", "--checkpoint", str(out / "checkpoint.pth"),
                 "--input-size", "32", "--num-images", "1", "--stages", "1", "--quiet", "--out", str(tmp_path / "e")]) == 0
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    weights = {m["weights"] for m in manifest["models"]} if isinstance(manifest["models"], list) else \
        {m["weights"] for m in manifest["models"].values()}
    assert len(weights) == 1 and weights.pop().startswith("checkpoint (trained here: ")


@pytest.mark.parametrize("text, expected", [
    ("", "it is empty"),
    ("epoch,train_loss\n1,0.5\n", "lacks the column(s)"),
    ("epoch,train_loss,train_acc,val_loss,val_acc,lr\n", "holds a header but no rows"),
    ("epoch,train_loss,train_acc,val_loss,val_acc,lr\n1,0.5,50,x,40,0.001\n", "not a finite number"),
])
def test_plot_train_refuses_a_damaged_log(text: str, expected: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "train_log.csv").write_text(text)
    assert main(["plot", "train", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "train_log.csv" in err


def test_building_the_command_line_imports_no_torch() -> None:
    """`--help` and argument errors stay instant: every command's options are built without torch or timm
    (a probe module importing torch at its top would add seconds to each call)."""
    import subprocess
    import sys

    code = ("import sys; from stm_probe.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'timm', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"

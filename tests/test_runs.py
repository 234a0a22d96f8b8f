"""Run folders: lock, refusal to clobber, stale temp files, permissions, output-path checks, repeats."""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stm_probe
from stm_probe.cli import main
from stm_probe.data import default_data_dir
from stm_probe.errors import UsageError
from stm_probe.runtime.store import RunFolder

QUICK = dict(models=["unified_convnext_micro"], input_size=32, num_images=2, quiet=True, bootstrap=20,
             stages=(1,), thresholds=(0.5,))


def _erf(out: Path, **extra):
    return stm_probe.run("erf", out=out, **{**QUICK, **extra})


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(UsageError, match="in use by another run"):
        _erf(out)
    assert (out / ".lock").exists() and not (out / "erf.csv").exists()


def test_a_dead_runs_lock_and_temp_files_are_cleaned_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _erf(out)
    reference = (out / "erf.csv").read_text()
    # simulate a run killed while saving a figure: its lock and a 0-byte hidden temp file stay behind
    (out / ".lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    (out / ".erf_grid.png.k3j2.tmp.png").write_bytes(b"")
    (out / "erf" / ".x_stage1.npy.a1.tmp.npy").write_bytes(b"")
    _erf(out, resume=True)
    assert not list(out.rglob(".*.tmp*")) and not (out / ".lock").exists()
    assert (out / "erf.csv").read_text() == reference


def test_outputs_respect_the_umask_at_writing_time(tmp_path: Path) -> None:
    import stm_probe.files as runs

    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        _erf(out)
        os.umask(0o027)  # read when writing, not when stm_probe was imported
        runs.write_text(tmp_path / "later.txt", "x")
    finally:
        os.umask(old)
    for name in ("erf.csv", "manifest.json", "per_image.csv"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((tmp_path / "later.txt").stat().st_mode) == 0o640
    assert not list(tmp_path.glob(".*.tmp*"))


@pytest.mark.parametrize("case", ["file", "empty", "inside-data", "contains-data"])
def test_bad_out_folders_are_refused_before_computing(case: str, tmp_path: Path, capsys) -> None:
    data = tmp_path / "images"
    shutil.copytree(default_data_dir(), data, ignore=shutil.ignore_patterns("*.py", "*.md"))
    out = {"file": tmp_path / "a_file", "empty": "", "inside-data": data / "run",
           "contains-data": tmp_path}[case]
    if case == "file":
        Path(out).write_text("x")
    argv = ["erf", "--model", "unified_convnext_micro", "--input-size", "32", "--data", str(data), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert {"file": "existing file", "empty": "names no folder", "inside-data": "inside (or contains) the image data",
            "contains-data": "inside (or contains) the image data"}[case] in err
    assert not (data / "run").exists()


def test_units_are_saved_without_pickle(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "r", "erf", resume=False)
    folder.open({})
    folder.save_unit("k", {"indices": np.arange(3), "v0": np.ones((3, 2))}, {"keys": [[1, "map"]]})
    arrays, meta = folder.load_unit("k")
    assert meta == {"keys": [[1, "map"]]} and arrays["v0"].shape == (3, 2)
    folder.close()
    with np.load(folder.unit_path("k"), allow_pickle=False) as data:  # plain numeric arrays only
        assert all(data[name].dtype != object for name in data.files)


def test_repeats_report_the_spread_over_repeats(tmp_path: Path) -> None:
    from scipy import stats

    common = dict(models=["unified_convnext_micro"], input_size=32, num_images=4, quiet=True, bootstrap=20,
                  kind=("translation",), levels=(8,))
    one = stm_probe.run("invariance", **common)
    three = stm_probe.run("invariance", repeats=3, out=tmp_path / "r", **common)
    row = lambda f: f[f["metric"] == "kl"].iloc[0]  # noqa: E731
    # repeat 0 is the run without repeats (same value and interval over images)
    assert row(three)["value"] == row(one)["value"] and row(three)["ci_low"] == row(one)["ci_low"]
    assert row(one)["repeats"] == 1 and np.isnan(row(one)["repeat_low"])
    # the spread: mean and Student-t interval of the three per-repeat means (from per_image.csv)
    per_image = pd.read_csv(tmp_path / "r" / "per_image.csv")
    means = per_image[per_image["metric"] == "kl"].groupby("repeat")["value"].mean().to_numpy()
    assert len(means) == 3 and len(set(np.round(means, 12))) == 3  # directions re-drawn per repeat
    low, high = stats.t.interval(0.95, 2, loc=means.mean(), scale=stats.sem(means))
    assert row(three)["repeats"] == 3
    assert row(three)["repeat_mean"] == pytest.approx(means.mean(), rel=1e-9)
    assert (row(three)["repeat_low"], row(three)["repeat_high"]) == pytest.approx((low, high), rel=1e-9)
    with pytest.raises(UsageError, match="erf draws nothing at random"):
        stm_probe.run("erf", repeats=2, **QUICK)


def test_relative_levels_are_fractions_of_the_input() -> None:
    common = dict(models=["unified_convnext_micro"], input_size=64, num_images=2, quiet=True, bootstrap=10,
                  kind=("translation",))
    relative = stm_probe.run("invariance", levels=(0.125, 0.25), relative_levels=True, **common)
    absolute = stm_probe.run("invariance", levels=(8, 16), **common)
    assert sorted(set(relative["level"])) == [8.0, 16.0]
    pd.testing.assert_frame_equal(relative, absolute)


def test_the_summary_says_what_would_otherwise_surprise(tmp_path: Path, capsys) -> None:
    """More images asked than the source holds; several unified models at random init; --compare-init
    without a checkpoint: each is said in the summary and kept in the manifest."""
    out = tmp_path / "run"
    assert main(["erf", "--model", "unified_convnext_micro", "--model", "unified_pvt_micro", "--num-images", "100",
                 "--input-size", "32", "--stages", "1", "--thresholds", "0.5", "--compare-init", "--quiet",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    notes = json.loads((out / "manifest.json").read_text())["notes"]
    available = len(list(default_data_dir().glob("*.jpg")))
    expected = [f"the source holds {available} image(s), fewer than --num-images 100", "--compare-init does nothing",
                "2 unified models ran at random init"]
    for text in expected:
        assert any(text in note for note in notes) and text in printed
    assert json.loads((out / "manifest.json").read_text())["num_images"] == available


def test_file_hash_is_cached_by_size_and_mtime_and_follows_changes(tmp_path: Path) -> None:
    import hashlib

    from stm_probe.files import _sha256_of, file_sha256

    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b\n1,2\n")
    first = file_sha256(path)
    assert first == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    hits = _sha256_of.cache_info().hits
    assert file_sha256(path) == first and _sha256_of.cache_info().hits == hits + 1  # read once
    path.write_bytes(b"a,b\n1,3\n")  # same size: a new mtime makes it read again
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert file_sha256(path) == hashlib.sha256(b"a,b\n1,3\n").hexdigest()
    path.write_bytes(b"a,b\n1,30\n")
    assert file_sha256(path) == hashlib.sha256(b"a,b\n1,30\n").hexdigest()


def test_extras_are_typed_kept_apart_from_metrics_and_survive_a_saved_unit() -> None:
    """An `Extra` metric is artefact data: a key of its own beside the metric of the same name, left out of
    summaries and per-image rows, and read back as an `Extra` from a saved unit (resume)."""
    from stm_probe.probes.base import Extra, Probe, Unit, UnitResult, Values

    values = {("gaussian", 1, "error"): np.array([100.0, 0.0]), ("gaussian", 1, Extra("error")): np.array([1.0, 2.0]),
              ("gaussian", 1, Extra("example_image")): np.zeros((2, 3, 4, 4), np.uint8)}
    result = UnitResult({"model": "m"}, Unit("gaussian 1", ("gaussian", 1)), np.arange(2), values)
    assert isinstance(result.values, Values) and len(result.values) == 3
    assert list(result.values.metrics()) == [("gaussian", 1, "error")]
    assert set(result.values.extras()) == {("gaussian", 1, Extra("error")), ("gaussian", 1, Extra("example_image"))}
    arrays, meta = result.to_arrays()
    json.dumps(meta)
    back = UnitResult.from_arrays(result.unit, arrays, json.loads(json.dumps(meta)))
    assert list(back.values) == list(values)
    for key, value in values.items():
        np.testing.assert_array_equal(back.values[key], value)

    class Twice(Probe):
        name = "twice"
        setting_columns = ("corruption", "severity")

    probe = Twice(None, type("S", (), {"options": type("O", (), {"bootstrap": 100})()})())
    summaries = probe.summarise(result.values, seed=0)
    assert list(summaries) == [("gaussian", 1, "error")] and summaries[("gaussian", 1, "error")].value == 50.0
    assert list(probe.per_image(result.values)) == [("gaussian", 1, "error")]
    key = Twice.key("gaussian", 1, metric="error")
    assert key == ("gaussian", 1, "error") and hash(key) == hash(("gaussian", 1, "error"))
    assert (key.corruption, key.severity, key.metric) == ("gaussian", 1, "error")

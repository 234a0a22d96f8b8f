"""One contract over every registered probe (like timm's test over every model).

Each probe runs on three embedded images at 32 px with micro models. Checked: the tidy columns,
CI bounds around the value, identical numbers for batch sizes 1 and 7 and for two model orders,
figures redrawn from the saved files, a resumed run after an interruption equal to an
uninterrupted one, the Python API returning the CSV's rows, and the shared edge cases.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stm_probe
from stm_probe.cli import main
from stm_probe.errors import UsageError
from stm_probe.probes import PROBES, get_probe
from stm_probe.probes.base import ID_COLUMNS, RUN_COLUMNS, VALUE_COLUMNS

MODELS = ["unified_convnext_micro", "unified_pvt_micro"]
COMMON = dict(input_size=32, num_images=3, bootstrap=50, quiet=True)
SMALL = {  # a quick setting of each probe
    "erf": dict(stages=(1, 2), thresholds=(0.2, 0.5)),
    "invariance": dict(kind=("translation",), levels=(0, 8)),
    "adversarial": dict(attack=("fgsm", "pgd"), eps=("4",), steps=2),
    "bias": dict(probe=("patch-shuffle", "attribution"), grids=(1, 4), attribution_images=2),
    "data-efficiency": dict(classes=2, fractions=(0.5, 1.0), train_images=8, steps=2, train_batch=4, seeds=1,
                            cue_conflict_images=3),
    "eval": dict(labels_as_index=True),  # the default synthetic:val labels are not the ImageNet-1k models' classes
    "corruption": dict(corruptions=("gaussian_noise", "contrast"), severities=(1, 5)),
    "cka": dict(kernel=("linear", "rbf")),
}


def test_every_probe_has_a_small_setting() -> None:
    assert set(SMALL) == set(PROBES)


def _run(probe: str, out: Path | None = None, models=MODELS, **extra) -> pd.DataFrame:
    return stm_probe.run(probe, models=models, out=out, **{**COMMON, **SMALL[probe], **extra})


def _numbers(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in frame.columns if c not in ("value", "ci_low", "ci_high", "repeat_mean", "repeat_low",
                                                   "repeat_high")]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module", params=sorted(PROBES))
def reference(request, tmp_path_factory) -> tuple[str, Path, pd.DataFrame]:
    """One uninterrupted run of each probe into a folder, batch size 7."""
    probe = request.param
    out = tmp_path_factory.mktemp(probe) / "run"
    frame = _run(probe, out, batch_size=7)
    return probe, out, frame


def test_tidy_columns_and_intervals(reference) -> None:
    probe, out, frame = reference
    cls = get_probe(probe)
    expected = [*ID_COLUMNS, *cls.setting_columns, *VALUE_COLUMNS]
    assert list(frame.columns[:len(expected)]) == expected
    assert list(frame.columns[-len(RUN_COLUMNS):]) == list(RUN_COLUMNS)
    assert set(frame["model"]) == set(MODELS) and len(frame) > 0
    has_ci = frame["ci_low"].notna() & frame["value"].notna()
    assert has_ci.any()
    rows = frame[has_ci]
    assert (rows["ci_low"] <= rows["value"] + 1e-9).all() and (rows["value"] <= rows["ci_high"] + 1e-9).all()
    assert (frame["n_images"] <= 3).all() and (frame["repeats"] == 1).all()


def test_api_returns_the_csv_rows(reference) -> None:
    probe, out, frame = reference
    saved = pd.read_csv(out / f"{probe}.csv")
    assert list(saved.columns) == list(frame.columns)
    assert len(saved) == len(frame)
    for column in ("value", "ci_low", "ci_high", "n_images"):
        np.testing.assert_allclose(saved[column].astype(float), frame[column].astype(float), rtol=1e-12, equal_nan=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["call"]["api"] == "stm_probe.run" and manifest["call"]["probe_name"] == probe
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_load_run_returns_the_frame_run_returned(reference) -> None:
    probe, out, frame = reference
    loaded = stm_probe.load_run(out)

    def missing_as_none(table: pd.DataFrame) -> pd.DataFrame:  # a CSV keeps no difference between None, NaN, ''
        table = table.astype(object)
        return table.where(table.notna() & (table != ""), None)

    pd.testing.assert_frame_equal(missing_as_none(loaded), missing_as_none(frame), check_dtype=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert loaded.attrs["folder"] == out == frame.attrs["folder"]
    assert loaded.attrs["notes"] == manifest["notes"] == frame.attrs["notes"]
    assert loaded.attrs["manifest"]["analysis"] == probe == frame.attrs["manifest"]["analysis"]


def test_batch_size_and_model_order_do_not_change_numbers(reference) -> None:
    probe, _, frame = reference
    other = _run(probe, None, models=MODELS[::-1], batch_size=1)
    a, b = _numbers(frame), _numbers(other)
    pd.testing.assert_frame_equal(a.drop(columns=["value", "ci_low", "ci_high", "repeat_mean"]),
                                  b.drop(columns=["value", "ci_low", "ci_high", "repeat_mean"]))
    for column in ("value", "ci_low", "ci_high"):
        np.testing.assert_allclose(a[column].astype(float), b[column].astype(float), rtol=1e-4, atol=1e-6,
                                   equal_nan=True)


def test_plot_redraws_from_files(reference) -> None:
    probe, out, _ = reference
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures
    before = {name: (out / name).read_bytes() for name in figures}
    for name in figures:
        (out / name).unlink()
    assert main(["plot", probe, str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == figures
    assert all((out / name).read_bytes() == before[name] for name in figures)


def test_resume_after_interruption_gives_the_same_csv(reference, tmp_path, monkeypatch) -> None:
    probe, out, frame = reference
    cls = get_probe(probe)
    calls = {"n": 0}
    original = cls.measure

    def interrupted(self, model, unit, batch):
        if model.name == MODELS[1]:
            raise KeyboardInterrupt  # Ctrl-C while the second model runs
        calls["n"] += 1
        return original(self, model, unit, batch)

    monkeypatch.setattr(cls, "measure", interrupted)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(probe, run_dir, batch_size=7)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "incomplete"
    assert not (run_dir / "manifest.json").exists() and not (run_dir / ".lock").exists()
    saved_units = len(list((run_dir / "units").glob("*.npz")))
    assert saved_units >= 1
    monkeypatch.setattr(cls, "measure", original)
    with pytest.raises(UsageError, match="already holds files"):
        _run(probe, run_dir, batch_size=7)
    resumed = _run(probe, run_dir, batch_size=7, resume=True)
    pd.testing.assert_frame_equal(_numbers(resumed), _numbers(frame))
    assert (run_dir / f"{probe}.csv").read_text() == (out / f"{probe}.csv").read_text()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["units_resumed"] == saved_units


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_no_readable_image_is_one_line_and_no_folder(probe, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(b"not an image")
    (data / "b.png").write_bytes(b"")
    out = tmp_path / "out"
    argv = [probe, "--model", MODELS[0], "--data", str(data), "--out", str(out), "--input-size", "32", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    # data-efficiency measures on the synthetic set only: it refuses any other --data first, in one line
    reason = "measures on the synthetic set" if probe == "data-efficiency" else "no image could be read"
    assert len(err.splitlines()) == 1 and reason in err
    assert not out.exists()


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_every_image_skipped_by_the_probe_names_why(probe, tmp_path, monkeypatch) -> None:
    cls = get_probe(probe)
    original = cls.measure

    def all_nan(self, model, unit, batch):
        return {k: np.full(v.shape, np.nan) for k, v in original(self, model, unit, batch).items()}

    monkeypatch.setattr(cls, "measure", all_nan)
    with pytest.raises(UsageError, match=f"{probe} could not measure any image") as info:
        _run(probe, tmp_path / "out", models=MODELS[:1])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()

"""`stm-probe compare` and `stm-probe report` end to end on two micro models and two analyses (32 px, 2 images)."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from stm_probe.cli import main
from stm_probe.compare.runner import analyses, parse_settings
from stm_probe.errors import UsageError

MODELS = ["--model", "unified_convnext_micro", "--model", "unified_pvt_micro"]
SETTINGS = ["--analyses", "invariance,adversarial", "--set", "invariance.kind=translation",
            "--set", "invariance.levels=0,4,8", "--set", "adversarial.attack=fgsm", "--set", "adversarial.eps=2,8",
            "--input-size", "32", "--num-images", "2", "--bootstrap", "200", "--pairwise-bootstrap", "1000", "--quiet"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("compare") / "cmp"
    tic = time.perf_counter()
    assert main(["compare", *MODELS, *SETTINGS, "--out", str(out)]) == 0
    return out, time.perf_counter() - tic


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _headline_row(report: str, model: str) -> list[str]:
    line = next(l for l in report.splitlines() if l.startswith(f"| {model} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_headline_numbers_equal_the_csvs(compared: tuple[Path, float]) -> None:
    out, _ = compared
    report = (out / "report.md").read_text()
    header_line = next(line for line in report.splitlines() if line.startswith("| model |"))
    header = [c.strip() for c in header_line.strip("|").split("|")]
    inv = pd.read_csv(out / "invariance" / "invariance.csv")
    adv = pd.read_csv(out / "adversarial" / "adversarial.csv")
    for model in ("unified_convnext_micro", "unified_pvt_micro"):
        row = dict(zip(header, _headline_row(report, model)))
        # translation: the mean of the CSV's consistency over the levels > 0 (4 and 8 px)
        sel = inv[(inv["model"] == model) & (inv["metric"] == "consistency") & (inv["level"] > 0)]
        assert sorted(sel["level"]) == [4.0, 8.0]
        assert row["translation consistency (%)"].startswith(f"{sel['value'].mean():.1f}")
        # adversarial: unlabelled images, so the flip rate at each eps, value and Wilson interval as in the CSV
        for eps in (2.0, 8.0):
            hit = adv[(adv["model"] == model) & (adv["metric"] == "flip_rate") & (adv["eps"] == eps)].iloc[0]
            assert row[f"fgsm flip rate @{eps:g}/255 (%)"].startswith(
                f"{hit['value']:.1f} [{hit['ci_low']:.1f}, {hit['ci_high']:.1f}]")


def test_level_average_interval_is_a_bootstrap_over_images(compared: tuple[Path, float]) -> None:
    from stm_probe.compare.folders import load_compare
    from stm_probe.compare.headline import _seed, headline_table
    from stm_probe.core.stats import bootstrap_ci

    out, _ = compared
    _, runs = load_compare(out)
    specs, table = headline_table(runs, ["unified_convnext_micro", "unified_pvt_micro"], n_boot=200)
    per_image = pd.read_csv(out / "invariance" / "per_image.csv")
    for model in ("unified_convnext_micro", "unified_pvt_micro"):
        sel = per_image[(per_image["model"] == model) & (per_image["metric"] == "consistency")
                        & (per_image["level"] > 0)]
        means = sel.groupby("image")["value"].mean().to_numpy()
        cell = table[(table["key"] == "invariance:translation") & (table["model"] == model)].iloc[0]
        assert cell["value"] == pytest.approx(means.mean())
        assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(
            bootstrap_ci(means, n_boot=200, seed=_seed("invariance:translation", model)))
        assert cell["ci_low"] <= cell["value"] <= cell["ci_high"] and cell["n_images"] == 2


def test_html_is_self_contained(compared: tuple[Path, float]) -> None:
    out, _ = compared
    text = (out / "report.html").read_text()
    figures = re.findall(r'<img [^>]*src="([^"]*)"', text)
    assert len(figures) >= 3  # summary heat map + the runs' own figures
    assert all(src.startswith("data:image/png;base64,") for src in figures)
    assert not re.search(r"https?://", text) and "<script" not in text and "<link" not in text
    assert (out / "summary_heatmap.png").is_file() and not (out / "summary_heatmap.pdf").exists()
    md = (out / "report.md").read_text()
    for heading in ("Headline table", "Pairwise tests", "Provenance", "How to read this report"):
        assert f"## {heading}" in md and heading in text


def test_linked_html_points_at_the_embedded_figures(compared: tuple[Path, float], tmp_path: Path) -> None:
    """--link-figures: the same page, each figure a relative path to the file the embedded page carries."""
    import base64
    import shutil

    out, _ = compared
    copy = tmp_path / "linked"
    shutil.copytree(out, copy)
    embedded = (out / "report.html").read_text()
    assert main(["report", str(copy), "--link-figures"]) == 0
    linked = (copy / "report.html").read_text()
    data = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]*)"', embedded)
    paths = re.findall(r'<img [^>]*src="([^"]*)"', linked)
    assert len(paths) == len(data) >= 3 and "data:" not in linked
    for path, blob in zip(paths, data):
        assert not Path(path).is_absolute() and ".." not in Path(path).parts
        assert (copy / path).read_bytes() == base64.b64decode(blob)
    strip = lambda text: re.sub(r'src="[^"]*"', "", re.sub(r"\(20\d\d-[^)]*\)", "", text))
    assert strip(linked) == strip(embedded)  # only the figure sources (and the time stamp) differ
    assert len(linked) < len(embedded) / 10


def test_second_run_reuses_everything(compared: tuple[Path, float], monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    out, first = compared
    manifests = {p: _sha(p) for p in out.glob("*/manifest.json")}
    assert len(manifests) == 2 and all(json.loads(p.read_text())["units_computed"] > 0 for p in manifests)

    def no_execute(*args, **kwargs):
        raise AssertionError("compare recomputed an analysis it should have reused")

    monkeypatch.setattr("stm_probe.api.execute", no_execute)
    tic = time.perf_counter()
    assert main(["compare", *MODELS, *SETTINGS, "--out", str(out)]) == 0
    seconds = time.perf_counter() - tic
    assert {p: _sha(p) for p in manifests} == manifests  # run folders untouched
    record = json.loads((out / "compare.json").read_text())
    assert [a["status"] for a in record["analyses"]] == ["reused", "reused"]
    assert seconds < max(30.0, first / 2), f"reusing took {seconds:.1f} s (first run {first:.1f} s)"
    assert capsys.readouterr().out.count("reusing the complete run") == 2


def test_unfinished_run_is_continued_from_its_units(compared: tuple[Path, float], tmp_path: Path) -> None:
    import shutil

    out, _ = compared
    copy = tmp_path / "cmp"
    shutil.copytree(out, copy)
    marker = copy / "invariance" / "run.json"
    marker.write_text(marker.read_text().replace('"complete"', '"incomplete"'))
    (copy / "invariance" / "manifest.json").unlink()
    before = (out / "invariance" / "invariance.csv").read_bytes()
    assert main(["compare", *MODELS, *SETTINGS, "--out", str(copy)]) == 0
    manifest = json.loads((copy / "invariance" / "manifest.json").read_text())
    assert manifest["units_computed"] == 0 and manifest["units_resumed"] == 2  # 2 models x 1 kind
    assert (copy / "invariance" / "invariance.csv").read_bytes() == before
    statuses = {a["name"]: a["status"] for a in json.loads((copy / "compare.json").read_text())["analyses"]}
    assert statuses == {"invariance": "continued", "adversarial": "reused"}


def test_other_settings_are_refused_not_mixed(compared: tuple[Path, float], capsys: pytest.CaptureFixture) -> None:
    out, _ = compared
    before = _sha(out / "adversarial" / "adversarial.csv")
    argv = ["compare", *MODELS, *SETTINGS, "--set", "adversarial.eps=4", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "other settings (eps:" in err and "remove that folder" in err
    assert _sha(out / "adversarial" / "adversarial.csv") == before


def test_report_rerenders_without_torch_and_refuses_damage(compared: tuple[Path, float], tmp_path: Path) -> None:
    import shutil

    out, _ = compared
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    code = ("import sys; from stm_probe.cli import main; rc = main(['report', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'report imported torch'; sys.exit(rc)")
    (copy / "report.html").unlink()
    done = subprocess.run([sys.executable, "-c", code, str(copy)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "data:image/png;base64," in (copy / "report.html").read_text()
    (copy / "compare.json").unlink()  # a folder of probe runs made without compare renders too
    assert main(["report", str(copy)]) == 0 and "## Headline table" in (copy / "report.md").read_text()
    csv = copy / "invariance" / "invariance.csv"
    csv.write_text(csv.read_text() + "\n")
    assert main(["report", str(copy)]) == 2  # changed after its run wrote it (sha256)
    shutil.copy(out / "invariance" / "invariance.csv", csv)
    marker = copy / "adversarial" / "run.json"
    marker.write_text(marker.read_text().replace('"complete"', '"incomplete"'))
    done = subprocess.run([sys.executable, "-m", "stm_probe", "report", str(copy)], capture_output=True, text=True)
    assert done.returncode == 2 and "unfinished" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_set_is_checked_against_the_probe_settings() -> None:
    chosen = {name: analyses()[name] for name in ("erf", "invariance")}
    assert parse_settings(("erf.stages=4", "invariance.kind=scale", "erf.num-images=3"), chosen) == {
        "erf": {"stages": "4", "num_images": "3"}, "invariance": {"kind": "scale"}}
    for item, expected in [("erf.stage=4", "did you mean stages"), ("erv.stages=4", "did you mean erf"),
                           ("erf=4", "ANALYSIS.SETTING=VALUE"), ("erf.thresholds=2", "strictly between 0 and 1"),
                           ("erf.compare-init=maybe", "true or false"), ("erf.model=x", "has no setting 'model'")]:
        with pytest.raises(UsageError, match=expected):
            parse_settings((item,), chosen)


def test_a_checkpoint_rewritten_at_the_same_path_is_not_reused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The run identity holds each checkpoint's sha256, not only its path: retrained weights saved over
    the old file must never be reported with the old numbers."""
    import torch

    from stm_probe.models import create_model

    ckpt = tmp_path / "convnext.pth"
    torch.manual_seed(0)
    torch.save({"model": create_model("unified_convnext_micro").state_dict()}, ckpt)
    argv = ["compare", "--model", "unified_convnext_micro", "--checkpoint", str(ckpt), "--analyses", "invariance",
            "--set", "invariance.kind=translation", "--set", "invariance.levels=0,4", "--input-size", "32",
            "--num-images", "2", "--bootstrap", "50", "--quiet", "--out", str(tmp_path / "cmp")]
    assert main(argv) == 0
    assert main(argv) == 0  # same file: reused
    torch.manual_seed(1)
    torch.save({"model": create_model("unified_convnext_micro").state_dict()}, ckpt)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "checkpoint_sha256" in err and "remove that folder" in err


# --- report checks what it renders ---
def _copy(compared: tuple[Path, float], tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(compared[0], copy)
    return copy


def _report_error(copy: Path, capsys: pytest.CaptureFixture, *extra: str) -> str:
    capsys.readouterr()
    assert main(["report", str(copy), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_report_refuses_a_run_folder_replaced_by_another_run(compared, tmp_path, capsys) -> None:
    copy = _copy(compared, tmp_path)
    entry = json.loads((copy / "compare.json").read_text())["analyses"][0]
    assert entry["identity"]["input_size"] == 32  # compare records what each folder must hold
    marker = copy / entry["folder"] / "run.json"
    data = json.loads(marker.read_text())
    data["input_size"] = 64  # the folder now holds a run made at another size
    marker.write_text(json.dumps(data))
    err = _report_error(copy, capsys)
    assert "no longer holds the" in err and "input_size (32 there, 64 now)" not in err and "input_size" in err


def test_report_refuses_folders_outside_and_names_missing_files(compared, tmp_path, capsys) -> None:
    copy = _copy(compared, tmp_path)
    record = json.loads((copy / "compare.json").read_text())
    original = json.dumps(record)
    record["analyses"][0]["folder"] = "../elsewhere"
    (copy / "compare.json").write_text(json.dumps(record))
    assert "outside" in _report_error(copy, capsys)
    (copy / "compare.json").write_text(original)
    (copy / "adversarial" / "manifest.json").unlink()
    assert "manifest.json is missing" in _report_error(copy, capsys)
    copy = _copy(compared, tmp_path / "b")
    (copy / "invariance" / "per_image.csv").unlink()
    assert "per_image.csv is missing" in _report_error(copy, capsys)
    assert "--pairwise-bootstrap 10000000000: give 100 to 100000" in _report_error(
        copy, capsys, "--pairwise-bootstrap", "10000000000")


def test_report_md_escapes_html_in_names(tmp_path) -> None:
    from stm_probe.compare.report import Block, to_markdown

    text = to_markdown([Block("h2", "<img src=x onerror=alert(1)>"), Block("list", ["model <b>x</b>"]),
                        Block("table", [["<script>", "1"]], ["model", "value"])], tmp_path)
    assert "<" not in text and "&lt;script&gt;" in text and "&lt;img src=x" in text


def test_quick_gives_every_headline_column_with_one_progress_line(tmp_path: Path, capsys) -> None:
    """--quick: 2 images, ERF at t=0.99 only, one eps per attack, bias patch-shuffle (grids 1, 4) and
    Fourier; each analysis still gives its headline columns. One overall line counts the analysis x
    model steps (2 analyses x 1 model) and says the time left; an explicit --set wins over the preset."""
    out = tmp_path / "quick"
    assert main(["compare", "--model", "unified_convnext_micro", "--analyses", "erf,adversarial", "--quick",
                 "--set", "adversarial.attack=fgsm", "--input-size", "32", "--pairwise-bootstrap", "100",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"compare: 0/2 analysis x model steps .*elapsed, \? left", err)
    assert re.search(r"compare: 2/2 analysis x model steps .*elapsed, 0:00 left", err)
    erf = pd.read_csv(out / "erf" / "erf.csv")
    adv = pd.read_csv(out / "adversarial" / "adversarial.csv")
    assert set(erf["threshold"]) == {0.99} and set(erf["n_images"]) == {2}
    assert set(adv["eps"]) == {4.0} and set(adv["attack"]) == {"fgsm"} and set(adv["n_images"]) == {2}
    header = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| model |"))
    # the deepest stage whose area ratios are not all at the largest square (the quick input is small)
    from stm_probe.probes.erf import area_ratio_bounds

    largest = area_ratio_bounds(int(erf["input_size"].iloc[0]))[1]
    areas = erf[(erf["metric"] == "area_ratio") & (erf["init_copy"].astype(str) == "False")]
    varying = [int(s) for s in sorted(areas["stage"].unique(), reverse=True)
               if not (areas.loc[areas["stage"] == s, "value"] >= largest - 1e-9).all()]
    stage = varying[0] if varying else int(areas["stage"].max())
    assert f"ERF area ratio (t=0.99, stage {stage})" in header and "fgsm flip rate @4/255 (%)" in header
    settings = {a["name"]: a["settings"] for a in json.loads((out / "compare.json").read_text())["analyses"]}
    assert settings["erf"]["thresholds"] == "0.99" and settings["adversarial"]["eps"] == "4"


def test_quick_bias_settings_are_valid_for_the_probe() -> None:
    from stm_probe.compare.runner import QUICK_SETTINGS

    chosen = {name: analyses()[name] for name in QUICK_SETTINGS}
    items = tuple(f"{n}.{k}={v}" for n, values in QUICK_SETTINGS.items() for k, v in values.items())
    parsed = parse_settings(items, chosen)
    assert parsed["bias"] == {"probe": "patch-shuffle,fourier", "grids": "1,4", "fourier_grid": "16"}


def test_figures_have_captions_and_the_report_says_where_the_images_came_from(compared) -> None:
    out, _ = compared
    report = (out / "report.md").read_text()
    assert "the embedded sample photographs, a convenience sample" in report
    assert "paired by image" in report
    # each analysis figure: what it shows (declared by its probe), n and weights, then the file
    assert re.search(r"invariance: share of images whose top-1 prediction equals the standard view's .* "
                     r"n = 2 images · random-init weights.* \(invariance_translation\.png\)", report)
    assert re.search(r"adversarial: robust accuracy \(or flip rate without labels\) against the attack's eps.*"
                     r"n = 2 images.*\(adversarial\.png\)", report)

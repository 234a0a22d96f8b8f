"""Figures fit for a paper: fixed model looks, paper widths, Type 42 fonts, log2 axes, several run
folders drawn together, and redrawing from files alone (hand-made CSVs; one tiny ERF run)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from stm_probe.cli import main
from stm_probe.errors import UsageError
from stm_probe.plots.style import (
    OTHER_COLOURS,
    STM_COLOURS,
    FigureStyle,
    annotate,
    doubling,
    model_look,
    resolve_style,
    run_caption,
)
from stm_probe.plots.figures import lines_with_ci, model_palette, overlap_note, save_figure, weights_in_labels

PVT, SWIN, CONV = "unified_pvt_tiny", "unified_swin_tiny", "unified_convnext_micro"


# --- hand-made run folders ----------------------------------------------------------------------------
def _rows(model: str, kind: str, levels, values, n: int = 8, weights: str = "random-init") -> list[dict]:
    return [{"model": model, "stm": "x", "size": "y", "weights": weights, "kind": kind, "level": lv,
             "metric": "consistency", "value": v, "ci_low": max(v - 5, 0), "ci_high": min(v + 5, 100),
             "n_images": n, "seed": 0, "input_size": 64} for lv, v in zip(levels, values)]


def _invariance_folder(folder: Path, models: list[str], kind: str = "scale", levels=(0.5, 0.875, 1.5),
                       manifest: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for k, model in enumerate(models):
        rows += _rows(model, kind, levels, [90 - 10 * k - i for i in range(len(levels))])
    pd.DataFrame(rows).to_csv(folder / "invariance.csv", index=False)
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _adversarial_folder(folder: Path, eps=(1.0, 2.0, 4.0, 8.0)) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for model in (PVT, CONV):
        rows.append({"model": model, "weights": "checkpoint", "attack": "pgd", "norm": "Linf", "eps": eps[0],
                     "steps": 10, "metric": "clean_acc", "value": 80.0, "ci_low": 70.0, "ci_high": 88.0,
                     "n_images": 50, "input_size": 224})
        for i, e in enumerate(eps):
            rows.append({"model": model, "weights": "checkpoint", "attack": "pgd", "norm": "Linf", "eps": e,
                         "steps": 10, "metric": "robust_acc", "value": 60.0 - 15 * i, "ci_low": 50.0 - 15 * i,
                         "ci_high": 70.0 - 15 * i, "n_images": 50, "input_size": 224})
    pd.DataFrame(rows).to_csv(folder / "adversarial.csv", index=False)
    return folder


@pytest.fixture
def captured(monkeypatch):
    """{figure file stem: facts read off the figure just before it is saved} for the plot modules."""
    import importlib

    import stm_probe.plots.figures as report

    seen: dict[str, dict] = {}

    def spy(fig, stem, *args, **kwargs):
        axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        legend_texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        seen[Path(stem).name] = {
            "size": tuple(fig.get_size_inches()), "xscales": [ax.get_xscale() for ax in axes],
            "legend": legend_texts, "title": fig._suptitle.get_text() if fig._suptitle else "",
            "lines": [(to_hex(line.get_color()), line.get_marker(), tuple(line.get_xdata()))
                      for ax in axes for line in ax.get_lines()],
            "texts": [t.get_text() for ax in axes for t in ax.texts],
            "bands": sum(type(c).__name__ == "FillBetweenPolyCollection" or type(c).__name__ == "PolyCollection"
                         for ax in axes for c in ax.collections),
            "styles": [(to_hex(line.get_color()), tuple(line.get_xdata()), line.get_linestyle())
                       for ax in axes for line in ax.get_lines()]}
        return report.save_figure(fig, stem, *args, **kwargs)

    for name in ("invariance", "adversarial", "erf", "generic"):
        monkeypatch.setattr(importlib.import_module(f"stm_probe.plots.{name}"), "save_figure", spy)
    return seen


# --- colours and markers ---------------------------------------------------------------------------------
def test_a_model_keeps_its_colour_whatever_the_other_models_or_their_order() -> None:
    alone = model_palette([PVT])
    crowd = model_palette(["vit_tiny_patch16_224", CONV, SWIN, PVT, "resnet18"])
    assert alone[PVT] == crowd[PVT]
    assert to_hex(crowd[PVT]).lower() == STM_COLOURS["pvt"].lower()
    assert to_hex(crowd[SWIN]).lower() == STM_COLOURS["swin"].lower()
    # an alias is the same model; sizes share the STM colour and differ in marker and dashes
    assert model_look("unified_tiny_attn") == model_look(PVT)
    assert model_look("unified_pvt_micro").colour == model_look(PVT).colour
    assert model_look("unified_pvt_micro").marker != model_look(PVT).marker
    # other models: a fixed colour from the name, never one of the STM colours
    assert model_look("resnet18") == model_look("resnet18")
    assert model_look("resnet18").colour in OTHER_COLOURS and model_look("resnet18").colour not in STM_COLOURS.values()
    assert list(crowd) == ["vit_tiny_patch16_224", CONV, SWIN, PVT, "resnet18"]  # order kept for legends


def test_drawn_lines_take_the_fixed_colour_in_any_order() -> None:
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(_rows(PVT, "scale", [0.5, 1.0], [50, 60]) + _rows(CONV, "scale", [0.5, 1.0], [20, 30]))
    colours = []
    for order in ([PVT, CONV], [CONV, PVT]):
        fig, ax = plt.subplots()
        lines_with_ci(ax, frame, "level", model_palette(order))
        by_y = {line.get_ydata()[0]: to_hex(line.get_color()) for line in ax.get_lines()}
        colours.append(by_y)
        plt.close(fig)
    assert colours[0] == colours[1] == {50: STM_COLOURS["pvt"].lower(), 20: STM_COLOURS["convnext"].lower()}


def test_identical_curves_are_named_in_a_note() -> None:
    x = np.array([1.0, 2.0, 4.0])
    curves = [(PVT, x, np.array([10.0, 20, 30])), (SWIN, x, np.array([10.0, 20, 30.01])),
              (CONV, x, np.array([10.0, 25, 30]))]
    assert overlap_note(curves, tolerance=0.1) == "curves overlap: pvt_tiny = swin_tiny"
    assert overlap_note(curves, tolerance=0.001) == ""
    assert overlap_note(curves, tolerance=10) == "curves overlap: pvt_tiny = swin_tiny = convnext_micro"


def test_labels_carry_weights_only_where_a_model_has_several_or_random_init_meets_trained() -> None:
    """A study (every model its own checkpoint) labels models by name; the weights go in the note."""
    def frame(*pairs: tuple[str, str]) -> pd.DataFrame:
        return pd.DataFrame({"model": [m for m, _ in pairs], "weights": [w for _, w in pairs]})

    trained = frame((PVT, "checkpoint (trained here: val 90%)"), (SWIN, "checkpoint (trained here: val 93%)"))
    assert not weights_in_labels(trained)
    assert not weights_in_labels(frame((PVT, "random-init"), (SWIN, "random-init")))
    assert weights_in_labels(frame((PVT, "random-init"), (SWIN, "checkpoint")))  # which one is untrained
    assert weights_in_labels(frame((PVT, "random-init"), (PVT, "checkpoint"), (SWIN, "checkpoint")))
    assert weights_in_labels(frame((PVT, "checkpoint a"), (PVT, "checkpoint b")))
    assert not weights_in_labels(pd.DataFrame({"model": [PVT]}))


def test_caption_names_images_weights_and_input_size() -> None:
    frame = pd.DataFrame(_rows(PVT, "scale", [0.5], [50], n=8))
    assert run_caption(frame) == "n = 8 images · random-init weights (untrained) · input 64 px"
    mixed = pd.DataFrame(_rows(PVT, "scale", [0.5], [5], n=6) + _rows(CONV, "scale", [0.5], [5], n=8,
                                                                     weights="checkpoint"))
    assert run_caption(mixed) == "n = 6-8 images · weights: checkpoint; random-init · input 64 px"


def test_doubling_levels() -> None:
    assert doubling([1, 2, 4, 8]) and doubling([0.25, 0.5, 1, 2]) and doubling([4, 8, 16, 32, 64])
    assert not doubling([0, 4, 8, 12]) and not doubling([1, 2]) and not doubling([0.2, 0.325, 0.45])


# --- styles -----------------------------------------------------------------------------------------------
def test_paper_widths_are_one_and_two_columns() -> None:
    import matplotlib.pyplot as plt

    paper = FigureStyle("paper")
    with paper.context():
        for cols, width in ((1, 3.5), (2, 3.5), (3, 7.0), (4, 7.0)):
            fig, axes = paper.subplots(1, cols)
            assert fig.get_size_inches()[0] == pytest.approx(width) and axes.shape == (1, cols)
            plt.close(fig)


def test_pdfs_embed_truetype_fonts(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    for style in (FigureStyle(), FigureStyle("paper")):
        with style.context():
            fig, axes = style.subplots(1, 2)
            axes[0][0].plot([1, 2], [3, 4])
            annotate(fig, "a title with − and µ", pd.DataFrame(_rows(PVT, "scale", [0.5], [50])))
            (pdf,) = save_figure(fig, tmp_path / style.name, formats=("pdf",))
        data = pdf.read_bytes()
        assert b"/FontFile2" in data and b"/Type3" not in data
    fig = plt.figure()  # a figure made outside any style (another module's) is saved with Type 42 too
    fig.text(0.5, 0.5, "text")
    data = save_figure(fig, tmp_path / "plain", formats=("pdf",))[0].read_bytes()
    assert b"/FontFile2" in data and b"/Type3" not in data


def test_style_and_cmap_come_from_the_manifest_unless_overridden(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"call": {"argv": ["stm-probe", "erf", "--style", "paper",
                                                                          "--cmap=RdYlGn"]}}))
    assert resolve_style(tmp_path) == FigureStyle("paper", "RdYlGn")
    assert resolve_style(tmp_path, style="default", cmap="magma") == FigureStyle("default", "magma")
    (tmp_path / "manifest.json").write_text(json.dumps({"call": {"api": "stm_probe.run",
                                                                 "options": {"style": "paper"}}}))
    assert resolve_style(tmp_path) == FigureStyle("paper", "viridis")
    assert resolve_style(tmp_path / "none") == FigureStyle()
    with pytest.raises(UsageError, match="did you mean RdYlGn"):
        resolve_style(tmp_path, cmap="RdYlGM")



def test_figures_are_png_unless_the_style_or_formats_ask_for_more(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    for style, expected in ((FigureStyle(), [".png"]), (FigureStyle("paper"), [".png", ".pdf"]),
                            (FigureStyle(formats=("svg", "PDF")), [".svg", ".pdf"])):
        with style.context():
            paths = save_figure(plt.figure(), tmp_path / f"{style.name}{len(style.formats)}")
        assert [p.suffix for p in paths] == expected and all(p.stat().st_size > 0 for p in paths)
    assert [p.suffix for p in save_figure(plt.figure(), tmp_path / "outside")] == [".png"]  # no style context
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"call": {"argv": ["stm-probe", "erf", "--formats", "png,svg"]}}))
    assert resolve_style(tmp_path).file_formats == ("png", "svg")
    assert resolve_style(tmp_path, style="paper").file_formats == ("png", "pdf")  # a given style brings its own
    assert resolve_style(tmp_path, formats="pdf").file_formats == ("pdf",)
    manifest.write_text(json.dumps({"call": {"api": "stm_probe.run", "options": {"formats": ["pdf"]}}}))
    assert resolve_style(tmp_path).file_formats == ("pdf",)
    with pytest.raises(UsageError, match="did you mean png"):
        FigureStyle(formats=("pgn",))


def test_run_writes_the_formats_asked_for_and_plot_keeps_them(tmp_path: Path) -> None:
    common = ["invariance", "--model", CONV, "--input-size", "32", "--kind", "scale", "--levels", "0.5,1",
              "--num-images", "1", "--bootstrap", "0", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "png")]) == 0
    assert sorted(p.name for p in (tmp_path / "png").glob("invariance_*")) == ["invariance_scale.png",
                                                                              "invariance_summary.png"]
    out = tmp_path / "both"
    assert main([*common, "--formats", "png,pdf", "--out", str(out)]) == 0
    assert main(["plot", "invariance", str(out)]) == 0
    assert sorted(p.suffix for p in out.glob("invariance_scale.*")) == [".pdf", ".png"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"invariance_scale.png", "invariance_scale.pdf"} <= set(manifest["outputs"])
    assert main([*common, "--formats", "jpg", "--out", str(tmp_path / "bad")]) == 2

# --- figures from hand-made folders ------------------------------------------------------------------------
def test_eps_on_a_log2_axis_with_the_clean_point(tmp_path: Path, captured) -> None:
    folder = _adversarial_folder(tmp_path / "adv")
    assert main(["plot", "adversarial", str(folder), "--style", "paper"]) == 0
    curves = captured["adversarial"]
    assert curves["xscales"] == ["log"] and curves["size"][0] == pytest.approx(3.5)
    pvt = [xs for colour, _, xs in curves["lines"] if colour == STM_COLOURS["pvt"].lower()]
    assert pvt == [(0.5, 1.0, 2.0, 4.0, 8.0)]  # clean at half the smallest eps, then 1..8
    assert "n = 50 images" in curves["title"] and "trained weights" in curves["title"]
    assert (folder / "adversarial_heatmap.png").is_file()


def test_one_eps_is_drawn_as_points_with_error_bars_not_a_line(tmp_path: Path, captured) -> None:
    folder = _adversarial_folder(tmp_path / "adv", eps=(4.0,))
    assert main(["plot", "adversarial", str(folder)]) == 0
    curves = captured["adversarial"]
    pvt = [(xs, style) for colour, xs, style in curves["styles"] if colour == STM_COLOURS["pvt"].lower()]
    assert ((0.0, 4.0), "None") in pvt  # the clean point and the one eps, not joined
    assert curves["bands"] == 0
    several = _adversarial_folder(tmp_path / "adv4")
    assert main(["plot", "adversarial", str(several)]) == 0
    assert captured["adversarial"]["bands"] == 2  # several eps: lines with bands, one per model


def test_lines_with_ci_draws_points_without_a_band_or_a_joining_line() -> None:
    import matplotlib

    matplotlib.use("agg", force=False)
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    data = pd.DataFrame({"model": [PVT, PVT], "eps": [0.0, 4.0], "value": [80.0, 40.0], "ci_low": [70.0, 30.0],
                         "ci_high": [88.0, 52.0]})
    lines_with_ci(ax, data, "eps", model_palette([PVT]), points=True)
    assert not ax.collections or all(type(c).__name__ == "LineCollection" for c in ax.collections)  # no band
    data_lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 2]
    assert data_lines and all(line.get_linestyle() == "None" for line in data_lines)
    bars = [c for c in ax.collections if type(c).__name__ == "LineCollection"]
    segments = bars[0].get_segments()
    assert [tuple(seg[:, 1]) for seg in segments] == [(70.0, 88.0), (30.0, 52.0)]  # the CSV's intervals


def test_the_scale_axis_marks_the_standard_view(tmp_path: Path, captured) -> None:
    folder = _invariance_folder(tmp_path / "inv", [PVT, CONV])
    assert main(["plot", "invariance", str(folder)]) == 0
    scale = captured["invariance_scale"]
    assert (STM_COLOURS["pvt"].lower(), "o", (0.5, 0.875, 1.5)) in scale["lines"]
    assert any(xs == (0.875, 0.875) for _, _, xs in scale["lines"]) and "standard view" in scale["texts"]
    assert scale["xscales"] == ["linear"]
    assert (folder / "invariance_summary.png").is_file()


def test_several_folders_are_drawn_together(tmp_path: Path, captured) -> None:
    a = _invariance_folder(tmp_path / "a", [PVT])
    b = _invariance_folder(tmp_path / "b", [CONV, "resnet18"])
    out = tmp_path / "both"
    assert main(["plot", "invariance", str(a), str(b), "--out", str(out)]) == 0
    assert captured["invariance_scale"]["legend"] == [PVT, CONV, "resnet18"]
    colours = {c for c, _, xs in captured["invariance_scale"]["lines"] if xs != (0.875, 0.875)}
    assert colours == {STM_COLOURS["pvt"].lower(), STM_COLOURS["convnext"].lower(),
                       model_look("resnet18").colour.lower()}
    assert (out / "invariance_scale.png").is_file() and not (a / "invariance_scale.png").exists()


@pytest.mark.parametrize("make, expected", [
    (lambda t: (_invariance_folder(t / "a", [PVT]), _invariance_folder(t / "b", [PVT])), "appears in both"),
    (lambda t: (_invariance_folder(t / "a", [PVT], manifest={"analysis": "invariance", "input_size": 64}),
                _invariance_folder(t / "b", [CONV], manifest={"analysis": "invariance", "input_size": 224})),
     "differ in input_size (224 vs 64)"),
    (lambda t: (_invariance_folder(t / "a", [PVT]),
                _invariance_folder(t / "b", [CONV], manifest={"analysis": "erf"})), "holds a `stm-probe erf` run"),
    (lambda t: (_invariance_folder(t / "a", [PVT], manifest={"analysis": "invariance",
                                                             "probe": {"settings": {"kind": ["scale"]}}}),
                _invariance_folder(t / "b", [CONV], manifest={"analysis": "invariance",
                                                              "probe": {"settings": {"kind": ["translation"]}}})),
     "differ in setting kind"),
])
def test_folders_that_do_not_belong_together_are_refused(make, expected, tmp_path: Path, capsys) -> None:
    a, b = make(tmp_path)
    assert main(["plot", "invariance", str(a), str(b), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "invariance_scale.png").exists()


def test_several_folders_need_out(tmp_path: Path, capsys) -> None:
    a, b = _invariance_folder(tmp_path / "a", [PVT]), _invariance_folder(tmp_path / "b", [CONV])
    assert main(["plot", "invariance", str(a), str(b)]) == 2
    assert "--out" in capsys.readouterr().err


# --- a real run, redrawn from its files ----------------------------------------------------------------------
def test_a_paper_run_redraws_from_its_files(tmp_path: Path) -> None:
    """The run records --style paper and --cmap; `stm-probe plot` redraws the same files from the CSV,
    the maps and the manifest alone, and --style overrides what the run recorded."""
    from PIL import Image

    out = tmp_path / "run"
    assert main(["erf", "--model", CONV, "--input-size", "32", "--num-images", "1", "--stages", "1,2",
                 "--thresholds", "0.5", "--bootstrap", "10", "--quiet", "--style", "paper", "--cmap", "RdYlGn",
                 "--out", str(out)]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["erf_area_ratio.png", f"erf_{CONV}.png"]
    before = {name: (out / name).read_bytes() for name in pngs}
    assert Image.open(out / f"erf_{CONV}.png").size[0] == 1050  # 3.5 in (two stages) at 300 dpi
    for name in pngs:
        (out / name).unlink()
    assert main(["plot", "erf", str(out)]) == 0
    assert {name: (out / name).read_bytes() for name in pngs} == before
    assert b"/FontFile2" in (out / "erf_area_ratio.pdf").read_bytes()
    assert main(["plot", "erf", str(out), "--style", "default", "--out", str(tmp_path / "screen")]) == 0
    assert Image.open(tmp_path / "screen" / f"erf_{CONV}.png").size[0] != 1050

"""Replicates (several checkpoints of one architecture, e.g. training seeds) in `stm-probe compare`: one run per
replicate, a `replicate` column, headline values averaged over replicates with a hierarchical bootstrap
interval, and pairwise tests that resample replicates as well as images (issue #21)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from stm_probe.cli import main
from stm_probe.compare.replicates import hierarchical_difference, hierarchical_interval, replicate_checkpoints
from stm_probe.errors import UsageError

MODELS = ("unified_convnext_micro", "unified_pvt_micro")


def test_checkpoint_lists_become_one_set_per_replicate() -> None:
    assert replicate_checkpoints(["a=x.pth", "b=y.pth"]) is None  # one checkpoint each: no replicates
    assert replicate_checkpoints(["a=s0.pth,s1.pth", "b=t0.pth,t1.pth"]) == [("a=s0.pth", "b=t0.pth"),
                                                                            ("a=s1.pth", "b=t1.pth")]
    with pytest.raises(UsageError, match="same number of replicates"):
        replicate_checkpoints(["a=s0.pth,s1.pth", "b=t0.pth,t1.pth,t2.pth"])
    with pytest.raises(UsageError, match="NAME=P1,P2"):
        replicate_checkpoints(["a=s0.pth,s1.pth", "b=t0.pth"])


def test_hierarchical_bootstrap_equals_a_plain_two_stage_loop() -> None:
    rng = np.random.default_rng(1)
    vectors = [rng.normal(loc, 1.0, size=7) for loc in (0.0, 0.5, 2.0)]
    low, high = hierarchical_interval(vectors, n_boot=300, seed=4)
    draws = np.random.default_rng(4)
    picks, images = draws.integers(0, 3, size=(300, 3)), draws.integers(0, 7, size=(300, 3, 7))
    stats = [np.mean([vectors[picks[b, j]][images[b, j]].mean() for j in range(3)]) for b in range(300)]
    assert (low, high) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])), abs=1e-12)


def test_seed_variance_widens_the_interval_and_the_test_needs_it() -> None:
    rng = np.random.default_rng(2)
    images = rng.normal(0.0, 1.0, size=200)  # shared image effects
    same = [images + 0.01 * rng.normal(size=200) for _ in range(3)]
    spread = [images + shift for shift in (-1.0, 0.0, 1.0)]  # the same images, seeds far apart
    width = lambda v: np.subtract(*hierarchical_interval(v, 2000, 0)[::-1])  # noqa: E731
    assert width(spread) > 3 * width(same)
    # B is A + 0.3 on every image: with tight replicates the difference holds; with seeds 1 apart it does not
    diff, low, high, p = hierarchical_difference([v + 0.3 for v in same], same, 2000, 0)
    assert diff == pytest.approx(0.3) and p < 0.01 and low > 0
    diff, low, high, p = hierarchical_difference([v + 0.3 for v in spread], spread, 2000, 0)
    assert diff == pytest.approx(0.3) and p > 0.05 and low < 0 < high


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stm_probe.models import create_model
    from stm_probe.models.layers import set_layer_scales

    root = tmp_path_factory.mktemp("replicates")
    entries = []
    for name in MODELS:
        paths = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            model = create_model(name)
            set_layer_scales(model, 0.5)
            path = root / f"{name}-s{seed}.pth"
            torch.save({"model": model.state_dict()}, path)
            paths.append(str(path))
        entries += ["--checkpoint", f"{name}={','.join(paths)}"]
    out = root / "cmp"
    assert main(["compare", *[a for m in MODELS for a in ("--model", m)], *entries, "--analyses", "invariance",
                 "--set", "invariance.kind=translation", "--set", "invariance.levels=0,1", "--input-size", "32",
                 "--num-images", "6", "--bootstrap", "200", "--pairwise-bootstrap", "1000", "--quiet",
                 "--out", str(out)]) == 0
    return out


def test_compare_runs_each_replicate_and_averages_them(replicated: Path) -> None:
    frames = [pd.read_csv(replicated / f"invariance-r{r}" / "invariance.csv") for r in (0, 1)]
    assert [set(f["replicate"]) for f in frames] == [{0}, {1}]
    record = json.loads((replicated / "compare.json").read_text())
    assert [(a["folder"], a["replicate"]) for a in record["analyses"]] == [("invariance-r0", 0), ("invariance-r1", 1)]
    report = (replicated / "report.md").read_text()
    assert "every model ran with 2 checkpoints" in report
    header = [c.strip() for c in next(l for l in report.splitlines() if l.startswith("| model |")).strip("|").split("|")]
    column = header.index("translation consistency (%)")
    for model in MODELS:
        values = [f[(f["model"] == model) & (f["metric"] == "consistency") & (f["level"] == 1)]["value"].iloc[0]
                  for f in frames]
        cells = [c.strip() for c in next(l for l in report.splitlines() if l.startswith(f"| {model} |")).strip("|")
                 .split("|")]
        assert cells[column].startswith(f"{np.mean(values):.1f} [")
    assert re.search(r"hierarchical bootstrap over 2 \+ 2 replicates", report)


def test_the_report_rerenders_from_the_replicate_folders(replicated: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(replicated, copy)
    (copy / "report.md").unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.md").read_text().count("(replicate 1)") >= 2  # analyses and provenance


def test_seed_suffixed_files_in_a_checkpoint_dir_are_replicates_in_seed_order(tmp_path: Path) -> None:
    from stm_probe.models.checkpoint_dir import seed_checkpoints

    for name in ("unified_halo_micro_s10.pth", "unified_halo_micro_s2.pth", "unified_halonet_micro-ema-seed0.pt",
                 "unified_pvt_micro-s1.safetensors", "unified_pvt_micro-s0.pth", "unified_pvt_micro.pth", "notes_s1.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = seed_checkpoints(["unified_halo_micro", "unified_pvt_micro", "unified_swin_micro"], tmp_path)
    assert {m: [Path(p).name for p in paths] for m, paths in found.items()} == {
        "unified_halo_micro": ["unified_halonet_micro-ema-seed0.pt", "unified_halo_micro_s2.pth",
                               "unified_halo_micro_s10.pth"],
        "unified_pvt_micro": ["unified_pvt_micro-s0.pth", "unified_pvt_micro-s1.safetensors"]}
    (tmp_path / "unified_halo_micro-seed2.pt").write_bytes(b"x")
    with pytest.raises(UsageError, match="2 files are seed 2 of unified_halo_micro"):
        seed_checkpoints(["unified_halo_micro"], tmp_path)


def test_a_checkpoint_dir_with_seed_files_for_some_models_only_is_refused(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """A model without seed files would otherwise run at random init beside trained replicates."""
    for name in ("unified_halo_micro_s0.pth", "unified_halo_micro_s1.pth", "unified_pvt_micro.pth"):
        (tmp_path / name).write_bytes(b"x")
    argv = ["compare", "--model", "unified_halo_micro", "--model", "unified_pvt_micro", "--checkpoint-dir",
            str(tmp_path), "--analyses", "invariance", "--input-size", "32", "--quiet", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "of unified_halo_micro but none of unified_pvt_micro" in err
    (tmp_path / "unified_pvt_micro_s0.pth").write_bytes(b"x")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "different numbers of seed files (unified_halo_micro: 2, unified_pvt_micro: 1)" in err
    assert not (tmp_path / "o").exists()


def test_compare_with_a_checkpoint_dir_of_seed_files_equals_the_explicit_lists(replicated: Path) -> None:
    """The fixture's files are named <model>-s<seed>.pth: --checkpoint-dir finds the same replicates."""
    out = replicated.parent / "from-dir"
    assert main(["compare", *[a for m in MODELS for a in ("--model", m)], "--checkpoint-dir", str(replicated.parent),
                 "--analyses", "invariance", "--set", "invariance.kind=translation", "--set", "invariance.levels=0,1",
                 "--input-size", "32", "--num-images", "6", "--bootstrap", "200", "--pairwise-bootstrap", "1000",
                 "--quiet", "--out", str(out)]) == 0
    for r in (0, 1):
        pd.testing.assert_frame_equal(pd.read_csv(out / f"invariance-r{r}" / "invariance.csv"),
                                      pd.read_csv(replicated / f"invariance-r{r}" / "invariance.csv"))
    table = lambda folder: [l for l in (folder / "report.md").read_text().splitlines() if l.startswith("| unified_")]  # noqa: E731
    assert table(out) == table(replicated)


def test_a_column_without_per_image_values_takes_the_union_of_the_replicate_intervals() -> None:
    from types import SimpleNamespace

    from stm_probe.compare.headline import replicate_cell
    from stm_probe.probes.columns import HeadlineSpec

    spec = HeadlineSpec("bias", "bias:shape-bias", "shape bias", "shape_bias", {"variant": "all"}, better=None,
                        unit="fraction", test=None)

    def run(value, low, high):
        frame = pd.DataFrame({"model": ["m"], "variant": ["all"], "metric": ["shape_bias"], "value": [value],
                              "ci_low": [low], "ci_high": [high], "n_images": [40]})
        return SimpleNamespace(frame=frame, per_image=None, path=Path("x"), name="bias")

    found = replicate_cell([run(0.4, 0.25, 0.57), run(0.6, 0.42, 0.75)], spec, "m")
    assert (found.value, found.ci_low, found.ci_high, found.n_images) == pytest.approx((0.5, 0.25, 0.75, 40))

"""CKA (`stm_probe.core.cka`, `stm-probe cka`) against independent expectations: Kornblith et al.'s properties
(CKA(X, X) = 1; invariance to orthogonal maps and isotropic scaling, not to other invertible maps), a
4 x 2 case worked by hand, the unbiased HSIC as the U-statistic it is, the minibatch estimator
approaching the full one as minibatches grow, and the probe's numbers equal to a plain numpy CKA of
the stage-norm outputs of the standard view, whatever the batch size."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import stm_probe
from stm_probe.core import cka
from stm_probe.cli import main
from stm_probe.compare.similarity import cross_model_tables
from stm_probe.errors import UsageError

MODELS = ["unified_convnext_micro", "unified_pvt_micro"]


# --- independent references (numpy, straight from the papers) ----------------------------------------
def linear_cka_features(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019, eq. (5): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred features."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def rbf_cka_features(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC = tr(K H L H) with RBF kernels whose sigma is the median distance between distinct points."""
    def kernel(z: np.ndarray) -> np.ndarray:
        d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
        sigma = np.median(np.sqrt(d2[np.triu_indices(len(z), 1)]))
        return np.exp(-d2 / (2 * sigma ** 2))

    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = kernel(x), kernel(y)
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return float(hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)))


def gram(x: np.ndarray) -> torch.Tensor:
    return cka.centred_gram(torch.as_tensor(x, dtype=torch.float32))


def full(x: np.ndarray, y: np.ndarray, kernel: str = "linear") -> float:
    grams = cka.kernel_grams(torch.stack([gram(x), gram(y)]), kernel)
    return float(cka.cka_full(grams)[0, 1])


@pytest.fixture
def features() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12)) + 3.0
    y = np.tanh(x @ rng.normal(size=(12, 9))) + 0.3 * rng.normal(size=(40, 9))
    return x, y


# --- the estimators ------------------------------------------------------------------------------------
def test_hand_worked_4x2_case() -> None:
    # X: four points on the axes; Y keeps only X's first coordinate. Centred already:
    # X^T X = diag(2, 2), Y^T Y = diag(2, 0), Y^T X = [[2, 0], [0, 0]] -> 4 / (sqrt(8) * 2) = 1/sqrt(2)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    y = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    assert full(x, y) == pytest.approx(2 ** -0.5, abs=1e-12)
    assert full(x + 5.0, 3.0 * y - 2.0) == pytest.approx(2 ** -0.5, abs=1e-12)  # centring and scale
    assert linear_cka_features(x, y) == pytest.approx(2 ** -0.5, abs=1e-12)


def test_equals_numpy_references(features) -> None:
    x, y = features
    assert full(x, y) == pytest.approx(linear_cka_features(x, y), abs=1e-6)
    assert full(x, y, "rbf") == pytest.approx(rbf_cka_features(x, y), abs=1e-6)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_self_similarity_is_one(features, kernel: str) -> None:
    x, _ = features
    assert full(x, x, kernel) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling_only(features, kernel: str) -> None:
    x, y = features
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    base = full(x, y, kernel)
    assert full(x @ q, y, kernel) == pytest.approx(base, abs=1e-6)
    assert full(7.5 * x, y, kernel) == pytest.approx(base, abs=1e-6)
    assert full(x, 0.01 * y, kernel) == pytest.approx(base, abs=1e-6)
    stretch = np.diag(np.geomspace(1.0, 50.0, 12))  # invertible, not orthogonal x scalar
    assert abs(full(x @ stretch @ q, y, kernel) - base) > 1e-2


def test_unbiased_hsic_is_the_u_statistic() -> None:
    # Song et al. 2012: HSIC_1 is the mean over distinct (i, j, q, r) of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq
    rng = np.random.default_rng(2)
    k = rng.normal(size=(6, 3))
    l = rng.normal(size=(6, 2)) + k[:, :2]
    kk, ll = k @ k.T, l @ l.T
    terms = [kk[i, j] * ll[i, j] + kk[i, j] * ll[q, r] - 2 * kk[i, j] * ll[i, q]
             for i, j, q, r in itertools.permutations(range(6), 4)]
    hsic = cka.hsic_unbiased(torch.as_tensor(np.stack([kk, ll])))
    assert float(hsic[0, 1]) == pytest.approx(np.mean(terms), rel=1e-10)


def test_minibatch_approaches_full_as_minibatches_grow() -> None:
    """Mean distance to the full estimate over four data sets: shrinks with the minibatch size; at one
    minibatch of all 2048 images only the full estimator's O(1/n) bias remains."""
    n, sizes = 2048, (8, 64, 2048)
    gaps = np.zeros(len(sizes))
    for seed in range(4):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, 6))
        y = x[:, :3] @ rng.normal(size=(3, 5)) + 2.0 * rng.normal(size=(n, 5))
        reference = linear_cka_features(x, y)
        for i, m in enumerate(sizes):
            blocks = [torch.stack([gram(x[s:s + m]), gram(y[s:s + m])]) for s in range(0, n, m)]
            gaps[i] += abs(float(cka.cka_minibatch(blocks)[0, 1]) - reference) / 4
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 2e-3


def test_bootstrap_draws_the_same_images_on_both_sides(features) -> None:
    x, _ = features
    grams = torch.stack([gram(x), gram(2 * x)])
    low, high = cka.bootstrap_full(grams, 200, seed=0)
    np.testing.assert_allclose([low[0, 1], high[0, 1]], [1.0, 1.0], atol=1e-12)  # same images: always 1
    x, y = features
    grams = torch.stack([gram(x), gram(y)])
    value = float(cka.cka_full(grams)[0, 1])
    low, high = cka.bootstrap_full(grams, 200, seed=0)
    assert low[0, 1] < value < high[0, 1]
    again = cka.bootstrap_full(grams, 200, seed=0)
    assert (again[0] == low).all() and (again[1] == high).all()


# --- the probe -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Each model with perturbed weights (layer scales away from 1e-6, so the mixers matter)."""
    from stm_probe.models import create_model

    folder = tmp_path_factory.mktemp("ckpt")
    out = {}
    for i, name in enumerate(MODELS):
        gen = torch.Generator().manual_seed(10 + i)
        sd = {k: (v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v)
              for k, v in create_model(name).state_dict().items()}
        torch.save({"model": sd}, folder / f"{name}.pth")
        out[name] = folder / f"{name}.pth"
    return out


def _run(checkpoints: dict[str, Path], out: Path | None = None, **extra) -> pd.DataFrame:
    settings = dict(input_size=32, num_images=6, bootstrap=30, quiet=True, device="cpu")
    return stm_probe.run("cka", models=list(checkpoints), checkpoint=[f"{k}={v}" for k, v in checkpoints.items()], out=out,
                         **{**settings, **extra})


def _stage_features(checkpoints: dict[str, Path], images: list[str]) -> dict[tuple[str, int], np.ndarray]:
    """Stage-norm outputs of the standard view (short side 32 / 0.875, centre crop 32), flattened per image."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from stm_probe.data import eval_transform
    from stm_probe.models import create_model
    from stm_probe.models.features import stage_outputs

    view = eval_transform(32, "center")
    batch = torch.stack([view(Image.open(p).convert("RGB")) for p in images])
    batch = (batch - torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_DEFAULT_STD).view(
        1, 3, 1, 1)
    out = {}
    for name, path in checkpoints.items():
        net = create_model(name, input_size=32).eval()
        net.load_state_dict(torch.load(path, weights_only=True)["model"])
        with torch.no_grad():
            for stage, fmap in enumerate(stage_outputs(net, batch, [0, 1, 2, 3])):
                out[(name, stage + 1)] = fmap.reshape(len(images), -1).double().numpy()
    return out


def test_probe_equals_numpy_cka_of_stage_outputs(checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "run"
    frame = _run(checkpoints, out, batch_size=4)
    images = json.loads((out / "manifest.json").read_text())["images"]
    feats = _stage_features(checkpoints, images)
    assert len(frame) == (2 * 4) ** 2 and set(frame["estimator"]) == {"full"} and (frame["n_images"] == 6).all()
    for row in frame.itertuples():
        expected = linear_cka_features(feats[(row.model, int(row.layer[-1]))],
                                       feats[(row.other_model, int(row.other_layer[-1]))])
        assert row.value == pytest.approx(expected, abs=1e-5), row
        assert row.ci_low <= row.value + 1e-12 <= row.ci_high + 2e-12
    own = frame[(frame["model"] == frame["other_model"]) & (frame["layer"] == frame["other_layer"])]
    np.testing.assert_allclose(own["value"], 1.0, atol=1e-12)
    cross = frame[frame["model"] != frame["other_model"]]
    assert (cross["value"] < 0.999).all()  # two different models are not the same representation
    assert {p.name for p in out.glob("*.png")} == {"cka_layers.png", "cka_models.png"}
    # the compare report's section: one models x models table per stage, cells from the CSV
    tables = cross_model_tables(pd.read_csv(out / "cka.csv"))
    assert [t[0] for t in tables] == [f"linear CKA, stage {s} (full estimator, n = 6)" for s in (1, 2, 3, 4)]
    title, header, rows = tables[3]
    assert header == ["model", "convnext_micro", "pvt_micro"] and [r[0] for r in rows] == header[1:]
    hit = frame[(frame["model"] == MODELS[0]) & (frame["other_model"] == MODELS[1]) & (frame["layer"] == "stage4")
                & (frame["other_layer"] == "stage4")].iloc[0]
    assert rows[0][2] == f"{hit.value:.3f} [{hit.ci_low:.3f}, {hit.ci_high:.3f}]" and rows[0][1].startswith("1.000")


def test_minibatches_do_not_depend_on_the_batch_size(checkpoints) -> None:
    """(The full estimator is held to this by tests/test_probes.py, batch sizes 1 and 7.)"""
    columns = ["value", "ci_low", "ci_high"]
    a, b = (_run(checkpoints, batch_size=size, estimator="minibatch", minibatch_size=4, num_images=9)
            for size in (1, 5))
    pd.testing.assert_frame_equal(a.drop(columns=columns), b.drop(columns=columns))
    np.testing.assert_allclose(a[columns].to_numpy(float), b[columns].to_numpy(float), atol=1e-6)
    # 9 images: minibatches of 4, 4 and 1 (too few for HSIC_1: left out)
    assert (a["n_images"] == 8).all() and (a["estimator"] == "minibatch").all()
    assert np.isfinite(a["ci_low"]).all()


def test_rbf_blocks_and_compare_init(checkpoints) -> None:
    frame = _run({MODELS[0]: checkpoints[MODELS[0]]}, kernel="linear,rbf", layers="blocks", compare_init=True,
                 num_images=5)
    blocks = [f"stage{s}.block{b}" for s, depth in enumerate((3, 3, 8, 3), 1) for b in range(1, depth + 1)]
    assert list(dict.fromkeys(frame["layer"])) == blocks
    assert set(frame["weights"]) == {"checkpoint", "random-init (copy)"} and set(frame["kernel"]) == {"linear", "rbf"}
    assert len(frame) == 2 * (2 * len(blocks)) ** 2
    mirror = frame.set_index(["model", "weights", "layer", "other_weights", "other_layer", "kernel"])["value"]
    swapped = frame.set_index(["model", "other_weights", "other_layer", "weights", "layer", "kernel"])["value"]
    swapped.index.names = mirror.index.names
    pd.testing.assert_series_equal(mirror.sort_index(), swapped.sort_index())  # symmetric


def test_refusals(checkpoints, capsys) -> None:
    with pytest.raises(UsageError, match="--minibatch-size 2"):
        _run(checkpoints, minibatch_size=2)
    with pytest.raises(UsageError, match="no minibatch holds 4 images"):
        _run(checkpoints, estimator="minibatch", minibatch_size=8, num_images=3)
    with pytest.raises(UsageError, match="--repeats"):
        _run(checkpoints, repeats=2)
    assert main(["cka", "--model", "resnet18", "--layers", "blocks", "--num-images", "4", "--input-size", "32",
                 "--quiet"]) == 2
    assert "--layers blocks reads the blocks of unified models" in capsys.readouterr().err

"""The corruption probe: CE/mCE arithmetic, the ImageNet-C folder reader, the on-the-fly corruptions
and small end-to-end runs checked against direct recomputations."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import stm_probe
from stm_probe.corruption_metrics import (alexnet_clean_error, alexnet_error, benchmark_corruptions,
                                          corruption_error, extra_corruptions, mean_corruption_error,
                                          relative_corruption_error)
from stm_probe.corruptions import Corruptor, all_corruptions, corruption_list, seed_words
from stm_probe.data import eval_transform, make_loader, resolve_source
from stm_probe.data.imagenet_c import ImageNetCSource, imagenet_c_source, is_imagenet_c
from stm_probe.errors import UsageError

TENCH, GOLDFISH = "n01440764", "n01443537"  # ImageNet-1k classes 0 and 1


# --- arithmetic --------------------------------------------------------------------------------------
def _mce(table: dict) -> float:
    return mean_corruption_error({c: corruption_error(errors, c) for c, errors in table.items()})


def test_alexnets_own_errors_give_mce_100() -> None:
    table = {c: [alexnet_error(c)] * 5 for c in benchmark_corruptions()}
    assert _mce(table) == pytest.approx(100.0)
    relative = {c: relative_corruption_error(errors, alexnet_clean_error(), c) for c, errors in table.items()}
    assert mean_corruption_error(relative) == pytest.approx(100.0)


def test_ce_on_a_hand_made_table() -> None:
    errors = {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4, 5: 0.5}  # mean 0.3
    assert corruption_error(errors, "gaussian_noise") == pytest.approx(100 * 0.3 / 0.886428)
    assert relative_corruption_error(errors, 0.1, "gaussian_noise") == pytest.approx(
        100 * (0.3 - 0.1) / (0.886428 - 0.4348))
    half = {c: [alexnet_error(c) / 2] * 5 for c in benchmark_corruptions()}  # half AlexNet's error everywhere
    assert _mce(half) == pytest.approx(50.0)
    half["gaussian_noise"] = [0.886428 * 2] * 5  # one corruption at CE 200: mean of 14 x 50 and 200
    assert _mce(half) == pytest.approx((14 * 50 + 200) / 15)


def test_ce_refuses_what_it_cannot_stand_behind() -> None:
    with pytest.raises(ValueError, match="severity 3 is missing"):
        corruption_error({1: 0.1, 2: 0.1, 4: 0.1, 5: 0.1}, "snow")
    with pytest.raises(ValueError, match="no AlexNet normaliser"):
        corruption_error([0.1] * 5, "spatter")
    table = {c: [0.5] * 5 for c in benchmark_corruptions()[1:]}
    with pytest.raises(ValueError, match="gaussian_noise is missing"):
        _mce(table)


def test_corruption_groups() -> None:
    assert len(benchmark_corruptions()) == 15 and len(extra_corruptions()) == 4
    assert corruption_list("benchmark") == benchmark_corruptions()
    assert corruption_list("extra") == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert corruption_list("contrast,gaussian_noise") == ("gaussian_noise", "contrast")  # canonical order
    assert corruption_list("all") == all_corruptions()
    with pytest.raises(UsageError, match="did you mean gaussian_noise"):
        stm_probe.run("corruption", models="unified_convnext_micro", corruptions="gausian_noise")


# --- the ImageNet-C folder reader ------------------------------------------------------------------------
def _write_tree(root: Path, variants: list[tuple[str, int]], size: int = 32, family: str | None = None) -> None:
    """<root>[/<family>]/<corruption>/<severity>/<wnid>/<image>.png: two tench images, one goldfish image;
    the pixels differ per variant."""
    rng = np.random.default_rng(0)
    for corruption, severity in variants:
        base = root / family if family else root
        for wnid, name in ((TENCH, "a"), (TENCH, "b"), (GOLDFISH, "c")):
            folder = base / corruption / str(severity) / wnid
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{name}.png")


def test_imagenet_c_reader(tmp_path: Path) -> None:
    _write_tree(tmp_path, [("contrast", 5), ("gaussian_noise", 3), ("gaussian_noise", 1)])
    (tmp_path / "notes").mkdir()
    assert is_imagenet_c(tmp_path)
    source = resolve_source(tmp_path)
    assert isinstance(source, ImageNetCSource)
    assert source.variants == (("gaussian_noise", 1), ("gaussian_noise", 3), ("contrast", 5))  # benchmark order
    assert source.reference == ("gaussian_noise", 1)
    assert source.labels == (0, 0, 1)
    assert source.severities_of("gaussian_noise") == (1, 3)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in source.variant_paths("contrast", 5, [2, 0])] == [
        f"contrast/5/{GOLDFISH}/c.png", f"contrast/5/{TENCH}/a.png"]
    assert any("notes" in n for n in source.notes)
    # subsets keep the variants; ids of --image-list are relative to a variant folder
    ids = tmp_path.parent / "ids.txt"
    ids.write_text(f"{GOLDFISH}/c.png\n")
    subset = source.restrict(ids)
    assert subset.labels == (1,) and subset.variant_paths("contrast", 5)[0].endswith(f"contrast/5/{GOLDFISH}/c.png")
    # an ordinary ImageFolder tree is not ImageNet-C
    assert not is_imagenet_c(tmp_path / "gaussian_noise" / "1")
    assert resolve_source(tmp_path / "gaussian_noise" / "1").kind == "imagefolder"


def test_imagenet_c_family_folders_and_one_corruption(tmp_path: Path) -> None:
    _write_tree(tmp_path / "c", [("snow", 2), ("fog", 4)], family="weather")
    source = imagenet_c_source(tmp_path / "c")
    assert source.variants == (("snow", 2), ("fog", 4))
    single = imagenet_c_source(tmp_path / "c" / "weather" / "fog")
    assert single.variants == (("fog", 4),) and len(single) == 3
    (tmp_path / "plain" / "snow").mkdir(parents=True)  # a class folder named like a corruption, no severities
    Image.new("RGB", (8, 8)).save(tmp_path / "plain" / "snow" / "x.png")
    assert not is_imagenet_c(tmp_path / "plain")


# --- on-the-fly corruptions ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample() -> tuple[torch.Tensor, torch.Tensor]:
    """The 16 embedded images at 48 px (B, 3, 48, 48) and their indices."""
    batch = next(iter(make_loader(None, batch_size=16, transform=eval_transform(48))))
    return batch.images, batch.indices


def test_every_corruption_keeps_shape_and_range(sample) -> None:
    images, indices = sample[0][:2], sample[1][:2]
    corruptor = Corruptor(0, 48, "test", 16, cache=False)
    for name in all_corruptions():
        out = corruptor.corrupt(images, indices, name, 5)
        assert out.shape == images.shape and out.dtype == torch.float32, name
        assert float(out.min()) >= 0 and float(out.max()) <= 1, name
        assert not torch.equal(out, images), name


def test_corruptions_are_seeded_per_image(sample) -> None:
    images, indices = sample[0][:4], sample[1][:4]
    state = np.random.get_state()
    one = Corruptor(0, 48, "test", 16, cache=False)
    for name in ("gaussian_noise", "impulse_noise", "glass_blur", "frost", "elastic_transform"):
        first = one.corrupt(images, indices, name, 3)
        assert torch.equal(first, Corruptor(0, 48, "test", 16, cache=False).corrupt(images, indices, name, 3)), name
        assert not torch.equal(first, Corruptor(1, 48, "test", 16, cache=False).corrupt(images, indices, name, 3)), name
        # the same image whatever else shares its batch, and in whichever order
        alone = torch.cat([one.corrupt(images[i:i + 1], indices[i:i + 1], name, 3) for i in (3, 1)])
        assert torch.equal(alone, first[[3, 1]]), name
        assert not torch.equal(first[0], first[1]), name  # each image its own draw
    assert all(np.array_equal(a, b) for a, b in zip(state[1:2], np.random.get_state()[1:2]))  # global RNG untouched


def test_severity_1_is_closer_to_the_clean_image_than_severity_5(sample) -> None:
    images, indices = sample
    corruptor = Corruptor(0, 48, "test", 16, cache=False)
    for name in all_corruptions():
        if name == "elastic_transform":
            continue  # its severities 1-2 are large smooth warps, 3-5 small local ones: not ordered in pixel distance
        mse = [float(((corruptor.corrupt(images, indices, name, s) - images) ** 2).mean()) for s in (1, 5)]
        assert mse[0] < mse[1], (name, mse)


def test_worker_processes_and_the_cache_give_the_same_images(sample, tmp_path: Path) -> None:
    images, indices = sample[0][:3], sample[1][:3]
    expected = Corruptor(0, 48, "test", 16, cache=False).corrupt(images, indices, "shot_noise", 2)
    pooled = Corruptor(0, 48, "test", 16, workers=1, cache=True)
    try:
        batches = [type("B", (), {"images": images[:2], "indices": indices[:2], "labels": indices[:2], "paths": ()}),
                   type("B", (), {"images": images[2:], "indices": indices[2:], "labels": indices[2:], "paths": ()})]
        made = torch.cat([b.images for b in pooled.batches(batches, "shot_noise", 2)])
        assert torch.equal(made, expected) and pooled.made == 3
        again = pooled.corrupt(images, indices, "shot_noise", 2)  # a second model: from the cache
        assert torch.equal(again, expected) and pooled.made == 3
    finally:
        pooled.close()
    spilled = Corruptor(0, 48, "test", 16, cache=True, cache_folder=tmp_path / "cache", budget=0)
    spilled.corrupt(images, indices, "shot_noise", 2)
    assert spilled.cache.on_disk == 3 and (tmp_path / "cache").is_dir()
    assert torch.equal(spilled.corrupt(images, indices, "shot_noise", 2), expected) and spilled.made == 3
    other_seed = Corruptor(1, 48, "test", 16, cache=True, cache_folder=tmp_path / "cache", budget=0)
    assert not (tmp_path / "cache").exists()  # a new corruptor never trusts files it did not write
    assert other_seed.key("shot_noise", 2, 0) != spilled.key("shot_noise", 2, 0)
    spilled.close()


# --- end to end ------------------------------------------------------------------------------------------
def _model(name: str, size: int) -> torch.nn.Module:
    from stm_probe.models.features import Normalized
    from stm_probe.runtime.seeds import seeded

    with seeded(0):
        return Normalized(stm_probe.create_model(name, input_size=size)).eval()


def test_flip_rates_equal_a_direct_recomputation(tmp_path: Path) -> None:
    import corrupt_tta

    size, names = 32, ("gaussian_noise", "contrast")
    frame = stm_probe.run("corruption", models="unified_convnext_micro", input_size=size, num_images=3,
                          corruptions=list(names), severities=[1, 5], batch_size=2, out=str(tmp_path / "run"),
                          quiet=True)
    model = _model("unified_convnext_micro", size)
    batch = next(iter(make_loader(None, batch_size=3, num_images=3, transform=eval_transform(size))))
    with torch.no_grad():
        clean = model(batch.images).argmax(1)
    pixels = np.rint(batch.images.numpy().transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    for name in names:
        for severity in (1, 5):
            words = seed_words(0, name, severity, 0, batch.indices.numpy())
            corrupted = []
            for image, w in zip(pixels, words):  # corrupt-tta under numpy's global RNG seeded with the image's words
                np.random.seed(w)
                corrupted.append(np.clip(corrupt_tta.corrupt(image, severity, name), 0, 255).astype(np.uint8))
            x = torch.from_numpy(np.stack(corrupted).transpose(0, 3, 1, 2).copy()).float() / 255
            with torch.no_grad():
                flips = (model(x).argmax(1) != clean).float().mean().item() * 100
            row = frame[(frame["corruption"] == name) & (frame["severity"] == severity)
                        & (frame["metric"] == "flip_rate")]
            assert row["value"].item() == pytest.approx(flips), (name, severity)
            assert row["n_images"].item() == 3
    overall = frame[frame["metric"] == "mean_flip_rate"]["value"].item()
    assert overall == pytest.approx(frame[frame["metric"] == "flip_rate"]["value"].mean())
    assert not (frame["metric"] == "error").any() and not (frame["metric"] == "ce").any()  # unlabelled
    written = pd.read_csv(tmp_path / "run" / "corruption.csv")
    assert len(written) == len(frame)
    assert (tmp_path / "run" / "corruption_noise.png").is_file() and (tmp_path / "run" / "corruption_heatmap.png").is_file()
    assert not (tmp_path / "run" / "corruption_cache").exists()


def test_imagenet_c_folder_gives_ce_and_mce(tmp_path: Path) -> None:
    """A complete (tiny) ImageNet-C tree with its clean images: error per variant from its own files, CE, mCE and
    their relative forms from them."""
    size = 32
    _write_tree(tmp_path / "c", [(c, s) for c in benchmark_corruptions() for s in range(1, 6)], size=size)
    _write_tree(tmp_path / "val", [("x", 0)], size=48)  # the clean images: val/x/0/<wnid>/<image>
    frame = stm_probe.run("corruption", models="unified_pvt_micro", data=str(tmp_path / "c"), input_size=size,
                          bootstrap=50, batch_size=3, clean_data=str(tmp_path / "val" / "x" / "0"))
    model = _model("unified_pvt_micro", size)
    source = resolve_source(tmp_path / "c")
    errors = {}
    for corruption in ("snow", "pixelate"):
        paths = source.variant_paths(corruption, 4)
        x = torch.stack([eval_transform(size, "warp")(Image.open(p).convert("RGB")) for p in paths])
        with torch.no_grad():
            pred = model(x).argmax(1)
        errors[corruption] = (pred != torch.tensor(source.labels)).float().mean().item() * 100
        row = frame[(frame["corruption"] == corruption) & (frame["severity"] == 4) & (frame["metric"] == "error")]
        assert row["value"].item() == pytest.approx(errors[corruption])
    per_unit = frame[frame["metric"] == "error"].set_index(["corruption", "severity"])["value"]
    ce = {c: corruption_error([per_unit[(c, s)] / 100 for s in range(1, 6)], c) for c in benchmark_corruptions()}
    got = frame[frame["metric"] == "ce"].set_index("corruption")["value"]
    assert got.to_dict() == pytest.approx(ce)
    mce = frame[(frame["metric"] == "mce")]
    assert mce["value"].item() == pytest.approx(np.mean(list(ce.values())))
    assert mce["ci_low"].item() <= mce["value"].item() <= mce["ci_high"].item()
    clean = frame[(frame["corruption"] == "clean") & (frame["metric"] == "error")]["value"].item() / 100
    relative = {c: relative_corruption_error([per_unit[(c, s)] / 100 for s in range(1, 6)], clean, c)
                for c in benchmark_corruptions()}
    assert frame[frame["metric"] == "relative_ce"].set_index("corruption")["value"].to_dict() == pytest.approx(relative)
    assert frame[frame["metric"] == "relative_mce"]["value"].item() == pytest.approx(np.mean(list(relative.values())))
    assert (frame["metric"] == "flip_rate").sum() == 75


def test_refusals(tmp_path: Path) -> None:
    _write_tree(tmp_path / "c", [("snow", 2)])
    with pytest.raises(UsageError, match="holds no gaussian_noise/1 folder"):
        stm_probe.run("corruption", models="unified_pvt_micro", data=str(tmp_path / "c"), corruptions="gaussian_noise",
                      input_size=32)
    with pytest.raises(UsageError, match="--clean-data is for ImageNet-C folders"):
        stm_probe.run("corruption", models="unified_pvt_micro", clean_data=str(tmp_path), input_size=32)
    with pytest.raises(UsageError, match="severities"):
        stm_probe.run("corruption", models="unified_pvt_micro", severities=[0, 6], input_size=32)
    (tmp_path / "clean" / TENCH).mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "clean" / TENCH / "a.png")
    with pytest.raises(UsageError, match="lacks 2 of the 3 images"):
        stm_probe.run("corruption", models="unified_pvt_micro", data=str(tmp_path / "c"), clean_data=str(tmp_path / "clean"),
                      input_size=32)
    assert math.isclose(alexnet_clean_error(), 0.4348)


def test_other_probes_and_training_refuse_an_imagenet_c_tree(tmp_path: Path) -> None:
    """Measuring one corrupted variant as if it were the data would be a silent wrong result."""
    from stm_probe.tools.train import TrainConfig, resolve_splits

    _write_tree(tmp_path / "ic", [("contrast", 1), ("contrast", 2)])
    with pytest.raises(UsageError, match="is an ImageNet-C tree .*stm-probe corruption"):
        stm_probe.run("invariance", models="unified_convnext_micro", data=tmp_path / "ic", input_size=32,
                      kind=("translation",), levels=(0, 4))
    with pytest.raises(UsageError, match="not training data"):
        resolve_splits(TrainConfig(model="unified_convnext_micro", data=str(tmp_path / "ic"), val_fraction=0.5))


def test_worker_processes_overlap_and_give_the_same_csv(tmp_path: Path) -> None:
    """Corrupting in a worker process, streamed across the loop's chunks (batches in flight while the
    model runs), gives byte-identical results to corrupting in the main process."""
    run = dict(models="unified_convnext_micro", input_size=32, num_images=5, batch_size=2, bootstrap=20,
               corruptions=("gaussian_noise", "contrast"), severities=(2,), quiet=True)
    stm_probe.run("corruption", out=tmp_path / "w0", workers=0, **run)
    stm_probe.run("corruption", out=tmp_path / "w1", workers=1, **run)
    for name in ("corruption.csv", "per_image.csv"):
        assert (tmp_path / "w0" / name).read_bytes() == (tmp_path / "w1" / name).read_bytes()

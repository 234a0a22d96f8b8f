"""`data-efficiency`: fractions, the fixed step budget, accuracy on an easy set, determinism, shape bias."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import stm_probe
from stm_probe.data.synthetic import SyntheticSpec
from stm_probe.errors import UsageError
from stm_probe.probes import data_efficiency as de

MODEL = "test_resnet"  # timm's tiny test ResNet: trains in seconds at 32 px
#: small enough for three trainings in seconds (the slow tier); still learnt to >= 80 % at fraction 1
EASY = dict(data="synthetic:val?classes=2&size=32", classes=2, input_size=32, num_images=32, train_images=128,
            steps=60, train_batch=16, lr=3e-3, seeds=1, cue_conflict_images=16, bootstrap=200, quiet=True)


def test_fractions_take_the_first_balanced_images() -> None:
    spec = SyntheticSpec(split="val", classes=4, size=32)
    for fraction, expected in ((1 / 16, 16), (1 / 4, 64), (1.0, 256)):
        n = de.train_count(fraction, 256)
        source = de.train_source(spec, n)
        assert n == expected and len(source) == expected
        assert np.bincount(np.asarray(source.labels), minlength=4).tolist() == [expected // 4] * 4
        assert str(source.location).startswith("synthetic:train?classes=4&size=32&seed=0")
    assert de.fraction_list("1/2, 1/16,1") == (1 / 16, 1 / 2, 1.0)
    with pytest.raises(UsageError, match="fewer than the 8 classes"):
        de.DataEfficiencyConfig(fractions=(1 / 64,), train_images=256, classes=8)


def test_epochs_cover_the_step_budget() -> None:
    assert de.epochs_for(300, 2048, 64) == 10  # ceil(300 * 64 / 2048)
    assert de.epochs_for(300, 128, 64) == 150
    assert de.epochs_for(5, 10, 64) == 5  # fewer images than a batch: one batch of all per epoch


@pytest.fixture(scope="module")
def easy_runs():  # the tests using it are marked slow: three trainings
    """Two runs on the easy 2-class set: fractions 1/8 and 1, then fraction 1 alone; each training
    run's (images, steps taken, final scheduler step) recorded."""
    recorded = []
    original = de.run_steps

    def recording(trainer, data, steps, per_epoch):
        done = original(trainer, data, steps, per_epoch)
        recorded.append((len(data), done, trainer.scheduler.last_epoch, trainer.optimizer.param_groups[0]["lr"]))
        return done

    de.run_steps = recording
    try:
        both = stm_probe.run("data-efficiency", models=MODEL, fractions=(1 / 8, 1.0), **EASY)
        alone = stm_probe.run("data-efficiency", models=MODEL, fractions=(1.0,), **EASY)
    finally:
        de.run_steps = original
    return both, alone, recorded


@pytest.mark.slow
def test_same_step_budget_at_every_fraction(easy_runs) -> None:
    _, _, recorded = easy_runs
    assert [r[0] for r in recorded] == [16, 128, 128]  # round(f * 128) images
    for _, done, scheduler_steps, lr in recorded:
        assert done == scheduler_steps == EASY["steps"]
        assert lr == pytest.approx(0.0, abs=1e-12)  # the cosine schedule ended exactly at the budget


@pytest.mark.slow
def test_full_fraction_learns_the_easy_set_and_is_deterministic(easy_runs) -> None:
    both, alone, _ = easy_runs
    acc = both[both["metric"] == "val_acc"].set_index("fraction")["value"]
    assert acc[1.0] >= 80.0
    assert set(both["metric"]) == {"val_acc", "shape_bias"}
    full = both[both["fraction"] == 1.0].sort_values("metric").reset_index(drop=True)
    again = alone.sort_values("metric").reset_index(drop=True)
    for column in ("value", "ci_low", "ci_high", "n_images"):
        np.testing.assert_array_equal(full[column].to_numpy(float), again[column].to_numpy(float))
    bias = full[full["metric"] == "shape_bias"].iloc[0]
    assert 0.0 <= bias["ci_low"] <= bias["value"] <= bias["ci_high"] <= 1.0 and bias["n_images"] == 16


def test_shape_bias_is_shape_hits_over_shape_and_texture_hits() -> None:
    decision = np.array([0, 1, 2, 2, 3, 0, 1, 3], dtype=float)
    shape = np.array([0, 1, 1, 2, 0, 3, 2, 1], dtype=float)
    texture = np.array([1, 0, 2, 0, 3, 0, 3, 2], dtype=float)
    codes = de.cue_codes(decision, shape, texture)
    assert codes.tolist() == [1, 1, 2, 1, 2, 2, 0, 0]  # 3 shape hits, 3 texture hits, 2 neither
    session = SimpleNamespace(options=SimpleNamespace(bootstrap=500))
    probe = de.DataEfficiencyProbe(de.DataEfficiencyConfig(), session)
    cue = np.full((3, codes.size), np.nan, dtype=np.float32)
    cue[0] = codes  # as measure returns it: the unit's decisions on its first image
    values = {(0.5, "val_acc"): np.array([100.0, 0.0, 100.0]), (0.5, de.CUE): cue}
    out = probe.summarise(values, seed=0)
    assert set(out) == {(0.5, "val_acc"), (0.5, "shape_bias")}
    value, low, high, n, skipped = out[(0.5, "shape_bias")]
    assert value == pytest.approx(3 / 6) and n == 8 and skipped == 0
    assert 0.0 <= low <= value <= high <= 1.0
    assert out[(0.5, "val_acc")][0] == pytest.approx(200 / 3)
    codes[:] = 0  # no decision is the shape or the texture class: undefined, no row
    cue[0] = codes
    assert (0.5, "shape_bias") not in probe.summarise({(0.5, de.CUE): cue}, seed=0)


def test_repeats_are_refused_in_favour_of_seeds() -> None:
    with pytest.raises(UsageError, match="pass --seeds 2 instead"):
        stm_probe.run("data-efficiency", models=MODEL, **{**EASY, "repeats": 2})

"""torchrun on the CPU (gloo): two processes write the same files as one process, byte for byte.

One script runs every analysis (erf, invariance, adversarial, each bias method, cue-conflict, eval,
corruption, cka) on a
micro model at 32 px into one folder per run; it is launched once as a plain process and once
under ``torch.distributed.run --nproc_per_node 2``, so a single process group also serves several
runs. Image counts are not multiples of world size x batch size (uneven shards; in the
cue-conflict run rank 1 gets no image at all). A second launch makes rank 1 fail in the second
unit: the run stops with one line naming the rank, and the unit saved before resumes in one
process to the same CSV. Both launches use ``OMP_NUM_THREADS=1`` (batched float arithmetic can
depend on the thread count).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]  # launches 5 interpreters: the slow tier

SCRIPT = r'''
import os, sys
import stm_probe
from stm_probe.__main__ import run as cli

out = sys.argv[1]
model = ["unified_convnext_micro"]
common = dict(input_size=32, bootstrap=20, quiet=True, device="cpu")
invariance = ["invariance", "--model", model[0], "--input-size", "32", "--num-images", "5", "--batch-size", "2",
              "--kind", "translation,scale", "--bootstrap", "20", "--quiet", "--device", "cpu"]
if os.environ.get("FAIL_RANK"):  # rank FAIL_RANK fails in the second unit (kind scale)
    from stm_probe.probes.invariance import InvarianceProbe
    from stm_probe.runtime.distributed import world
    measure = InvarianceProbe.measure

    def failing(self, model, unit, batch):
        if unit.parts == ("scale",) and world()[0] == int(os.environ["FAIL_RANK"]):
            raise RuntimeError("injected failure")
        return measure(self, model, unit, batch)

    InvarianceProbe.measure = failing
    raise SystemExit(cli(invariance + ["--out", out] + sys.argv[2:]))
assert cli(invariance + ["--out", f"{out}/invariance-cli"]) == 0
stm_probe.run("erf", model, out=f"{out}/erf", num_images=5, batch_size=2, stages=(1, 2), thresholds=(0.2, 0.5),
              **common)
stm_probe.run("invariance", model, out=f"{out}/invariance", num_images=5, batch_size=2,
              kind=("translation", "circular-shift"), repeats=2, **common)
stm_probe.run("adversarial", model, out=f"{out}/adversarial", num_images=5, batch_size=2, attack=("fgsm", "pgd"),
              eps=("4",), steps=2, save_examples=3, **common)
stm_probe.run("bias", model, out=f"{out}/bias", num_images=5, batch_size=2, grids=(1, 4), fractions=(0.0, 0.5),
              orders=("random", "salient"), fourier_grid=8, radii=(4, 8), attribution_images=3,
              probe=("patch-shuffle", "patch-drop", "fourier", "frequency-filter", "attribution"), **common)
stm_probe.run("eval", model, out=f"{out}/eval", num_images=5, batch_size=2, labels_as_index=True, **common)
stm_probe.run("corruption", model, out=f"{out}/corruption", num_images=5, batch_size=2,
              corruptions=("gaussian_noise", "contrast"), severities=(1, 5), **common)
stm_probe.run("cka", model, out=f"{out}/cka", num_images=5, batch_size=2, kernel=("linear", "rbf"), **common)
stm_probe.run("cka", model, out=f"{out}/cka-minibatch", num_images=9, batch_size=2, estimator="minibatch",
              minibatch_size=4, **common)  # minibatches 0-3 and 8 on rank 0, 4-7 on rank 1
code = cli(["train", "--model", "test_convnext", "--data", "synthetic:train?classes=2&size=32&n=40", "--num-images", "15",
            "--val-data", "synthetic:val?classes=2&size=32&n=8", "--batch-size", "5", "--epochs", "2",
            "--input-size", "32", "--augment", "flip", "--quiet", "--device", "cpu", "--out", f"{out}/train"])
assert code == 0, code
code = cli(["bias", "--probe", "cue-conflict", "--model", model[0], "--input-size", "32", "--num-images", "3",
            "--batch-size", "4", "--bootstrap", "20", "--quiet", "--device", "cpu", "--out", f"{out}/cue"])
raise SystemExit(code)
'''

RUNS = {"erf": "erf", "invariance": "invariance", "invariance-cli": "invariance", "adversarial": "adversarial",
        "bias": "bias", "cue": "bias", "eval": "eval", "corruption": "corruption", "cka": "cka",
        "cka-minibatch": "cka"}


def _launch(script: Path, out: Path, processes: int, *extra: str, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    environ.pop("WORLD_SIZE", None)
    return subprocess.run([*launcher, str(script), str(out), *extra], capture_output=True, text=True, env=environ,
                          timeout=600)


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dist") / "runs.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture(scope="module")
def outputs(script: Path) -> tuple[Path, Path, str]:
    """The script's folders from one process and from two, and the two-process stdout."""
    one = _launch(script, script.parent / "one", 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _launch(script, script.parent / "two", 2)
    assert two.returncode == 0, two.stderr[-3000:]
    return script.parent / "one", script.parent / "two", two.stdout


def test_two_processes_write_the_same_files_as_one(outputs: tuple[Path, Path, str]) -> None:
    one, two, stdout = outputs
    for run, probe in RUNS.items():
        a, b = one / run, two / run
        names = [f"{probe}.csv", *(["per_image.csv"] if probe != "cka" else [])]  # cka: Gram matrices, in units/
        names += [str(p.relative_to(a)) for p in a.rglob("*") if p.suffix in (".npy", ".npz")
                  and not (run == "eval" and p.parent.name == "units")]  # eval's unit caches hold a timing
        for name in names:
            assert (a / name).is_file(), name
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{run}/{name} differs"
        manifest = json.loads((b / "manifest.json").read_text())
        assert manifest["distributed"]["world_size"] == 2 and "distributed" not in json.loads(
            (a / "manifest.json").read_text())
        assert manifest["precision"] == {"mode": "fp32", "channels_last": False, "compile": False}
    per_image = (two / "erf" / "per_image.csv").read_text().splitlines()
    assert sorted({int(line.split(",")[0]) for line in per_image[1:]}) == [0, 1, 2, 3, 4]  # every image, once per row
    # only rank 0 wrote and printed: one summary per run, one folder per run, no stray files
    assert sorted(p.name for p in two.iterdir()) == sorted([*RUNS, "train"])
    for run in [*RUNS, "train"]:
        assert stdout.count(f"results in {two / run}\n") == 1, run
    _same_training(one / "train", two / "train")


def _same_training(one: Path, two: Path) -> None:
    """DDP over 2 ranks (steps of 5 images split 3 + 2) gives the one-process gradients, so the same
    weights and log up to float rounding (sums in another order), not bit for bit. (timm's
    test_convnext: LayerNorm only; BatchNorm statistics would be per process on the CPU.)"""
    import numpy as np
    import torch

    a = torch.load(one / "checkpoint.pth", weights_only=True)
    b = torch.load(two / "checkpoint.pth", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    for row_a, row_b in zip(a["history"], b["history"]):
        for column in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert np.isclose(row_a[column], row_b[column], rtol=1e-4, atol=1e-6), column


def test_a_failing_rank_stops_the_run_in_one_line_and_the_saved_unit_resumes(
        script: Path, outputs: tuple[Path, Path, str], tmp_path: Path) -> None:
    out = tmp_path / "failed"
    failed = _launch(script, out, 2, env={"FAIL_RANK": "1"})
    assert failed.returncode != 0
    ours = [line for line in failed.stderr.splitlines() if line.startswith("stm-probe:")]
    assert ours == ["stm-probe: error: rank 1: RuntimeError: injected failure"], failed.stderr[-3000:]
    assert len(list((out / "units").glob("*.npz"))) == 1  # the translation unit, saved before the failure
    assert json.loads((out / "run.json").read_text())["status"] == "incomplete"
    resumed = _launch(script, out, 1, "--resume", env={"FAIL_RANK": "-1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["units_resumed"] == 1
    for name in ("invariance.csv", "per_image.csv"):  # the same as the uninterrupted run
        assert (out / name).read_bytes() == (outputs[0] / "invariance-cli" / name).read_bytes()


def test_a_probe_regroups_within_chunks_and_a_batch_across_two_is_refused() -> None:
    """`LoaderStream.chunks` groups the loader batches by chunk, and the loop refuses a measured batch whose
    images come from two chunks (its numbers would change with the number of processes)."""
    from stm_probe.runtime.shards import LoaderStream, ShardBatches

    stream = LoaderStream(iter([(0, "a"), (0, "b"), (2, "c")]))
    assert [list(chunk) for chunk in stream.chunks()] == [["a", "b"], ["c"]]
    assert list(LoaderStream(iter([(0, "a"), (2, "c")]))) == ["a", "c"]
    batches = ShardBatches.__new__(ShardBatches)
    batches.chunk = 4
    assert batches.chunk_of(np.array([4, 5, 7]), "toy") == 1
    with pytest.raises(RuntimeError, match="toy.unit_batches made a batch of images from two chunks"):
        batches.chunk_of(np.array([3, 4]), "toy")

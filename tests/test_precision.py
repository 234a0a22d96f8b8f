"""--precision / --channels-last / --compile: what autocast computes, what stays float32, refusals,
cache keys, and every analysis under bf16 on the CPU within the deviations the README documents."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stm_probe
from stm_probe.errors import UsageError
from stm_probe.models import create_model
from stm_probe.models.features import Normalized
from stm_probe.models.unified import UnifiedNet
from stm_probe.runtime.precision import Precision, apply_precision, resolve_precision, set_matmul_precision

CPU = torch.device("cpu")
COMMON = dict(models=["unified_convnext_micro"], input_size=32, num_images=4, batch_size=4, bootstrap=20, quiet=True,
              device="cpu")
#: documented bounds (README, scale section; measured with benchmarks/precision_speed.py deviation: ERF map
#: correlations 0.977-1.000 per stage, consistency / flip-rate changes of at most one image)
ERF_MIN_CORRELATION = 0.95
MAX_POINTS = 25.0  # consistency / flip-rate change in percentage points, on 4 images: at most one image flips


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_bf16_runs_the_matmuls_in_bfloat16_and_hands_back_float32() -> None:
    model = _Linear()
    x = torch.randn(3, 1, 4, 4, requires_grad=True)
    apply_precision(model, Precision("bf16"), "cpu")
    out = model(x)
    expected = F.linear(x.detach().flatten(1).bfloat16(), model.fc.weight.bfloat16(), model.fc.bias.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.detach(), expected.float(), rtol=0, atol=0)  # bf16 arithmetic, exactly
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32  # input gradients stay float32
    # d(sum)/dx = column sums of W, in bf16 (the autocast backward of the matmul), read back as float32
    torch.testing.assert_close(x.grad.flatten(1)[0], model.fc.weight.bfloat16().float().sum(0), rtol=1e-2, atol=1e-2)


def test_default_precision_leaves_the_model_untouched() -> None:
    model = _Linear()
    assert apply_precision(model, Precision(), "cpu") is model
    assert "forward" not in vars(model)
    x = torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(model(x), model.fc(x.flatten(1)), rtol=0, atol=0)


def test_unified_model_keeps_its_class_and_every_path_follows_bf16() -> None:
    torch.manual_seed(0)
    model = create_model("unified_convnext_micro", input_size=32).eval()
    net = Normalized(model)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref_logits, ref_stages = net(x), net.stages(x, [0, 3])
    apply_precision(model, Precision("bf16", channels_last=True), "cpu")
    assert isinstance(net.model, UnifiedNet)
    with torch.no_grad():
        logits, stages = net(x), net.stages(x, [0, 3])
    assert logits.dtype == torch.float32 and all(s.dtype == torch.float32 for s in stages)
    assert not torch.equal(logits, ref_logits)  # really computed in bf16
    for got, ref in zip([logits, *stages], [ref_logits, *ref_stages]):
        assert float((got - ref).norm() / ref.norm()) < 0.05  # bf16 keeps ~3 significant digits


def test_refusals_and_notes() -> None:
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", False, False, CPU)
    precision, notes = resolve_precision("tf32", False, False, CPU)
    assert precision.mode == "tf32" and "changes nothing on the CPU" in notes[0]
    assert resolve_precision("fp32", False, False, CPU) == (Precision(), [])
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        stm_probe.run("erf", precision="fp16", **COMMON)
    from stm_probe.training.config import TrainConfig

    with pytest.raises(UsageError, match="--amp and --precision"):
        TrainConfig(model="unified_convnext_micro", data="synthetic", amp=True, precision="bf16")


def test_tf32_flags_follow_the_choice() -> None:
    set_matmul_precision(Precision("tf32"))
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    set_matmul_precision(Precision("fp32"))
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_a_bf16_run_never_resumes_an_fp32_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    stm_probe.run("invariance", out=out, kind=["translation"], levels=[0, 8], **COMMON)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == {"mode": "fp32", "channels_last": False, "compile": False}
    (out / "manifest.json").unlink()  # make it look interrupted
    with pytest.raises(UsageError, match="precision"):
        stm_probe.run("invariance", out=out, resume=True, precision="bf16", kind=["translation"], levels=[0, 8],
                      **COMMON)


def _pair(analysis: str, tmp_path: Path, **extra) -> tuple:
    frames = []
    for precision in ("fp32", "bf16"):
        frames.append(stm_probe.run(analysis, out=tmp_path / f"{analysis}-{precision}", precision=precision, **COMMON,
                                    **extra))
    return frames[0], frames[1]


def _points(a, b, metric: str) -> float:
    x, y = a[a.metric == metric]["value"].to_numpy(), b[b.metric == metric]["value"].to_numpy()
    assert len(x) == len(y) > 0
    return float(np.abs(x - y).max())


@pytest.mark.slow  # six analyses twice: the full suite
def test_every_analysis_runs_under_bf16_within_the_documented_bounds(tmp_path: Path) -> None:
    fp32, bf16 = _pair("erf", tmp_path, stages=(1, 4), thresholds=(0.2, 0.5))
    for stage in (1, 4):
        a = np.load(tmp_path / "erf-fp32" / "erf" / f"unified_convnext_micro_stage{stage}.npy")
        b = np.load(tmp_path / "erf-bf16" / "erf" / f"unified_convnext_micro_stage{stage}.npy")
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= ERF_MIN_CORRELATION
    fp32, bf16 = _pair("invariance", tmp_path, kind=("translation",), levels=(0, 4, 8))
    assert _points(fp32, bf16, "consistency") <= MAX_POINTS
    fp32, bf16 = _pair("adversarial", tmp_path, attack=("pgd",), eps=("4",), steps=2)
    assert _points(fp32, bf16, "flip_rate") <= MAX_POINTS
    fp32, bf16 = _pair("bias", tmp_path, probe=("patch-shuffle", "frequency-filter", "attribution"), grids=(1, 4),
                       radii=(4, 8), attribution_images=2)
    assert _points(fp32, bf16, "consistency") <= MAX_POINTS
    assert abs(_points(fp32, bf16, "concentration")) < 0.05
    fp32, bf16 = _pair("corruption", tmp_path, corruptions=("gaussian_noise", "contrast"), severities=(1, 5))
    assert _points(fp32, bf16, "flip_rate") <= MAX_POINTS
    fp32, bf16 = _pair("eval", tmp_path, labels_as_index=True)  # default synthetic labels
    assert _points(fp32, bf16, "top1") <= MAX_POINTS

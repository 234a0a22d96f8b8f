"""Fourier heat map and frequency filtering (`stm-probe bias --probe fourier,frequency-filter`).

Independent expectations: the basis against the inverse FFT of a hand-placed pair of conjugate
peaks (Yin et al.'s construction), the filters against Wang et al.'s per-pixel radial mask in the
fftshift layout, and the heat map against a model that low-pass filters its input.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from stm_probe.data import Batch
from stm_probe.errors import UsageError
from stm_probe.core.fourier import frequency_class, grid_offsets, heat_map, representatives
from stm_probe.plots.bias_fourier import plot_fourier
from stm_probe.probes.bias import BiasConfig
from stm_probe.probes.bias.fourier import FourierHeatMap, default_eps, fourier_basis, perturb
from stm_probe.probes.bias.frequency_filter import FrequencyFilter, radial_distance, split_frequencies


def _session(size: int, batch_size: int = 16, labelled: bool = False) -> SimpleNamespace:
    options = SimpleNamespace(input_size=size, batch_size=batch_size, seed=0)
    return SimpleNamespace(options=options, seed=0, device=torch.device("cpu"),
                           source=SimpleNamespace(has_labels=labelled))


def _batch(images: torch.Tensor, labels=None, first: int = 0) -> Batch:
    n = images.shape[0]
    labels = torch.full((n,), -1) if labels is None else torch.as_tensor(labels)
    return Batch(images, labels, torch.arange(first, first + n), tuple(f"img{first + k}" for k in range(n)))


def _model(net: nn.Module, name: str = "stub") -> SimpleNamespace:
    return SimpleNamespace(name=name, net=net.eval())


def _reference_basis(i: int, j: int, size: int) -> np.ndarray:
    """Yin et al.'s construction: (1 + 1j) / 2 at (i, j) and its conjugate at (-i, -j) (a single 1
    where they coincide), inverse FFT, real part scaled to unit norm."""
    spectrum = np.zeros((size, size), complex)
    a, b = (i % size, j % size), (-i % size, -j % size)
    if a == b:
        spectrum[a] = 1.0
    else:
        spectrum[a], spectrum[b] = 0.5 + 0.5j, 0.5 - 0.5j
    return np.real(np.fft.ifft2(spectrum)) * size


# --- the Fourier basis ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [16, 15])
def test_basis_is_real_unit_norm_with_exactly_the_two_conjugate_peaks(size: int) -> None:
    cells = representatives(size, 1)
    assert len(cells) == len({frequency_class(i, j, size) for i in range(size) for j in range(size)})
    bases = fourier_basis(torch.tensor(cells), size)
    assert bases.dtype == torch.float32 and not bases.is_complex()
    np.testing.assert_allclose(bases.double().flatten(1).norm(dim=1).numpy(), 1.0, atol=1e-6)
    for (i, j), basis in zip(cells, bases.double().numpy()):
        spectrum = np.fft.fft2(basis)
        peaks = {tuple(p) for p in np.argwhere(np.abs(spectrum) > 1e-4 * np.abs(spectrum).max())}
        assert peaks == {(i % size, j % size), (-i % size, -j % size)}, (i, j)
        np.testing.assert_allclose(spectrum[i % size, j % size], np.conj(spectrum[-i % size, -j % size]), atol=1e-4)
        np.testing.assert_allclose(basis, _reference_basis(i, j, size), atol=1e-6)


def test_basis_at_224_is_exact_at_high_frequencies() -> None:
    cells = [(112, 112), (111, -97), (4, 0), (0, 112)]
    bases = fourier_basis(torch.tensor(cells), 224).double().numpy()
    for (i, j), basis in zip(cells, bases):
        np.testing.assert_allclose(basis, _reference_basis(i, j, 224), atol=1e-7)


def test_grid_representatives_and_heat_map_mirror() -> None:
    assert grid_offsets(224, 4).tolist() == list(range(-112, 113, 4))
    assert grid_offsets(32, 3).tolist() == list(range(-15, 16, 3))
    size, step = 64, 4
    cells = representatives(size, step)
    offsets = grid_offsets(size, step)
    grid_classes = {frequency_class(i, j, size) for i in offsets for j in offsets}
    assert sorted(frequency_class(i, j, size) for i, j in cells) == sorted(grid_classes)  # each class once
    values = {c: float(k) for k, c in enumerate(cells)}
    full = heat_map(values, size, step)
    assert full.shape == (17, 17) and np.isfinite(full).all()
    np.testing.assert_array_equal(full, full[::-1, ::-1])  # (i, j) and (-i, -j) are one basis image
    centre = len(offsets) // 2
    assert full[centre, centre] == values[(0, 0)] and full[centre + 1, centre] == values[(4, 0)]


def test_perturb_adds_signed_scaled_basis_per_channel_and_clips() -> None:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 8, 8, generator=gen)
    bases = torch.randn(2, 8, 8, generator=gen)
    signs = torch.randint(0, 2, (2, 3, 3), generator=gen).float() * 2 - 1
    out = perturb(images, bases, signs, 0.7)
    for f in range(2):
        for b in range(3):
            for c in range(3):
                expected = np.clip(images[b, c].numpy() + 0.7 * signs[f, b, c].item() * bases[f].numpy(), 0, 1)
                np.testing.assert_allclose(out[f * 3 + b, c].numpy(), expected, atol=1e-6)


def test_default_eps_is_yin_imagenet_per_pixel_rms() -> None:
    assert default_eps(224) == pytest.approx(15.7)
    assert default_eps(32) / 32 == pytest.approx(15.7 / 224)  # RMS change per pixel: eps / S


# --- the heat map ----------------------------------------------------------------------------------
class LowPassClassifier(nn.Module):
    """Keeps frequencies with sqrt(i^2 + j^2) < radius, then a fixed linear read-out (10 classes)."""

    def __init__(self, size: int, radius: float) -> None:
        super().__init__()
        self.register_buffer("keep", (radial_distance(size) < radius).float())
        self.readout = nn.Linear(3 * size * size, 10)
        nn.init.normal_(self.readout.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = torch.fft.ifft2(torch.fft.fft2(x.double()) * self.keep).real.float()
        return self.readout((low - 0.5).flatten(1))


def test_low_pass_model_never_flips_at_high_frequencies() -> None:
    size, radius = 16, 4.0
    method = FourierHeatMap(BiasConfig(fourier_grid=1), _session(size, batch_size=64))
    images = 0.5 + 0.01 * torch.randn(6, 3, size, size)  # far from 0 and 1: no clipping at eps 1.12
    assert method.eps * math.sqrt(2) / size < 0.4
    values = method.measure(_model(LowPassClassifier(size, radius)), _batch(images), repeat=0)
    assert not any(k[-1] == "error" for k in values)  # no labels: flip rate only
    high = [v for (_, i, j, _), v in values.items() if math.hypot(i, j) >= radius]
    low = [v for (_, i, j, _), v in values.items() if math.hypot(i, j) < radius]
    assert len(high) > 100 and len(low) > 10
    assert np.all(np.concatenate(high) == 0)
    assert np.concatenate(low).mean() > 10  # the low frequencies do change its decisions


def _loop_reference(method: FourierHeatMap, net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    repeat: int) -> dict[tuple, np.ndarray]:
    """One frequency at a time, numpy bases from `_reference_basis`, the method's signs."""
    size = images.shape[-1]
    signs = method.signs(torch.arange(images.shape[0]), repeat).numpy()
    with torch.no_grad():
        clean = net(images).argmax(-1).numpy()
        out = {}
        for f, (i, j) in enumerate(method.cells):
            basis = _reference_basis(i, j, size)
            pixels = np.clip(images.numpy() + method.eps * signs[f][:, :, None, None] * basis, 0, 1)
            top1 = net(torch.from_numpy(pixels).float()).argmax(-1).numpy()
            out[("", i, j, "flip")] = (top1 != clean) * 100.0
            out[("", i, j, "error")] = np.where(labels.numpy() >= 0, (top1 != labels.numpy()) * 100.0, np.nan)
    return out


def test_heat_map_matches_one_frequency_at_a_time_and_any_batching() -> None:
    size = 16
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 5))
    nn.init.normal_(net[1].weight)  # sensitive enough that some perturbations flip its decision
    method = FourierHeatMap(BiasConfig(fourier_grid=2, fourier_eps=10.0), _session(size, 7, labelled=True))
    images = (0.5 + 0.05 * torch.randn(4, 3, size, size)).clamp(0, 1)
    images[..., :2, :] = torch.rand(4, 3, 2, size).round()  # saturated rows: clipping matters
    labels = torch.tensor([0, 3, -1, 2])
    whole = method.measure(_model(net), _batch(images, labels), repeat=1)
    expected = _loop_reference(method, net, images, labels, repeat=1)
    assert set(whole) == set(expected)
    flips = np.stack([v for k, v in expected.items() if k[-1] == "flip"])
    assert 5 < flips.mean() < 95  # neither all kept nor all flipped: the comparison means something
    for key, value in expected.items():
        np.testing.assert_array_equal(whole[key], value, err_msg=str(key))
    halves = [method.measure(_model(net), _batch(images[k:k + 2], labels[k:k + 2], first=k), 1) for k in (0, 2)]
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])
    signs = method.signs(torch.arange(4), 1)
    assert signs.shape == (len(method.cells), 4, 3) and set(signs.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(signs, method.signs(torch.arange(4), 2))  # each repeat draws again


def test_artefact_and_figure(tmp_path) -> None:
    import pandas as pd

    size = 16
    method = FourierHeatMap(BiasConfig(fourier_grid=4), _session(size))
    values = {("", i, j, "flip"): np.array([100.0, 0.0, 100.0 * (i > 0), 0.0]) for i, j in method.cells}
    values.update({("", i, j, "error"): np.array([np.nan, 100.0, 100.0, 0.0]) for i, j in method.cells})
    [path] = method.artefacts(tmp_path, "m1", values)
    saved = np.load(path)
    assert path == tmp_path / "fourier" / "m1.npy" and saved.shape == (5, 5)
    np.testing.assert_allclose(saved, 100 * 2 / 3)  # the error rate over the three labelled images
    rows = pd.DataFrame([{"model": m, "level": i, "level2": j, "metric": "flip", "value": v, "input_size": size}
                         for m, v in (("m1", 10.0), ("m2", 30.0)) for i, j in method.cells])
    written = plot_fourier(tmp_path, rows)
    assert [p.name for p in written] == ["bias_fourier.png"]  # PNG unless a style or --formats asks for more
    assert all(p.stat().st_size > 0 for p in written)


class NanWhenClipped(nn.Module):
    """Finite logits unless some pixel reaches 1 (only a perturbed, clipped image does here)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.flatten(1)[:, :4]
        return torch.where((x.flatten(1).amax(1) >= 1)[:, None], float("nan"), logits)


def test_non_finite_logits_of_a_perturbed_pair_are_one_line() -> None:
    from stm_probe.errors import UsageError

    method = FourierHeatMap(BiasConfig(fourier_grid=8, fourier_eps=20.0), _session(16))
    with pytest.raises(UsageError, match=r"^nanny produced \d+ non-finite logits"):
        method.measure(_model(NanWhenClipped(), "nanny"), _batch(torch.full((2, 3, 16, 16), 0.5)), repeat=0)


def test_grid_above_nyquist_is_refused() -> None:
    from stm_probe.errors import UsageError

    with pytest.raises(UsageError, match="--fourier-grid 9"):
        FourierHeatMap(BiasConfig(fourier_grid=9), _session(16)).check()


# --- frequency filtering ---------------------------------------------------------------------------
def _wang_low_pass(image: np.ndarray, radius: float) -> np.ndarray:
    """Wang et al.'s filter: fftshift, keep pixels closer than r to (S/2, S/2), inverse."""
    size = image.shape[-1]
    mask = np.array([[math.hypot(y - size / 2, x - size / 2) < radius for x in range(size)] for y in range(size)])
    return np.real(np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(image)) * mask)))


def test_filters_match_wang_and_sum_to_the_image() -> None:
    images = torch.rand(2, 3, 16, 16)
    radii = torch.tensor([1.0, 2.5, 4.0, 8.0])
    low, high = split_frequencies(images, radii)
    assert low.shape == high.shape == (4, 2, 3, 16, 16)
    for r, radius in enumerate(radii.tolist()):
        np.testing.assert_allclose(low[r].numpy(), _wang_low_pass(images.numpy(), radius), atol=1e-5)
    np.testing.assert_allclose((low + high).numpy(), images[None].expand_as(low).numpy(), atol=1e-5)


def test_low_pass_covering_the_whole_spectrum_is_the_identity() -> None:
    images = torch.rand(2, 3, 16, 16)
    corner = 8 * math.sqrt(2)  # the farthest frequency: (Nyquist, Nyquist)
    low, high = split_frequencies(images, torch.tensor([corner + 1e-3, 8.0]))
    np.testing.assert_allclose(low[0].numpy(), images.numpy(), atol=1e-5)
    np.testing.assert_allclose(high[0].numpy(), 0.0, atol=1e-5)
    assert (low[1] - images).abs().max() > 1e-3  # r = Nyquist keeps the inscribed disc only


def test_frequency_filter_keys_and_metrics() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6)).eval()
    method = FrequencyFilter(BiasConfig(radii=(2.0, 11.3)), _session(16))
    values = method.measure(_model(net), _batch(torch.rand(3, 3, 16, 16), [1, -1, 4]), repeat=0)
    assert {k[:3] for k in values} == {(f, r, None) for f in ("low-pass", "high-pass") for r in (2.0, 11.3)}
    assert {k[3] for k in values} == {"top1", "top5", "consistency", "soft_ce", "kl"}
    with pytest.raises(UsageError, match="beyond the spectrum"):  # 12 > 8 sqrt(2), the 16 px corner
        FrequencyFilter(BiasConfig(radii=(2.0, 12.0)), _session(16))
    assert np.isnan(values[("low-pass", 2.0, None, "top1")][1])
    assert FrequencyFilter(BiasConfig(), _session(64)).radii == (1.143, 2.286, 4.571, 9.143, 18.286, 32.0)

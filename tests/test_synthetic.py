"""Tests for stm_probe.data.synthetic: balance, determinism, the stated shapes and textures, the
loader and the ImageFolder export. Shapes are checked against a second implementation (circles by
hand, polygons by matplotlib's point-in-polygon) built from the generating parameters."""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.path import Path as PolygonPath
from PIL import Image

from stm_probe.data import eval_transform, make_loader, resolve_source
from stm_probe.data import synthetic as S
from stm_probe.errors import UsageError
from stm_probe.probes.bias import is_cue_conflict_source
from stm_probe.probes.bias.cue_conflict import parse_name

# sha256 (first 16 hex digits) of the uint8 pixels, computed once; any change of the generator,
# the parameter draws or the rendering changes them.
HASHES = [
    ("synthetic:train", 0, "21a328907037f90a"),
    ("synthetic:val", 3, "e9f89b7b1d629deb"),
    ("synthetic:shape-only", 2, "24b46e609685b628"),
    ("synthetic:texture-only", 6, "fc593e3e30de834c"),
    ("synthetic:cue-conflict", 5, "63380e98c35d257a"),
    ("synthetic:train?classes=16&size=32&seed=3", 13, "cd28ab295a09811e"),
    ("synthetic:val?classes=16&size=96", 15, "d11670ebb735b1de"),
]


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------
# A second implementation of the eight default shapes (the documented dimensions, unit frame)
# ------------------------------------------------------------------------------------------


def _polygon(points: list[tuple[float, float]]):
    path = PolygonPath(np.asarray(points))
    return lambda u, v: path.contains_points(np.stack([u.ravel(), v.ravel()], 1)).reshape(u.shape)


def _regular(n: int, radius: float, inner: float | None = None) -> list[tuple[float, float]]:
    """Vertices of a regular n-gon (or an n-point star with inner radius), a vertex on +v."""
    if inner is None:
        return [(radius * np.sin(2 * np.pi * k / n), radius * np.cos(2 * np.pi * k / n)) for k in range(n)]
    pts = []
    for k in range(2 * n):
        r = radius if k % 2 == 0 else inner
        pts.append((r * np.sin(np.pi * k / n), r * np.cos(np.pi * k / n)))
    return pts


_CROSS = [(-0.3, -0.94), (0.3, -0.94), (0.3, -0.3), (0.94, -0.3), (0.94, 0.3), (0.3, 0.3), (0.3, 0.94),
          (-0.3, 0.94), (-0.3, 0.3), (-0.94, 0.3), (-0.94, -0.3), (-0.3, -0.3)]
INSIDE = {
    "disc": lambda u, v: np.hypot(u, v) < 0.85,
    "square": lambda u, v: (np.abs(u) < 0.68) & (np.abs(v) < 0.68),
    "triangle": _polygon(_regular(3, 1.0)),
    "star": _polygon(_regular(5, 1.0, inner=0.45)),
    "cross": _polygon(_CROSS),
    "ring": lambda u, v: (np.hypot(u, v) > 0.4) & (np.hypot(u, v) < 0.9),
    "crescent": lambda u, v: (np.hypot(u, v) < 0.9) & (np.hypot(u - 0.4, v) > 0.75),
    "hexagon": _polygon(_regular(6, 0.95)),
}


def _sure_masks(params: S.ImageParams, side: int, margin: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Pixels surely inside / surely outside the shape: the pixel centre and 48 points on circles of
    ``margin`` and ``margin / 2`` px around it all inside / all outside, by the second implementation
    (dense enough that no star point or crescent tip passes between them)."""
    c = np.arange(side) + 0.5 - side / 2
    x, y = np.meshgrid(c, c)
    inside = INSIDE[S.SHAPES[params.shape]]
    offsets = [(0.0, 0.0)] + [(m * np.cos(a), m * np.sin(a)) for m, n in ((margin, 32), (margin / 2, 16))
                              for a in 2 * np.pi * np.arange(n) / n]
    results = []
    for ox, oy in offsets:
        px, py = x + ox, y + oy
        dx, dy = px - params.centre[0], py - params.centre[1]
        ca, sa = np.cos(params.angle), np.sin(params.angle)
        results.append(inside((ca * dx + sa * dy) / params.radius, (-sa * dx + ca * dy) / params.radius))
    stack = np.stack(results)
    return stack.all(0), ~stack.any(0)


def _quantised(colour: np.ndarray) -> np.ndarray:
    return np.floor(colour * 255 + 0.5)


def _interior_peak(image: np.ndarray, mask: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Radial frequency (cycles/px) of the strongest component of the grey image inside ``mask``
    (mean removed, zero outside, 512-point FFT); also the power spectrum and the radial frequencies."""
    grey = image.astype(np.float64).mean(-1) / 255
    g = np.where(mask, grey - grey[mask].mean(), 0.0)
    power = np.abs(np.fft.fft2(g, s=(512, 512))) ** 2
    f = np.fft.fftfreq(512)
    radial = np.hypot(*np.meshgrid(f, f))
    masked = np.where(radial < 0.05, 0.0, power)
    return float(radial.ravel()[np.argmax(masked)]), power, radial


# ------------------------------------------------------------------------------------------


def test_specs_parse_and_refuse_bad_input(tmp_path):
    spec = S.parse_spec("synthetic")
    assert (spec.split, spec.classes, spec.size, spec.seed, spec.num_images) == ("val", 8, 64, 0, 10_000)
    spec = S.parse_spec("synthetic:cue-conflict?classes=5&size=96&seed=7&n=123")
    assert (spec.split, spec.classes, spec.size, spec.seed, spec.num_images) == ("cue-conflict", 5, 96, 7, 123)
    assert spec.side == int(96 / 0.875) == 109
    assert spec.location == "synthetic:cue-conflict?classes=5&size=96&seed=7"
    for bad, words in [("synthetic:tran", "unknown split 'tran'"), ("synthetic:val?clases=4", "unknown option"),
                       ("synthetic:val?classes=1", "classes=1 is out of range"), ("synthetic:val?classes=17", "2..16"),
                       ("synthetic:val?size=8", "size=8"), ("synthetic:val?n=0", "n=0"),
                       ("synthetic:val?seed=-1", "not a non-negative integer"), ("synthetic:val?n=1e3", "1e3")]:
        with pytest.raises(UsageError, match=words) as info:
            resolve_source(bad)
        assert "\n" not in str(info.value)
    # an existing folder called "synthetic" is still a folder when written as a path
    folder = tmp_path / "synthetic"
    folder.mkdir()
    with pytest.raises(UsageError, match="no images found"):
        resolve_source(str(folder))


def test_texture_table_frequencies_are_distinct():
    freqs = [t.frequency for t in S.TEXTURES]
    assert len(set(freqs)) == 16 and len({t.name for t in S.TEXTURES}) == 16
    assert np.allclose(sorted(freqs), [0.075 * 4 ** (i / 15) for i in range(16)], atol=6e-5)
    assert max(freqs) < 0.5  # below Nyquist at every size
    for k in range(8):  # the same pattern twice: frequencies at least 1.5x apart
        low, high = sorted([S.TEXTURES[k].frequency, S.TEXTURES[k + 8].frequency])
        assert S.TEXTURES[k].pattern == S.TEXTURES[k + 8].pattern and high / low > 1.5


def test_source_is_balanced_and_labelled():
    for classes in (2, 8, 16):
        for split in S.SPLITS:
            n = classes * 25 + 3
            source = resolve_source(f"synthetic:{split}?classes={classes}&n={n}")
            spec = source.synthetic
            assert len(source) == n and source.kind == "synthetic" and source.label_space == "synthetic"
            counts = Counter(source.labels)
            assert sorted(counts) == list(range(classes)) and max(counts.values()) - min(counts.values()) <= 1
            assert list(source.labels) == [spec.label(i) for i in range(n)]
            assert [spec.index_of(p) for p in source.paths] == list(range(n))
            assert source.paths[7] == spec.path(7)
            if split == "cue-conflict":
                pairs = Counter((spec.shape_label(i), spec.texture_label(i)) for i in range(classes * (classes - 1)))
                # every (shape, texture) pair with texture != shape exactly once per K (K - 1) images
                assert set(pairs.values()) == {1} and all(s != t for s, t in pairs)
                assert len(pairs) == classes * (classes - 1)
            if split == "shape-only":
                assert spec.texture_label(5) is None and spec.shape_label(5) == 5 % classes
            if split == "texture-only":
                assert spec.shape_label(5) is None and spec.texture_label(5) == 5 % classes
    # take(n) after the spread by class keeps the index order (labels already cycle)
    source = resolve_source("synthetic:train")
    taken = source.take(20, spread_classes=True)
    assert [source.synthetic.index_of(p) for p in taken.paths] == list(range(20))
    assert "10000 images, 8 classes" in source.describe()


@pytest.mark.parametrize("text,index,digest", HASHES)
def test_images_are_deterministic(text, index, digest):
    spec = S.parse_spec(text)
    image = spec.render(index)
    assert image.dtype == np.uint8 and image.shape == (spec.side, spec.side, 3)
    assert _digest(image) == digest
    assert _digest(S.parse_spec(text).render(index)) == digest  # a fresh spec, same pixels
    assert np.array_equal(np.asarray(spec.image(index)), image)


def test_train_and_val_are_disjoint_and_seeds_differ():
    train = S.parse_spec("synthetic:train")
    val = S.parse_spec("synthetic:val")
    other_seed = S.parse_spec("synthetic:train?seed=1")
    n = 240
    train_hashes = {_digest(train.render(i)) for i in range(n)}
    assert len(train_hashes) == n
    assert train_hashes.isdisjoint(_digest(val.render(i)) for i in range(n))
    assert train_hashes.isdisjoint(_digest(other_seed.render(i)) for i in range(n))
    p, q = train.params(3), val.params(3)
    assert p.shape == q.shape == 3 and p.texture == q.texture == 3
    assert (p.centre, p.radius, p.angle) != (q.centre, q.radius, q.angle)


def test_cue_conflict_images_carry_the_stated_shape_and_texture():
    spec = S.parse_spec("synthetic:cue-conflict")
    checked_textures = 0
    for i in range(48):
        p = spec.params(i)
        shape, texture = spec.shape_label(i), spec.texture_label(i)
        assert (p.shape, p.texture) == (shape, texture) and shape != texture
        # the file name names both: <shape>/<shape><i>-<texture class><i>.png
        assert parse_name(spec.relpath(i)) == (S.SHAPES[shape], S.SHAPES[texture])
        image = spec.render(i).astype(np.float64)
        inside, outside = _sure_masks(p, spec.side)
        assert inside.sum() > 100 and outside.sum() > 1000
        background = _quantised(p.background)
        # outside the shape: exactly the plain background; inside: painted (never the background)
        assert np.array_equal(image[outside], np.broadcast_to(background, image[outside].shape))
        assert (np.abs(image[inside] - background).max(-1) > 10).all()
        # inside, the colours are blends of the texture colours a, b: on the segment a-b
        a, b = _quantised(p.colour_a), _quantised(p.colour_b)
        t = ((image[inside] - a) @ (b - a)) / ((b - a) @ (b - a))
        assert np.abs(a + t[:, None] * (b - a) - image[inside]).max() <= 2.0
        # the texture: the strongest frequency inside a compact shape is texture j's, not shape i's
        if S.SHAPES[shape] in ("disc", "square", "hexagon"):
            peak, _, _ = _interior_peak(spec.render(i), inside)
            f_tex, f_shape = S.TEXTURES[texture].frequency, S.TEXTURES[shape].frequency
            nearest_other = min(abs(peak - t.frequency) for k, t in enumerate(S.TEXTURES[:8]) if k != texture)
            assert abs(peak - f_tex) < 0.1 * f_tex and abs(peak - f_tex) < nearest_other, (i, peak, f_tex, f_shape)
            checked_textures += 1
    assert checked_textures == 18


def test_texture_only_images_peak_at_their_frequency():
    spec = S.parse_spec("synthetic:texture-only?classes=16")
    window = np.outer(*[np.hanning(spec.side)] * 2)
    for i in range(32):  # two images of each of the 16 textures, Hann-windowed
        f = S.TEXTURES[spec.texture_label(i)].frequency
        grey = spec.render(i).astype(np.float64).mean(-1)
        power = np.abs(np.fft.fft2((grey - grey.mean()) * window, s=(512, 512))) ** 2
        radial = np.hypot(*np.meshgrid(np.fft.fftfreq(512), np.fft.fftfreq(512)))
        power[radial < 0.05] = 0
        peak = radial.ravel()[np.argmax(power)]
        assert abs(peak - f) < 0.1 * f, (i, S.TEXTURES[spec.texture_label(i)], peak)


def test_shape_only_images_hold_no_texture_energy():
    shapes = S.parse_spec("synthetic:shape-only")
    train = S.parse_spec("synthetic:train")
    for i in range(24):
        f = S.TEXTURES[i % 8].frequency
        for spec in (shapes, train):
            p = spec.params(i)
            inside, _ = _sure_masks(p, spec.side)
            image = spec.render(i)
            _, power, radial = _interior_peak(image, inside)
            band = (radial > 0.85 * f) & (radial < 1.15 * f)
            if spec is shapes:
                # a plain colour inside: no power at any texture frequency (exactly none)
                assert np.ptp(image[inside], axis=0).max() == 0
                assert power[band].max() < 1e-18
                # and the whole image is the background, the fill, or an antialiased blend of the two
                bg, fill = _quantised(p.background), _quantised(p.fill)
                pixels = image.reshape(-1, 3).astype(np.float64)
                t = np.clip(((pixels - bg) @ (fill - bg)) / ((fill - bg) @ (fill - bg)), 0, 1)
                assert np.abs(bg + t[:, None] * (fill - bg) - pixels).max() <= 1.5  # three roundings of 0.5
            else:  # the same classes with their texture: the band holds a large share of the power
                assert power[band].sum() > 0.2 * power[radial > 0.05].sum()


def test_loader_renders_labelled_batches():
    source = resolve_source("synthetic:val")
    loader = make_loader(source, batch_size=6, num_images=16, transform=eval_transform(64), spread_classes=True)
    batches = list(loader)
    images = torch.cat([b.images for b in batches])
    labels = torch.cat([b.labels for b in batches])
    assert images.shape == (16, 3, 64, 64) and loader.skip_summary() == "all 16 images read"
    assert labels.tolist() == [i % 8 for i in range(16)]
    spec = source.synthetic
    for i in (0, 9, 15):  # rendered at 73 px; the eval transform crops the centre 64 without resampling
        expected = torch.from_numpy(spec.render(i)[4:68, 4:68]).permute(2, 0, 1).float() / 255
        assert torch.equal(images[i], expected)


def test_image_list_restricts_a_synthetic_source(tmp_path):
    source = resolve_source("synthetic:val?classes=4&n=40")
    ids = tmp_path / "ids.txt"
    ids.write_text("03-star/000007.png\n00-disc/000000.png\n")
    restricted = source.restrict(ids)
    assert [source.synthetic.index_of(p) for p in restricted.paths] == [7, 0]
    assert restricted.labels == (3, 0)


def test_export_round_trip(tmp_path):
    out = tmp_path / "val"
    written = S.export_imagefolder("val", out, num_images=12, seed=2, classes=4, size=64)
    assert len(written) == 12 and (out / "synthetic.json").is_file()
    exported = resolve_source(str(out))
    live = resolve_source("synthetic:val?classes=4&seed=2&n=12")
    spec = live.synthetic
    assert exported.kind == "imagefolder" and exported.class_names == live.class_names
    # the same relative paths with the same labels (ImageFolder: sorted folder rank)
    relative = [Path(p).relative_to(out).as_posix() for p in exported.paths]
    assert dict(zip(relative, exported.labels)) == {spec.relpath(i): spec.label(i) for i in range(12)}
    # and the same pixels, through the same loader
    transform = eval_transform(64)
    (from_disk,) = list(make_loader(exported, batch_size=12, transform=transform))
    (rendered,) = list(make_loader(live, batch_size=12, transform=transform))
    order = [relative.index(spec.relpath(i)) for i in range(12)]
    assert torch.equal(from_disk.images[order], rendered.images)
    assert np.array_equal(np.asarray(Image.open(written[5])), spec.render(5))
    with pytest.raises(UsageError, match="not an empty folder"):
        S.export_imagefolder("val", out, num_images=2)


def test_cue_conflict_export_uses_the_probe_layout(tmp_path):
    written = S.export_imagefolder("cue-conflict", tmp_path / "cc", num_images=8, classes=3)
    assert written[0].relative_to(tmp_path / "cc").as_posix() == "disc/disc000000-square000000.png"
    source = resolve_source(str(tmp_path / "cc"))
    assert is_cue_conflict_source(source)
    live = resolve_source("synthetic:cue-conflict?classes=3&n=8")
    assert is_cue_conflict_source(live)
    for path in written:
        shape, texture = parse_name(path.name)
        index = live.synthetic.index_of(path.name)
        assert (shape, texture) == (S.SHAPES[live.synthetic.shape_label(index)],
                                    S.SHAPES[live.synthetic.texture_label(index)])

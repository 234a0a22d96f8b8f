"""Invariance: tensor views equal PIL's pipeline (resize, crops, rotate), the translation modes,
shift consistency, seeded draws, exact shift invariance of pooled models, interior equivariance
of a convolutional net, a real model end to end."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from torch import nn

from stm_probe.data import ShortSideResize, default_data_dir, make_loader, resize_size
from stm_probe.core.invariance import (
    DIRECTIONS,
    KINDS,
    METRIC_STATISTICS,
    ImageBatch,
    SweepPlan,
    Views,
    default_levels,
    draw_circular_shifts,
    draw_crop_offsets,
    draw_directions,
    group_images,
    measure_batch,
    pad_images,
    run_sweep,
    summarise,
)
from stm_probe.models import create_model
from stm_probe.models.features import Normalized
from stm_probe.core.seeds import per_image_integers, stream_id

S = 64  # input size of the sweeps on toy models
BIC = T.InterpolationMode.BICUBIC


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These sweeps are many small tensor ops: on a busy 2-core machine a second intra-op thread
    mostly waits for the scheduler (10x slower here), so this module runs on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class PooledConv(nn.Module):
    """conv1x1 features [+ absolute position embedding], pooled over pixels, then Linear.

    pool="mean": global average pool; pool="attention": softmax attention pooling with a learned
    query (a one-token transformer readout). Without the embedding every operation is per pixel or
    symmetric in the pixels, so a circular shift of the input permutes the feature map and leaves
    the logits unchanged.
    """

    def __init__(self, position_embedding: bool = False, pool: str = "mean", size: int = S, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 1)
        self.query = nn.Parameter(torch.randn(32) * 2)
        self.head = nn.Linear(32, classes)
        self.pool = pool
        # smooth, strong embedding (a 4x4 random pattern upsampled): features depend on where content is
        pattern = F.interpolate(torch.randn(1, 32, 4, 4) * 3, size=(size, size), mode="bilinear")
        self.pos = nn.Parameter(pattern) if position_embedding else None
        self.feature_info = [dict(num_chs=32, reduction=1, module="conv")]
        self.pretrained_cfg = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if self.pos is None else y + self.pos

    def forward_intermediates(self, x, indices, intermediates_only=True, output_fmt="NCHW"):
        return [self.features(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.features(x).flatten(2)  # (B, C, HW)
        if self.pool == "mean":
            return self.head(tokens.mean(-1))
        attention = torch.einsum("bcn,c->bn", tokens, self.query).softmax(-1)
        return self.head(torch.einsum("bcn,bn->bc", tokens, attention))


class ConvStages(nn.Module):
    """Two stages of stacked 3x3 convolutions with zero padding: stage 1 (stride 1) two convs,
    stage 2 (stride 2) a strided conv and a conv. A cell sees 2 px (stage 1) and 3 cells = 6 px
    (stage 2) to each side, so the 8 px interior margin covers every border and seam effect."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.stage2 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, 10)
        self.feature_info = [dict(num_chs=8, reduction=1, module="stage1"),
                             dict(num_chs=8, reduction=2, module="stage2")]
        self.pretrained_cfg = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    def forward_intermediates(self, x, indices, intermediates_only=True, output_fmt="NCHW"):
        first = self.stage1(x)
        maps = [first, self.stage2(first)]
        return [maps[i] for i in indices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.stage1(x)).mean((-2, -1)))


def _batches(plan: SweepPlan, batch_size: int = 16, num_images: int = 16) -> list:
    """The bundled images decoded as the probe does, grouped into batches."""
    short, max_short = plan.base_short_sides()
    loader = make_loader(None, batch_size=1, num_images=num_images, transform=ShortSideResize(short, max_short))
    return list(group_images(loader, batch_size, torch.device("cpu")))


def _image_batch(images: list[Image.Image], short: int, max_short: int) -> ImageBatch:
    """PIL images decoded like the loader does (`ShortSideResize`), on one canvas."""
    pixels, sizes = pad_images([ShortSideResize(short, max_short)(im) for im in images])
    n = len(images)
    return ImageBatch(pixels, sizes, torch.full((n,), -1), torch.arange(n))


def _sweep(model: nn.Module, kinds: tuple[str, ...], batch_size: int = 16, **plan_options):
    plan = SweepPlan(kinds, {k: tuple(default_levels(k, S)) for k in kinds}, S, seed=0, **plan_options)
    return plan, run_sweep(Normalized(model).eval(), plan, _batches(plan, batch_size))


def _smooth_image(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like test image: random 8-bit noise on a coarse grid, bicubic-upsampled."""
    coarse = np.random.default_rng(seed).integers(0, 256, size=(max(height // 8, 2), max(width // 8, 2), 3))
    return Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BICUBIC)


def _tensor(img: Image.Image) -> torch.Tensor:
    return T.ToTensor()(img)


# --- exact (circular-shift) invariance and equivariance ---------------------------------------
@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_pooled_model_is_exactly_circular_shift_invariant(pool: str) -> None:
    plan, result = _sweep(PooledConv(pool=pool), ("circular-shift", "equivariance"), interior_margin=8)
    for level in plan.levels["circular-shift"]:  # 4, 8, 16, 32 px
        assert (result.stacked(("circular-shift", level, "consistency")) == 100).all()
        assert np.abs(result.stacked(("circular-shift", level, "kl"))).max() < 1e-10
    for level in plan.levels["equivariance"]:
        for metric in ("rel_error_stage1", "rel_error_interior_stage1"):
            errors = result.stacked(("equivariance", level, metric))
            assert errors.shape == (16,) and errors.max() < 1e-6  # 0 up to float32 rounding


def test_position_embedding_breaks_shift_invariance() -> None:
    """The same attention-pooled model plus an absolute position embedding (as PVT and ViTs have)."""
    plan, result = _sweep(PooledConv(position_embedding=True, pool="attention"), ("circular-shift", "equivariance"),
                          interior_margin=8)
    assert result.stacked(("circular-shift", 32.0, "consistency")).mean() < 90
    assert result.stacked(("circular-shift", 32.0, "kl")).mean() > 1e-3
    for level in plan.levels["equivariance"]:
        assert result.stacked(("equivariance", level, "rel_error_stage1")).min() > 0.05
        assert result.stacked(("equivariance", level, "rel_error_interior_stage1")).min() > 0.05


def test_zero_padded_convolutions_are_equivariant_in_the_interior() -> None:
    """Stacked 3x3 convolutions commute with a circular shift except within their reach of the
    map borders and of the wrap seam: the interior error is 0, the whole-map error is not."""
    torch.manual_seed(0)
    plan, result = _sweep(ConvStages(), ("equivariance",), interior_margin=8)
    for level in plan.levels["equivariance"]:  # 4, 8, 16, 32 px: multiples of both strides
        for stage in (1, 2):
            whole = result.stacked(("equivariance", level, f"rel_error_stage{stage}"))
            interior = result.stacked(("equivariance", level, f"rel_error_interior_stage{stage}"))
            assert interior.max() < 1e-6, (level, stage)
            assert whole.min() > 1e-3, (level, stage)


# --- tensor views vs the PIL pipeline of the protocol (docs/protocols.md §5) ---------------------
R = resize_size(224)


def pil_translation(img: Image.Image, s: int, d: tuple[int, int], mode: str) -> torch.Tensor:
    """Short side 256, the centre crop window moved by d * s; official: clipped to the image and
    padded back on both sides (the original script's crop); pure: black outside the image."""
    x = _tensor(T.Resize(R, BIC)(img))
    h, w = x.shape[-2:]
    top, left = int(round((h - 224) / 2)) + d[0] * s, int(round((w - 224) / 2)) + d[1] * s
    if mode == "official":
        crop = x[:, max(top, 0):min(top + 224, h), max(left, 0):min(left + 224, w)]
        ph, pw = 224 - crop.shape[1], 224 - crop.shape[2]
        return F.pad(crop, (pw // 2, (pw + 1) // 2, ph // 2, (ph + 1) // 2))
    big = F.pad(x, (448, 448, 448, 448))
    return big[:, 448 + top:448 + top + 224, 448 + left:448 + left + 224]


def pil_rotation(img: Image.Image, angle: float, pre: bool) -> torch.Tensor:
    resized = T.Resize(R, BIC)(img)
    if pre:
        return _tensor(T.CenterCrop(224)(resized.rotate(angle, resample=Image.BICUBIC)))
    return _tensor(T.CenterCrop(224)(resized).rotate(angle, resample=Image.BICUBIC))


def pil_scale(img: Image.Image, ratio: float) -> torch.Tensor:
    return T.Compose([T.Resize(int(224 / ratio), BIC), T.CenterCrop(224), T.ToTensor()])(img)


def pil_standard(img: Image.Image, size: int = 224) -> torch.Tensor:
    return T.Compose([T.Resize(resize_size(size), BIC), T.CenterCrop(size), T.ToTensor()])(img)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    paths = sorted(p for p in default_data_dir().iterdir() if p.suffix == ".jpg")
    return [Image.open(p).convert("RGB") for p in paths[:8]]  # square, landscape and portrait (as _batches reads)


def _views(photos: list[Image.Image], base: str) -> Views:
    """Views at 224 of the photos decoded at short side 256 ("resized") or at native size ("native")."""
    short = R
    max_short = SweepPlan(("scale",), {}, 224).base_short_sides()[1] if base == "native" else R
    return Views(_image_batch(photos, short, max_short), 224)


def _max_diff(ours: torch.Tensor, reference: list[torch.Tensor]) -> float:
    return float((ours - torch.stack(reference)).abs().max())


@pytest.mark.parametrize("base", ["resized", "native"])
def test_tensor_views_equal_pil_pipeline(photos: list[Image.Image], base: str) -> None:
    """Every view equals torchvision/PIL on the same photo bit for bit, whether the base was decoded
    at short side 256 or kept at its native size (our resize reproduces PIL's fixed-point one)."""
    views = _views(photos, base)
    assert _max_diff(views.standard, [pil_standard(im) for im in photos]) == 0
    directions = DIRECTIONS[torch.arange(len(photos)) % 8]  # all 8 directions
    for mode in ("official", "pure"):
        for s in (0, 8, 24, 64):  # 24 and 64 leave the 256 side: clipped crops
            ours = views.translation(s, directions, mode)
            ref = [pil_translation(im, s, tuple(d.tolist()), mode) for im, d in zip(photos, directions)]
            assert _max_diff(ours, ref) == 0, (mode, s)
    for angle in (5, 45, 90):
        assert _max_diff(views.pre_rotation(angle), [pil_rotation(im, angle, True) for im in photos]) == 0, angle
        assert _max_diff(views.post_rotation(angle), [pil_rotation(im, angle, False) for im in photos]) == 0, angle
    if base == "native":
        for ratio in default_levels("scale")[::4]:  # 0.2 (short side 1120) ... 1.7 (padded)
            assert _max_diff(views.scale(ratio), [pil_scale(im, ratio) for im in photos]) == 0, ratio
        assert torch.equal(views.scale(0.875), views.standard)


def _grid_sample_rotation(pixels: torch.Tensor, angle: float) -> torch.Tensor:
    """torch's bicubic rotation (a = -0.75, zero padding) of square images about their centre."""
    theta = torch.tensor(np.radians(angle))
    cos, sin = float(torch.cos(theta)), float(torch.sin(theta))
    affine = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]]).expand(pixels.shape[0], 2, 3)
    grid = F.affine_grid(affine, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bicubic", padding_mode="zeros", align_corners=False).clamp(0, 1)


def test_rotation_uses_pils_kernel_not_grid_samples(photos: list[Image.Image]) -> None:
    """``Image.rotate(BICUBIC)`` interpolates with the cubic kernel a = -1 (its affine transform)
    and truncates to 8 bits; grid_sample uses a = -0.75. On interior pixels ours matches PIL to
    1/255; grid_sample, truncated the same way, is off by more than 1/255 on many pixels."""
    views = _views(photos[:4], "resized")
    for angle in (10, 33):
        reference = torch.stack([_tensor(T.CenterCrop(224)(T.Resize(R, BIC)(im)).rotate(angle, resample=Image.BICUBIC))
                                 for im in photos[:4]])
        ours = (views.post_rotation(angle) - reference).abs()[..., 40:-40, 40:-40]  # interior, inside every image
        grid_sample = torch.floor(_grid_sample_rotation(views.standard, angle) * 255 + 1e-4) / 255
        theirs = (grid_sample - reference).abs()[..., 40:-40, 40:-40]
        assert float(ours.max()) <= 1 / 255 + 1e-7 and float(ours.mean()) < 1e-4, angle
        assert float((theirs > 1.5 / 255).float().mean()) > 0.05 and float(theirs.max()) > 5 / 255, angle


def test_official_translation_starts_from_the_centre_crop(photos: list[Image.Image]) -> None:
    """Where the resized long side L is 3 mod 4, the original's window start L//2 - S//2 is one px
    off CenterCrop's round((L - S) / 2); level 0 is the standard view in both modes."""
    cases = {224: [_smooth_image(640, 427, 0), _smooth_image(500, 334, 1), _smooth_image(334, 500, 2)],
             64: [_smooth_image(320, 210, 3), _smooth_image(210, 320, 4), _smooth_image(291, 191, 5)]}
    for size, images in cases.items():
        short = resize_size(size)
        for im in images:
            long = int(short * max(im.size) / min(im.size))
            assert long % 4 == 3 and long // 2 - size // 2 != round((long - size) / 2)  # the case of the bug
        views = Views(_image_batch(images, *SweepPlan(("translation",), {}, size).base_short_sides()), size)
        assert torch.equal(views.standard, torch.stack([pil_standard(im, size) for im in images]))
        directions = DIRECTIONS[torch.arange(len(images))]
        for mode in ("pure", "official"):
            assert torch.equal(views.translation(0, directions, mode), views.standard), (size, mode)

    # content moves by exactly s (pure) or by 8 + s/2 once the window leaves a 256 px side (official)
    views = _views(photos[:1], "resized")  # astronaut: 320 x 320 -> 256 x 256
    assert tuple(views.resized_sizes[0].tolist()) == (256, 256)
    right = DIRECTIONS[1:2]
    standard = views.standard[0]
    for s in (8, 16):
        assert torch.equal(views.translation(s, right, "pure")[0][..., :224 - s], standard[..., s:])
        assert torch.equal(views.translation(s, right, "official")[0], views.translation(s, right, "pure")[0])
    pure, official = views.translation(32, right, "pure")[0], views.translation(32, right, "official")[0]
    assert torch.equal(pure[..., :192], standard[..., 32:]) and (pure[..., 208:] == 0).all()
    assert torch.equal(official[..., 8:200], standard[..., 32:]) and (official[..., :8] == 0).all()
    assert SweepPlan(("translation",), {}, 224).translation_mode == "pure"


def test_shift_consistency_crops_equal_pil_and_antialiased_cnns(photos: list[Image.Image]) -> None:
    """Resize(256) + CenterCrop(256), then 224 crops at offsets in [0, 32)^2 (Zhang 2019's validation)."""
    assert default_levels("shift-consistency", 224) == [32.0] and default_levels("shift-consistency", 64) == [9.0]
    views = _views(photos, "resized")
    squares = [T.CenterCrop(R)(T.Resize(R, BIC)(im)) for im in photos]
    offsets = draw_crop_offsets(0, torch.arange(len(photos)), 32.0)[:, 0]
    offsets[0], offsets[1] = torch.tensor([0, 0]), torch.tensor([32, 32])  # both ends of the square
    reference = [_tensor(sq.crop((int(x), int(y), int(x) + 224, int(y) + 224))) for sq, (y, x) in zip(squares, offsets)]
    assert _max_diff(views.shift_crop(offsets), reference) == 0
    big = draw_crop_offsets(0, torch.arange(2000), 32.0)
    assert big.min() == 0 and big.max() == 31  # np.random.randint(32)
    assert (draw_crop_offsets(0, torch.arange(50), 0.0) == 0).all()

    plan = SweepPlan(("shift-consistency",), {"shift-consistency": (0.0, 9.0)}, S)
    values = measure_batch(Normalized(PooledConv(position_embedding=True)).eval(), plan, Views(_batches(plan)[0], S))
    assert (values[("shift-consistency", 0.0, "consistency")] == 100).all()  # level 0: the same crop twice
    assert np.abs(values[("shift-consistency", 0.0, "kl")]).max() < 1e-12
    assert values[("shift-consistency", 9.0, "kl")].max() > 1e-6


def test_standard_view_is_the_same_whichever_kinds_run() -> None:
    """One pipeline: the standard view of a plan with scale (base kept at native size) equals that
    of a plan without, and both equal the standard view of a base decoded by PIL at 256."""
    images = [_smooth_image(640, 427, 0), _smooth_image(427, 640, 1), Image.open(default_data_dir() / "coffee.jpg")]
    images = [im.convert("RGB") for im in images]
    standards = []
    for kinds, levels in ((("translation",), {}), (("scale", "translation"), {}),
                          (("scale", "translation"), {"scale": (0.1, 1.0)})):
        plan = SweepPlan(kinds, levels, 224)
        batch = _image_batch(images, *plan.base_short_sides())
        assert tuple(batch.sizes[0].tolist()) == (427, 640)  # native base
        standards.append(Views(batch, 224).standard)
    standards.append(Views(_image_batch(images, R, R), 224).standard)  # base already at 256
    standards.append(torch.stack([pil_standard(im) for im in images]))
    assert all(torch.equal(standards[0], other) for other in standards[1:])


# --- seeded draws ------------------------------------------------------------------------------
def test_draws_follow_the_seed_scheme_per_image() -> None:
    indices = torch.arange(40)
    table = draw_directions(0, indices, "translation", 8.0)
    stream = stream_id(0, "invariance", "translation", 8.0, 0)
    assert torch.equal(table, torch.from_numpy(per_image_integers(stream, indices, 0, 7)[:, 0]))
    # image i's draw does not depend on the other images of its batch
    assert torch.equal(draw_directions(0, torch.tensor([7, 3, 30]), "translation", 8.0), table[[7, 3, 30]])
    for other in (draw_directions(1, indices, "translation", 8.0), draw_directions(0, indices, "translation", 12.0),
                  draw_directions(0, indices, "equivariance", 8.0), draw_directions(0, indices, "translation", 8.0, 1)):
        assert not torch.equal(table, other)
    counts = np.bincount(draw_directions(0, torch.arange(4000), "translation", 4.0).numpy(), minlength=8)
    assert counts.min() > 400  # ~uniform over all 8 directions: 500 expected each
    shifts = draw_circular_shifts(0, torch.arange(2000), 8.0)
    assert shifts.shape == (2000, 2, 2) and shifts.min() == -8 and shifts.max() == 8


def test_every_model_sees_the_same_views_whatever_the_batching() -> None:
    class Recorder(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.seen = inner, []
            self.feature_info, self.pretrained_cfg = inner.feature_info, inner.pretrained_cfg

        def forward_intermediates(self, x, *args, **kwargs):
            self.seen.append(x.clone())
            return self.inner.forward_intermediates(x, *args, **kwargs)

        def forward(self, x):
            self.seen.append(x.clone())
            return self.inner(x)

    kinds = ("translation", "shift-consistency", "circular-shift", "equivariance")
    first, second = Recorder(PooledConv()), Recorder(PooledConv(position_embedding=True))
    _, result_a = _sweep(first, kinds)
    _sweep(second, kinds)
    assert len(first.seen) == len(second.seen) > 20
    assert all(torch.equal(a, b) for a, b in zip(first.seen, second.seen))
    # the draws follow the image, not its batch or the other levels: same per-image values
    _, result_b = _sweep(first.inner, kinds, batch_size=5)
    for key in result_a.values:
        np.testing.assert_allclose(result_a.stacked(key), result_b.stacked(key), rtol=1e-5, atol=1e-6)
    plan = SweepPlan(("translation",), {"translation": (8.0,)}, S)
    alone = run_sweep(Normalized(first.inner).eval(), plan, _batches(plan, 3))
    np.testing.assert_allclose(alone.stacked(("translation", 8.0, "kl")), result_a.stacked(("translation", 8.0, "kl")),
                               rtol=1e-5, atol=1e-7)
    assert {key[2] for key in result_a.values} <= set(METRIC_STATISTICS)
    assert {m: METRIC_STATISTICS[m] for m in ("top1", "consistency", "kl", "rel_error_interior_stage2")} == {
        "top1": "rate", "consistency": "rate", "kl": "mean", "rel_error_interior_stage2": "mean"}


# --- a real model end to end ------------------------------------------------------------------
def test_sweep_of_a_real_model_end_to_end() -> None:
    """Every kind on a random-init ConvNeXt at 64 px over 3 bundled photos, summarised."""
    torch.manual_seed(0)
    net = Normalized(create_model("unified_convnext_micro")).eval()
    plan = SweepPlan(KINDS, {"scale": (*default_levels("scale"), 0.875)}, S, seed=0)
    result = run_sweep(net, plan, _batches(plan, batch_size=2, num_images=3))
    rows = pd.DataFrame(summarise(result, n_boot=50))
    assert set(rows["kind"]) == set(KINDS) and (rows["n_images"] == 3).all()
    assert not {"top1", "top5"} & set(rows["metric"])  # unlabelled sample images: no accuracy rows
    counts = rows.groupby("kind")["level"].nunique()
    assert counts["translation"] == 17 and counts["pre-rotation"] == 19 and counts["scale"] == 16
    assert rows[rows["metric"] == "consistency"]["value"].between(0, 100).all()
    assert ((rows["ci_low"] <= rows["value"] + 1e-9) & (rows["value"] <= rows["ci_high"] + 1e-9)).all()
    for kind in ("translation", "pre-rotation", "post-rotation"):  # level 0 is the standard view
        zero = rows[(rows["kind"] == kind) & (rows["level"] == 0)].set_index("metric")["value"]
        assert zero["consistency"] == 100 and abs(zero["kl"]) < 1e-6
    scale = rows[(rows["kind"] == "scale") & (rows["level"] == 0.875)].set_index("metric")["value"]
    assert scale["consistency"] == 100 and abs(scale["kl"]) < 1e-6  # crop ratio 0.875 is the standard view
    equivariance = rows[rows["kind"] == "equivariance"]
    assert set(equivariance["metric"]) == {f"rel_error_stage{k}" for k in range(1, 5)}  # maps too small for interiors
    assert (equivariance["value"] > 0).all()  # zero-padded convolutions are not circular-shift equivariant

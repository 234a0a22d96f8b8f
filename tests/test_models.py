"""The 20 unified models against the original's reference manifest, and the registry."""
from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch

import stm_probe
from stm_probe.errors import UsageError
from stm_probe.models import UNIFIED_MODELS, build_unified, create_model, expand_model_patterns, resolve_name
from stm_probe.models.features import Normalized, stage_outputs
from stm_probe.models.complexity import count_gmacs, count_parameters
from stm_probe.models.facts import MODEL_FACTS


def _meta_model(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return build_unified(name)


@pytest.mark.parametrize("name", UNIFIED_MODELS)
def test_state_dict_matches_original(name: str, manifest: dict) -> None:
    """Keys (order-independent), shapes and dtypes equal the original's; parameter count too."""
    ref = manifest[name]
    model = _meta_model(name)
    ours = {k: (list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
    theirs = {row[0]: (row[1], row[2]) for row in ref["state_dict"]}
    assert sorted(set(ours) - set(theirs)) == []
    assert sorted(set(theirs) - set(ours)) == []
    assert {k: v for k, v in ours.items() if v != theirs[k]} == {}
    assert count_parameters(model) == ref["param_count"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n.endswith("_micro") else pytest.mark.slow)
                                  for n in UNIFIED_MODELS])  # the quick tier counts the micro models
def test_static_facts_match_built_models(name: str, manifest: dict) -> None:
    """The table's static facts equal counts on the model built on the meta device, and the reference."""
    model = _meta_model(name)
    facts = MODEL_FACTS[name]
    assert facts.params == count_parameters(model) == manifest[name]["param_count"]
    assert facts.gmacs_224 == pytest.approx(count_gmacs(model), abs=5e-5)
    assert facts.gmacs_224 == pytest.approx(manifest[name]["gmacs_224"], abs=5e-5)


@pytest.mark.parametrize("name", ["unified_halo_micro", "unified_pvt_micro", "unified_swin_micro",
                                  "unified_convnext_micro", "unified_dcn_v3_micro"])
def test_gmacs_and_norms_match_original(name: str, manifest: dict) -> None:
    ref = manifest[name]
    model = _meta_model(name)
    assert count_gmacs(model) == pytest.approx(ref["gmacs_224"], rel=0.01)
    counts: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            key = f"{'LayerNorm2d' if type(m).__name__ == 'LayerNorm2d' else 'LayerNorm'}(eps={m.eps:g})"
        elif isinstance(m, torch.nn.GELU):
            key = f"GELU(approximate={m.approximate})"
        elif isinstance(m, torch.nn.BatchNorm2d):
            key = f"BatchNorm2d(eps={m.eps:g}, momentum={m.momentum})"
        else:
            continue
        counts[key] = counts.get(key, 0) + 1
    expected = {k.replace("1e-06", "1e-06").replace("1e-05", "1e-05"): v for k, v in ref["norms_and_activations"].items()}
    assert counts == expected


@pytest.mark.parametrize("name", ["unified_halo_micro", "unified_pvt_micro", "unified_swin_micro",
                                  "unified_convnext_micro", "unified_dcn_v3_micro"])
def test_micro_forward_and_stages(name: str, manifest: dict) -> None:
    """Finite logits at 224 and at a non-square multiple of 32; stage shapes as the original's."""
    model = create_model(name).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = model(x)
        stages = stage_outputs(model, x, [0, 1, 2, 3])
        wide = model(torch.randn(1, 3, 96, 160))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    assert wide.shape == (1, 1000) and torch.isfinite(wide).all()
    assert [list(s.shape) for s in stages] == [manifest[name]["stage_shapes_224"][f"stage{i}"] for i in range(4)]
    # the logits are the head applied to the last stage output
    with torch.no_grad():
        assert torch.allclose(model.forward_head(stages[-1]), logits, atol=1e-5)


def test_aliases_resolve() -> None:
    assert resolve_name("unified_tiny_attn").name == "unified_pvt_tiny"
    assert resolve_name("unified_halonet_tiny").name == "unified_halo_tiny"
    assert resolve_name("unified_internimage_base").name == "unified_dcn_v3_base"
    for short, full in [("halo", "halo"), ("swin", "swin"), ("window", "swin"), ("conv", "convnext"),
                        ("dwconv", "convnext"), ("convnext", "convnext"), ("dcn", "dcn_v3"), ("dcnv3", "dcn_v3")]:
        assert resolve_name(f"unified_small_{short}").name == f"unified_{full}_small"
    assert expand_model_patterns(["unified_*_micro"]) == [f"unified_{s}_micro" for s in
                                                          ("halo", "pvt", "swin", "convnext", "dcn_v3")]
    assert expand_model_patterns(["unified_tiny_attn", "unified_pvt_tiny"]) == ["unified_pvt_tiny"]


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UsageError, match="unified_swin_tiny"):
        resolve_name("unified_swim_tiny")


def test_timm_registry_and_timm_models() -> None:
    assert stm_probe.UNIFIED_MODELS == UNIFIED_MODELS
    model = timm.create_model("unified_convnext_micro", num_classes=10)
    assert model.head.out_features == 10
    assert model.pretrained_cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN
    resnet = create_model("resnet18", num_classes=7).eval()
    x = torch.rand(1, 3, 64, 64)
    feats = Normalized(resnet).stages(x, [0, 1, 2, 3])
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512]
    assert resnet.stm_probe_spec.stm == "timm" and resnet.stm_probe_weights == {"weights": "random-init"}


def test_normalized_wrapper_applies_imagenet_stats() -> None:
    model = create_model("unified_convnext_micro").eval()
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor(timm.data.IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(timm.data.IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(Normalized(model)(x), model((x - mean) / std), atol=1e-6)


# --- the model table ---------------------------------------------------------------------------
def test_model_table_static_rows_filter_and_format(manifest: dict) -> None:
    from stm_probe.models.summary import format_table, model_table

    rows = model_table()
    assert [r["name"] for r in rows] == list(UNIFIED_MODELS) == list(manifest)
    assert all((r["stm"], r["size"], r["params"]) == (manifest[r["name"]]["family"], manifest[r["name"]]["size"],
                                                       manifest[r["name"]]["param_count"]) for r in rows)
    tiny = model_table(["unified_*_tiny", "unified_tiny_attn", "unified_micro_conv"])
    assert [r["name"] for r in tiny] == ["unified_halo_tiny", "unified_pvt_tiny", "unified_swin_tiny",
                                         "unified_convnext_micro", "unified_convnext_tiny", "unified_dcn_v3_tiny"]
    assert "unified_tiny_attn" in tiny[1]["aliases"].split()
    text = format_table(tiny).splitlines()
    assert len(text) == 7 and text[0].split() == ["model", "STM", "size", "params", "GMACs@224", "top-1", "(paper)",
                                                  "aliases"]
    assert text[2].split()[:6] == ["unified_pvt_tiny", "pvt", "tiny", "31,157,736", "4.7078", "82.1"]
    assert tiny[5]["published_top1"] == 83.3  # the paper's InternImage-style tiny (Table of ImageNet-1k top-1)


def test_model_table_build_recounts_the_facts() -> None:
    from stm_probe.models.summary import model_table

    pattern = ["unified_*_micro"]
    assert model_table(pattern, build=True) == model_table(pattern)


def test_model_table_bad_patterns() -> None:
    from stm_probe.models.summary import model_table

    with pytest.raises(UsageError, match=r"did you mean unified_swin_micro[,?]"):
        model_table(["unified_swim_micro"])
    with pytest.raises(UsageError, match="matches none of the 20 unified models"):
        model_table(["resnet18"])
    with pytest.raises(UsageError, match="matches none"):
        model_table(["unified_*_huge"])


def test_static_table_imports_neither_torch_nor_timm() -> None:
    code = ("import sys; from stm_probe.models.summary import format_table, model_table; "
            "format_table(model_table(['unified_*_tiny'])); "
            "print(sorted(m for m in ('torch', 'timm', 'torch.utils.flop_counter') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- misspelt names ----------------------------------------------------------------------------
def _suggestions(name: str) -> list[str]:
    with pytest.raises(UsageError) as info:
        resolve_name(name)
    message = str(info.value)
    assert "\n" not in message and "did you mean " in message, message
    return message.split("did you mean ", 1)[1].rstrip("?").split(", ")


def test_suggestions_name_each_model_once() -> None:
    assert _suggestions("unified_convnxt_micro")[0] == "unified_convnext_micro"
    for typo in ("unified_convnxt_micro", "unified_swim_tiny", "unified_swin", "unified_convnext_large",
                 "unified_halonet_small_", "uniifed_tiny_conv"):
        models = [s.split(" (")[-1].rstrip(")") for s in _suggestions(typo)]
        assert len(models) == len(set(models)), (typo, models)


@pytest.mark.parametrize("typo,first", [
    ("unified_swim_tiny", "unified_swin_tiny"),
    ("unifed_swin_tiny", "unified_swin_tiny"),
    ("pvt_tiny", "unified_pvt_tiny"),
    ("halo_micro", "unified_halo_micro"),
    ("swin_tiny", "unified_swin_tiny"),
    ("unified_tiny_atn", "unified_tiny_attn (unified_pvt_tiny)"),
    ("unified_dcnv3_tny", "unified_dcnv3_tiny (unified_dcn_v3_tiny)"),
    ("unified_internimage_bse", "unified_internimage_base (unified_dcn_v3_base)"),
    ("resnt18", "resnet18"),
])
def test_every_misspelt_name_gets_a_close_suggestion(typo: str, first: str) -> None:
    assert _suggestions(typo)[0] == first


# --- input sizes -------------------------------------------------------------------------------
def test_timm_model_built_for_the_input_size() -> None:
    from stm_probe.models.input_size import check_input_size

    vit = create_model("vit_tiny_patch16_224", input_size=64).eval()
    assert tuple(vit.patch_embed.img_size) == (64, 64)
    assert vit.pos_embed.shape[1] == (64 // 16) ** 2 + 1  # 4 x 4 patches + the class token
    with torch.no_grad():
        assert vit(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    fixed = create_model("vit_tiny_patch16_224")
    with pytest.raises(UsageError, match="takes 224x224 images only") as info:
        check_input_size(fixed, 64)
    assert "\n" not in str(info.value)
    check_input_size(create_model("resnet18"), 64)  # any size works for a CNN: no error


def test_unified_input_size_must_be_a_multiple_of_32() -> None:
    with pytest.raises(UsageError, match="multiples of 32: 48 is not; use 32 or 64") as info:
        create_model("unified_convnext_micro", input_size=48)
    assert "\n" not in str(info.value)
    assert create_model("unified_convnext_micro", input_size=64).stm_probe_spec.name == "unified_convnext_micro"


# --- layer scales ------------------------------------------------------------------------------
def test_layer_scales_set_and_copied() -> None:
    from stm_probe.models.layers import copy_layer_scale_magnitudes, layer_scale_magnitudes, set_layer_scales

    for name in ("unified_swin_micro", "unified_dcn_v3_micro"):
        model = _meta_model(name)
        assert set_layer_scales(model, 0.5) == 2 * sum(model.depths)  # gamma_1 and gamma_2 of every block
    fresh, trained = create_model("unified_pvt_micro"), create_model("unified_pvt_micro")
    assert layer_scale_magnitudes(fresh) == pytest.approx([1e-6] * 9)
    gen = torch.Generator().manual_seed(3)
    expected = []
    with torch.no_grad():
        for block in (b for stage in trained.stages for b in stage):
            block.gamma_1.copy_(torch.randn(block.gamma_1.shape, generator=gen))
            block.gamma_2.copy_(torch.randn(block.gamma_2.shape, generator=gen))
            expected.append(float(torch.cat([block.gamma_1.abs(), block.gamma_2.abs()]).mean()))
    assert layer_scale_magnitudes(trained) == pytest.approx(expected, rel=1e-6)
    assert copy_layer_scale_magnitudes(trained, fresh) == 9
    blocks = [b for stage in fresh.stages for b in stage]
    assert all(torch.all(b.gamma_1 == v) and torch.all(b.gamma_2 == v) for b, v in zip(blocks, expected))


def test_layer_scale_value_sets_the_residual_branches() -> None:
    """ConvNeXt block: gamma = 0 is the identity; gamma = v gives x + v T(x) + v M(x + v T(x))."""
    from stm_probe.models.blocks.convnext import ConvNeXtBlock
    from stm_probe.models.layers import set_layer_scales

    block = ConvNeXtBlock(8).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert set_layer_scales(block, 0.0) == 2
        assert torch.equal(block(x), x)
        v = 0.37
        set_layer_scales(block, v)
        mixed = x + v * block.token_mixer(x)
        expected = mixed + v * block.channel_mixer(mixed.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        assert torch.allclose(block(x), expected, atol=1e-6)
        assert (block(x) - x).abs().max() > 0.01  # the branches now matter


@pytest.mark.parametrize("name", ["unified_halo_micro", "unified_swin_micro", "unified_dcn_v3_micro",
                                  "unified_pvt_micro", "unified_convnext_micro"])
def test_caches_built_under_inference_mode_serve_gradients(name: str) -> None:
    """A probe may first run a model under torch.inference_mode (invariance, patch shuffle) and then
    take input gradients (attribution, ERF): cached masks and grids must be normal tensors. 64 px
    maps are padded (halo, Swin) so the cached masks are used."""
    from stm_probe.models import create_model

    model = create_model(name).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        reference = model(x)
    x.requires_grad_(True)
    out = model(x)
    out[0, 0].backward()
    assert torch.allclose(out.detach(), reference, atol=1e-5) and x.grad is not None and x.grad.abs().sum() > 0


def test_local_layers_equal_timms() -> None:
    """DropPath, trunc_normal_, make_divisible and the ImageNet statistics kept in models/layers.py
    (so that building a unified model does not import timm) draw and compute exactly as timm's."""
    from timm.layers import DropPath as TimmDropPath
    from timm.layers import make_divisible as timm_make_divisible
    from timm.layers import trunc_normal_ as timm_trunc_normal_

    from stm_probe.models.layers import (
        IMAGENET_DEFAULT_MEAN,
        IMAGENET_DEFAULT_STD,
        DropPath,
        make_divisible,
        trunc_normal_,
    )

    assert (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD) == (timm.data.IMAGENET_DEFAULT_MEAN, timm.data.IMAGENET_DEFAULT_STD)
    for std, a, b in ((0.02, -2.0, 2.0), (1.0, -0.5, 1.5)):
        ours, theirs = torch.empty(64, 33), torch.empty(64, 33)
        torch.manual_seed(3)
        trunc_normal_(ours, std=std, a=a, b=b)
        torch.manual_seed(3)
        timm_trunc_normal_(theirs, std=std, a=a, b=b)
        assert torch.equal(ours, theirs)
    x = torch.randn(16, 4, 5, 5)
    for prob in (0.0, 0.3, 1.0):
        mine, ref = DropPath(prob).train(), TimmDropPath(prob).train()
        torch.manual_seed(5)
        got = mine(x)
        torch.manual_seed(5)
        assert torch.equal(got, ref(x))
        assert torch.equal(mine.eval()(x), x)
    for value in (7, 8, 12, 13.6, 20, 37.5, 64 * 0.25, 96 * 0.75, 3):
        assert make_divisible(value, divisor=8) == timm_make_divisible(value, divisor=8)


@pytest.mark.slow  # a fresh interpreter: the full suite
def test_unified_models_build_without_timm_and_register_when_it_loads() -> None:
    """A unified model is built without importing timm; timm, once loaded by stm-probe or by a
    later `register_with_timm()`, knows the unified models."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from stm_probe.models import create_model, register_with_timm\n"
        "create_model('unified_convnext_micro', num_classes=3)\n"
        "assert 'timm' not in sys.modules and 'torchvision' not in sys.modules, 'timm loaded'\n"
        "import timm\n"
        "assert not timm.is_model('unified_convnext_micro')\n"
        "register_with_timm()\n"
        "print(timm.create_model('unified_convnext_micro', num_classes=3).head.out_features)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "3"

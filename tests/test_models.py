"""The 20 unified models against the original's reference manifest, and the registry."""
from __future__ import annotations

import pytest
import timm
import torch

import stm_probe
from stm_probe.errors import UsageError
from stm_probe.models import UNIFIED_MODELS, build_unified, create_model, expand_model_patterns, resolve_name
from stm_probe.models.features import Normalized, stage_outputs
from stm_probe.models.summary import count_gmacs, count_parameters


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

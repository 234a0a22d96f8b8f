"""The examples that end each subcommand's ``--help`` (argparse epilog, kept as written).

A command without its own entry (a probe added later) gets `generic_examples`.
"""
from __future__ import annotations

EXAMPLES: dict[str, tuple[str, ...]] = {
    "erf": (
        "stm-probe erf --model unified_tiny_attn                     # embedded images, random init",
        "stm-probe erf --model unified_tiny_attn --pretrained        # the released weights (downloaded once)",
        "stm-probe erf --model 'unified_*_tiny' --checkpoint-dir ckpts/ --data /data/imagenet/val --compare-init",
    ),
    "invariance": (
        "stm-probe invariance --model unified_tiny_conv --kind scale --input-size 64 --num-images 8",
        "stm-probe invariance --model 'unified_*_tiny' --pretrained --data /data/imagenet/val --kind translation",
    ),
    "adversarial": (
        "stm-probe adversarial --model unified_convnext_micro --input-size 64 --num-images 4",
        "stm-probe adversarial --model 'unified_*_tiny' --pretrained --data /data/imagenet/val --attack autoattack "
        "--eps 4/255",
    ),
    "bias": (
        "stm-probe bias --model 'unified_*_micro' --input-size 64 --num-images 4",
        "stm-probe bias --probe cue-conflict --model unified_tiny_swin --pretrained",
    ),
    "data-efficiency": (
        "stm-probe data-efficiency --model unified_convnext_micro --model unified_pvt_micro --input-size 64 "
        "--num-images 400",
    ),
    "corruption": (
        "stm-probe corruption --model 'unified_*_micro' --input-size 64 --num-images 4",
        "stm-probe corruption --model 'unified_*_tiny' --pretrained --data /data/imagenet-c --clean-data "
        "/data/imagenet/val",
    ),
    "eval": (
        "stm-probe eval --model unified_convnext_micro --input-size 64          # smoke test, synthetic val split",
        "stm-probe eval --model 'unified_*_tiny' --pretrained --data /data/ILSVRC2012_img_val --labels "
        "ILSVRC2012_validation_ground_truth.txt",
    ),
    "train": (
        "stm-probe train --model unified_convnext_micro --data synthetic --epochs 10 --out runs/conv-micro",
        "stm-probe erf --model unified_convnext_micro --checkpoint runs/conv-micro/checkpoint.pth --input-size 64",
    ),
    "make-data": (
        "stm-probe make-data --split cue-conflict --out data/cue-conflict --num-images 1000",
        "stm-probe make-data --split val --classes 4 --size 32 --out data/val32 --num-images 200",
    ),
    "models": (
        "stm-probe models                                # all 20, with the published top-1",
        "stm-probe models 'unified_*_tiny' --format csv",
    ),
    "weights": (
        "stm-probe weights                               # the 20 release files, URLs, top-1, cached or not",
        "stm-probe weights 'unified_*_micro' --download  # fetch them into the cache",
        "STM_PROBE_RELEASE_URL=https://mirror.example/ckpt stm-probe weights unified_tiny_attn --download",
    ),
    "compare": (
        "stm-probe compare --model 'unified_*_micro' --analyses erf,invariance,adversarial --input-size 64 "
        "--num-images 8 --out runs/micro",
        "stm-probe compare --model 'unified_*_tiny' --pretrained --data /data/imagenet/val --out runs/tiny",
    ),
    "report": (
        "stm-probe report runs/micro",
        "stm-probe report runs/micro --alpha 0.01",
        "stm-probe report runs/micro --link-figures   # report.html links its figures instead of embedding them",
    ),
    "plot": (
        "stm-probe plot erf runs/erf-tiny",
        "stm-probe plot invariance runs/inv-pvt runs/inv-conv --out figures/inv-tiny --style paper",
    ),
    "paper": (
        "stm-probe paper teaser --out figures/teaser",
        "stm-probe paper speed --out figures/speed --model 'unified_*_tiny' --device cuda",
    ),
}


def generic_examples(command: str) -> tuple[str, ...]:
    """Examples of a probe without its own entry."""
    return (f"stm-probe {command} --model unified_convnext_micro --input-size 64 --num-images 4",
            f"stm-probe {command} --model 'unified_*_tiny' --pretrained --data /data/imagenet/val")


def epilog(command: str) -> str:
    """The ``examples:`` block of ``command``'s help."""
    lines = EXAMPLES.get(command) or generic_examples(command)
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)

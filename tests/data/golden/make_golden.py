"""The golden CSVs of `tests/test_golden.py`: every probe run on fixed, non-trivial weights.

Run from the repository root to (re)write them, ONLY when a change of numbers is intended and
understood (say why in the commit)::

    python tests/data/golden/make_golden.py [CASE ...]     # every case, or only those named

The weights are made here, independently of the models' own initialisation: every parameter of a
micro model is drawn from a generator seeded by its name (norm weights and layer scales
1 + 0.1 N(0, 1), so every block's STM contributes; biases, position tables 0.02 N(0, 1); other weights
N(0, 1 / fan_in)), saved as a checkpoint and loaded through `--checkpoint` like released weights.
One `eval` case runs without a checkpoint, to hold the seeded random initialisation as well.
Each case is one `stm_probe.run(...)` at 64 px on six of the embedded sample images (data/images),
listed with labels in ``images.txt``: the first three carry the class the golden halo model predicts,
the next three the golden ConvNeXt model's (so accuracies, corruption errors and attack success rates
are not trivially 0); its tidy rows are stored as ``<case>.csv``. ``images.txt`` is written only when
missing (delete it to relabel).
"""
from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parents[2] / "data" / "images"
LIST = HERE / "images.txt"
MODELS = ("unified_halo_micro", "unified_convnext_micro")
#: run options every case shares: 64 px, few images, seed 0, a small bootstrap (the CI code runs)
SHARED: dict[str, Any] = {"input_size": 64, "num_images": 6, "batch_size": 6, "bootstrap": 20, "seed": 0,
                          "device": "cpu", "quiet": True, "data": str(LIST)}
#: case name -> (probe, options); the checkpoint is added unless the case says ``random_init``
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "eval": ("eval", {}),
    "eval_random_init": ("eval", {"random_init": True}),
    "erf": ("erf", {"stages": (1, 4), "num_images": 2, "thresholds": (0.2, 0.5, 0.99), "compare_init": True,
                    "init_layer_scale": "one"}),
    "invariance": ("invariance", {"kind": ("translation", "scale", "pre-rotation", "shift-consistency"),
                                  "num_images": 4}),
    "adversarial": ("adversarial", {"attack": ("fgsm", "pgd"), "eps": (1.0, 4.0), "steps": 3, "num_images": 4}),
    "bias": ("bias", {"probe": ("patch-shuffle", "patch-drop", "fourier", "frequency-filter", "attribution"),
                      "grids": (1, 2, 4), "fractions": (0.0, 0.5), "orders": ("random", "salient"),
                      "fourier_grid": 8, "attribution_images": 2, "num_images": 4}),
    "corruption": ("corruption", {"corruptions": ("gaussian_noise", "contrast"), "severities": (1, 3),
                                  "num_images": 4}),
    "data_efficiency": ("data-efficiency", {"random_init": True, "data": None, "fractions": (0.5, 1.0),
                                            "steps": 3, "seeds": 2, "classes": 4, "train_images": 16,
                                            "train_batch": 8, "cue_conflict_images": 8, "num_images": 8}),
}


def golden_state_dict(name: str) -> dict[str, Any]:
    """Fixed, non-trivial weights for model ``name`` (see module docstring); buffers as built."""
    import torch

    import stm_probe

    model = stm_probe.create_model(name, input_size=SHARED["input_size"])
    state = model.state_dict()
    for key, param in model.named_parameters():
        gen = torch.Generator().manual_seed(zlib.crc32(f"{name}/{key}".encode()))
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float64)
        last = key.rsplit(".", 1)[-1]
        if last.startswith("gamma") or (param.dim() == 1 and last == "weight"):
            value = 1 + 0.1 * noise  # layer scales and norm weights near 1: the STMs matter
        elif param.dim() == 1 or "relative" in key or "pos" in key:
            value = 0.02 * noise
        else:
            value = noise / (param[0].numel() ** 0.5)
        state[key] = value.to(param.dtype)
    return state


def write_checkpoints(folder: Path) -> list[str]:
    """Save the golden weights of `MODELS` into ``folder``; the paths in `MODELS` order."""
    import torch

    paths = []
    for name in MODELS:
        path = folder / f"{name}.pth"
        torch.save({"model": golden_state_dict(name)}, path)
        paths.append(str(path))
    return paths


def write_list(checkpoints: list[str]) -> None:
    """``images.txt`` ('path label' lines, paths relative to it) for the first six sample images, labelled
    with the golden models' own predictions (images 0-2: the first model's, 3-5: the second's)."""
    import torch
    from PIL import Image

    import stm_probe
    from stm_probe.data import eval_transform, resolve_source
    from stm_probe.models.features import Normalized

    paths = resolve_source(str(IMAGES)).take(6).paths
    transform = eval_transform(SHARED["input_size"])
    rows = []
    for i, (name, path) in enumerate(zip(MODELS, checkpoints)):
        net = Normalized(stm_probe.create_model(name, checkpoint=path, input_size=SHARED["input_size"])).eval()
        for image in paths[3 * i:3 * i + 3]:
            with Image.open(image) as img, torch.no_grad():
                label = int(net(transform(img.convert("RGB"))[None]).argmax())
            rows.append(f"../../../data/images/{Path(image).name} {label}")
    LIST.write_text("\n".join(rows) + "\n")


def run_case(case: str, checkpoints: list[str]) -> Any:
    """The tidy rows (DataFrame) of one case."""
    import stm_probe

    probe, options = CASES[case]
    options = {k: v for k, v in {**SHARED, **options}.items() if v is not None}
    if not options.pop("random_init", False):
        options["checkpoint"] = tuple(checkpoints)
    return stm_probe.run(probe, models=list(MODELS), **options)


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = write_checkpoints(Path(tmp))
        if not LIST.exists():
            write_list(checkpoints)
        for case in sys.argv[1:] or CASES:
            frame = run_case(case, checkpoints)
            frame.to_csv(HERE / f"{case}.csv", index=False, float_format="%.9g")
            print(f"{case}: {len(frame)} rows", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Wall time of PGD with k steps, as `stm-probe adversarial` runs it, vs (k+1) raw batched
forward+backward passes of the same model (target: at most 1.1x).

The PGD side is everything the command does per batch and eps: the seeded torchattacks PGD call
(k forward+backward passes), the forward of the adversarial batch, the eps-ball check and the
per-image outcomes. The raw side is k+1 forward passes each followed by the input-gradient
backward, with parameters frozen as during the attack. Timings are interleaved (PGD, raw, PGD,
...) so that drifting machine load hits both alike; medians are reported. Run e.g.

    python benchmarks/adversarial_speed.py --model unified_convnext_micro --input-size 64 --batch-size 16
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from stm_probe.core.adversarial import check_perturbation, image_outcomes, make_spec, run_attack, targets_for
from stm_probe.models.features import frozen_parameters
from stm_probe.runtime.session import resolve_device
from stm_probe.models import create_model
from stm_probe.models.features import Normalized


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pgd_fn(net, images: torch.Tensor, steps: int, eps: float):
    """PGD-k on one batch with metrics, as the command runs it."""
    spec = make_spec("pgd", "Linf", eps, steps=steps)
    labels = torch.full((images.shape[0],), -1, dtype=torch.long, device=images.device)
    with torch.no_grad():
        clean = net(images)
    targets = targets_for(labels, clean)
    num_classes = clean.shape[1]

    def run() -> None:
        adv, logits = run_attack(net, spec, images, targets, image_seeds=range(len(images)), num_classes=num_classes)
        image_outcomes(clean, logits, labels, targets, check_perturbation(images, adv, spec))
    return run


def raw_fn(net, images: torch.Tensor, passes: int):
    """``passes`` forward + input-gradient backward passes (parameters frozen)."""
    targets = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)

    def run() -> None:
        with frozen_parameters(net):
            for _ in range(passes):
                x = images.detach().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(net(x), targets), x)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unified_convnext_micro")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps k")
    parser.add_argument("--eps", type=float, default=4.0, help="eps in 1/255 units")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    net = Normalized(create_model(args.model)).to(device).eval()
    images = torch.rand(args.batch_size, 3, args.input_size, args.input_size, device=device)
    fns = {"pgd": pgd_fn(net, images, args.steps, args.eps), "raw": raw_fn(net, images, args.steps + 1)}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"{args.model} device={device}{threads} batch={args.batch_size} input={args.input_size} "
          f"k={args.steps} repeats={args.repeats}")
    print(f"PGD-{args.steps} (attack + metrics): {median['pgd']:.3f} s   "
          f"{args.steps + 1} raw fwd+bwd: {median['raw']:.3f} s   ratio {median['pgd'] / median['raw']:.3f}x "
          f"(target <= 1.1x)")


if __name__ == "__main__":
    main()

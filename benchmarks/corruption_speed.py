"""How much of a `stm-probe corruption` run is spent corrupting images rather than in the model.

Two measurements on the embedded sample images:

1. ``--table``: milliseconds per image of each of the 19 corruptions (mean over severities 1-5 of
   the best of ``--repeats`` calls on one image) at every ``--sizes`` (e.g. 64,224), in this process.
   ``--against-corrupt-tta``: also corrupt-tta 0.1.7's (the generator before ``stm_probe.corrupt``;
   a dependency, for its frost textures; with the clipping to 8 bits the probe applied to it) timed
   alternately with ours, and the ratio ours / theirs.
2. the share: for every corruption x severity of ``--corruptions`` (default the 15 of the
   benchmark), the time to make the corrupted batches (`stm_probe.core.corruptions.Corruptor`, in
   ``--workers`` processes, 0 = in this process) and the time of the model's forward on them, as
   the probe runs them for its first model; the share is corrupting / (corrupting + forward).
   With workers the corrupting overlaps the forward: the pipelined wall time (what a run sees) is
   also reported. Later models reuse the cached images and spend no time corrupting.

    python benchmarks/corruption_speed.py --table --sizes 64,224
    python benchmarks/corruption_speed.py --table --sizes 224 --against-corrupt-tta
    python benchmarks/corruption_speed.py --model unified_convnext_tiny --input-size 224 --num-images 16 --workers 2
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from stm_probe.core.corruptions import Corruptor, all_corruptions, corrupt_image, corruption_list, seed_words
from stm_probe.data import eval_transform, make_loader
from stm_probe.models import create_model
from stm_probe.models.features import Normalized
from stm_probe.runtime.session import resolve_device


def _best_ms(call: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def corruption_table(sizes: list[int], repeats: int, against: bool) -> None:
    """ms per image of every corruption at each size (mean over severities 1-5 of the best of ``repeats``);
    with ``against``, corrupt-tta's beside it (timed alternately) and the ratio."""
    batch = next(iter(make_loader(None, batch_size=1, transform=eval_transform(max(sizes)))))
    corrupt_image(np.zeros((16, 16, 3), np.uint8), "gaussian_noise", 1, seed_words(0, "x", 1, 0, [0])[0])  # imports
    if against:
        import corrupt_tta
    print("corruption".ljust(18) + "".join(f"{s} px (ms)".rjust(14) + ("corrupt-tta".rjust(13) + "ratio".rjust(7)
                                                                        if against else "") for s in sizes))
    for name in all_corruptions():
        row = ""
        for size in sizes:
            image = torch.nn.functional.interpolate(batch.images, size=(size, size), mode="bilinear", antialias=True)
            pixels = np.rint(image[0].numpy().transpose(1, 2, 0).clip(0, 1) * 255).astype(np.uint8)
            ours = theirs = 0.0
            for severity in range(1, 6):
                words = seed_words(0, name, severity, 0, [0])[0]
                ours += _best_ms(lambda: corrupt_image(pixels, name, severity, words), repeats) / 5
                if against:
                    state = np.random.get_state()
                    theirs += _best_ms(lambda: np.clip(np.asarray(corrupt_tta.corrupt(pixels, severity, name), np.float64),
                                                       0, 255).astype(np.uint8), repeats) / 5  # as the probe took it
                    np.random.set_state(state)
            row += f"{ours:14.1f}" + (f"{theirs:13.1f}{ours / theirs:7.2f}" if against else "")
        print(name.ljust(18) + row, flush=True)


def share(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    net = Normalized(create_model(args.model, input_size=args.input_size)).to(device).eval()
    batches = list(make_loader(None, batch_size=args.batch_size, num_images=args.num_images,
                               transform=eval_transform(args.input_size)))
    images = sum(len(b.indices) for b in batches)
    corruptor = Corruptor(0, args.input_size, "benchmark", images, workers=args.workers, cache=False)
    corrupting = forward = pipelined = 0.0
    try:
        if args.workers:  # start the worker processes outside the timings
            corruptor.corrupt(batches[0].images[:1], batches[0].indices[:1], "contrast", 1)
        for name in corruption_list(args.corruptions):
            for severity in range(1, 6):
                start = time.perf_counter()
                made = list(corruptor.batches(batches, name, severity))
                corrupting += time.perf_counter() - start
                start = time.perf_counter()
                with torch.no_grad():
                    for batch in made:
                        net(batch.images.to(device)).argmax(1).cpu()
                forward += time.perf_counter() - start
                start = time.perf_counter()
                with torch.no_grad():
                    for batch in corruptor.batches(batches, name, severity):  # as the probe runs it
                        net(batch.images.to(device)).argmax(1).cpu()
                pipelined += time.perf_counter() - start
    finally:
        corruptor.close()
    print(f"{args.model} at {args.input_size} px, {images} images, {args.workers} worker(s), device {device}, "
          f"corruptions {args.corruptions} x severities 1-5")
    print(f"corrupting {corrupting:.2f} s, model forward {forward:.2f} s: corrupting is "
          f"{100 * corrupting / (corrupting + forward):.0f}% of the work")
    print(f"pipelined (corrupting overlapped with the forward, as a run's first model sees it): {pipelined:.2f} s, "
          f"{pipelined / forward:.2f}x the forward alone; later models read the cache")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", action="store_true", help="print ms per image of every corruption and stop")
    parser.add_argument("--sizes", default="64,224", help="image sides for --table")
    parser.add_argument("--repeats", type=int, default=3, help="--table: best of this many calls per severity")
    parser.add_argument("--against-corrupt-tta", action="store_true",
                        help="--table: also time corrupt-tta's corruptions (the generator before stm_probe.corrupt)")
    parser.add_argument("--model", default="unified_convnext_micro")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--corruptions", default="benchmark")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.table:
        corruption_table([int(s) for s in args.sizes.split(",")], args.repeats, args.against_corrupt_tta)
    else:
        share(args)


if __name__ == "__main__":
    main()

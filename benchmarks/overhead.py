"""Fixed cost of a small run: how much of a 64-image run is overhead (imports, model build, figures).

Runs `stm-probe invariance --model unified_convnext_micro --input-size 64 --kind scale,translation`
on 4 and on 64 images of ``synthetic:val`` (scored as class indices, ``--labels-as-index``, so the
work matches the runs the issue timed) (the embedded sample set holds only 16 images, so a
"64-image" run on it would measure 16), each in a fresh interpreter as a user would, ``--repeats``
times, and keeps the minimum of each (the least disturbed by other processes). The per-image cost
is (t64 - t4) / 60, so the fixed overhead is t4 - 4 (t64 - t4) / 60 and its share of the 64-image
run overhead / t64 (target: at most 0.35). Printed for wall time and for CPU time (user + system
of the child; steadier than wall time on a shared machine, but it counts every thread's work).

    python benchmarks/overhead.py [--repeats 3] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["invariance", "--model", "unified_convnext_micro", "--input-size", "64", "--kind", "scale,translation",
           "--data", "synthetic:val", "--labels-as-index", "--quiet"]
SMALL, LARGE = 4, 64
TARGET = 0.35


def time_run(num_images: int, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run in a fresh interpreter."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stm_probe", *COMMAND, "--num-images", str(num_images), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def overhead_share(t_small: float, t_large: float) -> tuple[float, float]:
    """(fixed overhead in seconds, its share of the large run) from a SMALL- and a LARGE-image time."""
    overhead = t_small - (t_large - t_small) * SMALL / (LARGE - SMALL)
    return overhead, overhead / t_large


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each size; the minimum counts (default 3)")
    parser.add_argument("--keep", type=Path, help="write the run folders here instead of a temporary folder")
    args = parser.parse_args()
    times: dict[int, list[tuple[float, float]]] = {SMALL: [], LARGE: []}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for repeat in range(args.repeats):
            for n in (SMALL, LARGE):  # interleaved, so a busy spell hits both sizes alike
                times[n].append(time_run(n, root / f"n{n}-r{repeat}"))
                print(f"  {n:2d} images: {times[n][-1][0]:6.2f} s wall, {times[n][-1][1]:6.2f} s CPU", flush=True)
    print(f"stm-probe {' '.join(COMMAND)}: minimum of {args.repeats} run(s) each")
    for label, column in (("wall", 0), ("CPU", 1)):
        small, large = min(t[column] for t in times[SMALL]), min(t[column] for t in times[LARGE])
        overhead, share = overhead_share(small, large)
        print(f"{label:4s}: {SMALL} images {small:6.2f} s, {LARGE} images {large:6.2f} s, fixed overhead {overhead:5.2f} s"
              f" = {share:.2f} of the {LARGE}-image run (target <= {TARGET})")


if __name__ == "__main__":
    main()

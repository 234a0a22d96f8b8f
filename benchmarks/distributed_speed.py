"""Two processes (torchrun) against one on the same analysis: throughput ratio and identical CSVs.

    python benchmarks/distributed_speed.py [--probe invariance] [--device cpu] [--images 32] [--size 64]

Runs ``python -m stm_probe <probe> ...`` once in one process and once under ``torch.distributed.run
--standalone --nproc_per_node 2`` (gloo on the CPU, NCCL with ``--device cuda``, one GPU per rank).
On the CPU each process gets ``--threads`` intra-op threads (default: the cores divided by the
processes, so both sides use the same cores); the one-process run is also timed with the threads
of one rank. Reported: the run's own compute time from ``manifest.json`` (``compute_seconds``,
rank 0's, which waits for the slowest rank; start-up excluded), wall time including start-up,
images/s and the ratio, and whether ``<probe>.csv`` is byte-identical.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARGS = {"invariance": ["--kind", "translation,scale"],
        "erf": ["--stages", "1,2,3,4"],
        "adversarial": ["--attack", "pgd", "--eps", "4", "--steps", "5"]}


def _run(probe: str, out: Path, processes: int, threads: int, args: argparse.Namespace) -> tuple[float, float]:
    command = ["-m", "stm_probe", probe, "--model", args.model, "--input-size", str(args.size), "--num-images",
               str(args.images), "--batch-size", str(args.batch), "--bootstrap", "100", "--quiet", "--device",
               args.device, "--out", str(out), *ARGS.get(probe, [])]
    launcher = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                        "--nproc_per_node", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run([*launcher, *command], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads((out / "manifest.json").read_text())["compute_seconds"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", default="invariance", choices=sorted(ARGS))
    parser.add_argument("--model", default="unified_convnext_micro")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for label, processes, threads in (("1 process, all threads", 1, args.threads * 2),
                                          ("1 process, one rank's threads", 1, args.threads),
                                          ("2 processes", 2, args.threads)):
            out = Path(tmp) / label.replace(" ", "_").replace(",", "").replace("'", "")
            compute, wall = _run(args.probe, out, processes, threads, args)
            rows.append((label, threads, compute, wall, out))
        print(f"{args.probe}, {args.model}, {args.images} images at {args.size} px, batch {args.batch}, {args.device}")
        base = rows[0][2]
        reference = (rows[0][4] / f"{args.probe}.csv").read_bytes()
        for label, threads, compute, wall, out in rows:
            same = (out / f"{args.probe}.csv").read_bytes() == reference
            print(f"  {label:32s} threads/process {threads}: compute {compute:7.1f} s ({args.images / compute:6.1f} "
                  f"img/s, {base / compute:4.2f}x), wall {wall:6.1f} s, CSV identical to the first: {same}")


if __name__ == "__main__":
    main()

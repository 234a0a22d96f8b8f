"""Start-up latency of the command line: help and argument errors must appear in under 1 s.

Runs each command in a fresh interpreter (as a user would) several times and reports the median
wall time; heavy modules (torch, timm) must not load before argparse has run.

    python benchmarks/startup.py [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "stm-probe --help": ["--help"],
    "stm-probe erf --help": ["erf", "--help"],
    "stm-probe eff (mistyped command)": ["eff"],
    "stm-probe erf --modle x (mistyped option)": ["erf", "--modle", "x"],
    "stm-probe invariance --kind translaton": ["invariance", "--model", "m", "--kind", "translaton"],
}
TARGET_S = 1.0


def time_command(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "stm_probe", *argv], capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    modules = subprocess.run([sys.executable, "-X", "importtime", "-m", "stm_probe", "--help"], capture_output=True,
                             text=True).stderr
    heavy = [m for m in ("torch", "timm", "pandas", "matplotlib") if f" {m}\n" in modules or f"| {m}\n" in modules]
    print(f"heavy modules imported for --help: {', '.join(heavy) or 'none'}")
    for label, argv in COMMANDS.items():
        seconds = time_command(argv, args.runs)
        print(f"{label:48s} {seconds:6.3f} s  ({seconds / TARGET_S:.2f} of the 1 s target)")


if __name__ == "__main__":
    main()

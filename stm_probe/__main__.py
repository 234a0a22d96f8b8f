"""`python -m stm_probe` runs the command line; under torchrun every process runs it.

Under ``torchrun --nproc_per_node N -m stm_probe ...`` rank 0 prints (progress, summary, the
one-line error of any rank) and the other ranks are silent unless ``--debug`` is given. The
process group joined by the first run is kept for later runs in the process and left at exit.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Sequence

from .cli import main


def run(argv: Sequence[str] | None = None) -> int:
    """`stm_probe.cli.main` with the output of ranks other than 0 silenced (unless ``--debug``)."""
    from .runtime import distributed

    argv = list(sys.argv[1:] if argv is None else argv)
    silent = distributed.launched() and int(os.environ.get("RANK", 0)) != 0 and "--debug" not in argv
    if not silent:
        return main(argv)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return main(argv)


if __name__ == "__main__":
    raise SystemExit(run())

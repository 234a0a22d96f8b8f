"""Comparing models across analyses: `stm-probe compare` (run and report) and `stm-probe report` (re-render).

``runner`` runs the analyses and decides what to reuse; ``headline`` picks each analysis's headline
numbers; ``pairwise`` holds the paired tests and Holm's correction; ``document`` writes report.md
and the self-contained report.html; ``folders`` reads and checks the files. Importing this package
loads no torch.
"""
from __future__ import annotations

from .runner import CompareConfig, render_report, run_compare

__all__ = ["CompareConfig", "render_report", "run_compare"]

"""One overall progress line for a run of several analyses (`stm-probe compare`).

`OverallProgress` is a tqdm line kept above the per-step bars (`Session.progress`): analysis x model
steps done / total, time elapsed and time left (the mean time of the steps computed so far times
the steps left; reused steps count as done but not in the mean). `overall_progress` makes it the
current line for the code inside the ``with`` (a context variable, nothing process-wide), and the
probe loop calls `step_done` after each model, which does nothing outside such a block.
"""
from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar
from typing import Any, Iterator

_CURRENT: ContextVar["OverallProgress | None"] = ContextVar("stm_probe_overall_progress", default=None)


def _clock(seconds: float) -> str:
    """Seconds as m:ss or h:mm:ss."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class OverallProgress:
    """``total`` analysis x model steps; `advance` after each. ``disable``: draw nothing (quiet, rank > 0)."""

    def __init__(self, total: int, label: str = "compare", disable: bool = False) -> None:
        from tqdm.auto import tqdm

        self.total, self.done, self.computed, self.computing_s = total, 0, 0, 0.0
        self.started = self._last = time.perf_counter()
        self.bar = tqdm(total=total, desc=label, position=0, leave=True, dynamic_ncols=True, disable=disable,
                        bar_format="{desc}: {n_fmt}/{total_fmt} analysis x model steps |{bar}| {postfix}")
        self._show()

    def time_left(self) -> float | None:
        """Seconds left: mean seconds of a computed step x steps left; None before any was computed."""
        if self.done >= self.total:
            return 0.0
        if not self.computed:
            return None
        return self.computing_s / self.computed * (self.total - self.done)

    def advance(self, steps: int = 1, computed: bool = True) -> None:
        """``steps`` more steps done; ``computed=False`` for reused ones (no time spent on them)."""
        now = time.perf_counter()
        if computed:
            self.computed += steps
            self.computing_s += now - self._last
        self._last = now
        self.done += steps
        self.bar.update(steps)
        self._show()

    def _show(self) -> None:
        left = self.time_left()
        self.bar.set_postfix_str(f"{_clock(time.perf_counter() - self.started)} elapsed, "
                                 f"{'?' if left is None else _clock(left)} left", refresh=True)

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def overall_progress(total: int, label: str = "compare", disable: bool = False) -> Iterator[OverallProgress]:
    """An `OverallProgress` that `step_done` advances while the block runs."""
    line = OverallProgress(total, label, disable)
    token = _CURRENT.set(line)
    try:
        yield line
    finally:
        _CURRENT.reset(token)
        line.close()


def step_done(computed: bool = True) -> None:
    """One model of the running analysis is done (no-op outside `overall_progress`)."""
    line: Any = _CURRENT.get()
    if line is not None:
        line.advance(1, computed)

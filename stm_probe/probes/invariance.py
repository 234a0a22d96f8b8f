"""`invariance`: how predictions change under translation, rotation, scale and shifts
(docs/protocols.md, "Invariance"). The views are made on the device from each image decoded
once (`stm_probe.core.invariance`); every random choice comes from the seed, the kind, the level,
the repeat and the image index, so every model sees the same views.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.invariance.kinds import KINDS, PIXEL_KINDS, TRANSLATION_MODES
from ..errors import UsageError
from ..options import float_list, name_list, option
from .base import Key, Probe, Unit


def kind_list(text: str) -> tuple[str, ...]:
    """'translation,scale' -> ('translation', 'scale') in KINDS order; 'all' -> every kind."""
    names = name_list(text)
    return KINDS if "all" in names else tuple(k for k in KINDS if k in names) + tuple(
        n for n in names if n not in KINDS)


#: compare's invariance columns: (short name, kinds first choice first, identity levels left out, what, levels)
_HEADLINE_KINDS = (("translation", ("translation",), (0.0,), "translation", "jitters > 0 px"),
               ("rotation", ("pre-rotation", "post-rotation"), (0.0,), "rotation", "angles > 0 degrees"),
               ("scale", ("scale",), (), "scale", "every crop ratio"))


@dataclass(frozen=True)
class InvarianceConfig:
    kind: tuple[str, ...] = option(KINDS, f"what to vary: {', '.join(KINDS)}, or all (default all)",
                                   parse=kind_list, choices=KINDS, metavar="KIND[,KIND]")
    levels: tuple[float, ...] | None = option(None, "levels of a single --kind in its unit: jitter px (translation), "
                                              "degrees (rotations), crop ratio (scale), max offset or shift px "
                                              "(shift kinds); default: the paper's grids", parse=float_list,
                                              metavar="V,...")
    relative_levels: bool = option(False, "read pixel levels (translation, shift kinds) as fractions of "
                                   "--input-size, e.g. 0.125 = 28 px at 224")
    translation_mode: str = option("pure", "pure: content moves by exactly the jitter, black where the window leaves "
                                   "the image (default); official: the original script's crop, clipped and "
                                   "re-centred beyond 16 px (content then moves 8 + s/2 px)", choices=TRANSLATION_MODES)

    def __post_init__(self) -> None:
        if not self.kind:
            raise UsageError(f"--kind: give at least one of {', '.join(KINDS)}")
        if self.levels is not None and len(self.kind) != 1:
            raise UsageError(f"--levels applies to one kind, but --kind names {len(self.kind)}: run each kind with "
                             "its own --levels")


class InvarianceProbe(Probe):
    name = "invariance"
    help = "invariance to translation, rotation and scale; shift consistency; per-stage shift equivariance"
    figure_captions = {  # figure file stem (or its start) -> what it shows
        "invariance_summary": "consistency with the standard view per kind of transformation, averaged over its "
                              "levels, per model",
        "invariance_": "share of images whose top-1 prediction equals the standard view's against the level of "
                       "the transformation named in the file (95% Wilson bands)"}
    Config = InvarianceConfig
    setting_columns = ("kind", "level")
    plot = "stm_probe.plots.invariance:plot_invariance"
    skip_reason = "no view could be measured (for equivariance: no stage tiles the input at these shifts)"

    def __init__(self, config: InvarianceConfig, session: Any) -> None:
        super().__init__(config, session)
        self.levels: dict[str, tuple[float, ...]] = {}

    def check(self) -> list[str]:
        from ..core.invariance.plan import default_levels

        size, notes = self.session.options.input_size, []
        for kind in self.config.kind:
            given = self.config.levels
            if given is None:  # the paper's grids, without pixel levels that move everything off the image
                levels = tuple(default_levels(kind, size))
                self.levels[kind] = tuple(v for v in levels if kind not in PIXEL_KINDS or v < size)
                continue
            if self.config.relative_levels and kind in PIXEL_KINDS:
                bad = [v for v in given if not 0 <= v < 1]
                if bad:
                    raise UsageError(f"--levels {bad[0]:g} with --relative-levels: give fractions of the input side "
                                     "in [0, 1), e.g. 0.125")
                given = tuple(float(round(v * size)) for v in given)
            for value in given:
                _check_level(kind, value, size)
            self.levels[kind] = tuple(given)
            if kind == "scale" and any(not 0.2 <= v <= 1.95 for v in given):
                outside = ", ".join(f"{v:g}" for v in given if not 0.2 <= v <= 1.95)
                notes.append(f"scale levels outside the paper's 0.2..1.95 ({outside}): views that far from the standard "
                             "one say little about invariance")
        return notes

    def _plan(self, kinds: tuple[str, ...], repeat: int = 0) -> Any:
        from ..core.invariance.plan import SweepPlan

        return SweepPlan(kinds, {k: self.levels[k] for k in kinds}, self.session.options.input_size,
                         seed=self.session.seed, translation_mode=self.config.translation_mode, repeat=repeat)

    def transform(self) -> Any:
        from ..data import ShortSideResize

        return ShortSideResize(*self._plan(self.config.kind).base_short_sides())

    def loader_batch_size(self) -> int:
        return 1  # images keep their own sizes; `unit_batches` groups them on the device

    def unit_batches(self, unit: Unit, batches: Any) -> Any:
        from ..core.invariance.geometry import group_images

        size, device = self.session.options.batch_size, self.session.device
        for chunk in batches.chunks():
            yield from group_images(chunk, size, device)

    @staticmethod
    def compare_columns(name: str, frame: Any) -> list[Any]:
        """compare's headline columns (`stm_probe.probes.columns.HeadlineSpec`) from this analysis's tidy
        CSV ``frame``; ``name``: the analysis's name in the comparison."""
        from .columns import HeadlineSpec

        specs = []
        for short, kinds, identity, what, levels in _HEADLINE_KINDS:
            kind = next((k for k in kinds if ((frame["kind"] == k) & (frame["metric"] == "consistency")).any()), None)
            if kind is None:
                continue
            specs.append(HeadlineSpec(
                name, f"{name}:{short}", f"{short} consistency (%)", "consistency", {"kind": kind}, ("level",),
                {"level": identity}, describe=f"share of images whose top-1 prediction under {kind} equals the standard "
                                              f"view's, averaged over {levels}; higher = more invariant",
                claim=f"{{a}} is more invariant to {what} than {{b}}"))
        return specs

    def units(self) -> list[Unit]:
        return [Unit(kind, (kind,)) for kind in self.config.kind]

    def check_model(self, model: Any) -> list[str]:
        if "equivariance" in self.config.kind:
            net = model.net.model
            from ..models.unified import UnifiedNet

            if not (isinstance(net, UnifiedNet) or (hasattr(net, "forward_intermediates")
                                                    and getattr(net, "feature_info", None))):
                raise UsageError(f"{model.name} exposes no feature stages, which --kind equivariance needs: leave "
                                 "equivariance out of --kind")
        return []

    def measure(self, model: Any, unit: Unit, batch: Any) -> dict[Key, np.ndarray]:
        from ..core.invariance.geometry import Views
        from ..core.invariance.sweep import measure_batch

        plan = self._plan(unit.parts, unit.repeat)
        values = measure_batch(model.net, plan, Views(batch, plan.input_size, plan.crop_pct))
        for (kind, level, metric), v in values.items():
            if self.statistics.get(metric) == "mean" and not np.isfinite(v).all():
                raise UsageError(f"{model.name} produced non-finite outputs ({metric} at {kind} {level:g} is NaN/Inf): "
                                 "its weights or inputs are broken; check the checkpoint")
        return values

    @property
    def statistics(self) -> dict[str, str]:  # type: ignore[override]
        from ..core.invariance.kinds import METRIC_STATISTICS

        return METRIC_STATISTICS

    def constants(self) -> dict[str, Any]:
        return {"translation_mode": self.config.translation_mode}

    def headline(self, frame: Any) -> list[str]:
        from ..core.invariance.kinds import UNITS

        lines = []
        for kind in self.config.kind:
            sel = frame[frame["kind"] == kind]
            if not len(sel):
                continue
            metric = "consistency" if kind != "equivariance" else sorted(sel["metric"].unique())[-1]
            sel = sel[sel["metric"] == metric]
            last = sel["level"].max()
            parts = [f"{r.model} {r.value:.3g}" for r in sel[sel["level"] == last].itertuples()]
            lines.append(f"  {kind} {metric} at {last:g} {UNITS[kind]}: {', '.join(parts)}")
        return lines


def _check_level(kind: str, value: float, input_size: int) -> None:
    if kind in PIXEL_KINDS and (value < 0 or value != int(value)):
        raise UsageError(f"--levels {value:g}: {kind} levels are whole pixels >= 0, e.g. 0,8,16 (or fractions of the "
                         "input with --relative-levels)")
    if kind == "equivariance" and value == 0:
        raise UsageError("--levels 0: equivariance shifts must be positive pixels, e.g. 4,8,16,32")
    if kind == "scale" and not 0.05 <= value < input_size:
        raise UsageError(f"--levels {value:g}: scale levels are crop ratios in [0.05, {input_size}) (the short side "
                         f"becomes input-size / ratio px), e.g. 0.5,0.875,1.5")
    if kind in PIXEL_KINDS and value >= input_size:
        raise UsageError(f"--levels {value:g}: a {kind} level must be below --input-size {input_size}")
    if kind.endswith("rotation") and not -360 <= value <= 360:
        raise UsageError(f"--levels {value:g}: rotation angles are degrees in [-360, 360]")

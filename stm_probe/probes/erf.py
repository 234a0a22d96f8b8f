"""`erf`: effective receptive field of every stage (docs/protocols.md, "Effective receptive fields").

Per image and stage: the contribution map of the stage's centre pixel, d(ReLU(centre vector)
summed over channels) / d(normalised input) -> ReLU -> summed over RGB, (H, W). Summaries come
from the mean map over images: ``area_ratio`` (the paper's: log10(map + 1) / max), and
``area_ratio_raw`` (map / max: scale-free, not moved by the gradient's magnitude), each the area
of the smallest centred square holding more than ``threshold`` of the normalised map, with a
seeded bootstrap CI over images; ``side_px``, ``side_ratio`` and ``reached`` (1 when the
threshold was reached inside the image) without an interval.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..options import float_list, int_list, option
from .base import Key, Probe, Unit, UnitResult

INIT_LAYER_SCALES = ("trained", "one", "default")


@dataclass(frozen=True)
class ErfConfig:
    stages: tuple[int, ...] | None = option(None, "stages to analyse, 1-based (default: all)", parse=int_list,
                                            metavar="1,2,3,4")
    thresholds: tuple[float, ...] = option((0.2, 0.3, 0.5, 0.99), "area-ratio thresholds in (0, 1) (default "
                                           "0.2,0.3,0.5,0.99)", parse=float_list, metavar="T,...")
    resize: str = option("warp", "warp: resize to input-size square as the authors did (default); crop: short-side "
                         "resize + centre crop", choices=("warp", "crop"))
    compare_init: bool = option(False, "also map a freshly initialised, seeded copy of each checkpointed model (the "
                                "architecture's prior), with layer scales set by --init-layer-scale")
    init_layer_scale: str = option("trained", "layer scales of the init copy: trained (each block gets the "
                                   "checkpoint's mean |gamma|, default), one (all 1), default (1e-6, as built: the "
                                   "copy is then nearly its stem)", choices=INIT_LAYER_SCALES)

    def __post_init__(self) -> None:
        if any(not 0 < t < 1 for t in self.thresholds):
            raise UsageError(f"--thresholds {','.join(map(str, self.thresholds))}: every threshold must lie "
                             "strictly between 0 and 1")
        if self.stages is not None and any(s < 1 for s in self.stages):
            raise UsageError(f"--stages {','.join(map(str, self.stages))}: stages are numbered from 1")


def area_ratio_bounds(side: int) -> tuple[float, float]:
    """(smallest, largest) area ratio below 1 on a ``side`` x ``side`` input: the centred squares have odd
    sides 3 .. 2 (side // 2 - 1) + 1 (`stm_probe.core.erf`), so at 64 px the largest is (63 / 64)^2 = 0.969."""
    largest = 2 * (side // 2 - 1) + 1
    return (3 / side) ** 2, (largest / side) ** 2


class ErfProbe(Probe):
    name = "erf"
    help = "effective receptive field of every stage: mean contribution maps, heatmaps and area ratios"
    figure_captions = {  # figure file stem (or its start) -> what it shows
        "erf_grid": "each model's effective receptive field per stage: the mean over images of the input-gradient "
                    "magnitude of the stage's centre pixel, log-normalised, as a heat map",
        "erf_area_ratio": "ERF area ratio (share of the input covered by the smallest centred square holding t of "
                          "the map) against the threshold t, per stage and model",
        "erf_": "one model's ERF heat maps per stage (log-normalised mean input-gradient magnitude)"}
    Config = ErfConfig
    setting_columns = ("init_copy", "stage", "threshold")
    randomised = False
    uses_labels = False  # gradients of the centre feature: no label is read
    plot = "stm_probe.plots.erf:plot_erf"
    skip_reason = "every contribution map was NaN (the model's gradients are not finite)"

    def __init__(self, config: ErfConfig, session: Any) -> None:
        super().__init__(config, session)
        self._stages: dict[str, list[int]] = {}
        self._init_nets: dict[str, Any] = {}
        self._makers: dict[tuple[str, bool], Any] = {}

    def check(self) -> list[str]:
        from ..core.erf import flush_denormals

        if self.session.options.repeats > 1:
            raise UsageError("--repeats: erf draws nothing at random; drop --repeats")
        flush_denormals()  # subnormal gradients slow the CPU backward up to 2x
        if self.config.compare_init and not self.session.checkpoints:
            return ["--compare-init does nothing without --checkpoint: the models are already at random init"]
        return []

    def transform(self) -> Any:
        from ..data import eval_transform

        mode = "warp" if self.config.resize == "warp" else "center"
        return eval_transform(self.session.options.input_size, mode)

    @staticmethod
    def compare_columns(name: str, frame: Any) -> list[Any]:
        """compare's headline columns (`stm_probe.probes.columns.HeadlineSpec`) from this analysis's tidy
        CSV ``frame``; ``name``: the analysis's name in the comparison."""
        from .columns import HeadlineSpec, matches, numeric_values

        rows = frame[(frame["metric"] == "area_ratio") & matches(frame["init_copy"], False)]
        if not len(rows):
            return []
        sizes = numeric_values(rows, "input_size") if "input_size" in rows.columns else []
        bounds = area_ratio_bounds(int(max(sizes))) if sizes else None
        thresholds = numeric_values(rows, "threshold")
        preferred = next((v for v in thresholds if np.isclose(v, 0.99)), thresholds[-1])
        stages = sorted(numeric_values(rows, "stage"), reverse=True)
        # the deepest stage, at t = 0.99 where it varies, else at the largest lower threshold where it does:
        # at 64 px every model's stage 4 reaches the largest square at t = 0.99 (RepLKNet measures at 1024)
        candidates = [(preferred, stage) for stage in stages]
        candidates += [(t, stage) for t in sorted(thresholds, reverse=True) if t < preferred for stage in stages]
        t, stage = candidates[0]
        for t_try, stage_try in candidates:
            at = rows[matches(rows["threshold"], t_try) & matches(rows["stage"], stage_try)]["value"]
            if bounds is None or not (at >= bounds[1] - 1e-9).all():
                t, stage = t_try, stage_try
                break
        stage = int(stage)
        return [HeadlineSpec(name, f"{name}:area", f"ERF area ratio (t={t:g}, stage {stage})", "area_ratio",
                             {"init_copy": False, "stage": stage, "threshold": t}, better=None, unit="fraction",
                             bounds=bounds,
                             describe=f"share of the input (0-1) covered by the smallest centred square holding {t:g} of "
                                      f"the log-normalised mean contribution map of stage {stage}'s centre pixel; larger "
                                      "= wider effective receptive field (not better or worse); the deepest stage and "
                                      "largest threshold (0.99 first) at which not every model reaches the largest square",
                             claim="{a}'s per-image ERF area ratios are larger than {b}'s (per-image maps, not the mean "
                                   "map of the headline)",
                             test_note="the ERF test pairs each image's own area ratio (its map normalised alone), while "
                                       "the headline value is the area ratio of the mean map over images")]

    def units(self) -> list[Unit]:
        units = [Unit("maps")]
        if self.config.compare_init and self.session.checkpoints:
            units.append(Unit("init copy", ("init", self.config.init_layer_scale)))
        return units

    def check_model(self, model: Any) -> list[str]:
        from ..models.features import num_stages

        count = num_stages(model.net.model)
        wanted = list(self.config.stages or range(1, count + 1))
        bad = [s for s in wanted if not 1 <= s <= count]
        if bad:
            raise UsageError(f"--stages {','.join(map(str, wanted))}: {model.name} has stages 1..{count}")
        self._stages[model.name] = [s - 1 for s in wanted]
        return []

    def unit_columns(self, model: Any, unit: Unit) -> dict[str, str]:
        columns = model.columns()
        if unit.parts:
            columns["weights"] = f"random-init (layer scales: {self.config.init_layer_scale})"
        return columns

    def _net(self, model: Any, unit: Unit) -> Any:
        if not unit.parts or model.weights == "random-init":
            return model.net
        if model.name not in self._init_nets:
            self._init_nets = {model.name: self._init_copy(model)}  # one copy in memory at a time
        return self._init_nets[model.name]

    def _init_copy(self, model: Any) -> Any:
        """A newly initialised, seeded copy of ``model`` with layer scales per --init-layer-scale."""
        from ..models import create_model
        from ..models.features import Normalized
        from ..models.layers import copy_layer_scale_magnitudes, set_layer_scales
        from ..core.seeds import seeded, stream_seed

        with seeded(stream_seed(self.session.seed, "erf-init-copy", model.name), self.session.device):
            fresh = create_model(model.name, num_classes=model.num_classes or 1000,
                                 input_size=self.session.options.input_size)
        if self.config.init_layer_scale == "trained":
            copy_layer_scale_magnitudes(model.net.model, fresh)
        elif self.config.init_layer_scale == "one":
            set_layer_scales(fresh, 1.0)
        fresh = fresh.to(self.session.device)
        if self.session.precision is not None:  # the copy runs at the precision of the run, like the model
            from ..runtime.precision import apply_precision

            apply_precision(fresh, self.session.precision, self.session.device.type)
        return Normalized(fresh).eval()

    def measure(self, model: Any, unit: Unit, batch: Any) -> dict[Key, np.ndarray]:
        from ..core.erf import MapMaker

        init = bool(unit.parts)
        key = (model.name, init)
        if key not in self._makers:
            self._makers = {key: MapMaker(self._net(model, unit), self._stages[model.name], self.session.device,
                                          self.session.options.batch_size)}
        maps = self._makers[key](batch.images)
        return {(init, stage + 1, "map"): m for stage, m in maps.items()}

    def summarise(self, values: dict[Key, np.ndarray], seed: int) -> dict[Key, tuple]:
        from ..core.erf import NORMALISATIONS, area_ratio, bootstrap_area_ci
        from .base import _key_seed

        n_boot = self.session.options.bootstrap
        thresholds = self.config.thresholds
        out: dict[Key, tuple] = {}
        for (init, stage, _), maps in values.items():
            finite = np.isfinite(maps).all(axis=(1, 2))
            kept = maps[finite]
            n, skipped = int(kept.shape[0]), int((~finite).sum())
            mean = kept.astype(np.float64).mean(0) if n else np.zeros(maps.shape[1:])
            for normalise, metric in (("log", "area_ratio"), ("peak", "area_ratio_raw")):
                norm = NORMALISATIONS[normalise](mean)
                cis = bootstrap_area_ci(kept, thresholds, n_boot, seed=_key_seed(seed, (init, stage, metric)),
                                        normalise=normalise)
                for t, (low, high) in zip(thresholds, cis):
                    ratio = area_ratio(norm, t)
                    out[(init, stage, t, metric)] = (ratio.area_ratio, low, high, n, skipped)
                    if normalise == "log":
                        nan = float("nan")
                        out[(init, stage, t, "side_px")] = (float(ratio.side_px), nan, nan, n, skipped)
                        out[(init, stage, t, "side_ratio")] = (ratio.side_ratio, nan, nan, n, skipped)
                        out[(init, stage, t, "reached")] = (float(ratio.reached), nan, nan, n, skipped)
        return out

    def per_image(self, values: dict[Key, np.ndarray]) -> dict[Key, np.ndarray]:
        """Each image's own area ratios (its map normalised alone: log and peak) at every threshold."""
        from ..core.erf import NORMALISATIONS, area_ratios

        out = {}
        thresholds = self.config.thresholds
        for (init, stage, _), maps in values.items():
            finite = np.isfinite(maps).all(axis=(1, 2))
            for normalise, metric in (("log", "area_ratio"), ("peak", "area_ratio_raw")):
                for t, ratios in zip(thresholds, area_ratios(NORMALISATIONS[normalise](maps), thresholds)):
                    out[(init, stage, t, metric)] = np.where(finite, ratios, np.nan)
        return out

    def constants(self) -> dict[str, Any]:
        return {"resize": self.config.resize, "gradient_wrt": "normalised input"}

    def artefacts(self, out_dir: Path, results: list[UnitResult]) -> list[Path]:
        """``erf/<model>[_init]_stage<k>.npy`` (mean map, float64) and ``..._norm.npy`` (log-normalised)."""
        from ..core.erf import log_normalize
        from ..files import atomic_path

        written = []
        for result in results:
            for (init, stage, _), maps in result.values.items():
                kept = maps[np.isfinite(maps).all(axis=(1, 2))]
                mean = kept.astype(np.float64).mean(0) if len(kept) else np.zeros(maps.shape[1:])
                label = f"{result.columns['model']}{'_init' if init else ''}"
                for array, normalised in ((mean, False), (log_normalize(mean), True)):
                    path = map_path(out_dir, label, stage - 1, normalised)
                    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                        np.save(handle, array)
                    written.append(path)
        return written

    def headline(self, frame: Any) -> list[str]:
        last_t = self.config.thresholds[-1]
        sel = frame[(frame["metric"] == "area_ratio") & np.isclose(frame["threshold"].astype(float), last_t)]
        if not len(sel):
            return []
        last = sel[sel["stage"] == sel["stage"].max()]
        parts = [f"{r.model}{' (init)' if r.init_copy else ''} {r.value:.3f}" for r in last.itertuples()]
        return [f"  area ratio at t={last_t:g}, stage {int(last['stage'].max())}: {', '.join(parts)}"]


def map_path(out_dir: Path, label: str, stage: int, normalised: bool = False) -> Path:
    """Where the mean map of a model label (``<model>`` or ``<model>_init``) and stage is saved."""
    return Path(out_dir) / "erf" / f"{label}_stage{stage + 1}{'_norm' if normalised else ''}.npy"

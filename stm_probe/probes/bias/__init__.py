"""`bias`: inductive-bias probes (docs/protocols.md §10): patch shuffle, patch drop, Fourier heat
map, frequency filtering, shape-vs-texture cue conflict and attribution maps.

One `Probe` whose units are the requested methods; each method is one file in this folder
(a `BiasMethod`) and one line in ``METHODS``. Every method starts from the standard view and
works labelled (top-1) or label-free (agreement with the clean prediction).
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UsageError
from ...options import float_list, int_list, name_list, option, positive_int
from ..base import Key, Probe, Unit, UnitResult
from .base import BiasMethod

#: method name -> "module:class"
METHODS: dict[str, str] = {
    "patch-shuffle": "stm_probe.probes.bias.patch_shuffle:PatchShuffle",
    "patch-drop": "stm_probe.probes.bias.patch_drop:PatchDrop",
    "fourier": "stm_probe.probes.bias.fourier:FourierHeatMap",
    "frequency-filter": "stm_probe.probes.bias.frequency_filter:FrequencyFilter",
    "cue-conflict": "stm_probe.probes.bias.cue_conflict:CueConflict",
    "attribution": "stm_probe.probes.bias.attribution:Attribution",
}
ATTRIBUTION_METHODS = ("saliency", "integrated-gradients", "occlusion")
#: the cue-conflict layout: <shape>/<shape><k>-<texture><m>.<ext>
CUE_CONFLICT_NAME = re.compile(r"^([a-z]+)\d+-([a-z]+)\d+\.(png|jpe?g)$", re.IGNORECASE)


def method_class(name: str) -> type[BiasMethod]:
    module_name, class_name = METHODS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def default_cue_conflict_dir() -> Path:
    """The shipped cue-conflict sample (data/cue-conflict, beside the embedded images)."""
    from ...data import default_data_dir

    return default_data_dir().parent / "cue-conflict"


def is_cue_conflict_source(source: Any) -> bool:
    """Every image is named <shape><k>-<texture><m> inside a folder named by its shape."""
    return len(source) > 0 and all(
        (m := CUE_CONFLICT_NAME.match(Path(p).name)) is not None and Path(p).parent.name == m.group(1)
        for p in source.paths)


@dataclass(frozen=True)
class BiasConfig:
    probe: tuple[str, ...] | None = option(None, "methods, comma-separated: patch-shuffle, patch-drop, fourier, "
                                           "frequency-filter, cue-conflict, attribution (default: all but "
                                           "cue-conflict, which runs when the data is a cue-conflict set)",
                                           parse=name_list, choices=tuple(METHODS), metavar="NAME[,NAME]")
    grids: tuple[int, ...] | None = option(None, "patch-shuffle: g x g grids, each dividing the input side "
                                           "(default 1,2,4,7,8,14,16,28 at 224: those dividing the side)",
                                           parse=int_list, metavar="G,...")
    fractions: tuple[float, ...] = option(tuple(round(0.1 * k, 1) for k in range(10)), "patch-drop: fractions of "
                                          "patches dropped (default 0,0.1,...,0.9)", parse=float_list, metavar="F,...")
    orders: tuple[str, ...] = option(("random", "salient", "non-salient"), "patch-drop: orders (default random, "
                                     "salient, non-salient)", parse=name_list,
                                     choices=("random", "salient", "non-salient"), metavar="ORDER[,ORDER]")
    fill: str = option("zero", "patch-drop: what replaces a dropped patch: zero (black), mean (the ImageNet mean "
                       "colour) or noise (uniform, seeded) (default zero)", choices=("zero", "mean", "noise"))
    patch_size: int = option(16, "patch-drop: patch side in px (default 16)", parse=positive_int, metavar="PX")
    fourier_eps: float | None = option(None, "fourier: L2 norm of the Fourier basis image on [0, 1] pixels, per "
                                       "channel (default 15.7 at 224, Yin et al.'s ImageNet value, scaled by "
                                       "input-size / 224)", parse=float, metavar="EPS")
    fourier_grid: int = option(4, "fourier: use every k-th frequency up to Nyquist (default 4; 1 = the full grid)",
                               parse=positive_int, metavar="K")
    radii: tuple[float, ...] | None = option(None, "frequency-filter: radial cutoffs in px of the centred spectrum "
                                             "(default 4,8,16,32,64,112 at 224, scaled with the input size)",
                                             parse=float_list, metavar="R,...")
    category_map: str | None = option(None, "cue-conflict: JSON file mapping each of the 16 categories to the model's "
                                      "class indices (default: the ImageNet-1k indices)", metavar="FILE")
    method: str = option("saliency", "attribution (and patch-drop's salient order): captum method: saliency, "
                         "integrated-gradients or occlusion (default saliency)", choices=ATTRIBUTION_METHODS)
    attribution_images: int = option(8, "attribution: images drawn per model in the grid (default 8)",
                                     parse=positive_int, metavar="K")

    def __post_init__(self) -> None:
        if any(not 0 <= f < 1 for f in self.fractions):
            raise UsageError(f"--fractions {','.join(map(str, self.fractions))}: fractions lie in [0, 1)")
        if self.fourier_eps is not None and not self.fourier_eps > 0:
            raise UsageError(f"--fourier-eps {self.fourier_eps}: give a positive L2 norm")
        if self.radii is not None and any(r <= 0 for r in self.radii):
            raise UsageError("--radii: cutoffs are positive radii in px")


class BiasProbe(Probe):
    name = "bias"
    help = ("inductive-bias probes: patch shuffle, patch drop, Fourier heat map, frequency filtering, "
            "shape-vs-texture cue conflict, attribution maps")
    figure_captions = {  # figure file stem (or its start) -> what it shows
        "bias_patch-shuffle": "consistency of the top-1 prediction under shuffling g x g patches against g",
        "bias_patch-drop": "consistency (and top-1) as a growing share of patches is dropped",
        "bias_fourier": "error (or flip) rate under a single Fourier-basis perturbation per frequency (Yin et al. "
                        "2019), zero frequency in the centre",
        "bias_frequency-filter": "consistency and top-1 under low- and high-pass filtering against the radius",
        "bias_cue_conflict": "shape bias per shape category (0 = texture, 1 = shape decisions) and overall with "
                             "its 95% Wilson interval",
        "bias_attribution": "attribution maps of example images and their concentration"}
    Config = BiasConfig
    setting_columns = ("probe", "variant", "level", "level2")
    plot = "stm_probe.plots.bias:plot_bias"
    skip_reason = "no image could be measured by this method"

    def __init__(self, config: BiasConfig, session: Any) -> None:
        super().__init__(config, session)
        self.cue_conflict_data = is_cue_conflict_source(session.source)
        names = config.probe or tuple(n for n in METHODS if n != "cue-conflict" or self.cue_conflict_data)
        self.methods: dict[str, BiasMethod] = {n: method_class(n)(config, session) for n in names}

    @classmethod
    def adapt_source(cls, config: BiasConfig, source: Any) -> Any:
        """A cue-conflict set without its folder labels: they are categories, not the model's classes."""
        if is_cue_conflict_source(source):
            return replace(source, labels=(-1,) * len(source), label_space=None)
        return source

    @classmethod
    def default_data(cls, config: BiasConfig) -> str | None:
        """Only cue-conflict asked for: the shipped cue-conflict sample."""
        if config.probe and set(config.probe) == {"cue-conflict"}:
            return str(default_cue_conflict_dir())
        return None

    @property
    def randomised(self) -> bool:  # type: ignore[override]
        return any(m.randomised for m in self.methods.values())

    @property
    def statistics(self) -> dict[str, str]:  # type: ignore[override]
        return {k: v for m in self.methods.values() for k, v in m.statistics.items()}

    def check(self) -> list[str]:
        notes = []
        if "cue-conflict" in self.methods and not self.cue_conflict_data:
            raise UsageError(f"--probe cue-conflict needs cue-conflict images (<shape>/<shape><k>-<texture><m>.png), "
                             f"but --data {self.session.source.location} is not such a set: leave --data out for the "
                             "shipped sample, or point it at the stimuli")
        if self.cue_conflict_data and len(self.methods) > 1:
            notes.append("the data is a cue-conflict set: its folder labels are categories, not ImageNet classes, so "
                         "the other methods run label-free")
        for method in self.methods.values():
            notes += method.check() or []
        return notes

    @staticmethod
    def compare_columns(name: str, frame: Any) -> list[Any]:
        """compare's headline columns (`stm_probe.probes.columns.HeadlineSpec`) from this analysis's tidy
        CSV ``frame``; ``name``: the analysis's name in the comparison."""
        from ..columns import HeadlineSpec

        specs = []
        methods = set(frame["probe"].astype(str))
        if "cue-conflict" in methods:
            specs.append(HeadlineSpec(
                name, f"{name}:shape-bias", "shape bias", "shape_bias", {"probe": "cue-conflict", "variant": "all"},
                better=None, unit="fraction", test=None,
                describe="cue-conflict images decided by shape / (by shape + by texture), 0-1 (Geirhos et al. 2019); "
                         "higher = more shape-biased (humans: about 0.96)",
                claim="{a} is more shape-biased than {b}"))
        if "patch-shuffle" in methods:
            specs.append(HeadlineSpec(
                name, f"{name}:patch-shuffle", "patch-shuffle consistency (%)", "consistency", {"probe": "patch-shuffle"},
                ("level",), {"level": (1.0,)}, better=None,
                describe="share of images whose top-1 prediction survives shuffling g x g patches, averaged over grids "
                         "g > 1 (Naseer et al. 2021); higher = less reliant on global spatial structure (not better or "
                         "worse)", claim="{a} keeps its prediction under patch shuffling more often than {b}"))
        if "fourier" in methods:
            rows = frame[frame["probe"] == "fourier"]
            metric = "error" if (rows["metric"] == "error").any() else "flip"
            specs.append(HeadlineSpec(
                name, f"{name}:fourier", f"Fourier {'error' if metric == 'error' else 'flip'} rate (%)", metric,
                {"probe": "fourier"}, ("level", "level2"), better="lower", test=None,
                describe=f"{'error' if metric == 'error' else 'prediction flip'} rate under single Fourier-basis "
                         "perturbations, averaged over the heat map's frequencies (Yin et al. 2019); lower = more robust",
                claim="{a} is more robust to Fourier-basis noise than {b}"))
        return specs

    def units(self) -> list[Unit]:
        return [Unit(name, (name,)) for name in self.methods]

    def repeated(self, units: list[Unit]) -> list[Unit]:
        """Only the methods that draw at random are repeated (attribution, say, is not)."""
        count = self.session.options.repeats
        return [Unit(u.label if r == 0 else f"{u.label} (repeat {r})", u.parts, r) for u in units
                for r in range(count if self.methods[u.parts[0]].randomised else 1)]

    def check_model(self, model: Any) -> list[str]:
        return [note for method in self.methods.values() for note in method.check_model(model) or []]

    def measure(self, model: Any, unit: Unit, batch: Any) -> dict[Key, np.ndarray]:
        name = unit.parts[0]
        values = self.methods[name].measure(model, batch, unit.repeat)
        return {(name, *key): value for key, value in values.items()}

    def summarise(self, values: dict[Key, np.ndarray], seed: int) -> dict[Key, tuple]:
        out: dict[Key, tuple] = {}
        by_method: dict[str, dict[Key, np.ndarray]] = {}
        for key, value in values.items():
            by_method.setdefault(key[0], {})[key[1:]] = value
        for name, own in by_method.items():
            custom = self.methods[name].summarise(own, seed, self.session.options.bootstrap)
            generic = super().summarise({(name, *k): v for k, v in own.items()}, seed) if custom is None else {}
            out.update(generic)
            out.update({(name, *k): v for k, v in (custom or {}).items()})
        return out

    def per_image(self, values: dict[Key, np.ndarray]) -> dict[Key, np.ndarray]:
        kept = {k: v for k, v in values.items() if self.methods[k[0]].per_image_values}
        return super().per_image(kept)

    def constants(self) -> dict[str, Any]:
        return {"fill": self.config.fill, "attribution_method": self.config.method}

    def artefacts(self, out_dir: Path, results: list[UnitResult]) -> list[Path]:
        written = []
        for result in results:
            name = result.unit.parts[0]
            if result.unit.repeat == 0:
                own = {k[1:]: v for k, v in result.values.items() if k[0] == name}
                written += self.methods[name].artefacts(out_dir, result.columns["model"], own)
        return written

    def skip_reason_for(self, unit: Unit) -> str:
        return self.methods[unit.parts[0]].skip_reason

    def headline(self, frame: Any) -> list[str]:
        """Per method and model: its first metric overall (variant 'all'), as the mean over a map
        (Fourier cells), or at the largest level."""
        lines = []
        for name in self.methods:
            sel = frame[frame["probe"] == name]
            if not len(sel):
                continue
            metric = sel["metric"].iloc[0]
            sel = sel[sel["metric"] == metric]
            if (sel["variant"] == "all").any():
                sel, where = sel[sel["variant"] == "all"], ""
            elif sel["level2"].notna().any():
                where = " (mean over the map)"
            elif sel["level"].notna().any():
                top = sel["level"].max()
                sel, where = sel[sel["level"] == top], f" at {top:g}"
            else:
                where = ""
            for variant, rows in sel.groupby("variant", sort=False):
                parts = [f"{model} {r['value'].mean():.3g}" for model, r in rows.groupby("model", sort=False)]
                shown = f" ({variant})" if variant not in ("", "all") else ""
                lines.append(f"  {name}{shown} {metric}{where}: {', '.join(parts)}")
        return lines

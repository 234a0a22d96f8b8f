"""`corruption`: robustness to the ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019).

Two modes, chosen by the data:

* **ImageNet-C folder** (``--data`` laid out as ``<corruption>/<severity>/<wnid>/<image>``,
  `stm_probe.data.imagenet_c`): each unit reads its own variant's files for the batch's images;
  the clean images (clean error, flip rates, relative mCE) come from ``--clean-data``.
* **on the fly** (any other data, the embedded images included): each unit corrupts the loader's
  clean view (`stm_probe.core.corruptions`), seeded per image, in ``--workers`` processes, cached for
  the next model.

Units per model: ``clean`` (severity 0), one per (corruption, severity), and ``summary`` (the
per-image values of all the others, for the corruption errors and their joint bootstrap).
Per (corruption, severity): ``error`` (top-1 error, labelled images) and ``flip_rate`` (top-1
differs from the clean top-1), percent with Wilson intervals. Per corruption (severity empty):
``ce`` and ``relative_ce`` (AlexNet-normalised, percent). Overall (corruption ``all``): ``mce``,
``relative_mce``, ``mean_error``, ``mean_flip_rate``; their intervals are a percentile bootstrap
over images that resamples the same images in every unit. Numbers that cannot be stood behind
(mCE without all 15 corruptions at 5 severities, CE of the extra corruptions or at an input size
the severities were not made for, relative CE without the clean error) are left out with a note.
"""
from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from ..core.corruption_metrics import SEVERITIES, alexnet_error, benchmark_corruptions, extra_corruptions
from ..errors import UsageError
from ..options import int_list, option
from .base import Key, Probe, Unit, require_finite
from .corruption_files import StoredImages, int_array, match_clean_images
from .corruption_summary import CLEAN, ERROR, FLIP, OVERALL, PRED, overall_summaries

NAMES = benchmark_corruptions() + extra_corruptions()
#: the example images a run corrupting on the fly writes (`stm_probe.plots.corruption` draws them)
EXAMPLES_FILE = "corruption_examples.npz"


def _corruption_list(text: str) -> tuple[str, ...]:
    from ..core.corruptions import corruption_list

    return corruption_list(text)


def _severity_list(text: str) -> tuple[int, ...]:
    values = int_list(text)
    bad = [v for v in values if v not in SEVERITIES]
    if bad:
        raise ValueError(f"severity {bad[0]} is not one of 1-5")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class CorruptionConfig:
    corruptions: tuple[str, ...] | None = option(
        None, "corruptions, comma-separated: names, or the groups benchmark (the 15 of the benchmark, the default), "
        "extra (speckle_noise, gaussian_blur, spatter, saturate) and all", parse=_corruption_list,
        choices=NAMES, metavar="NAME[,NAME]")
    severities: tuple[int, ...] = option(SEVERITIES, "severities 1-5, comma-separated (default 1,2,3,4,5)",
                                         parse=_severity_list, metavar="S,...")
    clean_data: str | None = option(None, "ImageNet-C folders only: the clean images (the ImageNet validation set, "
                                    "synset folders) for the clean error, flip rates and relative mCE",
                                    metavar="PATH")

    def __post_init__(self) -> None:
        if self.corruptions is not None and not self.corruptions:
            raise UsageError("--corruptions: name at least one corruption, or benchmark, extra or all")
        if not self.severities:
            raise UsageError("--severities: give at least one of 1,2,3,4,5")


class _Measured:
    """One model's per-image results by unit, kept to derive flip rates and the summary unit."""

    def __init__(self, model: str, num_images: int) -> None:
        self.model = model
        self.num_images = num_images
        self.clean_pred = np.full(num_images, -1, dtype=np.int64)
        self.units: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def put(self, key: tuple, indices: np.ndarray, error: np.ndarray, flip: np.ndarray) -> None:
        if key not in self.units:
            self.units[key] = (np.full(self.num_images, np.nan), np.full(self.num_images, np.nan),
                               np.zeros(self.num_images, dtype=bool))
        err, flp, filled = self.units[key]
        err[indices], flp[indices], filled[indices] = error, flip, True

    def has(self, key: tuple, indices: np.ndarray) -> bool:
        return key in self.units and bool(self.units[key][2][indices].all())


class CorruptionProbe(Probe):
    name = "corruption"
    help = ("ImageNet-C corruptions (an ImageNet-C folder, or made on the fly): error and flip rate per corruption "
            "and severity, CE, mCE, relative mCE")
    figure_captions = {"corruption_heatmap": "error (or flip rate) of every model under every corruption and severity",
                       "corruption_examples": "one image under every corruption at the severities run",
                       "corruption_": "error (or flip rate) against severity, corruption family in the file name"}
    Config = CorruptionConfig
    setting_columns = ("corruption", "severity")
    statistics = {"error": "rate", "flip_rate": "rate"}
    reads_corrupted_variants = True
    plot = "stm_probe.plots.corruption:plot_corruption"
    skip_reason = "no image could be measured (unreadable images?)"

    def __init__(self, config: CorruptionConfig, session: Any) -> None:
        super().__init__(config, session)
        from ..data.imagenet_c import ImageNetCSource

        self.on_disk = isinstance(session.source, ImageNetCSource)
        self.names: tuple[str, ...] = config.corruptions or benchmark_corruptions()
        self.variants: list[tuple[str, int]] = [(c, s) for c in self.names for s in config.severities]
        self.clean_paths: tuple[str, ...] | None = None
        self.ce_names: tuple[str, ...] = ()
        self.mce_ok = False
        self.relative_ok = False
        self.corruptor: Any = None
        self.measured: _Measured | None = None
        self.stored = StoredImages(session.source, session.options.workers) if self.on_disk else None

    # --- settings against the data ---------------------------------------------------------------
    @property
    def has_clean(self) -> bool:
        return not self.on_disk or self.clean_paths is not None

    @property
    def randomised(self) -> bool:  # type: ignore[override]
        from ..core.corruptions import RANDOM_CORRUPTIONS

        return not self.on_disk and any(c in RANDOM_CORRUPTIONS for c in self.names)

    def check(self) -> list[str]:
        if self.on_disk:
            notes = self._check_imagenet_c()
        else:
            notes = []
            if self.config.clean_data is not None:
                raise UsageError("--clean-data is for ImageNet-C folders; on other --data the clean images are the "
                                 "data itself: drop --clean-data")
            from ..core.corruptions import MIN_SIDE, check_assets

            if self.session.options.input_size < MIN_SIDE:
                raise UsageError(f"--input-size {self.session.options.input_size}: the corruptions need at least "
                                 f"{MIN_SIDE} px (ImageNet-C's are defined at 224)")
            try:
                check_assets()
            except RuntimeError as exc:
                raise UsageError(str(exc)) from None
        return notes + self._decide_ce()

    def _check_imagenet_c(self) -> list[str]:
        """Which ImageNet-C variants run (fewer than 75: a note), and the clean images; returns notes."""
        source, notes = self.session.source, []
        present = set(source.variants)
        missing = [v for v in self.variants if v not in present]
        if missing and (self.config.corruptions is not None or self.config.severities != SEVERITIES):
            c, s = missing[0]
            raise UsageError(f"--data {source.location} holds no {c}/{s} folder ({len(missing)} requested "
                             "corruption/severity folders missing): choose --corruptions/--severities among those present")
        if missing:
            self.variants = [v for v in self.variants if v in present]
            if not self.variants:
                raise UsageError(f"--data {source.location} holds none of the 15 benchmark corruptions: name the ones "
                                 "it holds with --corruptions")
            self.names = tuple(dict.fromkeys(c for c, _ in self.variants))
            notes.append(f"{source.location} lacks {len(missing)} of the 75 benchmark corruption/severity folders "
                         f"(first: {missing[0][0]}/{missing[0][1]}): running the {len(self.variants)} present")
        if self.config.clean_data is not None:
            self.clean_paths = match_clean_images(source, self.config.clean_data)
        else:
            notes.append("no --clean-data: no clean error, flip rates or relative mCE (pass --clean-data with the "
                         "ImageNet validation images)")
        size = self.session.options.input_size
        if size != 224:
            notes.append(f"the 224 px ImageNet-C images are resized to --input-size {size}")
        return notes

    def _decide_ce(self) -> list[str]:
        """Which corruption errors can be stood behind; returns a note for each that cannot."""
        source, notes = self.session.source, []
        if not source.has_labels:
            notes.append("the images are unlabelled: flip rates against the clean prediction only (no error, CE or mCE)")
            return notes
        if source.label_space != "imagenet-1k":
            notes.append("the labels are not ImageNet-1k classes: errors only, no CE or mCE (AlexNet's normalisers are "
                         "ImageNet-1k errors)")
            return notes
        if not self.on_disk and self.session.options.input_size != 224:
            notes.append(f"no CE or mCE at --input-size {self.session.options.input_size}: the severities are defined "
                         "in pixels of 224 px images (errors and flip rates only)")
            return notes
        if not self.on_disk:
            notes.append("corruptions made on the fly by the benchmark's definitions (stm_probe.corrupt): other random "
                         "draws than the released ImageNet-C files, which were also JPEG-stored (quality 85) after "
                         "corrupting; use the released files for CE/mCE to compare with papers")
        extras = [c for c in self.names if alexnet_error(c) is None]
        if extras:
            notes.append(f"no CE for {', '.join(extras)}: no AlexNet normaliser (extra corruptions): error only")
        partial = [c for c in self.names if alexnet_error(c) is not None
                   and any((c, s) not in self.variants for s in SEVERITIES)]
        if partial:
            notes.append(f"no CE for {', '.join(partial)}: CE sums all 5 severities, some are not run")
        self.ce_names = tuple(c for c in self.names if c not in extras and c not in partial)
        absent = [c for c in benchmark_corruptions() if c not in self.ce_names]
        self.mce_ok = not absent
        if absent and self.ce_names:
            notes.append(f"no mCE: it needs the 15 benchmark corruptions at severities 1-5 ({absent[0]}"
                         + (f" and {len(absent) - 1} more" if len(absent) > 1 else "") + " not run)")
        self.relative_ok = self.has_clean
        if not self.has_clean and self.ce_names:
            notes.append("no relative CE or mCE: they need the clean error (pass --clean-data)")
        return notes

    # --- units and images -------------------------------------------------------------------------
    @staticmethod
    def compare_columns(name: str, frame: Any) -> list[Any]:
        """compare's headline columns (`stm_probe.probes.columns.HeadlineSpec`) from this analysis's tidy
        CSV ``frame``; ``name``: the analysis's name in the comparison."""
        from .columns import HeadlineSpec

        if not (frame["metric"] == "mce").any():
            if not (frame["metric"] == "mean_flip_rate").any():
                return []
            # the mean of the (corruption, severity) flip rates, i.e. the probe's mean_flip_rate, made from the
            # per-unit rows so that per_image.csv pairs each image's mean flip between models
            return [HeadlineSpec(name, f"{name}:flip", "corruption flip rate (%)", "flip_rate",
                                 average_over=("corruption", "severity"), better="lower",
                                 describe="share of images whose top-1 prediction a corruption changes, averaged "
                                                     "over the corruptions and severities run (no mCE: it needs labels and "
                                                     "all 15 corruptions at 5 severities); lower = more robust",
                                 claim="{a} is more robust to corruptions than {b}")]
        return [HeadlineSpec(name, f"{name}:mce", "mCE", "mce", better="lower", unit="", test=None,
                             describe="mean corruption error: each corruption's error summed over severities, divided "
                                      "by the reference model's, averaged over corruptions (Hendrycks and Dietterich "
                                      "2019); lower = more robust", claim="{a} is more robust to corruptions than {b}")]

    def units(self) -> list[Unit]:
        units = [Unit(CLEAN, (CLEAN, 0))] if self.has_clean else []
        units += [Unit(f"{c} {s}", (c, s)) for c, s in self.variants]
        return units + [Unit("summary", (OVERALL,))]

    def _repeats_of(self, corruption: str) -> int:
        from ..core.corruptions import RANDOM_CORRUPTIONS

        random = corruption in RANDOM_CORRUPTIONS or (corruption == OVERALL and self.randomised)
        return self.session.options.repeats if random and not self.on_disk else 1

    def repeated(self, units: list[Unit]) -> list[Unit]:
        """Only corruptions that draw at random are repeated (contrast, say, gives the same image)."""
        return [Unit(u.label if r == 0 else f"{u.label} (repeat {r})", u.parts, r) for u in units
                for r in range(self._repeats_of(u.parts[0]))]

    def transform(self) -> Any:
        if self.on_disk:
            from ..data.imagenet_c import StoredView

            return StoredView(self.session.options.input_size)
        return super().transform()

    def unit_batches(self, unit: Unit, batches: Iterable[Any]) -> Iterator[Any]:
        kind = unit.parts[0]
        if kind == OVERALL or (kind == CLEAN and not self.on_disk):
            return iter(batches)
        if kind == CLEAN:
            return self._files(batches, self.clean_paths, clean=True)
        corruption, severity = unit.parts
        if self.on_disk:
            if (corruption, severity) == tuple(self.session.source.reference):
                return iter(batches)
            return self._files(batches, self._variant_files(corruption, severity))
        return self._corruptor().batches(batches, corruption, severity, self._stream_repeat(corruption, unit.repeat))

    def _stream_repeat(self, corruption: str, repeat: int) -> int:
        return repeat if self._repeats_of(corruption) > 1 else 0

    def _corruptor(self) -> Any:
        if self.corruptor is None:
            from ..core.corruptions import Corruptor, worker_count

            session = self.session
            opts = session.options
            folder = session.out_dir / "corruption_cache" / f"rank{session.rank}" if session.out_dir else None
            images_id = hashlib.sha256("\n".join(session.source.paths).encode("utf-8")).hexdigest()[:16]
            self.corruptor = Corruptor(opts.seed, opts.input_size, images_id, len(session.source),
                                       workers=worker_count(opts.workers), cache=len(session.models) > 1,
                                       cache_folder=folder)
            weakref.finalize(self, self.corruptor.close)
        return self.corruptor

    def _files(self, batches: Iterable[Any], paths: tuple[str, ...], clean: bool = False) -> Iterator[Any]:
        """The images ``paths[i]`` for the indices of each of ``batches`` (ImageNet-C mode; `StoredImages`)."""
        from ..data import eval_transform

        size = self.session.options.input_size
        return self.stored.read(batches, paths, (lambda: eval_transform(size)) if clean else self.transform, clean)

    def _variant_files(self, corruption: str, severity: int) -> tuple[str, ...]:
        return self.stored.variant_files(corruption, severity)

    # --- measuring --------------------------------------------------------------------------------
    def _memory(self, model: Any) -> _Measured:
        if self.measured is None or self.measured.model != model.name:
            self.measured = _Measured(model.name, len(self.session.source))
        return self.measured

    def _predict(self, model: Any, images: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = model.net(images.to(self.session.device))
        require_finite(logits, model.name)
        return logits.argmax(1).cpu().numpy()

    def measure(self, model: Any, unit: Unit, batch: Any) -> dict[Key, np.ndarray]:
        kind = unit.parts[0]
        if kind == OVERALL:
            return self._gather(model, unit.repeat, batch)
        memory = self._memory(model)
        indices = int_array(batch.indices)
        labels = int_array(batch.labels)
        pred = self._predict(model, batch.images)
        error = np.where(labels >= 0, 100.0 * (pred != labels), np.nan)
        if kind == CLEAN:
            memory.clean_pred[indices] = pred
            memory.put((CLEAN, 0, 0), indices, error, np.zeros(len(pred)))
            return {(CLEAN, 0, "error"): error, (CLEAN, 0, PRED): pred.astype(np.float64)}
        corruption, severity = unit.parts
        clean_pred = self._clean_predictions(model, batch, indices)
        flip = np.where(clean_pred >= 0, 100.0 * (pred != clean_pred), np.nan)
        memory.put((corruption, severity, unit.repeat), indices, error, flip)
        return {(corruption, severity, "error"): error, (corruption, severity, "flip_rate"): flip}

    def _clean_predictions(self, model: Any, batch: Any, indices: np.ndarray) -> np.ndarray:
        """The clean top-1 of the batch's images: from the clean unit, else computed now (a resumed run);
        -1 where there is no clean image (ImageNet-C without --clean-data)."""
        memory = self._memory(model)
        missing = memory.clean_pred[indices] < 0
        if missing.any() and self.has_clean:
            if self.on_disk:
                clean = next(iter(self._files([batch], self.clean_paths, clean=True))).images
            else:
                clean = batch.clean
            memory.clean_pred[indices] = self._predict(model, clean)
        return memory.clean_pred[indices]

    def _gather(self, model: Any, repeat: int, batch: Any) -> dict[Key, np.ndarray]:
        """The summary unit: every unit's per-image error and flip for the batch's images (measured now
        where a resumed run did not keep them in memory)."""
        memory = self._memory(model)
        indices = int_array(batch.indices)
        out: dict[Key, np.ndarray] = {}
        if self.has_clean:
            if not memory.has((CLEAN, 0, 0), indices):
                clean_batch = next(iter(self.unit_batches(Unit(CLEAN, (CLEAN, 0)), [batch])))
                self.measure(model, Unit(CLEAN, (CLEAN, 0)), clean_batch)
            out[(CLEAN, 0, ERROR)] = memory.units[(CLEAN, 0, 0)][0][indices]
        for corruption, severity in self.variants:
            r = self._stream_repeat(corruption, repeat)
            key = (corruption, severity, r)
            if not memory.has(key, indices):
                unit = Unit(f"{corruption} {severity}", (corruption, severity), r)
                self.measure(model, unit, next(iter(self.unit_batches(unit, [batch]))))
            error, flip, _ = memory.units[key]
            out[(corruption, severity, ERROR)] = error[indices]
            out[(corruption, severity, FLIP)] = flip[indices]
        return out

    # --- summaries --------------------------------------------------------------------------------
    def summarise(self, values: dict[Key, np.ndarray], seed: int) -> dict[Key, tuple]:
        out = super().summarise(values, seed)
        if any(k[-1] in (ERROR, FLIP) and k[0] != CLEAN for k in values):
            out.update(self._aggregate(values, seed))
        return out

    def _aggregate(self, values: dict[Key, np.ndarray], seed: int) -> dict[Key, tuple]:
        """Overall rows of one model from the summary unit's per-image values, each with a percentile
        bootstrap that resamples the same images in every unit (`overall_summaries`)."""
        from ..core.seeds import stream_seed

        boot_seed = stream_seed(seed, "bootstrap", self.name, OVERALL)
        return overall_summaries(values, self.session.options.bootstrap, boot_seed, self.ce_names, self.mce_ok,
                                 self.relative_ok)

    def constants(self) -> dict[str, Any]:
        if self.on_disk:
            return {"corruption_source": "imagenet-c files"}
        from ..core.corruptions import GENERATOR

        return {"corruption_source": GENERATOR}

    def artefacts(self, out_dir: Any, results: list[Any]) -> list[Any]:
        """On the fly: ``corruption_examples.npz`` (the first image x 19 corruptions x 5 severities, the
        pixels the models saw for it, or would have for corruptions not run). Then the run is over: stop
        the corrupting processes and drop their cache."""
        if self.corruptor is not None:
            self.corruptor.close()
        if self.stored is not None:
            self.stored.close()
        return [] if self.on_disk or not len(self.session.source) else [self._write_examples(out_dir)]

    def _write_examples(self, out_dir: Any) -> Any:
        from pathlib import Path

        from ..core.corruptions import all_corruptions, corrupt_image, seed_words, to_uint8
        from ..data import ImageDataset
        from ..files import atomic_path

        opts = self.session.options
        dataset = ImageDataset(self.session.source, self.transform())
        item = next((it for it in map(dataset.__getitem__, range(len(dataset))) if not hasattr(it, "reason")), None)
        if item is None:
            raise UsageError("no image of --data could be read for the corruption examples")
        index = int(item[2])
        clean = to_uint8(item[0][None])[0]
        names = all_corruptions()
        images = np.stack([[corrupt_image(clean, name, severity, seed_words(opts.seed, name, severity, 0, [index])[0])
                            for severity in SEVERITIES] for name in names])
        path = Path(out_dir) / EXAMPLES_FILE
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, clean=clean, images=images, corruptions=np.array(names),
                                severities=np.array(SEVERITIES), path=np.array(self.session.source.paths[index]))
        return path

    def headline(self, frame: Any) -> list[str]:
        lines = []
        overall = frame[frame["corruption"] == OVERALL]
        for metric, label in (("mce", "mCE"), ("relative_mce", "relative mCE"), ("mean_error", "mean error"),
                              ("mean_flip_rate", "mean flip rate")):
            sel = overall[overall["metric"] == metric]
            if len(sel):
                parts = [f"{r.model} {r.value:.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}]" for r in sel.itertuples()]
                lines.append(f"  {label} (%): {', '.join(parts)}")
        return lines

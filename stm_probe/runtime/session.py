"""The `Session`: everything a probe run shares that is not the probe itself.

Device, seed, models and checkpoints, the image source, the output folder, progress bars,
bootstrap count and the run record, the numeric precision (`stm_probe.runtime.precision`) and,
under torchrun, this process's rank (`stm_probe.runtime.distributed`). Built from `RunOptions` by
`open_session`; the CLI and the Python API both go through it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..options import RunOptions, check_checkpoint_file, check_out_folder, check_unified_input_size, settings_dict
from .manifest import RunRecord, default_out_dir, device_description


def resolve_device(text: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; otherwise a checked torch.device. Under torchrun with
    several processes, each rank's CUDA device is ``cuda:LOCAL_RANK``."""
    from . import distributed

    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if distributed.launched() and text.startswith("cuda"):
        if text != "cuda":
            raise UsageError(f"--device {text}: under torchrun each process uses cuda:LOCAL_RANK; pass --device cuda "
                             "(or auto)")
        text = f"cuda:{distributed.local_rank()}"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device '{text}' is not a device: use auto, cpu, cuda or cuda:i") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {text}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s); pick a lower index")
    elif device.type != "cpu":
        raise UsageError(f"--device '{text}' is not supported: use auto, cpu, cuda or cuda:i")
    return device


def pair_checkpoints(models: list[str], checkpoints: tuple[str, ...]) -> dict[str, str]:
    """Map canonical model names to checkpoint paths from ``--checkpoint`` values ([NAME=]PATH)."""
    from ..models import resolve_name

    named = [c for c in checkpoints if "=" in c and not Path(c).exists()]
    plain = [c for c in checkpoints if c not in named]
    mapping: dict[str, str] = {}
    for item in named:
        name, path = item.split("=", 1)
        canonical = resolve_name(name).name
        if canonical not in models:
            raise UsageError(f"--checkpoint {item}: model '{name}' is not among --model; add --model {name}")
        mapping[canonical] = path
    if plain:
        rest = [m for m in models if m not in mapping]
        if len(plain) != len(rest):
            raise UsageError(f"{len(plain)} unnamed --checkpoint for {len(rest)} model(s): give one per model in "
                             "--model order, or use NAME=PATH")
        mapping.update(zip(rest, plain))
    for name, path in mapping.items():
        check_checkpoint_file(path, name)
    return mapping


@dataclass
class LoadedModel:
    """A model ready for a probe: pixels in [0, 1] in, logits out; plus its identifying columns."""

    name: str
    stm: str
    size: str
    weights: str  # 'random-init', 'checkpoint' or 'checkpoint (non-strict, 37% loaded)'
    net: Any  # stm_probe.models.features.Normalized, eval mode, on the session's device
    record: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 0
    label_space: Any = None  # stm_probe.label_spaces.LabelSpace of its outputs (None: no classifier)

    def columns(self) -> dict[str, str]:
        """The identifying columns every tidy CSV starts with."""
        return {"model": self.name, "stm": self.stm, "size": self.size, "weights": self.weights}


@dataclass
class Session:
    """Resolved run settings shared by every probe (see module docstring)."""

    options: RunOptions
    device: torch.device
    models: list[str]
    checkpoints: dict[str, str]
    source: Any  # stm_probe.data.ImageSource, already restricted to the images this run uses
    out_dir: Path | None  # None: the Python API without files
    record: RunRecord
    precision: Any = None  # stm_probe.runtime.precision.Precision (None: strict fp32)
    rank: int = 0  # torch.distributed rank (0 outside torchrun)
    world_size: int = 1
    notes: list[str] = field(default_factory=list)  # said in the summary and the manifest

    @property
    def seed(self) -> int:
        return self.options.seed

    @property
    def quiet(self) -> bool:
        return self.options.quiet

    def progress(self, total: int, desc: str) -> Any:
        """A tqdm bar on stderr counting images (hidden with quiet, and on every rank but 0)."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="img", disable=self.quiet or self.rank != 0, leave=False,
                    dynamic_ncols=True)

    def load_model(self, name: str) -> LoadedModel:
        """Build (and load) one model, eval mode on the device. Each build draws from generators seeded
        with the run's seed (`seeded`: the caller's RNG states are restored afterwards), so random-init
        weights depend on the seed only, never on model order."""
        from ..models import create_model
        from ..models.features import Normalized
        from ..core.seeds import seeded

        opts = self.options
        with seeded(self.seed, self.device):
            model = create_model(name, checkpoint=self.checkpoints.get(name), checkpoint_key=opts.checkpoint_key,
                                 strict=not opts.non_strict, min_loaded=opts.min_loaded, input_size=opts.input_size)
        spec, weights = model.stm_probe_spec, model.stm_probe_weights
        entry = {"name": name, "stm": spec.stm, "size": spec.size, **weights}
        self.record.add_model(entry)
        net = Normalized(model).to(self.device).eval()
        if self.precision is not None:
            from .precision import apply_precision

            apply_precision(model, self.precision, self.device.type)
        num_classes = int(getattr(model, "num_classes", 0) or 0)
        from ..label_spaces import model_space

        space = model_space(num_classes, weights.get("trained"), weights.get("class_names")) if num_classes else None
        if getattr(self.source, "class_subset", None):  # ImageNet-R/A: logits of their 200 classes only
            from ..models.label_space import restrict_classes

            net = restrict_classes(net, num_classes, self.source.class_subset, name, str(self.source.label_space))
            num_classes = net.num_classes
        return LoadedModel(name, spec.stm, spec.size, weights["weights"], net, entry, num_classes, space)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_out_dir(out: Path, data_location: Path | None) -> None:
    """Refuse an output folder that is a file, cannot be written, or lies inside (or contains) an image
    folder given as data (a later run would read its own figures; a list file names fixed paths)."""
    check_out_folder(out)
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot write into {parent}; choose a folder you can write to")
    if data_location is not None and data_location.is_dir():
        if _inside(out, data_location) or _inside(data_location, out):
            raise UsageError(f"--out {out} is inside (or contains) the image data {data_location}: a later run would "
                             "read its own figures; choose a folder outside the data")


def open_session(probe_name: str, options: RunOptions, call: dict[str, Any], write_files: bool = True) -> Session:
    """Validate the shared options and resolve them (models, checkpoints, device, images, out folder).

    Nothing is written here: the run folder is created by `RunFolder.open` once the run starts.
    """
    from ..data import resolve_source
    from ..models import expand_model_patterns, resolve_name

    models = expand_model_patterns(list(options.model))
    checkpoints = pair_checkpoints(models, options.checkpoint)
    found_notes: list[str] = []
    if options.checkpoint_dir is not None:  # each model without an explicit --checkpoint finds its file there
        from ..models.checkpoint_dir import checkpoints_from_dir

        found, found_notes = checkpoints_from_dir(models, checkpoints, options.checkpoint_dir, options.quiet,
                                                  missing_ok=options.pretrained)
        checkpoints = {**checkpoints, **found}
    released = {}
    if options.pretrained:  # the rest get their release file (downloaded once into the cache)
        from ..models.release import fetch
        from . import distributed

        for name in [m for m in models if m not in checkpoints]:
            released[name] = fetch(name, quiet=options.quiet, download=not distributed.launched())
            checkpoints[name] = str(released[name].path)
            found_notes += released[name].notes
    options, size_note = resolve_input_size(options, checkpoints)
    if any(resolve_name(m).is_unified for m in models):
        check_unified_input_size(options.input_size)
    device = resolve_device(options.device)
    source = resolve_source(options.data, labels=options.labels)
    if options.image_list is not None:
        source = source.restrict(Path(options.image_list))
    from ..label_spaces import apply_label_options

    source = apply_label_options(source, options.label_map, options.ignore_labels)
    available = len(source)
    # an image list keeps its own order; a labelled folder is interleaved by class so a few images cover many
    source = source.take(options.num_images, spread_classes=source.has_labels and options.image_list is None,
                         seed=options.subset_seed)
    notes = list(found_notes) + ([size_note] if size_note else [])
    if options.num_images > available:
        notes.append(f"the source holds {available} image(s), fewer than --num-images {options.num_images}: "
                     f"using all {available}")
    out_dir = None
    if write_files:
        out_dir = Path(options.out) if options.out is not None else default_out_dir(probe_name)
        check_out_dir(out_dir, Path(source.location))
    record = RunRecord(probe_name, out_dir or Path("."), call=call)
    record.update(device=device_description(device), seed=options.seed, input_size=options.input_size,
                  batch_size=options.batch_size, num_images_requested=options.num_images,
                  images=list(source.paths), image_list=options.image_list, options=settings_dict(options))
    if released:
        record.update(release_files={name: fetched.manifest_entry() for name, fetched in released.items()})
    precision, rank, world_size = _precision_and_ranks(options, device, record, notes)
    return Session(options, device, models, checkpoints, source, out_dir, record, notes=notes, precision=precision,
                   rank=rank, world_size=world_size)


def resolve_input_size(options: RunOptions, checkpoints: dict[str, str]) -> tuple[RunOptions, str | None]:
    """``options`` with ``input_size`` set: as given, else the size the `stm-probe train` checkpoints
    were trained at (with a one-line note saying so), else 224. Checkpoints trained at different sizes
    need an explicit ``--input-size``."""
    import dataclasses

    if options.input_size is not None:
        return options, None
    from ..checkpoint import peek_trained

    sizes: dict[int, str] = {}
    for name, path in checkpoints.items():
        trained = peek_trained(path)
        size = trained.get("input_size") if trained else None
        if isinstance(size, int) and size > 0:
            sizes.setdefault(size, name)
    if len(sizes) > 1:
        shown = ", ".join(f"{model} at {size} px" for size, model in sizes.items())
        raise UsageError(f"the checkpoints were trained at different input sizes ({shown}): choose one with "
                         "--input-size")
    if sizes:
        size, model = next(iter(sizes.items()))
        note = f"--input-size {size}: the size {model}'s checkpoint was trained at (pass --input-size to choose another)"
        return dataclasses.replace(options, input_size=size), note
    return dataclasses.replace(options, input_size=DEFAULT_INPUT_SIZE), None


DEFAULT_INPUT_SIZE = 224


def _precision_and_ranks(options: RunOptions, device: torch.device, record: RunRecord,
                         notes: list[str]) -> tuple[Any, int, int]:
    """The run's `Precision` (checked; `numeric_flags` applies it around the run) and, under torchrun,
    the joined process group's (rank, world size); both recorded in the manifest."""
    from . import distributed
    from .precision import resolve_precision

    precision, precision_notes = resolve_precision(options.precision, options.channels_last, options.compile, device)
    notes.extend(precision_notes)
    distributed.init(device.type)
    rank, world_size = distributed.world()
    record.update(precision=precision.key())
    if world_size > 1:
        record.update(distributed={"world_size": world_size, "backend": "nccl" if device.type == "cuda" else "gloo",
                                   "sharding": "batches of --batch-size images, rank r takes batches r, r + N, ..."})
    return precision, rank, world_size

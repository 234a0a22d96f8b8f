"""The images a training run learns from and validates on: ``--data`` as training reads it, the default
validation split of a synthetic one, a seeded per-class hold-out, the checks on both splits
(`resolve_splits`) and the class count of the new head."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..errors import UsageError
from .config import TrainConfig


def training_data(data: str) -> str:
    """``--data`` as training reads it: a bare ``synthetic[?options]`` is the train split
    (``synthetic:train[?options]``; the analyses read it as val); anything else unchanged."""
    from ..data.synthetic import PREFIX, is_synthetic

    if is_synthetic(data) and not data.startswith(PREFIX + ":"):
        return f"{PREFIX}:train{data[len(PREFIX):]}"
    return data


def default_val_data(data: str) -> str | None:
    """The validation split matching a synthetic training split: ``synthetic:train?classes=K&size=S&seed=N``
    -> ``synthetic:val`` with the same classes, size and seed (and its own default number of images);
    None for any other data (an ImageFolder needs --val-data or --val-fraction)."""
    from ..data.synthetic import is_synthetic, parse_spec

    if not is_synthetic(data):
        return None
    spec = parse_spec(training_data(data))
    return spec.with_split("val").location if spec.split == "train" else None


def hold_out(source: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """Split an ImageSource into (train, val): a seeded ``round(fraction * n)`` of each class's n images
    (at least 1 where n >= 2) go to val; both keep the source's order."""
    import numpy as np

    from ..core.seeds import stream_seed

    rng = np.random.default_rng(stream_seed(seed, "train", "hold-out"))
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(source.labels):
        by_label.setdefault(label, []).append(i)
    held: set[int] = set()
    for label in sorted(by_label):
        members = by_label[label]
        count = min(len(members) - 1, max(1, round(fraction * len(members)))) if len(members) >= 2 else 0
        held.update(members[j] for j in rng.permutation(len(members))[:count])

    def part(keep: list[int], what: str) -> Any:
        note = f"{what}: {len(keep)} of {len(source)} images (seeded hold-out of {fraction:g} per class)"
        return replace(source, paths=tuple(source.paths[i] for i in keep),
                       labels=tuple(source.labels[i] for i in keep), notes=source.notes + (note,))

    order = range(len(source))
    return part([i for i in order if i not in held], "train"), part([i for i in order if i in held], "val")


def resolve_splits(config: TrainConfig) -> tuple[Any, Any, list[str]]:
    """The (train, val) ImageSources of a config, before decoding, and notes for the summary (fewer
    images than asked); one-line errors for unlabelled data or no validation images."""
    from ..data import resolve_source

    source = resolve_source(training_data(config.data))
    val_data = config.val_data or (None if config.val_fraction else default_val_data(config.data))
    if val_data is not None:
        train_src, val_src = source, resolve_source(val_data)
    elif config.val_fraction is not None:
        train_src, val_src = hold_out(source, config.val_fraction, config.seed)
    else:
        raise UsageError(f"--data {config.data}: give validation images with --val-data PATH, or hold out a seeded "
                         "fraction of the training images with --val-fraction F (e.g. 0.1)")
    val_flag = ("--val-data" if config.val_data is not None else
                f"--val-fraction {config.val_fraction:g} of --data" if config.val_fraction is not None else
                "the default validation split")
    for flag, src, where in (("--data", train_src, config.data), (val_flag, val_src, val_data or config.data)):
        if getattr(src, "variants", None):
            raise UsageError(f"{flag} {where}: an ImageNet-C tree is a test set of corrupted copies, not training "
                             "data; train on clean class folders (or a synthetic split)")
        if getattr(src, "class_subset", None):
            raise UsageError(f"{flag} {where}: {src.label_space} is a 200-class test set scored on ImageNet-1k logits, "
                             "not training data; train on ImageNet-style class folders (or a synthetic split)")
        unlabelled = sum(1 for label in src.labels if label < 0)
        if unlabelled:
            raise UsageError(f"{flag} {where}: {unlabelled} of {len(src)} images have no label; training needs "
                             "labelled images: an ImageFolder tree (class subfolders) or a list of 'path label' lines")
        if not len(src):
            raise UsageError(f"{flag} {where}: no images left to {'train' if flag == '--data' else 'validate'} on; "
                             "give more images or a smaller --val-fraction")
    from ..label_spaces import data_space, spaces_match

    trained_space, val_space = data_space(train_src), data_space(val_src)
    if trained_space is not None and val_space is not None and not spaces_match(trained_space, val_space):
        raise UsageError(f"{val_flag} {val_data or config.data}: its labels are {val_space.phrase}, but the model is "
                         f"trained on {trained_space.phrase} from --data, so validation would score other classes; "
                         "give validation images with the same classes (the same class folders)")
    notes = [f"{flag} {where} holds {len(src)} image(s), fewer than {option_flag} {wanted}: using all {len(src)}"
             + (" (set how many with n= in the synthetic --data)" if src.kind == "synthetic" else "")
             for flag, src, where, option_flag, wanted in (
                 ("--data", train_src, config.data, "--num-images", config.num_images),
                 (val_flag, val_src, val_data or config.data, "--num-val-images", config.num_val_images))
             if wanted is not None and wanted > len(src)]
    train_src = train_src.take(config.num_images, spread_classes=True)
    val_src = val_src.take(config.num_val_images, spread_classes=True)
    if len(train_src) < 2:
        raise UsageError(f"--data {config.data}: {len(train_src)} training image; give at least 2")
    return train_src, val_src, notes


def class_count(train_src: Any) -> int:
    """Classes of the new head: 1000 for ImageNet synset folders, else max(class folders, largest label + 1)."""
    if train_src.label_space == "imagenet-1k":
        return 1000
    count = max(len(train_src.class_names), max(train_src.labels) + 1)
    if count < 2:
        raise UsageError(f"--data {train_src.location}: one class only; training a classifier needs at least 2")
    return count

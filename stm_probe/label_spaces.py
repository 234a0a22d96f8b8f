"""Label spaces: what a label number means, for a model and for a data source, and the one check
that both speak the same one.

A label is only a number; it scores a model only if model output ``k`` and data label ``k`` name
the same class. Every model and every labelled source therefore has a :class:`LabelSpace`:

* ``imagenet-1k``: the 1000 ImageNet-1k classes in sorted-synset order (the unified models, 1000-class
  timm models, synset folders, the ILSVRC2012 label files, the shift sets; ImageNet-R/-A are scored on
  200 of them);
* ``names``: named classes, label -> name (class folders with ordinary names, ``folder names (<n>
  classes)``; the synthetic set, ``synthetic (K classes)``; a checkpoint written by ``stm-probe train``
  on either: the names it was trained on);
* ``indices``: labels that declare themselves class indices of whatever model scores them (integer
  class folders, ``path label`` lists, ``filename,label`` CSVs with integers, ``--label-map``), checked
  only against the model's class count;
* ``unknown``: a model whose classes nobody recorded (a bare state dict with a class count other than
  1000).

:func:`check_spaces` is the one check, run by the probe loop for every model that scores labels and
by ``train`` for its validation images. A mismatch is refused in one line naming both spaces and the
ways out (``--label-map FILE``, ``--labels-as-index``, ``--ignore-labels``). Nothing here imports torch.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import UsageError

__all__ = ["IMAGENET_1K", "LabelSpace", "apply_label_options", "check_spaces", "data_space", "model_space", "read_label_map",
           "trained_summary", "weights_label", "chance_note"]

_SYNSET_RE = re.compile(r"^n\d{8}$")
_INT_RE = re.compile(r"^\d+$")
#: a checkpoint whose validation accuracy is below this multiple of chance is "at chance"
CHANCE_FACTOR = 1.5


@dataclass(frozen=True)
class LabelSpace:
    """What label numbers mean: ``kind`` (imagenet-1k | names | indices | unknown), a phrase for
    messages, and for ``names`` the class name of each label (``names[k]`` is label k's name; ``""``
    for a label nobody uses)."""

    kind: str
    phrase: str
    names: tuple[str, ...] = ()
    num_classes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "phrase": self.phrase, "names": list(self.names), "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> "LabelSpace | None":
        kind, phrase = entry.get("kind"), entry.get("phrase")
        names = entry.get("names") or []
        if kind not in ("imagenet-1k", "names", "indices", "unknown") or not isinstance(phrase, str) \
                or not all(isinstance(n, str) for n in names):
            return None
        count = entry.get("num_classes")
        return cls(kind, phrase, tuple(names), count if isinstance(count, int) else None)


IMAGENET_1K = LabelSpace("imagenet-1k", "ImageNet-1k (1000 classes)", num_classes=1000)


def _names_by_label(class_names: tuple[str, ...], labels: Mapping[str, int]) -> tuple[str, ...]:
    size = max(labels.values(), default=-1) + 1
    names = [""] * size
    for name in class_names:
        names[labels[name]] = name
    return tuple(names)


def data_space(source: Any) -> LabelSpace | None:
    """The label space of an :class:`~stm_probe.data.ImageSource` (None: unlabelled)."""
    if not source.has_labels:
        return None
    space = source.label_space
    if space in ("imagenet-1k", "imagenet-v2", "imagenet-sketch"):
        return IMAGENET_1K
    if space in ("imagenet-r", "imagenet-a"):
        title = "ImageNet-R" if space == "imagenet-r" else "ImageNet-A"
        return LabelSpace("imagenet-1k", f"{title} (200 of the ImageNet-1k classes)", num_classes=1000)
    if space == "folder-integer":
        return LabelSpace("indices", "class indices (integer class-folder names)")
    if space == "mapped":
        return LabelSpace("indices", "class indices (from --label-map)")
    if space == "list":
        return LabelSpace("indices", "class indices (from the " + ("list file)" if source.kind == "list" else
                                                                     "label file)"))
    if space == "synthetic" and source.synthetic is not None:
        spec = source.synthetic  # label k is class k in every split (the texture-only split names it by texture)
        return LabelSpace("names", f"synthetic ({spec.classes} classes)", spec.with_split("train").class_names,
                          spec.classes)
    if space == "folder-index" and source.class_names:
        labels: dict[str, int] = {}
        for name, label in zip(_class_of_paths(source), source.labels):
            if name is not None and label >= 0:
                labels.setdefault(name, label)
        names = _names_by_label(tuple(labels), labels)
        return LabelSpace("names", f"folder names ({len(source.class_names)} classes: "
                          f"{', '.join(source.class_names[:3])}{', ...' if len(source.class_names) > 3 else ''})",
                          names, len(source.class_names))
    return LabelSpace("indices", f"{space} labels")


def _class_of_paths(source: Any) -> list[str | None]:
    """The class folder of each image of a class-folder (or synthetic) source."""
    root = str(source.location).rstrip("/\\")
    known = set(source.class_names)
    out: list[str | None] = []
    for path in source.paths:
        rest = path[len(root):].lstrip("/\\") if path.startswith(root) else os.path.relpath(path, root)
        first = re.split(r"[/\\]", rest, maxsplit=1)[0]
        out.append(first if first in known else None)
    return out


# --- models ----------------------------------------------------------------------------------------
def trained_summary(contents: Any) -> dict[str, Any] | None:
    """How a checkpoint written by ``stm-probe train`` was trained (None for any other file):
    ``data``, ``label_space`` (a :class:`LabelSpace` dict), ``class_names``, ``num_classes``,
    ``input_size`` (px), ``epochs`` and ``val_acc`` (percent, last epoch). Older train checkpoints
    without a ``trained`` entry are read from their config, class names and metrics."""
    if not isinstance(contents, Mapping):
        return None
    entry = contents.get("trained")
    if isinstance(entry, Mapping):
        return dict(entry)
    config, metrics = contents.get("config"), contents.get("metrics")
    if not (isinstance(config, Mapping) and "arch" in contents and isinstance(contents.get("num_classes"), int)):
        return None
    names = [n for n in contents.get("class_names") or [] if isinstance(n, str)]
    data = str(config.get("data"))
    synthetic = data.startswith("synthetic")
    count = int(contents["num_classes"])
    if names:
        space = LabelSpace("names", f"synthetic ({count} classes)" if synthetic else
                           f"folder names ({len(names)} classes)", tuple(names), count)
    else:
        space = LabelSpace("indices", f"class indices of {data}", num_classes=count)
    return {"data": data, "label_space": space.to_dict(), "class_names": names, "num_classes": count,
            "input_size": contents.get("input_size"), "epochs": contents.get("epoch"),
            "val_acc": metrics.get("val_acc") if isinstance(metrics, Mapping) else None}


def checkpoint_class_names(contents: Any) -> list[str] | None:
    """A checkpoint's top-level ``class_names`` entry (output k is class ``class_names[k]``), if it has one."""
    names = contents.get("class_names") if isinstance(contents, Mapping) else None
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def model_space(num_classes: int, trained: Mapping[str, Any] | None = None,
                class_names: list[str] | None = None) -> LabelSpace:
    """A model's label space: the one it was trained on (``trained``, see `trained_summary`), else the
    classes its checkpoint names (``class_names``), else ImageNet-1k for a 1000-class head, else ``unknown``."""
    if trained is not None:
        space = LabelSpace.from_dict(trained.get("label_space") or {})
        if space is not None:
            return space
    if class_names and len(class_names) == num_classes:
        return LabelSpace("names", f"the checkpoint's class names ({num_classes} classes: "
                          f"{', '.join(class_names[:3])}{', ...' if num_classes > 3 else ''})", tuple(class_names),
                          num_classes)
    if num_classes == 1000:
        return IMAGENET_1K
    return LabelSpace("unknown", f"unknown ({num_classes} classes, no record of what they are)",
                      num_classes=num_classes)


def _short_data(data: str) -> str:
    if data.startswith("synthetic"):
        return "synthetic"
    return Path(data.split(":", 1)[-1]).name or data


def weights_label(trained: Mapping[str, Any]) -> str:
    """``checkpoint (trained here: synthetic 8 classes, 64 px, val 71%)`` for a train checkpoint."""
    parts = [f"{_short_data(str(trained.get('data')))} {trained.get('num_classes')} classes"]
    if trained.get("input_size"):
        parts.append(f"{trained['input_size']} px")
    if isinstance(trained.get("val_acc"), (int, float)):
        parts.append(f"val {trained['val_acc']:.0f}%")
    return f"checkpoint (trained here: {', '.join(parts)})"


def chance_note(model: str, trained: Mapping[str, Any]) -> str | None:
    """A note when a train checkpoint's validation accuracy is at or near chance (below 1.5 x 100/K)."""
    acc, count = trained.get("val_acc"), trained.get("num_classes")
    if not isinstance(acc, (int, float)) or not isinstance(count, int) or count < 2:
        return None
    chance = 100.0 / count
    if acc < CHANCE_FACTOR * chance:
        return (f"{model}'s checkpoint is at or near chance accuracy (val {acc:.1f}% with {count} classes, chance "
                f"{chance:.1f}%): it has learnt little, so its numbers say little about trained weights")
    return None


# --- the check -------------------------------------------------------------------------------------
def spaces_match(model: LabelSpace, data: LabelSpace) -> bool:
    """True when data label k names the class of model output k (indices: by the data's own declaration)."""
    if data.kind == "indices":
        return True
    if data.kind == "imagenet-1k":
        return model.kind == "imagenet-1k"
    if data.kind == "names" and model.kind == "names":
        return all(not name or (k < len(model.names) and model.names[k] == name) for k, name in enumerate(data.names))
    return False


WAYS_OUT = ("pass --label-map FILE (class folder name -> class index), --labels-as-index to score the labels as "
            "the model's class indices anyway, or --ignore-labels for the label-free metrics only")


def check_spaces(model_name: str, model: LabelSpace, data: LabelSpace | None, where: str,
                 labels_as_index: bool = False) -> str | None:
    """Refuse (UsageError, one line) labels of another space than the model's; returns a note when
    ``labels_as_index`` let a mismatch through, else None. ``where`` names the data (``--data PATH``)."""
    if data is None or spaces_match(model, data):
        return None
    if labels_as_index:
        return (f"--labels-as-index: the labels of {where} ({data.phrase}) are scored as class indices of "
                f"{model_name} ({model.phrase})")
    raise UsageError(f"{model_name} predicts {model.phrase}, but the labels of {where} are {data.phrase}: "
                     f"scoring one against the other would be meaningless; {WAYS_OUT}")


# --- --label-map -----------------------------------------------------------------------------------
def read_label_map(path: str | os.PathLike) -> dict[str, int]:
    """``--label-map FILE``: class folder name -> class index, from ``name,index`` / ``name index`` lines
    (``#`` comments, blank lines ignored) or a JSON object. An index may be an ImageNet-1k synset."""
    flag = f"--label-map {path}"
    from .data import check_not_named_pipe

    check_not_named_pipe(Path(path).expanduser(), flag)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UsageError(f"{flag}: cannot read it ({reason}); pass a text file of 'folder,index' lines") from None
    if text.lstrip().startswith("{"):
        try:
            items = list(json.loads(text).items())
        except (ValueError, AttributeError) as exc:
            raise UsageError(f"{flag}: not a JSON object of folder -> index ({exc})") from None
        rows = [(i, str(k), str(v)) for i, (k, v) in enumerate(items, 1)]
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in (line.rsplit(",", 1) if "," in line else line.rsplit(None, 1))]
            if len(parts) != 2 or not parts[0]:
                raise UsageError(f"{flag}: line {number} is not 'folder,index'; write one folder name and its class "
                                 "index per line")
            rows.append((number, parts[0], parts[1]))
    mapping: dict[str, int] = {}
    for number, name, value in rows:
        if _INT_RE.match(value) and len(value) <= 9:
            index = int(value)
        elif _SYNSET_RE.match(value):
            from .data.labels import imagenet_index

            if value not in imagenet_index():
                raise UsageError(f"{flag}: synset {value} (entry {number}) is not an ImageNet-1k class")
            index = imagenet_index()[value]
        else:
            raise UsageError(f"{flag}: '{value}' (entry {number}) is not a class index (0, 1, ...) or an ImageNet-1k "
                             "synset")
        if name in mapping and mapping[name] != index:
            raise UsageError(f"{flag}: folder '{name}' is mapped twice ({mapping[name]} and {index}); keep one line")
        mapping[name] = index
    if not mapping:
        raise UsageError(f"{flag}: the file maps no folder; write one 'folder,index' line per class folder")
    return mapping


def apply_label_options(source: Any, label_map: str | None, ignore_labels: bool) -> Any:
    """``source`` relabelled by ``--label-map FILE`` (each image gets its class folder's index; every
    class folder must be mapped) or without labels (``--ignore-labels``: label-free metrics only)."""
    from dataclasses import replace

    if ignore_labels:
        if not source.has_labels:
            return source
        return replace(source, labels=(-1,) * len(source), label_space=None,
                       notes=source.notes + ("labels ignored (--ignore-labels): label-free metrics only",))
    if label_map is None:
        return source
    flag = f"--label-map {label_map}"
    if source.kind != "imagefolder" or getattr(source, "class_subset", None) or getattr(source, "variants", None):
        raise UsageError(f"{flag}: maps class folder names, but --data {source.location} is not a plain tree of "
                         "class folders; drop --label-map")
    mapping = read_label_map(label_map)
    folders = _class_of_paths(source)
    missing = sorted({f for f in folders if f is not None and f not in mapping})
    if missing or None in folders:
        first = missing[0] if missing else "?"
        raise UsageError(f"{flag}: class folder '{first}' of --data {source.location} is not in the map "
                         f"({len(missing)} folder(s) unmapped); map every class folder")
    labels = tuple(mapping[f] for f in folders)
    return replace(source, labels=labels, label_space="mapped",
                   notes=source.notes + (f"labels from {flag} ({len(set(folders))} class folders)",))

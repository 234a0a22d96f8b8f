"""What defines a run's numbers: a unit's cache key (`unit_parts`) and a run's identity (`run_identity`,
which ``--resume`` must match), from the tool version, probe settings, checkpoints, images, input size,
seed and precision."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from ..options import settings_dict
from .units import Unit

if TYPE_CHECKING:
    from ..probes.base import Probe


def images_hash(source: Any) -> str:
    digest = hashlib.sha256()
    for path, label in zip(source.paths, source.labels):
        digest.update(f"{path}\t{label}\n".encode("utf-8"))
    return digest.hexdigest()[:16]


def precision_key(session: Any) -> dict[str, Any]:
    from .precision import Precision

    return (getattr(session, "precision", None) or Precision()).key()


def unit_parts(probe: Probe, model: str, unit: Unit, checkpoint_sha: str) -> dict[str, Any]:
    """Everything that changes a unit's numbers (its cache key)."""
    from .. import __version__

    opts = probe.session.options
    return {"tool": __version__, "probe": probe.name, "config": settings_dict(probe.config), "model": model,
            "checkpoint": checkpoint_sha, "checkpoint_key": opts.checkpoint_key, "non_strict": opts.non_strict,
            "images": images_hash(probe.session.source), "input_size": opts.input_size, "seed": opts.seed,
            "unit": list(unit.parts), "repeat": unit.repeat, "precision": precision_key(probe.session)}


def run_identity(probe: Probe, session: Any) -> dict[str, Any]:
    """What defines a run's numbers; ``--resume`` must match it (batch size, device, workers may differ)."""
    opts = session.options
    return {"settings": settings_dict(probe.config), "models": session.models, "checkpoints": session.checkpoints,
            "checkpoint_sha256": {name: checkpoint_sha256(session, name) for name in session.models},
            "checkpoint_key": opts.checkpoint_key, "non_strict": opts.non_strict, "images": images_hash(session.source),
            "input_size": opts.input_size, "seed": opts.seed, "repeats": opts.repeats, "bootstrap": opts.bootstrap,
            "precision": precision_key(session), **({"replicate": opts.replicate}
                                                    if getattr(opts, "replicate", None) is not None else {})}


def checkpoint_sha256(session: Any, name: str) -> str:
    path = session.checkpoints.get(name)
    if path is None:
        return "random-init"
    from ..checkpoint import file_sha256

    return file_sha256(path)

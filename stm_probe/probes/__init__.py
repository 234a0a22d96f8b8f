"""Every registered probe. Adding a probe is one file in this folder and one line here.

Probe modules import no torch at module level, so the command line can build its options from
their settings without the start-up cost of torch and timm.
"""
from __future__ import annotations

import importlib

from ..errors import UsageError
from ..options import did_you_mean
from ..runtime.loop import run_probe
from .base import Probe, Unit

#: probe name -> "module:class"
PROBES: dict[str, str] = {
    "erf": "stm_probe.probes.erf:ErfProbe",
    "invariance": "stm_probe.probes.invariance:InvarianceProbe",
    "adversarial": "stm_probe.probes.adversarial:AdversarialProbe",
    "bias": "stm_probe.probes.bias:BiasProbe",
    "data-efficiency": "stm_probe.probes.data_efficiency:DataEfficiencyProbe",
    "corruption": "stm_probe.probes.corruption:CorruptionProbe",
    "eval": "stm_probe.probes.eval:EvalProbe",
    "cka": "stm_probe.probes.cka:CkaProbe",
}


def register_probe(name: str, target: str) -> None:
    """Register a probe class given as ``"module:Class"`` under ``name`` (the command, the API's probe
    name, the run folder's analysis); the class is imported when first used. UsageError if taken."""
    if name in PROBES and PROBES[name] != target:
        raise UsageError(f"a probe named {name!r} is registered already ({PROBES[name]}): pick another name")
    if target.count(":") != 1:
        raise UsageError(f"probe target {target!r} is not 'module:Class'")
    PROBES[name] = target


def get_probe(name: str) -> type[Probe]:
    """The probe class registered as ``name`` (UsageError with a did-you-mean otherwise)."""
    if name not in PROBES:
        raise UsageError(f"unknown probe {name!r}{did_you_mean(name, list(PROBES))}: choose from {', '.join(PROBES)}")
    module_name, class_name = PROBES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def metric_ranges(name: str) -> dict[str, tuple[float, float]]:
    """The metric ranges a registered probe declares (none for an unknown name, e.g. ``train``)."""
    return dict(get_probe(name).metric_ranges) if name in PROBES else {}


__all__ = ["PROBES", "Probe", "Unit", "get_probe", "metric_ranges", "register_probe", "run_probe"]

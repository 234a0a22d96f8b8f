"""One plain record per spatial token mixer (STM): everything the package knows about an STM family.

A record names the block class (as ``"module:Class"``, imported only when a model is built, so this
module stays free of torch), the `UnifiedNet` settings of each size, the stem of the released
checkpoint files, the short names accepted in model names, the colour of its plots and how it is
described. The model names, aliases, timm registration, plots, paper tables and `stm-probe models`
all read these records; adding an STM is one block file and one `register_stm` call::

    register_stm(StmRecord(name="toy", block="my_package.toy:ToyBlock", sizes={"micro": {...}},
                           release_stem="toy", aliases=("toy",), colour="#999999", label="toy mixer"))

A block class may define ``resize_checkpoint_tensor(key, value, shape)`` (a static method returning the
tensor resized to ``shape``, or None) for its size-dependent tables; the checkpoint loader asks the
blocks of the model it loads into (`stm_probe.checkpoint.adapt_state_dict`).
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import UsageError
from .configs import SIZES, model_settings


@dataclass(frozen=True)
class StmRecord:
    """An STM family of the unified backbone.

    ``sizes``: size name -> `UnifiedNet` keyword arguments without ``block`` (``dims``, ``depths``,
    ``drop_path_rate``, ``block_kwargs`` with per-stage lists). ``mixer_setting``: a template filled
    with the block's keyword arguments (tuples joined with ``-``) for the architecture table.
    """

    name: str  # family key in model names: unified_<name>_<size>
    block: str  # "module:Class" of the block (see stm_probe.models.blocks for the contract)
    sizes: Mapping[str, Mapping[str, Any]]
    release_stem: str  # released files are unified_<release_stem>_<size>.pth
    aliases: tuple[str, ...]  # short names: unified_<size>_<alias> and unified_<alias>_<size>
    colour: str  # hex colour of the family in every figure
    label: str  # e.g. "halo attention (HaloNet)"
    description: str = ""
    mixer_setting: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def settings(self, size: str) -> dict[str, Any]:
        """A fresh copy of the `UnifiedNet` keyword arguments of one size."""
        return copy.deepcopy(dict(self.sizes[size]))

    def describe_mixer(self, size: str) -> str:
        block = self.sizes[size].get("block_kwargs", {})
        values = {k: "-".join(map(str, v)) if isinstance(v, (tuple, list)) else v for k, v in block.items()}
        return self.mixer_setting.format(**values) if self.mixer_setting else "-"


def _sizes(stm: str) -> dict[str, dict[str, Any]]:
    return {size: model_settings(stm, size) for size in SIZES}


#: the five STMs of the paper, in the order of its tables; `register_stm` appends
STM_RECORDS: dict[str, StmRecord] = {}

_PAPER_STMS = (
    StmRecord("halo", "stm_probe.models.blocks.halo:HaloBlock", _sizes("halo"), "halonet", ("halo", "halonet"),
              "#E69F00", "halo attention (HaloNet)", "local attention over blocks with a halo of neighbours",
              "block {block_size}, halo {halo_size}"),
    StmRecord("pvt", "stm_probe.models.blocks.pvt:PvtBlock", _sizes("pvt"), "pvt", ("attn", "pvt"),
              "#0072B2", "spatial-reduction attention (PVT)", "global attention over spatially reduced keys",
              "sr {sr_ratio}"),
    StmRecord("swin", "stm_probe.models.blocks.swin:SwinBlock", _sizes("swin"), "swin", ("swin", "window"),
              "#009E73", "shifted-window attention (Swin)", "attention within windows, shifted every second block",
              "window {window_size} (shifted every 2nd block)"),
    StmRecord("convnext", "stm_probe.models.blocks.convnext:ConvNeXtBlock", _sizes("convnext"), "convnext",
              ("conv", "dwconv", "convnext"), "#D55E00", "depth-wise convolution (ConvNeXt)",
              "7x7 depth-wise convolution", "depth-wise 7x7"),
    StmRecord("dcn_v3", "stm_probe.models.blocks.dcn_v3:DCNv3Block", _sizes("dcn_v3"), "internimage",
              ("dcn", "dcnv3", "dcn_v3", "internimage"), "#CC79A7", "deformable convolution v3 (InternImage)",
              "deformable sampling with learned offsets and modulation",
              "{kernel_size}x{kernel_size} deformable, {points} points per group"),
)


def register_stm(record: StmRecord) -> StmRecord:
    """Add an STM family: its models ``unified_<name>_<size>`` become known everywhere (names, aliases,
    `create_model`, timm's registry once timm is loaded, plots). UsageError if a name is taken."""
    from . import names

    if record.name in STM_RECORDS:
        raise UsageError(f"an STM named {record.name!r} is registered already: pick another name")
    taken = [a for a in record.aliases if a in names.STM_ALIASES and names.STM_ALIASES[a] != record.name]
    if taken:
        raise UsageError(f"STM alias(es) {', '.join(taken)} belong to another STM: pick other short names")
    STM_RECORDS[record.name] = record
    names.add_family(record)
    registry = sys.modules.get("stm_probe.models.registry")
    if registry is not None:
        registry.register_new_models()
    return record


def unregister_stm(name: str) -> None:
    """Remove an STM family registered with `register_stm` (the five of the paper stay)."""
    from . import names

    if name in (r.name for r in _PAPER_STMS):
        raise UsageError(f"{name!r} is one of the paper's STMs and cannot be removed")
    record = STM_RECORDS.pop(name, None)
    if record is not None:
        names.remove_family(record)


def stm_record(name: str) -> StmRecord:
    return STM_RECORDS[name]


for _record in _PAPER_STMS:
    STM_RECORDS[_record.name] = _record

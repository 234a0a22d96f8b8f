"""The `stm-probe` command line: subcommands share one option set (see `add_common_options`)."""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from . import __version__
from .errors import UsageError
from .runs import RunRecord, default_out_dir


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


# --- option parsing helpers --------------------------------------------------------------------
def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def float_list(text: str) -> list[float]:
    """'0.2,0.3' -> [0.2, 0.3]."""
    values = []
    for item in (i.strip() for i in text.split(",")):
        try:
            values.append(float(item))
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{item}' is not a number (give comma-separated numbers)") from None
    return values


def int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None


def add_common_options(parser: argparse.ArgumentParser, analysis: str, num_images: int = 50,
                       batch_size: int = 16) -> None:
    """The option set every analysis subcommand shares."""
    g = parser.add_argument_group("models and data (shared by every analysis)")
    g.add_argument("--model", action="append", required=True, metavar="NAME",
                   help="model name, alias or glob over registered names (repeatable), e.g. unified_tiny_attn, "
                        "'unified_*_micro', convnext_tiny")
    g.add_argument("--checkpoint", action="append", default=[], metavar="[NAME=]PATH",
                   help="weights (.pth/.pt/.bin/.safetensors); repeatable, in --model order, or NAME=PATH")
    g.add_argument("--checkpoint-key", default=None, metavar="KEY",
                   help="entry of the checkpoint holding the state dict (default: model, state_dict, model_ema, root)")
    g.add_argument("--non-strict", action="store_true", help="load what fits when checkpoint keys or shapes differ")
    g.add_argument("--data", default=None, metavar="PATH",
                   help="image folder (class subfolders = labels), flat folder, or text file list; "
                        "default: the embedded sample images in data/")
    g.add_argument("--num-images", type=positive_int, default=num_images, metavar="N",
                   help=f"use the first N images (default {num_images})")
    g.add_argument("--batch-size", type=positive_int, default=batch_size, metavar="B",
                   help=f"images per batch (default {batch_size})")
    g.add_argument("--input-size", type=positive_int, default=224, metavar="PX",
                   help="square input side in pixels; a multiple of 32 for unified models (default 224)")
    g.add_argument("--workers", type=int, default=0, metavar="N", help="data-loading worker processes (default 0)")
    r = parser.add_argument_group("run")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:i (default auto: cuda if available)")
    r.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help=f"output folder (default runs/{analysis}-<timestamp>)")
    r.add_argument("--seed", type=int, default=0, help="random seed for everything random (default 0)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--debug", action="store_true", help="show tracebacks")


# --- the context every analysis runs in --------------------------------------------------------
def resolve_device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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


def pair_checkpoints(models: list[str], checkpoints: list[str]) -> dict[str, str]:
    """Map canonical model names to checkpoint paths from ``--checkpoint`` values."""
    from .models import resolve_name

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
    return mapping


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class LoadedModel:
    """A model ready for an analysis: pixels in [0, 1] in, logits out; plus what to write in CSVs."""

    name: str
    stm: str
    size: str
    weights: str  # 'random-init' or 'checkpoint'
    net: Any  # stm_probe.models.features.Normalized, in eval mode on the run's device
    record: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> dict[str, str]:
        """The identifying columns every tidy CSV starts with."""
        return {"model": self.name, "stm": self.stm, "size": self.size, "weights": self.weights}


@dataclass
class RunContext:
    """Resolved shared options of one analysis run."""

    analysis: str
    models: list[str]
    checkpoints: dict[str, str]
    device: torch.device
    out_dir: Path
    args: argparse.Namespace
    record: RunRecord
    source: Any  # stm_probe.data.ImageSource of --data (validated before the run starts)

    @property
    def quiet(self) -> bool:
        return bool(self.args.quiet)

    def load_models(self, **kwargs: Any) -> Iterator[LoadedModel]:
        """Build (and load) each model in turn, in eval mode on the device; one in memory at a time."""
        from .models import create_model
        from .models.features import Normalized

        for name in self.models:
            seed_everything(self.args.seed)  # random-init weights depend on the seed only, not on model order
            model = create_model(name, checkpoint=self.checkpoints.get(name), checkpoint_key=self.args.checkpoint_key,
                                 strict=not self.args.non_strict, **kwargs)
            spec = model.stm_probe_spec
            weights = model.stm_probe_weights
            entry = {"name": name, "stm": spec.stm, "size": spec.size, **weights}
            self.record.add_model(entry)
            net = Normalized(model).to(self.device).eval()
            yield LoadedModel(name, spec.stm, spec.size, weights["weights"], net, entry)
            del net, model


def make_context(analysis: str, args: argparse.Namespace) -> RunContext:
    """Validate the shared options, then open the run (output folder, manifest record).

    Every check of the shared options runs first; the output folder itself is only created by
    the first file written into it, so a run refused on bad input leaves nothing behind.
    """
    from .models import expand_model_patterns, resolve_name

    models = expand_model_patterns(args.model)
    checkpoints = pair_checkpoints(models, args.checkpoint)
    for name, path in checkpoints.items():
        if not Path(path).is_file():
            raise UsageError(f"checkpoint '{path}' for {name} does not exist: check the path given to --checkpoint")
    if any(resolve_name(m).is_unified for m in models) and args.input_size % 32:
        raise UsageError(f"--input-size {args.input_size} is not a multiple of 32, which the unified models need: "
                         f"use {max(32, round(args.input_size / 32) * 32)}")
    device = resolve_device(args.device)
    from .data import resolve_source

    source = resolve_source(args.data)
    seed_everything(args.seed)
    out_dir = args.out if args.out is not None else default_out_dir(analysis)
    record = RunRecord(analysis, out_dir)
    record.update(device=str(device), seed=args.seed, input_size=args.input_size, batch_size=args.batch_size,
                  num_images_requested=args.num_images)
    return RunContext(analysis, models, checkpoints, device, out_dir, args, record, source)


# --- subcommands -------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    """Print the registered unified models: name, STM, size, parameters, GMACs at 224, aliases."""
    from .models.summary import model_table

    rows = model_table()
    if args.format == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return 0
    headers = {"name": "model", "stm": "STM", "size": "size", "params": "params", "gmacs_224": "GMACs@224",
               "aliases": "aliases"}
    cells = [[str(r[k]) if k != "params" else f"{r[k]:,}" for k in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers.values())]
    print("  ".join(h.ljust(w) for h, w in zip(headers.values(), widths)).rstrip())
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())
    print("Any timm architecture name works too (built without downloading weights).")
    return 0


# analysis -> (module, function) drawing its figures from a run folder
PLOTTERS: dict[str, tuple[str, str]] = {"erf": ("stm_probe.plots.erf", "plot_erf"),
                                        "invariance": ("stm_probe.plots.invariance", "plot_invariance"),
                                        "adversarial": ("stm_probe.plots.adversarial", "plot_adversarial")}


def cmd_plot(args: argparse.Namespace) -> int:
    """Redraw the figures of a run folder from its data files."""
    import importlib

    module_name, func = PLOTTERS[args.analysis]
    csv_path = args.dir / f"{args.analysis}.csv"
    if not csv_path.is_file():
        raise UsageError(f"{csv_path} not found: give the --out folder of a `stm-probe {args.analysis}` run")
    paths = getattr(importlib.import_module(module_name), func)(args.dir)
    print(f"redrew {len(paths)} file(s) in {args.dir}")
    return 0


# subcommand -> module under stm_probe with HELP, add_arguments(parser) and run(args)
ANALYSES: dict[str, str] = {"erf": "commands.erf", "invariance": "commands.invariance",
                            "adversarial": "commands.adversarial"}


def build_parser() -> Parser:
    parser = Parser(prog="stm-probe", description="Analyses of the spatial token mixers of vision backbones: "
                    "effective receptive fields, invariance, adversarial robustness.")
    parser.add_argument("--version", action="version", version=f"stm-probe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    p = sub.add_parser("models", help="list the unified models (name, STM, size, parameters, GMACs, aliases)")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default table)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_models)
    p = sub.add_parser("plot", help="redraw an analysis' figures from its saved CSV/npy files, without recomputing")
    p.add_argument("analysis", choices=sorted(PLOTTERS), help="which analysis the folder holds")
    p.add_argument("dir", type=Path, help="the run folder (the analysis' --out)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_plot)
    for name, module_name in ANALYSES.items():
        module = __import__(f"stm_probe.{module_name}", fromlist=["HELP", "add_arguments", "run"])
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        return int(args.handler(args) or 0)
    except UsageError as exc:
        if debug:
            raise
        print(f"stm-probe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stm-probe: interrupted", file=sys.stderr)
        return 130

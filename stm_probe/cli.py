"""The `stm-probe` command line: argparse only.

Each probe's options are derived from its settings dataclass (and the shared `RunOptions`);
the work is done by `stm_probe.api.execute`. Nothing heavy (torch, timm) is imported until a
command runs, so ``--help`` and argument errors are instant. Errors are one line on stderr,
exit code 2, with a did-you-mean for misspelt commands, options and choices.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import UsageError
from .options import RunOptions, check_out_folder, did_you_mean, flag_name

SYNTHETIC_SPLITS = ("train", "val", "shape-only", "texture-only", "cue-conflict")  # stm_probe.data.synthetic.SPLITS
_SHARED_GROUPS = {"run": ("device", "out", "resume", "seed", "bootstrap", "repeats", "precision", "channels_last",
                           "compile", "style", "formats", "cmap", "quiet", "debug")}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, keeping the ``examples:`` epilog as written (one command a line)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (UsageError -> exit code 2) and did-you-mean hints; a subcommand's
    help ends with its examples (`stm_probe.cli_examples`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        command = str(kwargs.get("prog") or "").removeprefix("stm-probe").strip()
        if command:
            from .cli_examples import epilog

            kwargs.setdefault("epilog", epilog(command))
            kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self._hint(message)} (see {self.prog} --help)")

    def _hint(self, message: str) -> str:
        where = self.prog.removeprefix("stm-probe").strip()
        return f"{where}: {self._explain(message)}" if where else self._explain(message)

    def _explain(self, message: str) -> str:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = [c.strip(" '") for c in choice.group(2).split(",")]
            return f"unknown {'command' if self._subparsers else 'choice'} '{choice.group(1)}'" \
                   f"{did_you_mean(choice.group(1), options)}; choose from {', '.join(options)}"
        unknown = re.search(r"unrecognized arguments: (.*)", message)
        if unknown:
            word = unknown.group(1).split()[0]
            flag = word.split("=")[0]
            commands = {n: p for a in self._subparser_actions() for n, p in a.choices.items()}
            command = getattr(self, "command", None)
            if command not in commands:
                flags = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
                return f"unknown option {word}{did_you_mean(flag, flags)}"
            owners = [n for n, p in commands.items() if n != command and flag in _flags(p)]
            if owners:
                return f"{command} has no option {flag} (it is an option of {', '.join(owners)})"
            return f"{command}: unknown option {word}{did_you_mean(flag, _flags(commands[command]))}"
        return message

    def _subparser_actions(self) -> list[Any]:
        return [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def _add_field(group: Any, f: dataclasses.Field) -> None:
    """One option from a settings field: booleans are flags, lists comma-separated, values parsed later."""
    meta = f.metadata
    names = [flag_name(f)]
    kwargs: dict[str, Any] = {"dest": f.name, "help": meta.get("help", ""), "default": None}
    if f.type in ("bool", bool):
        kwargs["action"] = "store_true"
    elif f.type in ("bool | None",):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif meta.get("repeatable"):
        kwargs.update(action="append", metavar=meta.get("metavar"))
    else:
        kwargs["metavar"] = meta.get("metavar") or ("{" + ",".join(meta["choices"]) + "}" if meta.get("choices")
                                                    else None)
        if "tuple" in str(f.type):  # a comma-separated list given twice would silently keep only the last
            kwargs["action"] = _ListOnce
    group.add_argument(*names, **kwargs)


class _ListOnce(argparse.Action):
    """A comma-separated list option that may be given once: ``--kind scale --kind translation`` is
    refused (argparse would keep only ``translation``) with the one-list form it means."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        earlier = getattr(namespace, self.dest, None)
        if earlier is not None:
            raise UsageError(f"{option_string} given twice: give one comma-separated list, e.g. "
                             f"{option_string} {earlier},{values}")
        setattr(namespace, self.dest, values)


def add_probe_arguments(parser: argparse.ArgumentParser, probe_cls: Any) -> None:
    """Shared options (models and data, run) and the probe's own, from their dataclasses."""
    run_fields = [f for f in dataclasses.fields(RunOptions) if f.metadata.get("cli", True)]
    data = parser.add_argument_group("models and data (shared by every probe)")
    run = parser.add_argument_group("run (shared by every probe)")
    for f in run_fields:
        _add_field(run if f.name in _SHARED_GROUPS["run"] else data, f)
    own = parser.add_argument_group(probe_cls.name)
    for f in dataclasses.fields(probe_cls.Config):
        if f.metadata.get("cli", True):
            _add_field(own, f)


def cmd_probe(args: argparse.Namespace) -> int:
    from .api import execute

    values = {k: v for k, v in vars(args).items() if k not in ("handler", "command", "probe_name", "argv") and v is not None}
    values["model"] = tuple(values.get("model", ()))
    values["checkpoint"] = tuple(values.get("checkpoint", ()))
    execute(args.probe_name, values, {"argv": ["stm-probe", *args.argv]})
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Run several analyses over the same models into one folder and write report.md/report.html."""
    from .compare import run_compare

    values = {k: v for k, v in vars(args).items() if k not in ("handler", "command", "argv") and v is not None}
    values["model"] = tuple(values.get("model", ()))
    values["checkpoint"] = tuple(values.get("checkpoint", ()))
    values["set"] = tuple(values.get("set", ()))
    run_compare(values, {"argv": ["stm-probe", *args.argv]})
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render the report of a compare folder from its files (no torch)."""
    from .compare import render_report

    paths = render_report(args.dir, alpha=args.alpha, n_boot=args.pairwise_bootstrap, link_figures=args.link_figures)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training.train import run_training

    values = {k: v for k, v in vars(args).items() if k not in ("handler", "command", "argv") and v is not None}
    run_training(values, {"argv": ["stm-probe", *args.argv]})
    return 0


def cmd_make_data(args: argparse.Namespace) -> int:
    """Write a synthetic split as PNGs in ImageFolder layout."""
    from .data.synthetic import export_imagefolder

    written = export_imagefolder(args.split, args.out, args.num_images, seed=args.seed, classes=args.classes,
                                 size=args.size)
    print(f"wrote {len(written)} image(s) of synthetic:{args.split} to {args.out}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """Print the unified models (static facts; --build recomputes from built models)."""
    from .models.summary import format_table, model_table

    rows = model_table(args.patterns or None, build=args.build)
    if args.format == "csv":
        return _print_csv(rows)
    print(format_table(rows))
    print("Any timm architecture name works too (built without downloading weights).")
    return 0


def _print_csv(rows: list[dict[str, Any]]) -> int:
    """``rows`` as CSV on standard output (header from the first row's keys); exit code 0."""
    import csv

    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    """List the release files (model, file, URL, published top-1, cached or not); --download fetches them."""
    from .models.release import cache_dir, fetch, format_weights, weights_table

    if args.download:
        for row in weights_table(args.patterns or None):
            fetch(row["model"], quiet=args.quiet)
    rows = weights_table(args.patterns or None)
    if args.format == "csv":
        return _print_csv(rows)
    print(format_weights(rows))
    print(f"cache: {cache_dir()} (set STM_PROBE_CACHE to move it; STM_PROBE_RELEASE_URL for a mirror). "
          "Use them with --pretrained.")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Redraw the figures of a run folder (or draw several folders of one probe together) from their data files."""
    import importlib

    from .plots import check_runs
    from .plots.style import resolve_style
    from .probes import get_probe

    dirs = list(args.dir)
    if len(set(map(str, dirs))) != len(dirs):
        raise UsageError("a run folder is given twice: give each folder once")
    if len(dirs) > 1 and args.out is None:
        raise UsageError(f"{len(dirs)} run folders: give --out DIR for the figures drawn from them together")
    out = args.out or dirs[0]
    check_out_folder(out)
    style = resolve_style(dirs[0], args.style, args.cmap, args.formats)
    if args.probe == "train":
        from .plots.train import plot_train

        if len(dirs) > 1:
            raise UsageError("plot train takes one training folder: draw each one on its own")
        paths = plot_train(out, sources=dirs, style=style)
        print(f"redrew {len(paths)} file(s) in {out}")
        return 0
    probe = get_probe(args.probe)
    check_runs(args.probe, dirs)
    for folder in dirs:
        csv_path = folder / f"{args.probe}.csv"
        if not csv_path.is_file():
            raise UsageError(f"{csv_path} not found: give the --out folder of a `stm-probe {args.probe}` run")
    paths = []
    if probe.plot:
        module_name, func = probe.plot.split(":")
        out.mkdir(parents=True, exist_ok=True)
        function = getattr(importlib.import_module(module_name), func)  # every plot takes sources and style
        paths = function(out, args.probe, sources=dirs, style=style)
    print(f"{'redrew' if len(dirs) == 1 and out == dirs[0] else 'drew'} {len(paths)} file(s) in {out}")
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    """Write one of the paper artefacts that need no checkpoint (teaser, architecture table, throughput)."""
    from . import paper

    if args.artefact == "teaser":
        paths = paper.write_teaser(args.out)
    elif args.artefact == "arch":
        paths = paper.write_architecture(args.out)
    else:
        paths = paper.write_speed(args.out, args.model or ["unified_*_tiny"], args.device, args.batch_size,
                                  args.input_size, args.warmup, args.iterations, args.quiet)
    print(f"wrote {', '.join(p.name for p in paths)} in {args.out}")
    return 0


def _add_paper_parser(sub: Any) -> None:
    from .paper import SPEED_PROTOCOL

    p = sub.add_parser("paper", help="paper artefacts that need no checkpoint: teaser (F1, published top-1 vs "
                       "parameters), arch (T-arch table), speed (T-speed throughput)")
    p.add_argument("artefact", choices=("teaser", "arch", "speed"), help="which artefact")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write")
    speed = p.add_argument_group("speed (the paper's protocol by default)")
    speed.add_argument("--model", action="append", metavar="NAME", help="models (repeatable; default unified_*_tiny)")
    speed.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:i (default auto)")
    for name in ("batch_size", "input_size", "warmup", "iterations"):
        speed.add_argument("--" + name.replace("_", "-"), type=int, default=SPEED_PROTOCOL[name], metavar="N",
                           help=f"default {SPEED_PROTOCOL[name]}")
    p.add_argument("--quiet", action="store_true", help="no per-model lines")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_paper)


def build_parser() -> Parser:
    from .probes import PROBES, get_probe

    parser = Parser(prog="stm-probe", description="Analyses of the spatial token mixers of vision backbones: "
                    "effective receptive fields, invariance, adversarial robustness, inductive bias; training on synthetic or "
                    "your own data.")
    parser.add_argument("--version", action="version", version=f"stm-probe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in PROBES:
        probe = get_probe(name)
        p = sub.add_parser(name, help=probe.help, description=probe.help)
        add_probe_arguments(p, probe)
        p.set_defaults(handler=cmd_probe, probe_name=name)
    from .training.config import TrainConfig

    p = sub.add_parser("train", help="train a model (new head of the data's class count) on an ImageFolder or a "
                       "synthetic split; checkpoint.pth loads in every probe",
                       description="Train a model (unified or timm, with a new head of the data's class count) on an "
                       "ImageFolder tree or a synthetic split, validating after each epoch. OUT gets checkpoint.pth "
                       "(loads in every probe with --checkpoint), train_log.csv, the training curve and "
                       "manifest.json; --resume continues an interrupted run.")
    group = p.add_argument_group("train")
    for f in dataclasses.fields(TrainConfig):
        if f.metadata.get("cli", True):
            _add_field(group, f)
    p.set_defaults(handler=cmd_train)
    p = sub.add_parser("make-data", help="write a split of the synthetic shapes-and-textures set as PNGs "
                       "(ImageFolder layout)")
    p.add_argument("--split", choices=SYNTHETIC_SPLITS, default="train", help="which split (default train)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="empty or new folder to write")
    p.add_argument("--num-images", type=int, default=1000, metavar="N", help="images to write (default 1000)")
    p.add_argument("--classes", type=int, default=8, metavar="K", help="classes, 2..16 (default 8)")
    p.add_argument("--size", type=int, default=64, metavar="PX", help="side the model sees (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the set (default 0)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_make_data)
    p = sub.add_parser("models", help="list the unified models (name, STM, size, parameters, GMACs, published top-1, "
                       "aliases)")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="names, aliases or globs, e.g. 'unified_*_tiny'")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default table)")
    p.add_argument("--build", action="store_true", help="build every model and count parameters and GMACs (slow)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_models)
    p = sub.add_parser("weights", help="the released checkpoints: file, URL, published top-1, cached or not; "
                       "--download fetches them", description="The release file of each unified model (all 20 "
                       "without PATTERN): its URL, the paper's ImageNet-1k top-1, and whether it is in the cache (path, "
                       "size, sha256). --pretrained uses the same files.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="names, aliases or globs, e.g. 'unified_*_tiny'")
    p.add_argument("--download", action="store_true", help="download the selected files that are not cached")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default table)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_weights)
    from .compare.runner import CompareCommand

    p = sub.add_parser("compare", help="run several analyses (eval, erf, invariance, adversarial, bias, ...) over the "
                       "same models and write one report (report.md, self-contained report.html) with pairwise tests",
                       description="Run each analysis into OUT/<analysis>/ (reusing complete earlier runs with the same "
                       "settings), then write OUT/report.md and OUT/report.html.")
    add_probe_arguments(p, CompareCommand)
    p.set_defaults(handler=cmd_compare)
    p = sub.add_parser("report", help="re-render report.md/report.html of a compare folder from its files")
    p.add_argument("dir", type=Path, help="the compare folder (the --out of stm-probe compare)")
    p.add_argument("--alpha", type=float, default=None, metavar="A", help="level of the Holm-corrected pairwise "
                   "tests (default: the compare run's, 0.05)")
    p.add_argument("--pairwise-bootstrap", type=int, default=None, metavar="N", help="bootstrap replicates of each "
                   "paired test (default: the compare run's, 10000)")
    p.add_argument("--link-figures", action="store_true", help="report.html links each figure by its relative path "
                   "instead of embedding it (a small page to keep beside its figures, e.g. in a repository)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_report)
    p = sub.add_parser("plot", help="redraw a probe's figures from its saved CSV/npy files, without recomputing")
    p.add_argument("probe", choices=[*PROBES, "train"], help="which probe (or train) the folder holds")
    p.add_argument("dir", type=Path, nargs="+", metavar="DIR", help="the run folder (the probe's --out); several "
                   "folders of the same probe and settings are drawn together")
    p.add_argument("--out", type=Path, metavar="DIR", help="folder for the figures (default: the run folder; "
                   "required with several)")
    p.add_argument("--style", choices=("default", "paper"), help="figure style (default: the run's own --style)")
    p.add_argument("--formats", metavar="FMT[,FMT]", help="figure files: png, pdf, svg (default: the run's own; "
                   "png, or png,pdf with --style paper)")
    p.add_argument("--cmap", metavar="NAME", help="colour map of ERF heat maps (default: the run's own, else viridis; "
                   "RdYlGn: RepLKNet's red-yellow-green)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=cmd_plot)
    _add_paper_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        parser.command = next((a for a in argv if not a.startswith("-")), None)
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        args.argv = argv
        return int(args.handler(args) or 0)
    except UsageError as exc:
        if debug:
            raise
        print(f"stm-probe: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`stm-probe models --format csv | head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("stm-probe: interrupted; rerun the same command with --resume to continue", file=sys.stderr)
        return 130

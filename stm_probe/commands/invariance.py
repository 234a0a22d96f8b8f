"""`stm-probe invariance`: prediction invariance to translation, rotation and scale, circular-shift
consistency and per-stage shift equivariance."""
from __future__ import annotations

import argparse
import math

from ..cli import add_common_options, float_list, make_context
from ..data import ShortSideResize
from ..errors import UsageError
from ..invariance import KINDS, TRANSLATION_MODES, UNITS, SweepPlan, default_levels, group_images, run_sweep, summarise
from ..models.unified import UnifiedNet
from ..plots.invariance import plot_invariance
from ..report import write_csv
from .common import finish, open_images, progress, record_images

COLUMNS = ("model", "stm", "size", "weights", "kind", "level", "metric", "value", "ci_low", "ci_high", "n_images")
HELP = "invariance to translation, rotation and scale; circular-shift consistency; per-stage shift equivariance"
_INTEGER_KINDS = ("translation", "circular-shift", "equivariance")  # levels in whole pixels


def kind_list(text: str) -> list[str]:
    """'translation,scale' -> ['translation', 'scale'] in `KINDS` order; 'all' -> every kind."""
    names = [item.strip() for item in text.split(",") if item.strip()]
    bad = [n for n in names if n not in (*KINDS, "all")]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown kind '{','.join(bad) or text}': "
                                         f"choose from {', '.join(KINDS)} or all")
    return list(KINDS) if "all" in names else [k for k in KINDS if k in names]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_options(parser, "invariance", num_images=50, batch_size=16)
    g = parser.add_argument_group("invariance")
    g.add_argument("--kind", type=kind_list, default=list(KINDS), metavar="KIND[,KIND]",
                   help=f"what to vary: {', '.join(KINDS)}, or all (default all)")
    g.add_argument("--levels", type=float_list, default=None, metavar="V,...",
                   help="levels of a single --kind in its unit: jitter px (translation), degrees (rotations), crop "
                        "ratio (scale), max shift px (circular-shift), shift px (equivariance); default: the paper's "
                        "grids (0..64 step 4; 0..90 step 5; 0.2..1.95 step 0.125) and 4,8,16,32 (circular-shift), "
                        "4,8,16,32,64 (equivariance), below --input-size")
    g.add_argument("--translation-mode", choices=TRANSLATION_MODES, default="official",
                   help="official: the paper's crop, clipped to the image and zero-padded on both sides "
                        "(re-centres crops that leave the image); pure: content moves by exactly the jitter, black "
                        "where the window leaves the image (default official)")
    g.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap replicates for the 95%% CIs over images (default 1000; 0 = none)")


def _check_level(kind: str, value: float) -> None:
    if not math.isfinite(value):
        raise UsageError(f"--levels: {value} is not a finite number")
    if kind in _INTEGER_KINDS and (value < 0 or value != int(value)):
        raise UsageError(f"--levels {value:g}: {kind} levels are whole pixels >= 0, e.g. 0,8,16")
    if kind == "equivariance" and value == 0:
        raise UsageError("--levels 0: equivariance shifts must be positive pixels, e.g. 4,8,16,32")
    if kind == "scale" and value <= 0:
        raise UsageError(f"--levels {value:g}: scale levels are crop ratios > 0, e.g. 0.5,0.875,1.5")


def check_options(args: argparse.Namespace) -> dict[str, tuple[float, ...]]:
    """Validate the invariance options; returns the levels of each requested kind."""
    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap {args.bootstrap}: give 0 or a positive number of replicates")
    if args.levels is None:
        return {kind: tuple(default_levels(kind, args.input_size)) for kind in args.kind}
    if len(args.kind) != 1:
        raise UsageError(f"--levels applies to one kind, but --kind names {len(args.kind)}: "
                         "run each kind with its own --levels")
    kind = args.kind[0]
    for value in args.levels:
        _check_level(kind, value)
    return {kind: tuple(args.levels)}


def _check_stages(net, name: str) -> None:
    """Equivariance reads stage outputs: fail early, in one line, for a model without them."""
    model = net.model
    if not (isinstance(model, UnifiedNet) or (hasattr(model, "forward_intermediates")
                                              and getattr(model, "feature_info", None))):
        raise UsageError(f"{name} exposes no feature stages, which --kind equivariance needs: "
                         "leave equivariance out of --kind")


def _summary(rows: list[dict], kinds: list[str]) -> list[str]:
    """One line per kind: the headline metric at its largest level, per model."""
    lines = []
    for kind in kinds:
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        metric = "consistency" if kind != "equivariance" else max(r["metric"] for r in sel)
        last = max(r["level"] for r in sel if r["metric"] == metric)
        parts = [f"{r['model']} {r['value']:.3g}" for r in sel if r["metric"] == metric and r["level"] == last]
        lines.append(f"  {kind} {metric} at {last:g} {UNITS[kind]}: {', '.join(parts)}")
    return lines


def run(args: argparse.Namespace) -> int:
    levels = check_options(args)
    ctx = make_context("invariance", args)
    source = ctx.source
    plan = SweepPlan(tuple(args.kind), levels, args.input_size, min(args.num_images, len(source)), seed=args.seed,
                     translation_mode=args.translation_mode)
    # one decoded image at a time, short side resized but not cropped (views are made on the device)
    loader = open_images(ctx, transform=ShortSideResize(*plan.base_short_sides()), batch_size=1)
    ctx.record.update(invariance={"kinds": list(plan.kinds), "levels": {k: list(v) for k, v in levels.items()},
                                  "units": {k: UNITS[k] for k in plan.kinds}, "translation_mode": args.translation_mode,
                                  "bootstrap": args.bootstrap, "base_short_side": list(plan.base_short_sides()),
                                  "directions": "seeded per image position and level (identical for every model)"})
    rows: list[dict] = []
    for loaded in ctx.load_models():
        if "equivariance" in plan.kinds:
            _check_stages(loaded.net, loaded.name)
        with progress(ctx, loader.num_images, f"invariance {loaded.name}") as bar:
            result = run_sweep(loaded.net, plan, group_images(loader, args.batch_size, ctx.device), progress=bar)
        record_images(ctx, loader)
        if result.num_images == 0:
            raise UsageError(f"no image could be read from {source.location}: {loader.skip_summary()}")
        rows += [{**loaded.columns(), **row} for row in summarise(result, args.bootstrap, seed=args.seed)]
    write_csv(ctx.out_dir / "invariance.csv", rows, COLUMNS)
    for path in plot_invariance(ctx.out_dir):
        ctx.record.add_output(path)
    weights_note = "" if any(r["weights"] != "random-init" for r in rows) else " (random-init weights: no checkpoint)"
    head = f"invariance: {len(ctx.models)} model(s), {loader.num_loaded} images{weights_note}; at the largest level:"
    return finish(ctx, "\n".join([head, *_summary(rows, list(plan.kinds))]))

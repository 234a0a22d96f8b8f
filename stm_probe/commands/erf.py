"""`stm-probe erf`: effective receptive fields per stage, heatmaps and area ratios."""
from __future__ import annotations

import argparse

import numpy as np

from ..cli import add_common_options, float_list, int_list, make_context, seed_everything
from ..erf import area_ratio, bootstrap_area_ci, compute_erf, flush_denormals_for_process, log_normalize
from ..errors import UsageError
from ..models.features import Normalized, num_stages
from ..plots.erf import map_path, plot_erf
from ..report import write_csv
from ..runs import atomic_path
from .common import finish, open_images, progress, record_images

COLUMNS = ("model", "stm", "size", "weights", "stage", "threshold", "side_px", "side_ratio", "area_ratio",
           "ci_low", "ci_high", "n_images", "n_skipped", "input_size", "reached", "init_copy")
HELP = "effective receptive field of every stage: mean contribution maps, heatmaps and area ratios"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_options(parser, "erf", num_images=50, batch_size=8)
    g = parser.add_argument_group("erf")
    g.add_argument("--stages", type=int_list, default=None, metavar="1,2,3,4",
                   help="stages to analyse, 1-based (default: all)")
    g.add_argument("--thresholds", type=float_list, default=[0.2, 0.3, 0.5, 0.99], metavar="T,...",
                   help="area-ratio thresholds in (0, 1) (default 0.2,0.3,0.5,0.99)")
    g.add_argument("--resize", choices=("warp", "crop"), default="warp",
                   help="warp: resize to input-size square as the authors did (default); "
                        "crop: short-side resize + centre crop")
    g.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap replicates for the 95%% CIs over images (default 1000; 0 = none)")
    g.add_argument("--compare-init", action="store_true",
                   help="also compute the maps of a freshly initialised copy (seeded): the architecture's prior")


def _check_options(args: argparse.Namespace) -> None:
    if any(not 0 < t < 1 for t in args.thresholds):
        raise UsageError(f"--thresholds {args.thresholds}: every threshold must lie strictly between 0 and 1")
    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap {args.bootstrap}: give 0 or a positive number of replicates")


def _stages(args: argparse.Namespace, net: Normalized, name: str) -> list[int]:
    """0-based stage indices to analyse for this model."""
    count = num_stages(net.model)
    wanted = args.stages or list(range(1, count + 1))
    bad = [s for s in wanted if not 1 <= s <= count]
    if bad:
        raise UsageError(f"--stages {','.join(map(str, wanted))}: {name} has stages 1..{count}")
    return [s - 1 for s in wanted]


def _fresh_copy(net: Normalized, name: str, seed: int) -> Normalized:
    """A newly initialised copy of the model (seeded): same architecture, random-init weights."""
    from ..models import create_model

    seed_everything(seed)
    fresh = create_model(name, num_classes=getattr(net.model, "num_classes", 1000))
    return Normalized(fresh).to(net.mean.device).eval()


def _save_map(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def analyse(ctx, loaded, net: Normalized, label: str, init_copy: bool, loader, stages: list[int]) -> list[dict]:
    """Maps, files and CSV rows of one model (or its fresh-init copy)."""
    args = ctx.args
    with progress(ctx, loader.num_images, f"erf {label}") as bar:
        acc = compute_erf(net, (b.images for b in loader), stages, ctx.device, args.batch_size, progress=bar)
    rows = []
    weights = "random-init" if init_copy else loaded.weights
    for stage in stages:
        maps = acc.stacked(stage)
        if maps.shape[0] == 0:
            raise UsageError(f"{loaded.name} stage {stage + 1}: every contribution map was NaN; check the checkpoint")
        mean = acc.mean_map(stage)
        norm = log_normalize(mean)
        _save_map(map_path(ctx.out_dir, label, stage), mean)
        _save_map(map_path(ctx.out_dir, label, stage, normalised=True), norm)
        cis = bootstrap_area_ci(maps, args.thresholds, args.bootstrap, seed=args.seed)
        for t, (low, high) in zip(args.thresholds, cis):
            ratio = area_ratio(norm, t)
            rows.append({**loaded.columns(), "weights": weights, "stage": stage + 1, "threshold": t,
                         "side_px": ratio.side_px, "side_ratio": ratio.side_ratio, "area_ratio": ratio.area_ratio,
                         "ci_low": low, "ci_high": high, "n_images": int(maps.shape[0]),
                         "n_skipped": acc.skipped.get(stage, 0), "input_size": args.input_size,
                         "reached": ratio.reached, "init_copy": init_copy})
    return rows


def run(args: argparse.Namespace) -> int:
    flush_denormals_for_process()  # before any parallel torch op, so every CPU thread inherits it
    _check_options(args)
    ctx = make_context("erf", args)
    loader = open_images(ctx, mode="warp" if args.resize == "warp" else "center")
    ctx.record.update(erf={"thresholds": args.thresholds, "resize": args.resize, "bootstrap": args.bootstrap,
                           "gradient_wrt": "normalised input", "compare_init": args.compare_init})
    rows: list[dict] = []
    for loaded in ctx.load_models():
        stages = _stages(args, loaded.net, loaded.name)
        rows += analyse(ctx, loaded, loaded.net, loaded.name, False, loader, stages)
        if args.compare_init and loaded.weights != "random-init":
            fresh = _fresh_copy(loaded.net, loaded.name, args.seed)
            rows += analyse(ctx, loaded, fresh, f"{loaded.name}_init", True, loader, stages)
            del fresh
        record_images(ctx, loader)
    write_csv(ctx.out_dir / "erf.csv", rows, COLUMNS)
    for path in plot_erf(ctx.out_dir):
        ctx.record.add_output(path)
    last = [r for r in rows if r["threshold"] == args.thresholds[-1]]
    best = ", ".join(f"{r['model']}{'(init)' if r['init_copy'] else ''} s{r['stage']}={r['area_ratio']:.3f}"
                     for r in last if r["stage"] == max(x["stage"] for x in last))
    weights_note = "" if any(r["weights"] != "random-init" for r in rows) else " (random-init weights: no checkpoint)"
    return finish(ctx, f"erf: {len(ctx.models)} model(s), {loader.num_loaded} images; area ratio at "
                       f"t={args.thresholds[-1]}, last stage: {best}{weights_note}")

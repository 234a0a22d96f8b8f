"""`stm-probe compare`: run several analyses over the same models into one folder, then write the report.

Each analysis runs through `stm_probe.api.execute` into ``DIR/<analysis>/`` with its probe's
default settings (except `COMPARE_DEFAULTS`: invariance runs only the headline's three kinds),
changed by ``--set ANALYSIS.SETTING=VALUE`` (repeatable; checked against the probe's settings
with a did-you-mean). Before an analysis runs, the folder is looked at:

* missing or empty: the analysis is computed;
* a complete run whose identity (settings, models, checkpoints, images, input size, seed,
  repeats, bootstrap: `stm_probe.runtime.identity.run_identity`) equals this call's: reused as it
  is, nothing recomputed or rewritten;
* an unfinished run with the same identity: continued (its finished units are kept);
* a run with another identity: refused in one line naming what differs and the fix; results
  of different settings are never mixed.

Then `render_report` (also `stm-probe report DIR`, without torch) writes report.md, report.html
and the summary heat map. Under torchrun only rank 0 writes compare.json and the report.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..options import RunOptions, check_out_folder, did_you_mean, name_list, non_negative_int, option
from .replicates import FOLDER, replicate_checkpoints

#: the analyses `--analyses` defaults to (those registered; eval only on labelled data)
DEFAULT_ANALYSES = ("eval", "erf", "invariance", "adversarial", "bias")
#: shared options an analysis may set for itself with --set (the rest must be the same for every analysis)
PER_ANALYSIS_SHARED = ("data", "image_list", "labels", "num_images", "subset_seed", "batch_size", "bootstrap",
                       "repeats")
#: compare's own defaults where a probe's would measure much that the report does not use (--set changes them):
#: invariance runs the three kinds of the headline (translation, rotation, scale), not all seven
COMPARE_DEFAULTS: dict[str, dict[str, Any]] = {"invariance": {"kind": "translation,pre-rotation,scale"}}
#: shared options an analysis with its own stimuli ignores (cue-conflict)
DATA_OPTIONS = ("data", "image_list", "labels", "num_images", "subset_seed")
#: --quick: the fewest images and levels that still give every headline column (a smoke run, not evidence):
#: 2 images (an interval needs two), ERF at the headline's threshold only, one eps per attack, and of bias
#: only the methods with a column at the coarsest grids; invariance keeps its grids (--levels sets one kind
#: only). An explicit --num-images or --set wins.
QUICK_IMAGES = 2
QUICK_SETTINGS: dict[str, dict[str, str]] = {
    "erf": {"thresholds": "0.99"},
    "adversarial": {"eps": "4"},
    "bias": {"probe": "patch-shuffle,fourier", "grids": "1,4", "fourier_grid": "16"},
}


@dataclass(frozen=True)
class Analysis:
    """An analysis compare can run: a probe, the settings it always passes, and whether it brings its own data."""

    name: str
    probe: str
    fixed: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # compare's defaults, which --set may change
    own_data: bool = False
    about: str = ""


def analyses() -> dict[str, Analysis]:
    """Every analysis: one per registered probe, plus cue-conflict (bias on the cue-conflict stimuli)."""
    from ..probes import PROBES

    table = {name: Analysis(name, name, defaults=COMPARE_DEFAULTS.get(name, {})) for name in PROBES}
    if "bias" in PROBES:
        table["cue-conflict"] = Analysis("cue-conflict", "bias", {"probe": "cue-conflict"}, own_data=True,
                                         about="shape bias on the shipped cue-conflict sample (or --set "
                                               "cue-conflict.data=DIR); --data and --num-images do not apply")
    return table


@dataclass(frozen=True)
class CompareConfig:
    """Settings of `stm-probe compare` beside the shared model/data/run options."""

    analyses: tuple[str, ...] | None = option(None, "analyses to run, comma-separated: eval, erf, invariance, "
                                              "adversarial, bias, cue-conflict, corruption, ... (default eval,erf,"
                                              "invariance,adversarial,bias; eval only on labelled data)",
                                              parse=name_list, metavar="A,B")
    set: tuple[str, ...] = option((), "a setting of one analysis, ANALYSIS.SETTING=VALUE (repeatable), e.g. "
                                  "--set erf.stages=4 --set adversarial.eps=1,4; each analysis otherwise runs its "
                                  "probe's defaults, except invariance: kind=translation,pre-rotation,scale",
                                  metavar="A.S=V", repeatable=True)
    alpha: float = option(0.05, "family-wise error rate of the Holm-corrected pairwise tests (default 0.05)",
                          parse=float, metavar="A")
    pairwise_bootstrap: int = option(10_000, "bootstrap replicates of each paired test (default 10000)",
                                     parse=non_negative_int, metavar="N")
    quick: bool = option(False, f"a quick look: {QUICK_IMAGES} images, ERF at t=0.99, adversarial at eps 4, bias "
                         "patch-shuffle (grids 1,4) and fourier (grid 16): every headline column, fewest images and "
                         "levels (--num-images and --set still win)")

    def __post_init__(self) -> None:
        check_test_settings(self.alpha, self.pairwise_bootstrap)


def check_test_settings(alpha: float, n_boot: int) -> None:
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha {alpha}: give a level strictly between 0 and 1, e.g. 0.05")
    if not 100 <= n_boot <= MAX_PAIRWISE_BOOTSTRAP:
        raise UsageError(f"--pairwise-bootstrap {n_boot}: give 100 to {MAX_PAIRWISE_BOOTSTRAP} replicates (10000 is "
                         "the default)")


#: the most replicates of a paired test (each holds one mean per model pair: memory grows with it)
MAX_PAIRWISE_BOOTSTRAP = 100_000


class CompareCommand:
    """What `stm_probe.cli.add_probe_arguments` needs to build the compare options."""

    name = "compare"
    Config = CompareConfig


# --- --set ---------------------------------------------------------------------------------------
def _parse_bool(key: str, text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise UsageError(f"--set ...{key}={text}: give true or false")


def parse_settings(items: tuple[str, ...], chosen: dict[str, Analysis]) -> dict[str, dict[str, Any]]:
    """``('erf.stages=4', ...)`` -> {analysis: {setting: value}}, each checked against the probe's settings."""
    from ..options import coerce
    from ..probes import get_probe

    out: dict[str, dict[str, Any]] = {name: {} for name in chosen}
    for item in items:
        head, sep, value = str(item).partition("=")
        name, dot, key = head.strip().partition(".")
        if not sep or not dot or not key:
            raise UsageError(f"--set {item}: write ANALYSIS.SETTING=VALUE, e.g. --set erf.stages=4")
        if name not in chosen:
            raise UsageError(f"--set {item}: '{name}' is not among --analyses {','.join(chosen)}"
                             f"{did_you_mean(name, list(chosen))}")
        cls = get_probe(chosen[name].probe)
        key = key.strip().replace("-", "_")
        own = {f.name: f for f in fields(cls.Config) if f.name not in chosen[name].fixed}
        shared = {f.name: f for f in fields(RunOptions) if f.name in PER_ANALYSIS_SHARED}
        known = {**own, **shared}
        if key not in known:
            names = [k.replace("_", "-") for k in known]
            raise UsageError(f"--set {item}: {name} has no setting '{key.replace('_', '-')}'"
                             f"{did_you_mean(key.replace('_', '-'), names)}; its settings: {', '.join(names)}")
        parsed: Any = _parse_bool(key, value) if str(known[key].type).startswith("bool") else value.strip()
        out[name][key] = parsed
    for name, values in out.items():  # check the values (and combinations) as the probe would
        cls = get_probe(chosen[name].probe)
        merged = {**chosen[name].defaults, **values, **chosen[name].fixed}
        own = {k: v for k, v in merged.items() if k in {f.name for f in fields(cls.Config)}}
        try:
            coerce(cls.Config, own)
            coerce(RunOptions, {"model": ("x",), **{k: v for k, v in values.items() if k not in own}})
        except UsageError as exc:
            raise UsageError(f"--set ({name}): {exc}") from None
    return out


# --- reuse -----------------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _differences(previous: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """What differs between a folder's run.json and this call, e.g. ['settings (stages)', 'input_size']."""
    changed = []
    for key, value in identity.items():
        old = previous.get(key)
        if _same(old, value):
            continue
        if isinstance(old, dict) and isinstance(value, dict):
            inner = [k for k in {**old, **value} if not _same(old.get(k), value.get(k))]
            parts = [f"{k}: {_short(old.get(k))} there, {_short(value.get(k))} now" for k in inner]
            changed.append(f"{key} ({'; '.join(parts)})")
        else:
            changed.append(f"{key} ({_short(old)} there, {_short(value)} now)")
    return changed


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[:width - 3] + "..."


def expected_identity(probe_name: str, values: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(run identity, session) the analysis would have, resolved by `api.prepare` as a run is."""
    from ..api import prepare
    from ..runtime.identity import run_identity

    probe, session = prepare(probe_name, values, {"argv": []}, write_files=True)
    return run_identity(probe, session), session


def decide(folder: Path, probe_name: str, identity: dict[str, Any], analysis: str) -> str:
    """'compute', 'reuse' or 'resume' for an analysis folder (see module docstring); UsageError otherwise."""
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return "compute"
    if not folder.is_dir():
        raise UsageError(f"{folder} is a file, where compare keeps the {analysis} run: move it or choose another --out")
    marker = folder / "run.json"
    try:
        previous = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(f"{folder} holds files but no readable stm-probe run.json: remove that folder (or choose "
                         "another --out) and rerun") from None
    if previous.get("probe") != probe_name:
        raise UsageError(f"{folder} holds a '{previous.get('probe')}' run, not '{probe_name}': remove that folder (or "
                         "choose another --out) and rerun")
    changed = _differences(previous, identity)
    if changed:
        raise UsageError(f"{folder} holds an earlier {analysis} run made with other {'; '.join(changed)}: remove that "
                         "folder (or choose another --out) to compute it with these settings")
    if previous.get("status") == "complete" and (folder / "manifest.json").is_file():
        return "reuse"
    return "resume"


def _check_out(out: Path, names: list[str]) -> None:
    from .folders import COMPARE_FILE, REPORT_FILES

    check_out_folder(out)
    if not out.is_dir():
        return
    if (out / "run.json").exists():
        raise UsageError(f"--out {out} is a single probe's run folder: give compare a folder of its own")
    known = set(names) | {COMPARE_FILE, *REPORT_FILES} | set(analyses())
    other = sorted(p.name for p in out.iterdir() if p.name not in known and not p.name.startswith("."))
    if other:
        raise UsageError(f"--out {out} holds files compare did not write ({', '.join(other[:3])}): choose an empty "
                         "folder or the folder of an earlier compare")


# --- the command -------------------------------------------------------------------------------------
def _plan(analysis: Analysis, shared: dict[str, Any], settings: dict[str, Any], out: Path,
          explicit: bool, folder: str, replicate: dict[str, Any]) -> tuple | None:
    """(analysis, its execute values, 'compute'/'reuse'/'resume', resolved models, identity, folder); None for a
    default eval without labels. ``replicate``: the checkpoints and index of one replicate ({} without). Every
    analysis is planned before any runs, so a conflicting folder is refused up front."""
    base = {k: v for k, v in shared.items() if not (analysis.own_data and k in DATA_OPTIONS)}
    run_values = {**base, **analysis.defaults, **settings, **analysis.fixed, **replicate, "out": str(out / folder),
                  "resume": False}
    identity, session = expected_identity(analysis.probe, run_values)
    if analysis.name == "eval" and not explicit and not session.source.has_labels:
        if replicate.get("replicate", 0) == 0:
            print(f"compare: eval left out: {session.source.location} has no labels (pass labelled --data, or "
                  "--analyses eval to insist)")
        return None
    return (analysis, run_values, decide(out / folder, analysis.probe, identity, analysis.name), session.models,
            identity, folder)


def _seeded_checkpoint_dir(shared: dict[str, Any]) -> None:
    """``--checkpoint-dir`` holding seed-suffixed files (`stm_probe.models.checkpoint_dir.seed_checkpoints`):
    each model's files become one ``--checkpoint NAME=S0,S1,...`` entry, i.e. its replicates (``shared`` is
    changed in place; nothing happens without such files or when ``--checkpoint`` already lists replicates)."""
    if shared.get("checkpoint_dir") is None or replicate_checkpoints(shared.get("checkpoint")) is not None:
        return
    from ..models import expand_model_patterns
    from ..models.checkpoint_dir import seed_checkpoints

    explicit = {str(c).partition("=")[0] for c in shared.get("checkpoint") or ()}
    models = [m for m in expand_model_patterns(list(shared.get("model") or ())) if m not in explicit]
    seeded = seed_checkpoints(models, shared["checkpoint_dir"])
    if seeded:
        missing = [m for m in models if m not in seeded]
        counts = {m: len(p) for m, p in seeded.items()}
        if missing:  # the folder is no longer searched: such a model would run at random init
            raise UsageError(f"--checkpoint-dir {shared['checkpoint_dir']} holds seed-suffixed checkpoints (_s<k>) of "
                             f"{', '.join(seeded)} but none of {missing[0]}: give every model its seed files, or "
                             "--checkpoint NAME=P1,P2,...")
        if len(set(counts.values())) > 1:
            raise UsageError(f"--checkpoint-dir {shared['checkpoint_dir']}: the models have different numbers of seed "
                             f"files ({', '.join(f'{m}: {n}' for m, n in counts.items())}); give every model one per "
                             "training seed")
        shared["checkpoint"] = [*(shared.get("checkpoint") or ()), *(f"{m}={','.join(p)}" for m, p in seeded.items())]
        del shared["checkpoint_dir"]


def run_compare(values: dict[str, Any], call: dict[str, Any]) -> Path:
    """Run the analyses named in ``values`` (shared options + CompareConfig fields) and write the report.

    Returns the compare folder. Raises UsageError (one line) on bad input or a folder of other settings.
    """
    from ..api import execute, light_checks
    from ..options import coerce
    from ..runtime.manifest import default_out_dir
    from ..runtime.distributed import is_main
    from ..runtime.progress import overall_progress

    own = {f.name for f in fields(CompareConfig)}
    config = coerce(CompareConfig, {k: v for k, v in values.items() if k in own and v is not None})
    shared = {k: v for k, v in values.items() if k not in own and v is not None}
    _seeded_checkpoint_dir(shared)
    replicates = replicate_checkpoints(shared.get("checkpoint"))
    every_checkpoint = {} if replicates is None else {"checkpoint": [c for rep in replicates for c in rep]}
    options = coerce(RunOptions, {**{k: v for k, v in shared.items() if k != "out" or v}, **every_checkpoint})
    light_checks(options)
    table = analyses()
    explicit = config.analyses is not None
    names = list(config.analyses) if explicit else [a for a in DEFAULT_ANALYSES if a in table]
    for name in names:
        if name not in table:
            raise UsageError(f"--analyses: unknown analysis '{name}'{did_you_mean(name, list(table))}; choose from "
                             f"{', '.join(table)}")
    chosen = {name: table[name] for name in names}
    if config.quick:
        shared.setdefault("num_images", QUICK_IMAGES)
    quick = [f"{name}.{key}={value}" for name in names if config.quick for key, value in QUICK_SETTINGS.get(name, {}).items()]
    settings = parse_settings((*quick, *config.set), chosen)  # a later --set of the same setting wins
    from ..runtime import distributed
    from ..runtime.session import resolve_device

    if distributed.init(resolve_device(options.device).type) and not options.out:
        raise UsageError("compare under torchrun needs --out DIR: every process must write into the same folder")
    out = Path(options.out) if options.out else default_out_dir("compare")
    # one run per analysis, or per analysis and replicate (folders <analysis>-r<k>, rows labelled with k)
    runs_of = [(None, {})] if replicates is None else \
        [(FOLDER.format(analysis="{analysis}", replicate=r), {"checkpoint": list(checkpoints), "replicate": r})
         for r, checkpoints in enumerate(replicates)]
    folders = {name: [(pattern or "{analysis}").format(analysis=name) for pattern, _ in runs_of] for name in names}
    _check_out(out, [folder for name in names for folder in folders[name]])
    started = time.perf_counter()
    distributed.barrier()  # under torchrun every rank looks at the folders before any rank writes into them
    plans = [plan for name in names for folder, (_, extra) in zip(folders[name], runs_of)
             if (plan := _plan(chosen[name], shared, settings[name], out, explicit, folder, extra))]
    distributed.barrier()
    done = []
    steps = sum(len(plan[3]) for plan in plans)  # plan: (analysis, run values, action, models, identity, folder)
    with overall_progress(steps, disable=options.quiet or not is_main()) as line:
        for analysis, run_values, action, models, identity, folder in plans:
            name, tic = analysis.name, time.perf_counter()
            if action == "reuse":
                line.bar.write(f"compare: {name}: reusing the complete run in {out / folder} (same settings, models "
                               "and images)")
                line.advance(len(models), computed=False)
            else:
                line.bar.write(f"compare: {name}: {'continuing the unfinished' if action == 'resume' else 'computing the'}"
                               f" run in {out / folder}")
                execute(analysis.probe, {**run_values, "resume": action == "resume"},
                        {**call, "compare": {"analysis": name, "out": str(out)}})
            settings_used = {**analysis.defaults, **settings[name], **analysis.fixed}
            done.append({"name": name, "probe": analysis.probe, "folder": folder, "settings": settings_used,
                         "status": {"reuse": "reused", "resume": "continued", "compute": "computed"}[action],
                         "seconds": round(time.perf_counter() - tic, 3), "models": models,
                         "identity": json.loads(json.dumps(identity, default=str)),
                         **({"replicate": run_values["replicate"]} if "replicate" in run_values else {})})
    if not done:
        raise UsageError("compare: no analysis left to run: name some with --analyses")
    if not is_main():
        return out
    from .. import __version__
    from ..files import write_json
    from ..runtime.manifest import package_versions
    from .folders import COMPARE_FILE

    write_json(out / COMPARE_FILE, {"tool": "stm-probe", "version": __version__, "call": call,
                                    "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
                                    "wall_time_s": round(time.perf_counter() - started, 3),
                                    "models": done[0]["models"], "analyses": done, "alpha": config.alpha,
                                    "pairwise_bootstrap": config.pairwise_bootstrap, "packages": package_versions()})
    paths = render_report(out)
    print(f"report: {paths[1]} (and {paths[0].name}), {round(time.perf_counter() - started, 1)} s")
    return out


def render_report(out_dir: str | Path, alpha: float | None = None, n_boot: int | None = None,
                  link_figures: bool = False) -> list[Path]:
    """(Re)write report.md, report.html and the summary heat map of a compare folder from its files.

    ``alpha``/``n_boot``: the pairwise tests' level and bootstrap replicates (default: compare.json's).
    ``link_figures``: report.html links each figure by its path in the folder instead of embedding it.
    Refuses (UsageError) an unfinished or damaged analysis. Imports no torch.
    """
    from ..plots.summary import plot_summary
    from .report import build_blocks, write_report
    from .folders import load_compare
    from .headline import headline_table
    from .pairwise import pairwise_table, tied_with_best

    out_dir = Path(out_dir)
    record, runs = load_compare(out_dir)
    alpha = float(record.get("alpha", 0.05)) if alpha is None else alpha
    n_boot = int(record.get("pairwise_bootstrap", 10_000)) if n_boot is None else n_boot
    check_test_settings(alpha, n_boot)
    models = list(record.get("models") or dict.fromkeys(m for r in runs for m in r.frame["model"]))
    n_ci = int(runs[0].marker.get("bootstrap", 1000) or 1000)
    specs, table = headline_table(runs, models, n_boot=n_ci)
    seed = int(runs[0].manifest.get("seed", 0) or 0)
    saturated = set(table.loc[table["saturated"] != "", "key"])
    pairs = pairwise_table(runs, specs, models, alpha=alpha, n_boot=n_boot, seed=seed, saturated=saturated)
    heatmap = None
    if specs:
        wide = table.pivot(index="model", columns="key", values="value").reindex(index=models,
                                                                                 columns=[s.key for s in specs])
        from ..plots.style import resolve_style

        paths = plot_summary(wide.astype(float), {s.key: s.better for s in specs}, {s.key: s.label for s in specs},
                             out_dir / "summary_heatmap", style=resolve_style(runs[0].path), saturated=saturated,
                             tied=tied_with_best(specs, table, pairs))
        heatmap = paths[0]
    blocks = build_blocks(record, runs, specs, table, pairs, models, alpha, heatmap, n_boot)
    return write_report(out_dir, blocks, link_figures=link_figures)

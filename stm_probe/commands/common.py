"""Pieces every analysis command uses: the image loader, progress bars, the closing summary."""
from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

from ..cli import RunContext
from ..data import ImageLoader, eval_transform, make_loader


def open_images(ctx: RunContext, mode: str = "center", transform: Any = None, batch_size: int | None = None) -> ImageLoader:
    """Loader of the run's images; records the source and transform in the manifest.

    Default: ``eval_transform(input_size, mode)`` batches ((B, 3, S, S) pixels in [0, 1]) of
    ``--batch-size``; an analysis that needs other views passes its own ``transform`` and
    ``batch_size``.
    """
    source = ctx.source
    transform = transform if transform is not None else eval_transform(ctx.args.input_size, mode)
    loader = make_loader(source, batch_size=batch_size or ctx.args.batch_size, num_images=ctx.args.num_images,
                         transform=transform, num_workers=ctx.args.workers,
                         spread_classes=source.has_labels, pin_memory=ctx.device.type == "cuda")
    ctx.record.update(data={"source": source.describe(), "kind": source.kind, "location": str(source.location),
                            "labelled": source.has_labels, "transform": repr(transform)})
    return loader


def record_images(ctx: RunContext, loader: ImageLoader) -> None:
    """Store how many images were read and skipped (after a pass) in the manifest."""
    ctx.record.update(num_images=loader.num_loaded, num_skipped_files=loader.num_skipped,
                      skipped_files=[s.path for s in loader.skipped])
    if loader.skipped:
        print(f"stm-probe: {loader.skip_summary()}", file=sys.stderr)


def progress(ctx: RunContext, total: int, desc: str) -> Any:
    """A tqdm bar on stderr (hidden with --quiet)."""
    return tqdm(total=total, desc=desc, unit="img", disable=ctx.quiet, leave=False, dynamic_ncols=True)


def finish(ctx: RunContext, summary: str) -> int:
    """Write the manifest and print the two-line summary."""
    ctx.record.write()
    print(summary)
    print(f"results in {ctx.out_dir}")
    return 0

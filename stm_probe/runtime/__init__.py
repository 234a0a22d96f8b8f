"""Runtime of a probe run: device, seeds, output folder, progress and the run record (no CLI here)."""

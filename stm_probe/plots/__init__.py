"""Figures drawn only from saved data files (CSV/npy), so they can be redrawn without recomputing."""

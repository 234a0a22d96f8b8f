"""Pure computation: the maths of every analysis on tensors and arrays (no run folders, no CLI)."""

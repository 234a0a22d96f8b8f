"""Commands that make things for the probes to measure, rather than measure them.

`train` (`stm_probe.training.train`): trains a registered model on an ImageFolder tree or a
synthetic split and writes a checkpoint every analysis loads with ``--checkpoint``. Its rooms:
`config` (settings), `splits` (which images), `images` (decoded in memory, augmentation),
`schedule` (learning rate, parameter groups), `trainer` (model, optimiser, epochs) and
`checkpoints` (checkpoint and log files).
"""

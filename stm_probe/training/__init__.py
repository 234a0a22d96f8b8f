"""Commands that make things for the probes to measure, rather than measure them.

`train` (`stm_probe.training.train`): trains a registered model on an ImageFolder tree or a
synthetic split and writes a checkpoint every analysis loads with ``--checkpoint``.
"""

"""A toy probe for tests/test_toy_probe.py: the ONE file a new probe needs (registered with one line,
``register_probe("contrast", "toy_probe:ContrastProbe")``).

Lowers the contrast of each image (x -> 0.5 + c (x - 0.5), pixels in [0, 1]) and records, per image,
whether the top-1 prediction survives (percent) and KL(clean || low contrast) in nats.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stm_probe.options import float_list, option
from stm_probe.probes import Probe, Unit
from stm_probe.probes.base import Values, clean_forward


@dataclass(frozen=True)
class ContrastConfig:
    contrast: tuple[float, ...] = option((1.0, 0.5, 0.25), "contrast factors c (1 = unchanged)", parse=float_list)


class ContrastProbe(Probe):
    """Top-1 agreement with the clean prediction (percent) and KL(clean || low contrast) in nats."""

    name = "contrast"
    help = "prediction change under lowered contrast"
    Config = ContrastConfig
    setting_columns = ("contrast",)
    statistics = {"consistency": "rate", "kl": "mean"}  # Wilson interval / bootstrap interval
    metric_ranges = {"kl": (0.0, float("inf"))}  # a file read back with a negative KL is damaged
    randomised = False

    def units(self) -> list[Unit]:
        return [Unit(f"contrast {c:g}", (c,)) for c in self.config.contrast]

    def measure(self, model: Any, unit: Unit, batch: Any) -> Values:
        import torch

        images, _, logits = clean_forward(model, batch, self.session.device)  # (B, 3, S, S) in [0, 1], (B, K)
        (c,) = unit.parts
        with torch.no_grad():
            low = model.net(0.5 + c * (images - 0.5))
        clean_log, low_log = logits.double().log_softmax(-1), low.double().log_softmax(-1)
        kl = (clean_log.exp() * (clean_log - low_log)).sum(-1)
        agree = (logits.argmax(-1) == low.argmax(-1)).double() * 100
        return Values({self.key(c, metric="consistency"): agree.cpu().numpy(),
                       self.key(c, metric="kl"): kl.cpu().numpy()})

    @staticmethod
    def compare_columns(name: str, frame: Any) -> list:
        """compare's headline: KL at the lowest contrast run (nats; lower = less moved by contrast)."""
        from stm_probe.probes.columns import HeadlineSpec, numeric_values

        lowest = numeric_values(frame, "contrast")[0]
        return [HeadlineSpec(name, f"{name}:kl", f"KL at contrast {lowest:g} (nats)", "kl", {"contrast": lowest},
                             better="lower", unit="nats", describe="KL divergence of the prediction under lowered "
                             "contrast from the clean one; lower = less moved",
                             claim="{a}'s predictions move less under lowered contrast than {b}'s")]

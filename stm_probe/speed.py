"""Throughput of a model in images per second.

The paper's protocol (T-speed, after the Swin / ConvNeXt throughput scripts): batch 128 of 224 x 224
images, 10 warm-up iterations, then 100 timed iterations, forward only and forward + backward, on one
device. `measure_throughput` implements it for any size and count; `stm-probe eval` uses a short
version (a few iterations at the run's batch size) as a rough figure beside the accuracy.

Timing is wall-clock (``time.perf_counter``); on CUDA the device is synchronised before the clock
starts and before it stops, so queued kernels are counted.
"""
from __future__ import annotations

import time

import torch
from torch import nn


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(net: nn.Module, batch_size: int, input_size: int, device: torch.device | str,
                       warmup: int = 10, iterations: int = 100, backward: bool = False) -> float:
    """Images per second of ``net`` on a (batch_size, 3, input_size, input_size) batch of uniform
    random pixels in [0, 1] (a fixed seed; values do not matter for speed), on ``device``.

    Forward: eval mode, no gradients. Forward + backward (``backward=True``): train mode (as a
    training step: drop path active), the sum of the outputs back-propagated to every parameter.
    ``warmup`` untimed iterations come first, then ``iterations`` timed ones. ``net`` is left as it
    was: its train/eval mode, its buffers (e.g. batch-norm statistics a training-mode forward would
    update) and its parameters' ``requires_grad`` are restored, their gradients set to None.
    ``net`` must already be on ``device``.
    """
    if batch_size < 1 or input_size < 1 or iterations < 1 or warmup < 0:
        raise ValueError("batch_size, input_size and iterations must be positive, warmup >= 0")
    device = torch.device(device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    images = torch.rand(batch_size, 3, input_size, input_size, generator=generator).to(device)
    was_training = net.training
    buffers = {name: b.detach().clone() for name, b in net.named_buffers()}
    requires_grad = [p.requires_grad for p in net.parameters()]
    try:
        net.train(backward)
        if backward:
            net.requires_grad_(True)
        step = _training_step if backward else _inference_step
        for _ in range(warmup):
            step(net, images)
        _synchronise(device)
        start = time.perf_counter()
        for _ in range(iterations):
            step(net, images)
        _synchronise(device)
        seconds = time.perf_counter() - start
    finally:
        net.train(was_training)
        with torch.no_grad():
            for name, b in net.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
        for p, flag in zip(net.parameters(), requires_grad):
            p.grad = None
            p.requires_grad_(flag)
    return batch_size * iterations / seconds


def _inference_step(net: nn.Module, images: torch.Tensor) -> None:
    with torch.no_grad():
        net(images)


def _training_step(net: nn.Module, images: torch.Tensor) -> None:
    for p in net.parameters():
        p.grad = None
    net(images).float().sum().backward()

"""One optimisation loop for every role trained from scratch here (oracle, CLIP, captioner,
segmentation, DINO-style ViT, the diffusion base): AdamW, a schedule, optional gradient
clipping, an optional EMA of the weights and a per-step hook for curves. Each trainer only
says how to compute its loss for a step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Literal

import torch

Schedule = Literal["one_cycle", "warmup"]


def fit(parameters: Iterable[torch.nn.Parameter], steps: int, lr: float,
        loss_fn: Callable[[int], torch.Tensor], *, weight_decay: float = 1e-2,
        schedule: Schedule = "one_cycle", warmup_steps: int = 50, clip_norm: float | None = None,
        ema=None, on_step: Callable[[int], None] | None = None) -> float:
    """Run `steps` updates of `loss_fn(step)`; returns seconds spent training.

    `one_cycle` (warm-up to `lr`, then cosine down) suits short from-scratch runs; `warmup`
    holds `lr` after `warmup_steps` (the diffusion recipes). `ema` is a diffusers `EMAModel`
    over the same parameters. `on_step(done)` runs after each update and is not timed.
    """
    parameters = [p for p in parameters if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if schedule == "one_cycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, steps))
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup_steps))
    spent = 0.0
    for step in range(steps):
        start = time.perf_counter()
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.step(parameters)
        spent += time.perf_counter() - start
        if on_step is not None:
            on_step(step + 1)
    return spent

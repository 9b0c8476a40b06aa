"""Optimization helpers, pure torch: the LR schedule, an EMA of trainable weights, and one
optimizer step with gradient clipping and (optional) fp16 loss scaling.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float):
    """LR multiplier for `LambdaLR`: linear 0 -> 1 over warm-up, then cosine 1 -> `min_ratio`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class EMA:
    """Exponential moving average of named parameters (the trainable ones), kept in float32.

    Averaged weights sample better than the last step's; the shadow lives beside the model so
    checkpoints save it and export can swap it in.
    """

    def __init__(self, named: dict[str, torch.nn.Parameter], decay: float):
        self.decay = decay
        self.params = named
        self.shadow = {name: p.detach().float().clone() for name, p in named.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach().float(), 1 - self.decay)

    @torch.no_grad()
    def copy_to(self, named: dict[str, torch.nn.Parameter]) -> None:
        """Overwrite `named` (same names) with the averaged weights."""
        for name, p in named.items():
            p.copy_(self.shadow[name].to(p.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state.keys() != self.shadow.keys():
            raise ValueError("EMA state holds other parameters than the model trains")
        self.shadow = {name: tensor.float().clone() for name, tensor in state.items()}


def optimizer_step(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                   clip_norm: float | None, scaler: torch.amp.GradScaler | None = None) -> float | None:
    """Unscale (fp16), clip, step, zero grads; returns the pre-clip gradient norm (None: no clip).

    With a scaler, a step whose gradients overflowed is skipped and the scale lowered.
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = None
    if clip_norm is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip_norm))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm

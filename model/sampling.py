"""Which scheduler a diffusers pipeline samples with: the choice a profile and an evaluation
config name, in one place for every pipeline (text-only, Textual Inversion, DreamBooth-LoRA,
ours).

- "ddim": deterministic DDIM (eta 0) on the pipeline's own noise schedule, the setting the
  literature's baselines report with;
- "default": the pipeline's own scheduler as saved with its weights (for the synth profile the
  DDPM training schedule, which samples ancestrally: fresh noise at every step).
"""

from __future__ import annotations

from typing import Literal

SAMPLERS = ("ddim", "default")
Sampler = Literal["ddim", "default"]


def use_sampler(pipe, sampler: str) -> None:
    """Swap `pipe.scheduler` for `sampler`'s, keeping its noise schedule and prediction type."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
    if sampler == "ddim":
        from diffusers import DDIMScheduler

        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)

"""How much the synth base listens to each word of its prompt: the denoising loss on held-out
renders with their true class prompt vs the same prompt with one attribute swapped to another
value (or with no prompt at all), at a few noise levels.

    .venv/bin/python -m benchmarks.base_conditioning --profile assets/profiles/synth

A base that draws what it is asked predicts the noise worse when told the wrong shape or the
wrong position, so the relative loss increase ("gap") is above 0 with an interval that says
so; a gap of 0 means the UNet ignores that word whatever its samples look like. This is read
from one batch of forward passes, so it separates "the word is ignored" from "the word is heard
but the samples are too poor to show it" long before the oracle's sample accuracy moves, and
costs seconds instead of a sampling run. Writes `base_conditioning.json`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.common import paired, write_result
from model.base_family import token_ids
from model.losses import diffusion_target
from model.pixel_base import scheduler
from tamer.synth_world import BENCH_SCALES, VOCAB, class_prompt, render_views, split_subjects
from tasks.profile_measures import load_base
from tasks.profile_roles import Recipe

SWAPPED = ("shape", "background", "position", "scale", "rotation", "lighting")
TIMESTEPS = (900, 600, 300)
VALUES = {**VOCAB, "scale": BENCH_SCALES}  # the scales the base was trained on


def prompts(data, swap: str | None) -> list[str]:
    """Each render's class prompt, with attribute `swap` moved to the next-but-two value of its
    vocabulary (always a different value), or "" for every row when `swap` is "empty"."""
    if swap == "empty":
        return [""] * len(data)
    out = []
    for row in range(len(data)):
        identity, scene = data.identity(row), data.scenes[row]
        if swap == "shape":
            identity = replace(identity, shape=_other(VALUES["shape"], identity.shape))
        elif swap is not None:
            scene = replace(scene, **{swap: _other(VALUES[swap], getattr(scene, swap))})
        out.append(class_prompt(identity, scene))
    return out


def _other(values: tuple[str, ...], value: str) -> str:
    return values[(values.index(value) + 3) % len(values)] if len(values) > 3 else values[values.index(value) - 1]


@torch.no_grad()
def row_losses(unet, states: torch.Tensor, pixels: torch.Tensor, timestep: int, seed: int) -> list[float]:
    """Per-row MSE of the UNet's prediction at `timestep` (same noise for every prompt set)."""
    schedule = scheduler()
    noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(seed + timestep))
    steps = torch.full((len(pixels),), timestep)
    noisy = schedule.add_noise(pixels, noise, steps)
    target = diffusion_target(noise, pixels, steps, schedule)
    output = unet(noisy, steps, encoder_hidden_states=states).sample
    return ((output - target) ** 2).mean(dim=(1, 2, 3)).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=Path("assets/profiles/synth"))
    parser.add_argument("--views", type=int, default=8, help="scenes per held-out identity")
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args()
    r = Recipe()
    _, held_out = split_subjects(r.base_objects, r.held_out, r.seed)
    data = render_views(held_out, args.views, r.size, args.seed)
    unet, encoder, tokenizer = load_base(args.profile)
    with torch.no_grad():
        states = {swap: encoder(token_ids(tokenizer, prompts(data, swap)))[0] for swap in (None, *SWAPPED, "empty")}
    gaps: dict[str, dict[str, dict]] = {}
    print(f"relative loss increase with the attribute swapped, {len(data)} held-out renders "
          f"(mean, 95% bootstrap interval):")
    for timestep in TIMESTEPS:
        true = row_losses(unet, states[None], data.pixels, timestep, args.seed)
        gaps[str(timestep)] = {}
        for swap in (*SWAPPED, "empty"):
            wrong = row_losses(unet, states[swap], data.pixels, timestep, args.seed)
            relative = paired([w / t for w, t in zip(wrong, true)], [1.0] * len(true))
            gaps[str(timestep)][swap] = relative
            low, high = relative["difference_interval"]
            print(f"  t={timestep:4d} {swap:11s} {relative['difference_mean']:+.4f} [{low:+.4f}, {high:+.4f}]")
    write_result("base_conditioning", {"profile": str(args.profile), "renders": len(data), "gaps": gaps})


if __name__ == "__main__":
    main()

"""CLIP's image tower phase (the recipe's own job, `tasks.profile_roles.role_jobs`: every label
plus per-patch masks) with the ViT's 4 px patch embedding against a convolutional stem
(`model.conv_stem`): held-out accuracy of the tower's attribute heads by step.

    .venv/bin/python -m benchmarks.tower_curve [--steps 3000] [--every 500] [--objects 8000]

Why: the tower's heads are where CLIP's zero-shot reading and our object encoder get shape
from; with the patch embedding a 6,000-step phase read held-out shape 0.74 (README, "Tower
width"). One run per tower (a learning curve, not a timing: seconds are reported beside it),
each on the same renders, batch, seed and schedule length. Writes `tower_curve.json` to the
results folder and a plot to `--plot`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from model.fit import Job, run  # noqa: E402
from model.role_training import processor_pixels  # noqa: E402
from tamer.synth_world import KEYS, Renders  # noqa: E402
from tasks.profile_measures import fresh_renders, per_key  # noqa: E402
from tasks.profile_roles import FULL, Recipe, clip_processor, role_jobs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOWERS = {"patch embedding": (), "conv stem": (32, 64, 128)}
SHOWN = ("shape", "primary", "texture", "eyes", "rotation")  # the hard labels; `mean` is over all ten


def tower_job(r: Recipe, out: Path) -> Job:
    """The recipe's CLIP tower phase (the first of CLIP's jobs)."""
    return role_jobs("clip", r, out)[0]


def curve(job: Job, held_out: Renders, every: int) -> list[dict]:
    """Train to the job's steps, reading every head on `held_out` every `every` steps (untimed)."""
    tower, heads = job.modules["model"], job.modules["heads"]
    inputs = processor_pixels(held_out.pixels, clip_processor(held_out.pixels.shape[-1]).image_processor)
    points, began, paused = [], time.perf_counter(), 0.0

    def on_step(done: int, _ema) -> None:
        nonlocal paused
        if done % every and done != job.steps:
            return
        start = time.perf_counter()
        tower.eval()
        with torch.no_grad():
            cls = tower(pixel_values=inputs).last_hidden_state[:, 0]
            predicted = torch.stack([head(cls).argmax(1) for head in heads], dim=1)
        tower.train()
        accuracy = per_key(predicted, held_out.labels)
        paused += time.perf_counter() - start
        points.append({"step": done, "accuracy": accuracy, "mean": sum(accuracy.values()) / len(KEYS),
                       "train_s": time.perf_counter() - began - paused})
        print(f"  step {done}: " + ", ".join(f"{key} {accuracy[key]:.2f}" for key in SHOWN)
              + f", mean {points[-1]['mean']:.2f} ({points[-1]['train_s']:.0f} s)", flush=True)

    run(job, on_step=on_step)
    return points


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, points in curves.items():
        steps = [p["step"] for p in points]
        axes[0].plot(steps, [p["accuracy"]["shape"] for p in points], marker="o", label=name)
        axes[1].plot(steps, [p["mean"] for p in points], marker="o", label=name)
    axes[0].set_title("held-out shape")
    axes[1].set_title("mean of the ten labels")
    for ax in axes:
        ax.set_xlabel("tower steps (batch 64, every label + masks)")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("accuracy of the tower's heads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--objects", type=int, default=FULL.world_objects, help="training identities, 2 views each")
    parser.add_argument("--held-out", type=int, default=400, help="fresh identities, one view each")
    parser.add_argument("--batch", type=int, default=FULL.clip_tower_batch)
    parser.add_argument("--width", type=int, default=FULL.clip_vision_width)
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "tower_curve.png")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    base = replace(FULL, world_objects=args.objects, clip_tower_steps=args.steps, clip_tower_batch=args.batch,
                   clip_vision_width=args.width)
    held_out = fresh_renders(base, args.held_out)
    curves = {}
    for name, stem in TOWERS.items():
        print(name, flush=True)
        curves[name] = curve(tower_job(replace(base, clip_conv_stem=stem), Path("unused")), held_out, args.every)
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, args.plot)
    settings = {key: getattr(args, key) for key in ("steps", "every", "objects", "held_out", "batch", "width")}
    write_result("tower_curve", {"settings": settings, "training_renders": 2 * args.objects,
                                 "stems": {name: list(stem) for name, stem in TOWERS.items()}, "curves": curves},
                 args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

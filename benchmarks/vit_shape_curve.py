"""Why the synth profile's ViT roles do not read shape: the oracle's CNN and the `dino` role's
ViT (the shape of CLIP's and the captioner's image towers too: 4 px patches, width 64), trained
side by side on the shape label alone, same renders, batch and steps, each with its own role's
trainer and learning rate; held-out shape accuracy by step.

    .venv/bin/python -m benchmarks.vit_shape_curve [--objects 16000] [--steps 4000] [--every 500]

The shipped roles read shape near chance (CLIP zero-shot 0.12, the captioner 0.09, a linear
probe on CLIP's image embedding 0.15; chance 0.11) while the oracle reads it at 0.995. This
measures whether that is the ViTs' budget or the recipe's supervision: with direct shape
supervision and nothing else to learn, how many steps does a ViT of the roles' shape need?
One training run per model (a learning curve, not a timing: seconds are reported beside it).
Writes `vit_shape_curve.json` to the results folder and a plot to `--plot`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import result_path, write_result  # noqa: E402
from model.fit import Job, run  # noqa: E402
from model.role_training import identity_vit_job, oracle_job, processor_pixels  # noqa: E402
from tamer.synth_world import KEYS, VOCAB, Renders, random_subjects, render_views  # noqa: E402
from tasks.profile_measures import FRESH_SEED  # noqa: E402
from tasks.profile_roles import dino_config, dino_processor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPE = KEYS.index("shape")


@dataclass
class Contender:
    """A model trained on the shape label: its job and how it reads held-out pixels."""

    job: Job
    predict: Callable[[torch.Tensor], torch.Tensor]  # pixels in [-1, 1] -> (N,) shape index


def cnn(data: Renders, steps: int, batch: int, seed: int) -> Contender:
    """The oracle's network and trainer (`oracle_job`), with the shape head only."""
    job = oracle_job(data.pixels, data.labels[:, [SHAPE]], {"shape": list(VOCAB["shape"])}, steps, batch, seed)
    return Contender(job, lambda pixels: job.modules["model"].predict(pixels)[:, 0])


def vit(data: Renders, steps: int, batch: int, seed: int, patch: int, masks: bool = False) -> Contender:
    """The `dino` role's ViT and trainer (`identity_vit_job`), at `patch` px patches; `masks`:
    each patch token also predicts its patch of the render's mask."""
    config = dino_config(data.pixels.shape[-1])
    config.patch_size = patch
    processor = dino_processor(data.pixels.shape[-1])
    job = identity_vit_job(config, processor, data.pixels, data.labels[:, [SHAPE]], [len(VOCAB["shape"])], steps,
                           batch, seed, masks=data.masks if masks else None)

    def predict(pixels: torch.Tensor) -> torch.Tensor:
        cls = job.modules["model"](pixel_values=processor_pixels(pixels, processor)).last_hidden_state[:, 0]
        return job.modules["heads"][0](cls).argmax(1)

    return Contender(job, predict)


def curve(contender: Contender, held_out: Renders, every: int) -> list[dict]:
    """Train to the job's steps, reading held-out accuracy every `every` steps (untimed)."""
    points, began, paused = [], time.perf_counter(), 0.0

    def on_step(done: int, _ema) -> None:
        nonlocal paused
        if done % every and done != contender.job.steps:
            return
        start = time.perf_counter()
        for module in contender.job.modules.values():
            module.eval()
        with torch.no_grad():
            accuracy = float((contender.predict(held_out.pixels) == held_out.labels[:, SHAPE]).double().mean())
        for module in contender.job.modules.values():
            module.train()
        paused += time.perf_counter() - start
        points.append({"step": done, "accuracy": accuracy, "train_s": time.perf_counter() - began - paused})
        print(f"  step {done}: shape {accuracy:.3f} ({points[-1]['train_s']:.0f} s)", flush=True)

    run(contender.job, on_step=on_step)
    return points


def plot(curves: dict[str, list[dict]], chance: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, points in curves.items():
        ax.plot([p["step"] for p in points], [p["accuracy"] for p in points], marker="o", label=name)
    ax.axhline(chance, color="gray", linestyle=":", linewidth=1, label="chance")
    ax.set_xlabel("training steps (batch 64, shape label only)")
    ax.set_ylabel("held-out shape accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CURVE_SETTINGS = ("objects", "held_out", "steps", "every", "batch", "size", "seed")  # what a curve depends on


def _reusable(results: Path | None, settings: dict[str, str]) -> dict[str, list[dict]]:
    """The curves of an earlier run of this script with the same settings, by model."""
    path = result_path("vit_shape_curve", results)
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    same = all(earlier.get("settings", {}).get(key) == value for key, value in settings.items())
    return earlier["curves"] if same else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=16000, help="training identities, 2 views each")
    parser.add_argument("--held-out", type=int, default=400, help="fresh identities, one view each")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "vit_shape_curve.png")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the curves the results file already holds for these same settings; "
                             "train only the models it lacks (training is deterministic for a seed)")
    args = parser.parse_args(argv)
    settings = {k: str(v) for k, v in vars(args).items() if k in CURVE_SETTINGS}
    data = render_views(random_subjects(args.objects, args.seed + 1), 2, args.size, args.seed + 1)
    held_out = render_views(random_subjects(args.held_out, args.seed + FRESH_SEED), 1, args.size,
                            args.seed + FRESH_SEED)
    builders = {"cnn (oracle)": lambda: cnn(data, args.steps, args.batch, args.seed),
                "vit, 4 px patches (dino, CLIP)": lambda: vit(data, args.steps, args.batch, args.seed, 4),
                "vit, 4 px patches + per-patch masks": lambda: vit(data, args.steps, args.batch, args.seed, 4, True),
                "vit, 8 px patches": lambda: vit(data, args.steps, args.batch, args.seed, 8)}
    curves = _reusable(args.results, settings) if args.reuse else {}
    for name, build in builders.items():
        if name in curves:
            print(f"{name}: kept from the results file", flush=True)
            continue
        print(name, flush=True)
        curves[name] = curve(build(), held_out, args.every)
    curves = {name: curves[name] for name in builders}
    chance = 1 / len(VOCAB["shape"])
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, chance, args.plot)
    write_result("vit_shape_curve", {"settings": settings,
                                     "training_renders": len(data), "chance": chance, "curves": curves},
                 args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

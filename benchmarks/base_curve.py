"""Metric-vs-steps curve of the synth text-to-image base: how many CPU steps it needs to draw
what it is asked, so the budget is measured rather than guessed.

    .venv/bin/python -m benchmarks.base_curve --profile PROFILE --steps 12000 --every 1000

It takes the oracle, the CLIP (whose text tower starts the base's text encoder) and the recipe
of a profile written by `tamer models train-profile`, trains the base with the profile's own
job (`model.pixel_base.base_job` on `tasks.profile_roles.base_world`) and, every `--every`
steps, samples text-only class prompts ("a star, on green grass, ...") for the held-out
identities from the EMA weights and reads them with the oracle (the profile's own measure,
`tasks.profile_measures.base_accuracy`): shape and every scene attribute, against the bars
(shape >= 0.7, every scene attribute >= 0.9). Writes `base_curve.json` and `base_curve.png`
beside the samples of each checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import save_image  # noqa: E402

from benchmarks.common import RESULTS, machine  # noqa: E402
from model.pixel_base import sd_pipeline, text_encoder_from_clip, train_base  # noqa: E402
from tamer.synth_world import SCENE_KEYS, caption, class_prompt  # noqa: E402
from tasks.profile_measures import base_prompts, sample_accuracy  # noqa: E402
from tasks.profile_roles import base_world  # noqa: E402

BARS = {"shape": 0.7, **{key: 0.9 for key in SCENE_KEYS}}


def plot(curve: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = [point["step"] for point in curve]
    for key in BARS:
        ax.plot(steps, [point["accuracy"][key] for point in curve], marker="o", label=key)
    ax.axhline(BARS["shape"], color="gray", linestyle=":", linewidth=1)
    ax.axhline(0.9, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("base training steps")
    ax.set_ylabel("oracle agreement of text-only samples")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", type=Path, required=True, help="a folder written by `tamer models train-profile`")
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "base_curve")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from benchmarks.synth_quality import load_profile_models

    recipe, models = load_profile_models(args.profile)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data, tokenizer = base_world(recipe), models["tokenizer"]
    prompts, truth = base_prompts(recipe)
    curve: list[dict] = []
    result = {"settings": vars(args) | {"out": str(args.out), "profile": str(args.profile)},
              "recipe": recipe.__dict__, "machine": machine(), "bars": BARS, "curve": curve}

    def checkpoint(step: int, unet, encoder) -> None:
        hits, images = sample_accuracy(sd_pipeline(unet, encoder, tokenizer), models["oracle"], prompts, truth,
                                       args.sample_steps, args.guidance, recipe.seed)
        curve.append({"step": step, "wall_s": time.perf_counter() - start, "accuracy": hits,
                      "bars_met": {key: hits[key] >= bar for key, bar in BARS.items()}})
        save_image((images[:32] + 1) / 2, args.out / f"samples_{step:06d}.png", nrow=8)
        (args.out / "base_curve.json").write_text(json.dumps(result, indent=2, default=str))
        plot(curve, args.out / "base_curve.png")
        print(f"step {step}: " + " ".join(f"{k} {hits[k]:.2f}" for k in BARS), flush=True)

    rows = range(len(data))
    *_, base_s = train_base(data.pixels, [caption(data.identity(i), data.scenes[i]) for i in rows],
                            [class_prompt(data.identity(i), data.scenes[i]) for i in rows],
                            text_encoder_from_clip(models["clip"]), tokenizer, args.steps, recipe.base_batch,
                            recipe.seed, checkpoint, args.every)
    result["base_train_s"] = base_s
    (args.out / "base_curve.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"base {base_s:.0f}s of training; curve in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

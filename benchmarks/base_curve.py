"""Metric-vs-steps curve of the synth profile's text-to-image base, read from the profile run's
own base checkpoints, so the budget is measured rather than guessed and the curve is the one of
the weights that ship.

    .venv/bin/python -m benchmarks.base_curve --profile PROFILE

PROFILE is a folder written (or being written) by `tamer models train-profile`: its oracle, its
CLIP (which starts the base's text encoder) and `_checkpoints/base/step_*`. For every checkpoint
the base's EMA weights sample text-only class prompts ("a star, on green grass, ...") for the
held-out identities, and the oracle reads them (the profile's own measure,
`tasks.profile_measures.sample_accuracy`): shape and every scene attribute, against the bars
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

from transformers import CLIPTokenizer  # noqa: E402

from benchmarks.common import RESULTS, machine  # noqa: E402
from model.fit import FIT_STEP, load_checkpoint  # noqa: E402
from model.oracle import AttributeOracle  # noqa: E402
from model.pixel_base import sd_pipeline  # noqa: E402
from model.sampling import SAMPLERS  # noqa: E402
from tamer.synth_world import SCENE_KEYS  # noqa: E402
from tasks.profile_measures import GUIDANCE, SAMPLER, base_prompts, sample_accuracy  # noqa: E402
from tasks.profile_roles import Recipe, role_job  # noqa: E402
from tasks.profile_roles import recipe as named_recipe  # noqa: E402
from tasks.profile_training import CHECKPOINTS, PROVENANCE  # noqa: E402

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


def ema_weights(job, folder: Path) -> int:
    """Load a base checkpoint into `job` and swap in its EMA weights (what export ships)."""
    from diffusers.training_utils import EMAModel

    parameters = job.parameters()
    ema = EMAModel(parameters, decay=job.ema_decay, use_ema_warmup=True)
    step = load_checkpoint(folder, job, ema=ema)
    ema.copy_to(parameters)
    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", type=Path, required=True, help="a folder written by `tamer models train-profile`")
    parser.add_argument("--recipe", default=None, help="recipe name while provenance.json is not written yet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=1000, help="read checkpoints at multiples of this step")
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=GUIDANCE)
    parser.add_argument("--sampler", choices=SAMPLERS, default=SAMPLER, help="model.sampling")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "base_curve")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    provenance = args.profile / PROVENANCE
    recipe = (Recipe(**json.loads(provenance.read_text())["recipe"]) if args.recipe is None
              else named_recipe(args.recipe, args.seed))
    folders = [f for f in sorted((args.profile / CHECKPOINTS / "base").glob("step_*"))
               if (f / FIT_STEP).is_file() and int(f.name.removeprefix("step_")) % args.every == 0]
    if not folders:
        parser.error(f"no base checkpoints at multiples of {args.every} under {args.profile}")
    oracle = AttributeOracle.from_pretrained(args.profile / "oracle").eval()
    tokenizer = CLIPTokenizer.from_pretrained(args.profile / "clip")
    job = role_job("base", recipe, args.profile)
    unet, encoder = job.modules["unet"].eval(), job.modules["text_encoder"].eval()
    prompts, truth = base_prompts(recipe)
    args.out.mkdir(parents=True, exist_ok=True)
    curve: list[dict] = []
    result = {"benchmark": "base_curve", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "settings": vars(args) | {"out": str(args.out), "profile": str(args.profile)},
              "recipe": recipe.__dict__, "machine": machine(), "bars": BARS, "curve": curve}
    for folder in folders:
        step = ema_weights(job, folder)
        hits, images = sample_accuracy(sd_pipeline(unet, encoder, tokenizer, args.sampler), oracle, prompts, truth,
                                       args.sample_steps, args.guidance, recipe.seed)
        curve.append({"step": step, "accuracy": hits, "bars_met": {key: hits[key] >= bar for key, bar in BARS.items()}})
        save_image((images[:32] + 1) / 2, args.out / f"samples_{step:06d}.png", nrow=8)
        print(f"step {step}: " + " ".join(f"{k} {hits[k]:.2f}" for k in BARS), flush=True)
    (args.out / "base_curve.json").write_text(json.dumps(result, indent=2, default=str))
    plot(curve, args.out / "base_curve.png")
    print(f"curve of {len(curve)} checkpoints in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

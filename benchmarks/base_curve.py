"""Metric-vs-steps curve of the synth text-to-image base: how many CPU steps it needs to draw
what it is asked, so the budget is measured rather than guessed.

    .venv/bin/python -m benchmarks.base_curve --steps 12000 --every 1000

It trains the synth-quality benchmark's oracle, in-domain CLIP and base (the same functions,
no second recipe) and, every `--every` steps, samples text-only class prompts ("a star, on
green grass, ...") for held-out identities from the base's EMA weights and reads them with the
oracle: shape accuracy and every scene attribute's accuracy, against the bars (shape >= 0.7,
every scene attribute >= 0.9). Writes `base_curve.json` and `base_curve.png` beside the
samples of each checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import save_image  # noqa: E402
from transformers import CLIPModel  # noqa: E402

from benchmarks.common import RESULTS, machine  # noqa: E402
from benchmarks.synth_quality import FULL  # noqa: E402
from benchmarks.synthq_diffusion import train_world_base  # noqa: E402
from benchmarks.synthq_models import accuracy, clip_processor, train_clip, train_oracle  # noqa: E402
from model.oracle import AttributeOracle  # noqa: E402
from model.pixel_base import sd_pipeline, text_encoder_from_clip  # noqa: E402
from tamer.synth_world import (KEYS, SCENE_KEYS, class_prompt, eval_scenes, labels,  # noqa: E402
                                random_subjects, render_views, split_subjects)

BARS = {"shape": 0.7, **{key: 0.9 for key in SCENE_KEYS}}


def sample_accuracy(unet, text_encoder, tokenizer, oracle, prompts: list[str], truth: torch.Tensor,
                    steps: int, guidance: float, seed: int) -> tuple[dict[str, float], torch.Tensor]:
    """Text-only samples of `prompts` read by the oracle: per-attribute agreement with `truth`."""
    pipe = sd_pipeline(unet, text_encoder, tokenizer)
    generators = [torch.Generator().manual_seed(seed + n) for n in range(len(prompts))]
    with torch.no_grad():
        images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, output_type="pt",
                      generator=generators).images * 2 - 1
    return accuracy(oracle.predict(images.float().clamp(-1, 1)), truth), images


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
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=FULL.batch)
    parser.add_argument("--train-objects", type=int, default=FULL.train_objects)
    parser.add_argument("--sample-steps", type=int, default=FULL.sample_steps)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "base_curve")
    parser.add_argument("--reuse", action="store_true",
                        help="load the oracle and CLIP a previous run saved in --out instead of training them")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = replace(FULL, seed=args.seed, train_objects=args.train_objects, batch=args.batch)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    oracle_data = render_views(random_subjects(s.oracle_objects, s.seed + 1), s.oracle_views, s.size, s.seed + 1)
    train_subjects, held_out = split_subjects(s.train_objects, s.held_out, s.seed)
    train = render_views(train_subjects, s.views, s.size, s.seed + 3)
    processor = clip_processor(s.size)
    if args.reuse and (args.out / "oracle").is_dir() and (args.out / "clip").is_dir():
        oracle, oracle_s = AttributeOracle.from_pretrained(args.out / "oracle").eval(), 0.0
        clip, clip_s = CLIPModel.from_pretrained(args.out / "clip").eval(), 0.0
    else:
        oracle, oracle_s = train_oracle(oracle_data, s.oracle_steps, s.oracle_batch, s.seed, s.oracle_width)
        oracle.save_pretrained(args.out / "oracle")
        clip, clip_s = train_clip(oracle_data, processor, s.clip_steps, s.clip_batch, s.seed, args.out / "clip")
    text_encoder, tokenizer = text_encoder_from_clip(clip), processor.tokenizer
    scenes = eval_scenes(8, s.seed)
    pairs = [(subject.identity, scene) for subject in held_out for scene in scenes]
    prompts = [class_prompt(identity, scene) for identity, scene in pairs]
    truth = torch.tensor([labels(identity, scene) for identity, scene in pairs])
    curve: list[dict] = []
    result = {"settings": vars(args) | {"out": str(args.out)}, "machine": machine(), "bars": BARS,
              "oracle_s": oracle_s, "clip_s": clip_s, "curve": curve}

    def checkpoint(step: int, unet, encoder) -> None:
        hits, images = sample_accuracy(unet, encoder, tokenizer, oracle, prompts, truth, args.sample_steps,
                                       s.guidance, s.seed)
        curve.append({"step": step, "wall_s": time.perf_counter() - start, "accuracy": hits,
                      "bars_met": {key: hits[key] >= bar for key, bar in BARS.items()}})
        save_image((images[:32] + 1) / 2, args.out / f"samples_{step:06d}.png", nrow=8)
        (args.out / "base_curve.json").write_text(json.dumps(result, indent=2, default=str))
        plot(curve, args.out / "base_curve.png")
        print(f"step {step}: " + " ".join(f"{k} {hits[k]:.2f}" for k in KEYS), flush=True)

    *_, base_s = train_world_base(train, text_encoder, tokenizer, args.steps, s.batch, s.seed, checkpoint, args.every)
    result["base_train_s"] = base_s
    (args.out / "base_curve.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"base {base_s:.0f}s of training; curve in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

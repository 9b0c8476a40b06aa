"""A short training probe of the synth base: the recipe's base job (same identities, seed,
batch, text encoder start) with one thing changed, read by the profile's oracle every `--every`
steps on text-only class prompts as `benchmarks.base_curve` does, so a variant is compared
against a profile run's own curve at equal steps without a profile run.

    .venv/bin/python -m benchmarks.base_probe --scenes varied --steps 1000     # recipe v4's world
    .venv/bin/python -m benchmarks.base_probe --scenes fixed --steps 3000      # shape alone
    .venv/bin/python -m benchmarks.base_probe --scenes varied --object-weight 5 --steps 1000
    .venv/bin/python -m benchmarks.base_probe --scenes mixed --steps 2000      # easy scenes added
    .venv/bin/python -m benchmarks.base_probe --scenes curriculum --steps 2000 # easy scenes first

`--scenes recipe` trains on the recipe's renders and prompts (the studio with its eight
backgrounds: the shipped job exactly); `varied` on recipe v4's (every scene attribute varied,
`base_held_scene=()`). The others start from `varied`: `fixed` renders every view of the same
identities in the studio scene (`tamer.synth_world.STUDIO`: gray background, centre, large,
upright, bright) and reads prompts in it; `mixed` adds `--easy-views` studio views per identity
and reads the varied prompts; `curriculum` trains on the views re-rendered in the studio for
`--easy-steps`, then on the varied renders, and reads the varied prompts. `--object-weight k`
weights the loss k times on object pixels (the render masks).
Writes `base_probe_<name>.json` and samples beside it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
from torchvision.utils import save_image

from benchmarks.common import RESULTS, write_result
from model.fit import run
from model.oracle import AttributeOracle
from model.pixel_base import base_job, sd_pipeline, text_encoder_from_clip
from tamer.synth_render import render
from tamer.synth_world import (STUDIO, Renders, caption, class_prompt, labels, mask_tensor, render_views,
                               split_subjects, to_tensor)
from tasks.profile_measures import GUIDANCE, SAMPLER, base_prompts, sample_accuracy
from tasks.profile_roles import Recipe, base_world


def easy(data: Renders, size: int) -> Renders:
    """`data`'s identities (and each view's jitter) re-rendered in the studio scene."""
    scenes = [replace(scene, **STUDIO) for scene in data.scenes]
    images = [render(data.identity(row), scene, size) for row, scene in enumerate(scenes)]
    pixels = torch.stack([to_tensor(image) for image, _ in images])
    masks = torch.stack([mask_tensor(mask) for _, mask in images])
    rows = torch.tensor([labels(data.identity(row), scene) for row, scene in enumerate(scenes)])
    return Renders(pixels, masks, rows, data.subject, data.subjects, scenes)


def concat(a: Renders, b: Renders) -> Renders:
    offset = len(a.subjects)
    return Renders(torch.cat([a.pixels, b.pixels]), torch.cat([a.masks, b.masks]), torch.cat([a.labels, b.labels]),
                   torch.cat([a.subject, b.subject + offset]), a.subjects + b.subjects, a.scenes + b.scenes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", type=Path, default=Path("assets/profiles/synth"), help="its oracle and CLIP")
    parser.add_argument("--scenes", choices=("recipe", "varied", "fixed", "mixed", "curriculum"), default="recipe")
    parser.add_argument("--easy-views", type=int, default=3, help="easy-scene views per identity (mixed)")
    parser.add_argument("--easy-steps", type=int, default=1000, help="steps on the easy scene first (curriculum)")
    parser.add_argument("--object-weight", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import CLIPTokenizer

    from model.conv_stem import load_clip

    r = Recipe() if args.scenes == "recipe" else replace(Recipe(), base_held_scene=())
    data = base_world(r)
    prompts, truth = base_prompts(r)
    row_pool = None  # every row at every step, except in a curriculum
    if args.scenes == "fixed":
        data = easy(data, r.size)
        _, held_out = split_subjects(r.base_objects, r.held_out, r.seed)
        targets = easy(render_views(held_out, len(prompts) // len(held_out), r.size, r.seed), r.size)
        prompts = [class_prompt(targets.identity(row), targets.scenes[row]) for row in range(len(targets))]
        truth = targets.labels
    elif args.scenes == "mixed":
        data = concat(data, easy(render_views(data.subjects, args.easy_views, r.size, r.seed + 7), r.size))
    elif args.scenes == "curriculum":
        varied = len(data)
        data = concat(data, easy(data, r.size))
        easy_rows, varied_rows = torch.arange(varied, len(data)), torch.arange(varied)

        def row_pool(step: int) -> torch.Tensor:
            return easy_rows if step < args.easy_steps else varied_rows
    rows = range(len(data))
    tokenizer = CLIPTokenizer.from_pretrained(args.profile / "tokenizer")
    job = base_job(data.pixels, [caption(data.identity(i), data.scenes[i]) for i in rows],
                   [class_prompt(data.identity(i), data.scenes[i]) for i in rows],
                   text_encoder_from_clip(load_clip(args.profile / "clip")), tokenizer,
                   args.steps, r.base_batch, r.seed, r.base_text_levels, r.base_attention_heads,
                   masks=data.masks if args.object_weight != 1 else None, object_weight=args.object_weight,
                   row_pool=row_pool)
    oracle = AttributeOracle.from_pretrained(args.profile / "oracle").eval()
    unet, encoder = job.modules["unet"], job.modules["text_encoder"]
    name = f"{args.scenes}_w{args.object_weight:g}"
    curve: list[dict] = []
    start = time.perf_counter()

    def read(done: int, ema) -> None:
        if done % args.every:
            return
        parameters = job.parameters()
        ema.store(parameters)
        ema.copy_to(parameters)
        hits, images = sample_accuracy(sd_pipeline(unet.eval(), encoder.eval(), tokenizer, SAMPLER), oracle, prompts,
                                       truth, 25, GUIDANCE, r.seed)
        ema.restore(parameters)
        unet.train(), encoder.train()
        curve.append({"step": done, "seconds": round(time.perf_counter() - start), "accuracy": hits})
        print(f"step {done}: " + ", ".join(f"{k} {v:.2f}" for k, v in hits.items()), flush=True)
        save_image((images[:32] + 1) / 2, RESULTS / f"base_probe_{name}_{done}.png", nrow=8)
        write_result(f"base_probe_{name}", {**setup, "curve": curve})  # after every reading: a long probe can stop

    setup = {"scenes": args.scenes, "object_weight": args.object_weight,
             "easy_views": args.easy_views if args.scenes == "mixed" else 0,
             "easy_steps": args.easy_steps if args.scenes == "curriculum" else 0, "training_rows": len(data),
             "prompts": len(prompts), "steps": args.steps, "batch": r.base_batch}
    run(job, on_step=read)


if __name__ == "__main__":
    main()

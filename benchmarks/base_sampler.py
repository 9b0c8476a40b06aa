"""The synth base's text-only samples under each sampler (`model.sampling`), side by side: the
same weights, held-out objects, prompts and seeds, read by the oracle.

    .venv/bin/python -m benchmarks.base_sampler --profile assets/profiles/synth

Two prompt sets: the profile's own measure (its 8 held-out objects x 8 studio scenes, the seeds
behind the provenance figures) and a second set the sampler was not chosen on (16 other studio
scenes per object, other seeds). Per set and sampler, the oracle's agreement per attribute, and
"default" (the base's own DDPM schedule, ancestral) minus "ddim" object by object with a 95%
bootstrap interval: the held-out object is the unit, as in `benchmarks.synth_quality`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.common import write_result
from benchmarks.synthq_measure import paired_differences
from model.oracle import AttributeOracle
from model.pixel_base import sd_pipeline
from model.sampling import SAMPLERS
from tamer.synth_world import KEYS, SCENE_KEYS
from tasks.profile_measures import GUIDANCE, Sizes, base_prompts, load_base, sample_accuracy
from tasks.profile_roles import Recipe
from tasks.profile_training import PROVENANCE

READ = ("shape", *SCENE_KEYS)
# (scenes per object, scene seed offset, first sampling seed offset) of each prompt set
SETS = {"measure": (Sizes.base_scenes, 0, 0), "second set": (16, 100, 1000)}


def compare(profile: Path, steps: int, guidance: float) -> dict:
    recipe = Recipe(**json.loads((profile / PROVENANCE).read_text())["recipe"])
    oracle = AttributeOracle.from_pretrained(profile / "oracle").eval()
    unet, text_encoder, tokenizer = load_base(profile)
    result = {}
    for name, (scenes, scene_offset, seed_offset) in SETS.items():
        prompts, truth = base_prompts(recipe, scenes, recipe.seed + scene_offset)
        rows, accuracy = [], {}
        for sampler in SAMPLERS:
            pipe = sd_pipeline(unet, text_encoder, tokenizer, sampler)
            agreement, images = sample_accuracy(pipe, oracle, prompts, truth, steps, guidance,
                                                recipe.seed + seed_offset)
            accuracy[sampler] = {key: agreement[key] for key in READ}
            with torch.no_grad():  # per sample, for the paired differences
                hits = oracle.predict(images.float().clamp(-1, 1)) == truth  # (N, len(KEYS))
            rows += [{"method": sampler, "object": n // scenes,
                      **{key: float(hits[n, KEYS.index(key)]) for key in READ}} for n in range(len(prompts))]
        differences = paired_differences(rows, "default", READ)["ddim"]
        result[name] = {"samples": len(prompts), "accuracy": accuracy, "default_minus_ddim": differences}
        print(f"{name} ({len(prompts)} samples, {steps} steps, guidance {guidance}):")
        for key in READ:
            d = differences[key]
            print(f"  {key:10s} ddim {accuracy['ddim'][key]:.3f}  default {accuracy['default'][key]:.3f}  "
                  f"difference {d['mean']:+.3f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", type=Path, required=True, help="a folder written by `tamer models train-profile`")
    parser.add_argument("--steps", type=int, default=Sizes.base_steps, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=GUIDANCE)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--results", type=Path, default=None, help="folder for base_sampler.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = compare(args.profile, args.steps, args.guidance)
    write_result("base_sampler", {"settings": {"profile": str(args.profile), "steps": args.steps,
                                               "guidance": args.guidance}, "sets": result}, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

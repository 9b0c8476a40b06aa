"""Seconds per step of the synth captioner's captioning phase (the recipe's own job,
`tasks.profile_roles.role_jobs`: frozen tower, teacher-forced captions) with BERT's whole
WordPiece vocabulary against the world captions' pieces only (`Recipe.captioner_vocab`).

    .venv/bin/python -m benchmarks.captioner_vocab_cost [--objects 400] [--steps 8] [--repeats 5]

Why: the profile's from-scratch budget (#14, about 150 min on 2 cores) and the captioning
phase's profile, where the output layer over 30,524 tokens, its log-softmax and their
backward were most of a step. Both sides are whole training steps (forward, backward, AdamW)
of the same model but for its vocabulary, on the same renders and batches, at the threads a
role gets beside the other chain (`--threads`, default 1), in interleaved rounds after a warm-up
round. Prints each side's seconds per step, their paired ratio and difference interval, and the
phase's minutes at the recipe's step count; writes `captioner_vocab_cost.json`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import compare, interleaved, summaries, write_result  # noqa: E402
from model.fit import Job, run  # noqa: E402
from tasks.profile_roles import FULL, role_jobs  # noqa: E402

VOCABULARIES = ("bert", "captions")


def captioning_job(vocabulary: str, objects: int) -> Job:
    """The FULL recipe's captioning job (the captioner's last) on `objects` identities' renders."""
    return role_jobs("captioner", replace(FULL, world_objects=objects, captioner_vocab=vocabulary), Path("unused"))[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=400, help="world identities, 2 views each")
    parser.add_argument("--steps", type=int, default=8, help="training steps per round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a role beside the other chain: 1)")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    jobs = {vocabulary: replace(captioning_job(vocabulary, args.objects), steps=args.steps)
            for vocabulary in VOCABULARIES}
    widths = {vocabulary: job.modules["model"].config.text_config.vocab_size for vocabulary, job in jobs.items()}
    seconds = interleaved({vocabulary: (lambda job=job: run(job) / args.steps) for vocabulary, job in jobs.items()},
                          repeats=args.repeats)
    comparisons = compare(f"captioning step, {args.threads} thread(s), batch {FULL.captioner_batch}, "
                          f"vocabularies {widths}:", seconds, "s/step", {"captions / bert": ("captions", "bert")})
    phase_min = {vocabulary: FULL.captioner_steps * summaries(seconds)[vocabulary]["median"] / 60
                 for vocabulary in VOCABULARIES}
    print(f"  the phase's {FULL.captioner_steps} steps: " + ", ".join(f"{v} {m:.1f} min" for v, m in phase_min.items()))
    settings = {key: getattr(args, key) for key in ("objects", "steps", "repeats", "threads")}
    write_result("captioner_vocab_cost", {"settings": settings, "vocab_size": widths, "batch": FULL.captioner_batch,
                                          "recipe_steps": FULL.captioner_steps, "seconds_per_step": summaries(seconds),
                                          "comparisons": comparisons, "phase_minutes": phase_min}, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

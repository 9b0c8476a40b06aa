"""Cost to customize one new object: ours (one object-encoder pass) vs Textual Inversion at its
default step count vs DreamBooth-LoRA at its default, same profile, same machine, one run.

Seconds exclude loading the models (a fixed cost every method pays once per process) and include
writing the per-object artifact. With `--measure-steps N` the baselines train N steps and their
time is extrapolated linearly to the full step count (set-up measured separately). Each figure:
median [min, max] of `--repeats` interleaved rounds (ours, TI, LoRA, ours, ...) after a warm-up
round. Prints the ratios; writes benchmarks/results/customization_cost.json.

    .venv/bin/python -m benchmarks.customization_cost [--data DIR] [--subject NAME]
        [--pipeline DIR] [--measure-steps N] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import compare, interleaved, summaries, write_result
from model.dreambooth_lora import DreamBoothLoraConfig
from model.profiles import load_profile
from model.tamer_model import TamerModel, TamerModelConfig
from model.textual_inversion import TextualInversionConfig
from tasks.methods import Context, DreamBoothLora, Ours, Sampling, TextualInversion
from tasks.eval_subjects import Subject, load_subjects
from storage.shards import ShardStore

# TAMER_DREAMBENCH: where a checkout does not sit beside ../shared (a git worktree), as in tests
DREAMBENCH = Path(os.environ.get("TAMER_DREAMBENCH")
                  or Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambench")


def prepare_seconds(method, subject: Subject) -> tuple[float, int]:
    start = time.perf_counter()
    state = method.prepare(subject)
    return time.perf_counter() - start, state.bytes_stored


MIN_MEASURED_STEPS = 20  # the extrapolation's N-step run (see baseline_cost)


def baseline_cost(make, config_cls, subject: Subject, measure_steps: int | None) -> dict:
    """Full-run seconds (measured, or set-up + per-step time x default steps) and bytes."""
    steps = config_cls().steps
    if not measure_steps or measure_steps >= steps:
        seconds, stored = prepare_seconds(make(config_cls()), subject)
        return {"steps": steps, "seconds": seconds, "bytes": stored, "extrapolated": False}
    # two runs: 1 step (set-up + one step) and N steps; the difference is N - 1 steps
    one, _ = prepare_seconds(make(config_cls(steps=1)), subject)
    many, stored = prepare_seconds(make(config_cls(steps=measure_steps)), subject)
    per_step = (many - one) / (measure_steps - 1)
    return {"steps": steps, "measured_steps": measure_steps, "measured_seconds": many,
            "seconds_per_step": per_step, "seconds": one + per_step * (steps - 1),
            "bytes": stored, "extrapolated": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--data", default=str(DREAMBENCH), help="DreamBench-layout or synth folder")
    parser.add_argument("--subject", default=None, help="default: the first subject")
    parser.add_argument("--pipeline", default=None, help="TamerPipeline dir; default: untrained")
    parser.add_argument("--measure-steps", type=int, default=None,
                        help="train the baselines this many steps and extrapolate")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    if args.measure_steps is not None and args.measure_steps < MIN_MEASURED_STEPS:
        parser.error(f"--measure-steps must be at least {MIN_MEASURED_STEPS}: below that the 1-step run's "
                     "noise can exceed the difference and the extrapolated time comes out negative")

    profile = load_profile(args.profile)
    work = Path(tempfile.mkdtemp(prefix="customization-cost-"))
    subjects = load_subjects(args.data, ShardStore(str(work / "root")), None, None, 1).subjects
    subject = next(s for s in subjects if args.subject in (None, s.name))
    pipeline = args.pipeline
    if pipeline is None:
        pipeline = str(work / "pipeline")
        TamerModel.from_profile(profile, TamerModelConfig()).save_pretrained(pipeline)
    sampling = Sampling(50, 7.5, 3.0, "ddim")

    ours = Ours(Context(profile, sampling, work, pipeline), Ours.settings())
    bytes_stored: dict[str, int] = {}

    def ours_seconds() -> float:
        seconds, bytes_stored["ours"] = prepare_seconds(ours, subject)
        return seconds

    def baseline(name: str, make, config_cls):
        def run() -> float:
            cost = baseline_cost(make, config_cls, subject, args.measure_steps)
            bytes_stored[name] = cost["bytes"]
            return cost["seconds"]
        return run

    seconds = interleaved({
        "ours": ours_seconds,
        "textual_inversion": baseline("textual_inversion", lambda c: TextualInversion(
            Context(profile, sampling, work), c), TextualInversionConfig),
        "dreambooth_lora": baseline("dreambooth_lora", lambda c: DreamBoothLora(
            Context(profile, sampling, work), c), DreamBoothLoraConfig)}, repeats=args.repeats)
    how = f", baselines extrapolated from {args.measure_steps} steps" if args.measure_steps else ""
    vs = compare(f"seconds to customize one object{how}:", seconds, "s", {
        "Textual Inversion / ours": ("textual_inversion", "ours"),
        "DreamBooth-LoRA / ours": ("dreambooth_lora", "ours")})
    ti_ratio, lora_ratio = vs["Textual Inversion / ours"], vs["DreamBooth-LoRA / ours"]
    print(f"bytes per object: {bytes_stored}")
    met = ti_ratio["ratio_median"] >= 1000
    print(f"target >= 1000x vs Textual Inversion: {'met' if met else 'NOT met'}")
    write_result("customization_cost", {
        "profile": args.profile, "subject": subject.name, "images": len(subject.images),
        "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
        "steps": {"textual_inversion": TextualInversionConfig().steps,
                  "dreambooth_lora": DreamBoothLoraConfig().steps},
        "measured_steps": args.measure_steps,
        "seconds": summaries(seconds),
        "bytes": bytes_stored, "ti_over_ours": ti_ratio, "lora_over_ours": lora_ratio,
        "target_met": met})


if __name__ == "__main__":
    main()

"""Cost to customize one new object: ours (one object-encoder pass) vs Textual Inversion at its
default step count vs DreamBooth-LoRA at its default, same profile, same machine, one run.

Seconds exclude loading the models (a fixed cost every method pays once per process) and include
writing the per-object artifact. With `--measure-steps N` the baselines train N steps and their
time is extrapolated linearly to the full step count (set-up measured separately); both figures
are in the JSON. Prints the ratios; writes benchmarks/results/customization_cost.json.

    .venv/bin/python -m benchmarks.customization_cost [--data DIR] [--subject NAME]
        [--pipeline DIR] [--measure-steps N] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import write_result
from model.dreambooth_lora import DreamBoothLoraConfig
from model.profiles import load_profile
from model.tamer_model import TamerModel, TamerModelConfig
from model.textual_inversion import TextualInversionConfig
from tasks.eval_methods import DreamBoothLora, Ours, Sampling, TextualInversion
from tasks.eval_subjects import Subject, load_subjects
from storage.shards import ShardStore

DREAMBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambench"


def prepare_seconds(method, subject: Subject) -> tuple[float, int]:
    start = time.perf_counter()
    state = method.prepare(subject)
    return time.perf_counter() - start, state.bytes_stored


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
    parser.add_argument("--repeats", type=int, default=20, help="encoder passes timed for ours")
    args = parser.parse_args()

    profile = load_profile(args.profile)
    work = Path(tempfile.mkdtemp(prefix="customization-cost-"))
    subjects = load_subjects(args.data, ShardStore(str(work / "root")), None, None, 1).subjects
    subject = next(s for s in subjects if args.subject in (None, s.name))
    pipeline = args.pipeline
    if pipeline is None:
        pipeline = str(work / "pipeline")
        TamerModel.from_profile(profile, TamerModelConfig()).save_pretrained(pipeline)
    sampling = Sampling(50, 7.5, 3.0, "ddim")

    ours = Ours(pipeline, sampling, work, profile.device)
    prepare_seconds(ours, subject)  # warm-up: first-call allocations
    timings = [prepare_seconds(ours, subject) for _ in range(args.repeats)]
    ours_result = {"seconds": statistics.median(t for t, _ in timings), "bytes": timings[0][1],
                   "repeats": args.repeats}
    ti = baseline_cost(lambda c: TextualInversion(profile, sampling, work, c), TextualInversionConfig,
                       subject, args.measure_steps)
    lora = baseline_cost(lambda c: DreamBoothLora(profile, sampling, work, c), DreamBoothLoraConfig,
                         subject, args.measure_steps)
    result = {"profile": args.profile, "subject": subject.name, "images": len(subject.images),
              "torch_threads": torch.get_num_threads(), "ours": ours_result,
              "textual_inversion": ti, "dreambooth_lora": lora,
              "ratio_seconds_ti_over_ours": ti["seconds"] / ours_result["seconds"],
              "ratio_seconds_lora_over_ours": lora["seconds"] / ours_result["seconds"],
              "target_met": ti["seconds"] / ours_result["seconds"] >= 1000}
    for name, entry in (("ours", ours_result), ("textual_inversion", ti), ("dreambooth_lora", lora)):
        how = f" (extrapolated from {entry['measured_steps']} steps)" if entry.get("extrapolated") else ""
        print(f"{name:18s} {entry['seconds']:10.3f} s{how}  {entry['bytes']:>9d} bytes per object")
    print(f"Textual Inversion / ours: {result['ratio_seconds_ti_over_ours']:,.0f}x seconds "
          f"(target >= 1000x: {'met' if result['target_met'] else 'NOT met'})")
    print(f"DreamBooth-LoRA / ours:   {result['ratio_seconds_lora_over_ours']:,.0f}x seconds")
    write_result("customization_cost", result)


if __name__ == "__main__":
    main()

"""Shared bits of the benchmark scripts: timing, interleaved repetitions and their summary,
the machine's description, JSON results.

Every figure is the median of interleaved repetitions (A, B, A, B, ...) after an untimed
warm-up round, printed with min and max, and every comparison carries a paired bootstrap
interval: on shared cores a single run, or A's runs all taken before B's, measures the
neighbours' load as much as the code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
# The scripts time the machinery at the tiny profile's shapes, as the test suite does, and so do
# the `tamer` commands they start (which inherit this), whatever profile configs/default.yaml
# names for `tamer run`; TAMER_PROFILE set by the caller wins.
os.environ.setdefault("TAMER_PROFILE", "tiny")


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def clocked(function: Callable[[], Any]) -> Callable[[], float]:
    """A contender for `interleaved` that is timed as a whole call."""
    return lambda: timed(function)[0]


def interleaved(contenders: Mapping[str, Callable[[], float]], repeats: int = 5,
                warmup: int = 1) -> dict[str, list[float]]:
    """Run every contender `warmup` rounds untimed, then `repeats` rounds A, B, A, B, ...

    A contender returns its own measured value (seconds, usually through `clocked`), so it can
    leave its set-up (a fresh output folder, say) out of the figure."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for run in contenders.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            samples[name].append(float(run()))
    return samples


def summary(values: list[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements (the values kept for the JSON)."""
    if not values:
        raise ValueError("no measurements to summarize")
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "values": list(values)}


def paired(a: list[float], b: list[float], resamples: int = 2000, seed: int = 0,
           level: float = 0.95) -> dict[str, Any]:
    """A vs B over paired rounds: the median of the per-round ratios a/b and a bootstrap
    interval of the mean per-round difference a - b (rounds resampled, pairs kept)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired needs two equal, non-empty series, got {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b)]
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(differences, k=len(differences)))
                   for _ in range(resamples))
    tail = (1 - level) / 2
    return {"ratio_median": statistics.median(x / y for x, y in zip(a, b)),
            "difference_mean": statistics.fmean(differences),
            "difference_interval": [means[int(tail * (resamples - 1))],
                                    means[int((1 - tail) * (resamples - 1))]],
            "level": level}


def rates(seconds: list[float], items: int) -> list[float]:
    """Items per second of each repetition."""
    return [items / s for s in seconds]


def per_second(seconds: Mapping[str, list[float]], items: int) -> dict[str, list[float]]:
    """`rates` of each figure, by name."""
    return {name: rates(values, items) for name, values in seconds.items()}


def marginal_rate(extra_items: int, long: list[float], short: list[float]) -> list[float]:
    """Items/s of each round's extra items: the long run minus the short one, same round,
    cancels what every run pays once (imports, start-up, model loads, the final commit)."""
    gaps = [a - b for a, b in zip(long, short)]
    if min(gaps) <= 0:
        raise ValueError(f"a long run was not slower than its short run ({gaps}): give it more work")
    return [extra_items / gap for gap in gaps]


def measured_marginal_rate(label: str, extra_items: int, long: list[float], short: list[float]
                           ) -> list[float] | None:
    """`marginal_rate`, or None, printed as not measured, when a round's noise outweighed the
    extra work (the whole-run figures still stand)."""
    try:
        return marginal_rate(extra_items, long, short)
    except ValueError as exc:
        print(f"  {label}: not measured: {exc}")
        return None


def synth_parser(doc: str, images: int, size: int) -> argparse.ArgumentParser:
    """The options of a benchmark on `tamer synth` renders: how many, their side, and rounds."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--images", type=int, default=images)
    parser.add_argument("--size", type=int, default=size, help="render side in px")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    return parser


def print_summaries(figures: Mapping[str, list[float]], unit: str) -> None:
    """One line per figure: median [min, max] over n repetitions."""
    for name, values in figures.items():
        s = summary(values)
        print(f"  {name:36s} {s['median']:12.4g} {unit}  [min {s['min']:.4g}, max {s['max']:.4g},"
              f" n={s['n']}]")


def print_paired(name: str, comparison: dict[str, Any]) -> None:
    low, high = comparison["difference_interval"]
    print(f"  {name:36s} ratio {comparison['ratio_median']:.3f} (median of rounds); "
          f"difference {comparison['difference_mean']:.4g} "
          f"[{low:.4g}, {high:.4g}] {comparison['level']:.0%} bootstrap")


def compare(heading: str, figures: Mapping[str, list[float]], unit: str,
            pairs: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Print `heading`, each figure's summary, and `paired(figures[a], figures[b])` for each named
    (a, b); returns the comparisons by name."""
    rounds = {len(values) for values in figures.values()}
    print(f"{heading} median [min, max] over {'/'.join(map(str, sorted(rounds)))} interleaved rounds")
    print_summaries(figures, unit)
    comparisons = {name: paired(figures[a], figures[b]) for name, (a, b) in pairs.items()}
    for name, comparison in comparisons.items():
        print_paired(name, comparison)
    return comparisons


def summaries(figures: Mapping[str, list[float]]) -> dict[str, dict[str, Any]]:
    """`summary` of each figure, by name (what the JSON keeps)."""
    return {name: summary(values) for name, values in figures.items()}


def parse_quick(parser: argparse.ArgumentParser, argv: list[str] | None, quick: dict[str, Any],
                quick_help: str) -> argparse.Namespace:
    """Add `--repeats` (interleaved rounds, default 5) and `--quick` (the test suite's seconds-long
    run: the `quick` settings replace the parsed ones), then parse `argv`."""
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(quick)
    return args


def synth_workdir(name: str, images: int, size: int, workers: int = 1) -> Path:
    """A fresh temporary folder whose `src/` holds about `images` synth renders (8 views)."""
    from tamer.synth import generate

    work = Path(tempfile.mkdtemp(prefix=f"tamer-bench-{name}-"))
    views = 8
    generate(work / "src", n_objects=max(1, images // views), views=views, size=size,
             workers=workers)
    return work


def machine() -> dict[str, Any]:
    import torch

    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def result_path(name: str, results: Path | None = None) -> Path:
    """`<results>/<name>.json`: `results`, else $TAMER_BENCH_RESULTS, else `benchmarks/results/`."""
    return Path(results or os.environ.get("TAMER_BENCH_RESULTS") or RESULTS) / f"{name}.json"


def write_result(name: str, result: dict[str, Any], results: Path | None = None) -> Path:
    """`result_path(name, results)`, with the machine and date."""
    path = result_path(name, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **result}
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {path}")
    return path

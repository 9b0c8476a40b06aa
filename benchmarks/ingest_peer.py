"""Ingest peer (issue 17): `tamer ingest` vs Ray Data's `read_images(...).write_parquet(...)`,
whole commands as a user runs them, same files, same CPUs. Prints the ratio, writes JSON.

    python benchmarks/ingest_peer.py [--images 4000] [--size 512] [--cpus 2] [--repeats 5]

The files are synth renders (RGB views, grayscale masks, JSON side files). Contenders, each a
fresh process writing into a fresh folder, rounds interleaved after a warm-up round:
- tamer_ingest: `tamer --root R ingest SRC --json`: decode, validate, hash, dedupe, quarantine,
  pair each view with its mask and side data, commit Parquet shards atomically;
- ray_data: a script that starts Ray with `--cpus` CPUs and runs
  `ray.data.read_images(SRC).write_parquet(OUT)` (views and masks as separate images, decoded
  to arrays, nothing validated).
Images/s counts the RGB views. Then both run once on the test suite's hostile folder
(tests/hostile.py: truncated, empty, non-image, bomb, oversized, special files...): what each
rejects, and whether it finishes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import (compare, interleaved, per_second, summaries, synth_parser,  # noqa: E402
                               synth_workdir, timed, write_result)

RAY_DATA = """
import sys
import ray
ray.init(num_cpus=int(sys.argv[3]), include_dashboard=False)
ray.data.read_images(sys.argv[1]).write_parquet(sys.argv[2])
"""


def run(command: list[str], timeout_s: float | None = None) -> subprocess.CompletedProcess:
    """The command's outcome; one that outlives `timeout_s` (a reader blocked on a FIFO, say)
    is killed and reported with exit code None."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, None, "", f"timed out after {timeout_s} s")


def checked(command: list[str]) -> subprocess.CompletedProcess:
    done = run(command)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:5])} ... exited {done.returncode}:\n"
                           f"{done.stderr[-3000:]}")
    return done


def hostile_outcomes(work: Path, tamer: list[str], ray_data: list[str], cpus: int,
                     timeout_s: float = 300) -> dict:
    """Both sides once on the hostile folder: tamer's counts, Ray Data's exit and last words."""
    import importlib.util
    import json

    # by path: an installed package named `tests` can shadow this repository's folder
    spec = importlib.util.spec_from_file_location("hostile", REPO / "tests" / "hostile.py")
    hostile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hostile)
    expected = hostile.build(work / "hostile")
    src = str(work / "hostile" / "src")
    config = work / "hostile.yaml"
    config.write_text(f"ingest: {{max_bytes: {hostile.MAX_BYTES}}}\n")
    ours = run([*tamer[:3], "--config", str(config), "--root", str(work / "hostile-root"),
                "ingest", src, "--json"], timeout_s)
    peer = run([*ray_data, src, str(work / "hostile-peer"), str(cpus)], timeout_s)
    report = json.loads(ours.stdout) if ours.returncode == 0 else {}
    return {"entries": len(expected),
            "tamer": {"exit": ours.returncode, **{k: report.get(k) for k in (
                "ingested", "duplicates", "quarantined", "reasons") if k in report}},
            "ray_data": {"exit": peer.returncode,
                         "last_error_line": (peer.stderr.strip().splitlines() or [""])[-1][:300]}}


def main() -> None:
    parser = synth_parser(__doc__, images=4000, size=512)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    work = synth_workdir("ingest-peer", args.images, args.size, workers=args.cpus)
    views = [p for p in (work / "src").rglob("*.png") if not p.name.endswith(".mask.png")]
    config = work / "bench.yaml"
    config.write_text(f"ray: {{num_cpus: {args.cpus}}}\ningest: {{executor: ray}}\n")
    tamer = [sys.executable, "-m", "tamer.cli", "--config", str(config)]
    ray_data = [sys.executable, "-c", RAY_DATA]
    rounds = iter(range(10**6))

    def tamer_ingest() -> float:
        root = work / f"root{next(rounds)}"
        seconds, _ = timed(lambda: checked([*tamer, "--root", str(root), "ingest",
                                            str(work / "src"), "--json"]))
        shutil.rmtree(root, ignore_errors=True)
        return seconds

    def ray_read_write() -> float:
        out = work / f"peer{next(rounds)}"
        seconds, _ = timed(lambda: checked([*ray_data, str(work / "src"), str(out),
                                            str(args.cpus)]))
        shutil.rmtree(out, ignore_errors=True)
        return seconds

    seconds = interleaved({"tamer_ingest": tamer_ingest, "ray_data": ray_read_write},
                          repeats=args.repeats)
    n = len(views)
    per_s = per_second(seconds, n)
    ratio = compare(f"{n} views at {args.size} px (+ masks), {args.cpus} CPUs, whole commands, images/s:",
                    per_s, "images/s", {"tamer / Ray Data": ("tamer_ingest", "ray_data")})["tamer / Ray Data"]
    rejects = hostile_outcomes(work, tamer, ray_data, args.cpus)
    print(f"hostile folder: {rejects}")
    write_result("ingest_peer" + ("" if args.size == 512 else f"_{args.size}px"), {
        "images": n, "size": args.size, "cpus": args.cpus, "repeats": args.repeats,
        "images_per_s": summaries(per_s),
        "tamer_vs_ray_data": ratio, "hostile": rejects,
        "target": "tamer_ingest >= 1.0x ray_data (whole commands)"})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

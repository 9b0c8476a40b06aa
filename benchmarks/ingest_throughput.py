"""Ingest throughput vs the decode-only ceiling (issue 2). Prints ratios, writes JSON.

    python benchmarks/ingest_throughput.py [--images 4000] [--size 512] [--workers 2]
        [--repeats 5]
    python benchmarks/ingest_throughput.py --images 24000 --size 128   # small-image stress case

(a) ceiling, serial: read + PIL open + full decode of every file ingest decodes (the images and
    their foreground masks), one process, with ingest's per-item conversions and no others:
    an image is converted to RGB only when it is not RGB already (ingest stores upright RGB
    originals byte for byte), a mask stays grayscale (ingest keeps L masks as they are);
(b) ceiling, parallel: the same over a process pool of `--workers`;
(c) tamer ingest on Ray Data with `--workers` CPUs (hash, decode, validate, dedupe, Parquet
    shards with atomic commit) into a fresh root each round, Ray and its worker processes
    already started, as the process pool's are for (b) and as they are in a running service;
(d) the same ingest again on (c)'s root: nothing new, so what listing and hashing cost.
Each figure: median [min, max] of `--repeats` interleaved rounds (a, b, c, d, a, ...) after a
warm-up round, with a paired bootstrap interval for each ratio. Target: (c) / (b) >= 0.8.

The default size is DreamBench's 512 px, where decoding dominates as it does for real photos.
At 128 px a PNG decodes in ~0.1 ms, so what ingest must do per file beyond decoding (read the
mask and JSON side files, hash, validate, build Arrow rows, commit Parquet on the driver) costs
more than the decode itself, and the ratio measures that fixed cost instead.
"""

from __future__ import annotations

import io
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from benchmarks.common import (clocked, compare, interleaved, per_second, print_summaries,  # noqa: E402
                               summaries, summary, synth_parser, synth_workdir, timed, write_result)


def decode_file(path: str) -> int:
    """What ingest's decoder must do with this file's pixels, and nothing more."""
    with open(path, "rb") as handle:
        image = Image.open(io.BytesIO(handle.read()))
        image.load()
    if not path.endswith(".mask.png") and image.mode != "RGB":
        image = image.convert("RGB")
    return image.size[0]


def decode_many(paths: list[str]) -> int:
    return sum(decode_file(path) for path in paths)


def main() -> None:
    parser = synth_parser(__doc__, images=4000, size=512)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import ray

    from storage.images import ImageLimits
    from storage.shards import ShardStore
    from storage.sources import list_chunks
    from tamer.config import IngestSettings, RaySettings
    from tasks.ingest import decode_chunks, ingest_source
    from tasks.ray_runtime import ensure_ray

    work = synth_workdir("ingest", args.images, args.size, workers=args.workers)
    paths = sorted(str(p) for p in (work / "src").rglob("*.png"))  # images and masks
    decode_many(paths)  # warm the page cache the same way for every contender
    chunks = [paths[i::args.workers * 8] for i in range(args.workers * 8)]
    settings = IngestSettings(executor="ray", files_per_chunk=256)
    ensure_ray(RaySettings(num_cpus=args.workers))
    # Start Ray's worker processes untimed, as the process pool's are below.
    warm = list_chunks(str(work / "src"), 16)[:args.workers * 2]
    list(decode_chunks(warm, {}, ImageLimits(), "ray", RaySettings()))
    roots, counts = [], []

    def ingest() -> float:
        roots.append(str(work / f"root{len(roots)}"))
        seconds, report = timed(lambda: ingest_source(str(work / "src"), ShardStore(roots[-1]),
                                                      settings))
        counts.append(report.ingested)
        return seconds

    def rerun() -> float:
        seconds, report = timed(lambda: ingest_source(str(work / "src"), ShardStore(roots[-1]),
                                                      settings))
        assert report.ingested == 0, report
        return seconds

    with ProcessPoolExecutor(args.workers) as pool:
        list(pool.map(decode_many, chunks[:args.workers]))  # start the workers untimed
        seconds = interleaved({
            "a_ceiling_serial": clocked(lambda: decode_many(paths)),
            "b_ceiling_parallel": clocked(lambda: sum(pool.map(decode_many, chunks))),
            "c_ingest": ingest, "d_rerun": rerun}, repeats=args.repeats)
    ray.shutdown()

    n = counts[0]  # images per second; each image also has its mask decoded
    assert set(counts) == {n}, counts
    rerun_s = seconds.pop("d_rerun")
    throughput = per_second(seconds, n)
    vs = compare(f"{n} images ({args.size} px) + masks, {args.workers} workers, images/s:", throughput,
                 "images/s", {"ingest / parallel ceiling": ("c_ingest", "b_ceiling_parallel"),
                              "ingest / serial ceiling": ("c_ingest", "a_ceiling_serial")})
    print_summaries({"d_rerun": rerun_s}, "s")
    result = {
        "images": n, "size": args.size, "workers": args.workers, "repeats": args.repeats,
        "images_per_s": summaries(throughput),
        "rerun_seconds": summary(rerun_s),
        "ingest_vs_parallel_ceiling": vs["ingest / parallel ceiling"],
        "ingest_vs_serial_ceiling": vs["ingest / serial ceiling"],
        "target": ">= 0.8 of the parallel ceiling",
    }
    write_result("ingest_throughput" + ("" if args.size == 512 else f"_{args.size}px"), result)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

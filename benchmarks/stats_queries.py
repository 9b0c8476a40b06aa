"""`tamer stats` queries over a 1,000,000-row metadata table in shards (issue 2).

    python benchmarks/stats_queries.py [--rows 1000000] [--shards 20]

Writes synthetic `images` metadata rows (tiny placeholder image bytes) as committed shards,
then times the catalog refresh and every stats query through DuckDB. Target: each < 1 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from benchmarks.common import timed, write_result  # noqa: E402


def shard(rows: int, offset: int, rng: np.random.Generator) -> pa.Table:
    subjects = rng.integers(0, 20_000, rows)
    sides = rng.choice([64, 128, 256, 512, 1024], rows)
    formats = rng.choice(["JPEG", "PNG", "WEBP"], rows, p=[0.7, 0.25, 0.05])
    now = dt.datetime.now(dt.UTC)
    return pa.table({
        "image_id": [f"{offset + i:064x}" for i in range(rows)],
        "subject": [f"subject{s:05d}" for s in subjects],
        "class_name": [f"class{s % 200:03d}" for s in subjects],
        "source": [f"/data/{offset + i}.jpg" for i in range(rows)],
        "source_kind": rng.choice(["folder", "tar", "parquet"], rows),
        "width": sides.astype("int32"), "height": sides.astype("int32"),
        "format": formats, "mode": np.full(rows, "RGB"),
        "num_bytes": rng.integers(1_000, 500_000, rows),
        "flags": [["tiny"] if s == 64 else [] for s in sides],
        "image": [b""] * rows, "mask": pa.nulls(rows, pa.binary()),
        "text": pa.nulls(rows, pa.string()), "meta": pa.nulls(rows, pa.string()),
        "ingested_at": pa.array([now] * rows, pa.timestamp("us", tz="UTC")),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=20)
    args = parser.parse_args()

    from storage.catalog import connect
    from storage.shards import ShardStore
    from tamer.stats import SECTIONS, overview

    store = ShardStore(tempfile.mkdtemp(prefix="tamer-bench-stats-"), row_group_rows=100_000)
    rng = np.random.default_rng(0)
    per_shard = args.rows // args.shards
    write_s, _ = timed(lambda: [store.write("images", shard(per_shard, i * per_shard, rng))
                                for i in range(args.shards)])
    refresh_s, con = timed(lambda: connect(store))
    timings = {"catalog_refresh": refresh_s}
    timings["overview"], _ = timed(lambda: overview(store, con))
    for section in SECTIONS:
        timings[section.key], _ = timed(lambda s=section: con.execute(s.sql).fetchall())
    rows = con.execute("SELECT count(*) FROM images").fetchone()[0]
    con.close()
    slowest = max(timings, key=timings.get)
    print(f"{rows:,} rows in {args.shards} shards (written in {write_s:.1f} s)")
    for name, seconds in timings.items():
        print(f"  {name:22s} {seconds * 1000:8.1f} ms")
    print(f"slowest: {slowest} {timings[slowest]:.3f} s (target: each < 1 s)")
    write_result("stats_queries", {"rows": rows, "shards": args.shards, "seconds": timings,
                                   "all_under_1s": all(t < 1 for t in timings.values())})


if __name__ == "__main__":
    main()
